"""Inverted index speed and memory (THESIS.md sections 8 and 10).

For N random 64-bit fingerprints drawn with replacement from N distinct codes (so about
1/e = 37% of the database codes repeat an earlier one), measure: build time, batched
lookups per second (1e6 codes, half present, half absent), the latency of one
``lookup_one`` call from Python, multi-probing queries per second with L = 16 lookups,
and bytes of index per database code. Prints one Markdown table.

    python benchmarks/index.py [--sizes 1e6 1e7] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from equihash.index import InvertedIndex


def best_of(repeats, fn):
    """Smallest wall time of ``repeats`` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def measure(n: int, rng: np.random.Generator, n_queries: int = 1_000_000, n_probe_queries: int = 100_000):
    pool = rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False)
    database = pool[rng.integers(0, n, size=n)].view(np.uint8).reshape(n, 8)

    build_s, index = best_of(1, lambda: InvertedIndex.build(database))

    present = database[rng.integers(0, n, size=n_queries // 2)]
    absent = rng.integers(0, 256, size=(n_queries - n_queries // 2, 8), dtype=np.uint8)
    queries = np.concatenate([present, absent])[rng.permutation(n_queries)]
    lookup_s, (offsets, _) = best_of(3, lambda: index.lookup(queries))
    hit_rate = float(np.mean(np.diff(offsets) > 0))

    singles = queries[:2000]
    one_s, _ = best_of(3, lambda: [index.lookup_one(code) for code in singles])

    # logits whose sign codes are database codes for half of the queries
    signs = np.unpackbits(database[rng.integers(0, n, size=n_probe_queries)], axis=1)
    signs[n_probe_queries // 2:] = rng.integers(0, 2, size=signs[n_probe_queries // 2:].shape)
    logits = ((2.0 * signs - 1.0) * np.abs(rng.standard_normal(signs.shape))).astype(np.float32)
    probe_s, _ = best_of(2, lambda: index.multiprobe(logits, 16))

    return {
        "N": f"{n:.0e}",
        "unique": f"{index.n_unique / n:.3f}",
        "build s": f"{build_s:.2f}",
        "lookups/s": f"{n_queries / lookup_s:.3g}",
        "hit rate": f"{hit_rate:.3f}",
        "lookup_one us": f"{1e6 * one_s / len(singles):.1f}",
        "multiprobe L=16 q/s": f"{n_probe_queries / probe_s:.3g}",
        "bytes/code": f"{index.memory_usage / n:.2f}",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = [measure(int(n), np.random.default_rng([args.seed, int(n)])) for n in args.sizes]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join(" --- " for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(row[c] for c in columns) + " |")


if __name__ == "__main__":
    main()
