"""Inverted index and evaluation at scale (docs/method.md sections 8-10), against faiss-cpu.

Codes. N database items draw their labels with replacement among N classes, so 1/e = 37%
of the positions repeat an earlier label; the code of a label is a fixed random 64-bit
fingerprint, and 10% of the positions have one bit flipped (encoder noise). Batch lookups
are 1e6 codes, half of them database codes, half uniform (absent). Multi-probing queries
have logits whose sign code is a database code with one flipped bit of small |z| (half)
or uniform (half).

Rows (each measured in a fresh child process, peak RSS from /proc/self/status VmHWM,
reset before the phase, so it includes the N codes held in memory):

* ``equihash``: ``InvertedIndex.build`` on the codes in memory, saved, re-opened
  memory-mapped; every query runs on the mapped index.
* ``faiss``: faiss-cpu ``IndexBinaryHash(64, 64)`` on the same codes (its hash table of
  64-bit buckets; exact lookups = ``range_search`` with radius 1 and ``nflip = 0``).
  Multi-probing = ``range_search`` of the same probe codes (``probe_codes``, timed too).
  faiss is a benchmark-only dependency (``pip install faiss-cpu``); without it the rows
  are skipped.
* ``equihash Parquet + evaluate``: the pipeline's last stages at scale. ``write_labels``
  writes the labels files (bank B with B**4 just above N, so ~36% repeated labels, and
  ``--queries`` positive queries, negative queries and negative pairs), synthetic
  fingerprint files follow the codes above (the queries are fresh noisy instances with
  logits), ``InvertedIndex.build_parquet`` builds the index in bounded memory (1 GiB
  budget), ``internal_collisions`` is timed alone, then ``evaluate_run`` computes every
  figure of metrics.json (lookups 1, 2, 4, 16, 64, 256) from the files.

    python benchmarks/index.py [--sizes 1e6 1e7 1e8] [--faiss-sizes 1e6 1e7]
                               [--evaluate-size 1e8] [--queries 1e6] [--threads T] [--seed 0]

``--faiss-sizes`` and ``--evaluate-size 0`` turn rows off. The default run takes about
eight minutes on 2 CPU cores; faiss at 1e8 (``--faiss-sizes 1e6 1e7 1e8``) needs ~12 GB and about
three minutes more.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NOISE_RATE = 0.1
N_LOOKUPS = 1_000_000
PROBE_QUERIES = {1: 100_000, 16: 50_000, 256: 5_000}
FAISS_PROBE_QUERIES = {1: 100_000, 16: 10_000, 256: 1_000}
EVALUATION_LOOKUPS = [1, 2, 4, 16, 64, 256]
MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


# ----------------------------------------------------------------------------- measuring
def reset_peak() -> None:
    """Restart the peak resident set size (VmHWM) of this process."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_gb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def timed(fn, repeats: int = 1):
    """Smallest wall time of ``repeats`` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# ----------------------------------------------------------------------------- synthetic data
def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays: a fixed random code per label key."""
    x = np.array(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= MIX[0]
        x ^= x >> np.uint64(27)
        x *= MIX[1]
        x ^= x >> np.uint64(31)
    return x


def noisy_codes(label_keys: np.ndarray, rng: np.random.Generator):
    """Codes (n, 8) of instances of these labels: the label's code with one random bit
    flipped in 10% of the instances; also the flipped bit of each instance (-1: none)."""
    words = mix64(label_keys ^ np.uint64(0x5DEECE66D))
    flipped = np.where(rng.random(len(words)) < NOISE_RATE, rng.integers(0, 64, len(words)), -1)
    noisy = flipped >= 0
    # bit b of the fingerprint is bit 7 - b % 8 of byte b // 8 (packbits order)
    byte, within = flipped[noisy] // 8, 7 - flipped[noisy] % 8
    codes = words.view(np.uint8).reshape(-1, 8)
    codes[np.flatnonzero(noisy), byte] ^= (1 << within).astype(np.uint8)
    return codes, flipped


def logits_of(codes: np.ndarray, flipped: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Synthetic encoder outputs: sign = the code's bits, |z| = 0.5 + |N(0, 2)|, and a small
    |z| ~ U(0, 0.5) on the flipped bit (the network is unsure where it erred)."""
    signs = np.unpackbits(codes, axis=1).astype(np.float32) * 2 - 1
    magnitude = (0.5 + np.abs(rng.normal(0, 2, signs.shape))).astype(np.float32)
    noisy = np.flatnonzero(flipped >= 0)
    magnitude[noisy, flipped[noisy]] = rng.uniform(0, 0.5, len(noisy))
    return signs * magnitude


def database_codes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, n])
    labels = rng.integers(0, n, size=n, dtype=np.uint64)
    codes, _ = noisy_codes(labels, rng)
    return codes


def lookup_queries(codes: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 1])
    half = N_LOOKUPS // 2
    present = codes[rng.integers(0, len(codes), half)]
    absent = rng.integers(0, 256, size=(N_LOOKUPS - half, 8), dtype=np.uint8)
    return np.ascontiguousarray(np.concatenate([present, absent])[rng.permutation(N_LOOKUPS)])


def probe_logits(codes: np.ndarray, q: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 2, q])
    base = codes[rng.integers(0, len(codes), q)].copy()
    base[q // 2:] = rng.integers(0, 256, size=(q - q // 2, 8), dtype=np.uint8)
    flipped = rng.integers(0, 64, q)
    base[np.arange(q), flipped // 8] ^= (1 << (7 - flipped % 8)).astype(np.uint8)
    return logits_of(base, flipped, rng)


# ----------------------------------------------------------------------------- children
def measure_equihash(n: int, seed: int, threads: int) -> dict:
    from equihash.index import build_index, read_index, write_index

    codes = database_codes(n, seed)
    reset_peak()
    build_s, index = timed(lambda: build_index(codes, threads=threads))
    peak = peak_gb()
    n_unique = index.n_unique
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        write_index(index, Path(tmp) / "index")
        disk = directory_bytes(Path(tmp) / "index")
        del index
        index = read_index(Path(tmp) / "index", threads=threads)
        queries = lookup_queries(codes, seed)
        lookup_s, (offsets, positions) = timed(lambda: index.lookup(queries), 3)
        lookup_one_thread_s, _ = timed(lambda: index.lookup(queries, threads=1), 3)
        singles = queries[:20_000]
        one_s, _ = timed(lambda: [index.lookup_one(code) for code in singles], 2)
        probes = {}
        for L, q in PROBE_QUERIES.items():
            logits = probe_logits(codes, q, seed)
            seconds, _ = timed(lambda: index.multiprobe(logits, L), 2)
            probes[L] = q / seconds
        loaded = index.memory_usage
    return {"system": "equihash", "n": n, "unique": n_unique / n, "build_s": build_s, "peak_gb": peak,
            "disk_per_code": disk / n, "loaded_per_code": loaded / n, "lookups_per_s": N_LOOKUPS / lookup_s,
            "lookups_per_s_1": N_LOOKUPS / lookup_one_thread_s, "retrieved": int(len(positions)), "hits": int(np.count_nonzero(np.diff(offsets))),
            "lookup_one_us": 1e6 * one_s / len(singles), "probe_qps": probes}


def measure_faiss(n: int, seed: int, threads: int) -> dict:
    import faiss

    from equihash.index import probe_codes

    faiss.omp_set_num_threads(threads)
    codes = database_codes(n, seed)
    reset_peak()
    before = rss_bytes()
    index = faiss.IndexBinaryHash(64, 64)
    build_s, _ = timed(lambda: index.add(codes))
    peak = peak_gb()
    loaded = rss_bytes() - before  # the hash table and its inverted lists, codes apart
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        path = str(Path(tmp) / "faiss.index")
        faiss.write_index_binary(index, path)
        disk = os.path.getsize(path)
    index.nflip = 0
    queries = lookup_queries(codes, seed)
    lookup_s, (limits, _, ids) = timed(lambda: index.range_search(queries, 1), 3)
    faiss.omp_set_num_threads(1)
    lookup_one_thread_s, _ = timed(lambda: index.range_search(queries, 1), 2)
    faiss.omp_set_num_threads(threads)
    singles = queries[:2_000]
    one_s, _ = timed(lambda: [index.range_search(code[None, :], 1) for code in singles], 2)
    probes = {}
    for L, q in FAISS_PROBE_QUERIES.items():
        logits = probe_logits(codes, q, seed)
        seconds, _ = timed(lambda: index.range_search(probe_codes(logits, L).reshape(q * L, 8), 1), 2)
        probes[L] = q / seconds
    return {"system": "faiss IndexBinaryHash", "n": n, "unique": float("nan"), "build_s": build_s,
            "peak_gb": peak, "disk_per_code": disk / n, "loaded_per_code": loaded / n,
            "lookups_per_s": N_LOOKUPS / lookup_s, "lookups_per_s_1": N_LOOKUPS / lookup_one_thread_s,
            "retrieved": int(len(ids)),
            "hits": int(np.count_nonzero(np.diff(limits))), "lookup_one_us": 1e6 * one_s / len(singles),
            "probe_qps": probes}


def write_fingerprints(labels_dir: Path, out: Path, bank_size: int, seed: int) -> None:
    """Fingerprint files of equihash/io.py from the labels files, with the synthetic encoder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from equihash.data.labels import encode_labels
    from equihash.io import (codes_array, column_to_numpy, fingerprint_schema, logits_array, query_schema,
                             read_labels, triplet_schema, write_table)

    out.mkdir(parents=True, exist_ok=True)
    schema = fingerprint_schema(8)
    with pq.ParquetWriter(out / "database.parquet", schema, compression="zstd") as writer:
        first = 0
        for chunk, batch in enumerate(pq.ParquetFile(labels_dir / "database.parquet").iter_batches(
                batch_size=1 << 20, columns=["labels"])):
            labels = column_to_numpy(batch.column("labels"))
            codes, _ = noisy_codes(encode_labels(labels, bank_size), np.random.default_rng([seed, 10, chunk]))
            ids = pa.array(np.arange(first, first + len(codes), dtype=np.uint64))
            writer.write_table(pa.table([ids, codes_array(codes)], schema=schema))
            first += len(codes)
    for stream, name in enumerate(("positive_queries", "negative_queries")):
        rng = np.random.default_rng([seed, 20 + stream])
        labels = read_labels(labels_dir / f"{name}.parquet", 4)
        codes, flipped = noisy_codes(encode_labels(labels, bank_size), rng)
        ids = pa.array(np.arange(len(codes), dtype=np.uint64))
        write_table(pa.table([ids, codes_array(codes), logits_array(logits_of(codes, flipped, rng))],
                             schema=query_schema(8)), out / f"{name}.parquet")
    rng = np.random.default_rng([seed, 30])
    anchor = encode_labels(read_labels(labels_dir / "negative_pairs.parquet", 4, column="anchor"), bank_size)
    negative = encode_labels(read_labels(labels_dir / "negative_pairs.parquet", 4, column="negative"), bank_size)
    members = {name: codes_array(noisy_codes(keys, rng)[0])
               for name, keys in (("anchor", anchor), ("positive", anchor), ("negative", negative))}
    write_table(pa.table(members, schema=triplet_schema(8)), out / "triplets.parquet")


def measure_evaluation(n: int, seed: int, threads: int, queries: int) -> dict:
    from equihash.data.labels import write_labels
    from equihash.evaluate.metrics import internal_collisions
    from equihash.evaluate.run import evaluate_run
    from equihash.index import build_index_from_parquet
    from equihash.io import code_type, read_columns, read_labels

    bank_size = 1
    while bank_size**4 <= n:
        bank_size += 1
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        tmp = Path(tmp)
        labels_s, _ = timed(lambda: write_labels(tmp / "labels", bank_size=bank_size, m=4, n_database=n,
                                                 n_positive=queries, n_negative=queries, n_pairs=queries,
                                                 seed=seed, split="test"))
        fingerprints_s, _ = timed(lambda: write_fingerprints(tmp / "labels", tmp / "fingerprints", bank_size, seed))
        reset_peak()
        build_s, index = timed(lambda: build_index_from_parquet(tmp / "fingerprints" / "database.parquet",
                                                                   tmp / "index", threads=threads))
        build_peak = peak_gb()
        disk, loaded, n_unique = directory_bytes(tmp / "index"), index.memory_usage, index.n_unique
        del index

        reset_peak()
        codes = read_columns(tmp / "fingerprints" / "database.parquet", {"code": code_type(8)})["code"]
        labels = read_labels(tmp / "labels" / "database.parquet", 4)
        collisions_s, collisions = timed(lambda: internal_collisions(codes, labels))
        del codes, labels

        reset_peak()
        metrics_s, document = timed(lambda: evaluate_run(
            index_dir=tmp / "index", database_labels=tmp / "labels" / "database.parquet",
            positive_labels=tmp / "labels" / "positive_queries.parquet",
            database=tmp / "fingerprints" / "database.parquet",
            positive_queries=tmp / "fingerprints" / "positive_queries.parquet",
            negative_queries=tmp / "fingerprints" / "negative_queries.parquet",
            triplets=tmp / "fingerprints" / "triplets.parquet", lookups=EVALUATION_LOOKUPS,
            names={"task": "MnistMosaic", "model": "synthetic", "variant": "main", "database": "benchmark"},
            out_path=tmp / "metrics.json"))
        metrics_peak = peak_gb()
    assert document["internal_collisions"] == collisions
    return {"system": "equihash Parquet + evaluate", "n": n, "unique": n_unique / n, "build_s": build_s,
            "peak_gb": build_peak, "disk_per_code": disk / n, "loaded_per_code": loaded / n,
            "collisions_s": collisions_s, "metrics_s": metrics_s, "metrics_peak_gb": metrics_peak,
            "labels_s": labels_s, "fingerprints_s": fingerprints_s, "bank_size": bank_size, "queries": queries,
            "document": {key: document[key] for key in ("internal_collisions", "equidict", "equiset")}
            | {"multiprobe": document["multiprobe"]}}


# ----------------------------------------------------------------------------- table
def run_child(task: dict) -> dict | None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(task)], capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        print(f"{task}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return format(value, fmt)


def print_table(rows: list[dict], threads: int) -> None:
    columns = ["system", "N", "unique", "build s", "build M codes/s", "peak RSS GB", "B/code disk",
               "B/code loaded", "lookups/s", "lookups/s 1 thread", "lookup_one us", "L=1 q/s", "L=16 q/s", "L=256 q/s",
               "collisions s", "all metrics s"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join(" --- " for _ in columns) + "|")
    for row in rows:
        probes = row.get("probe_qps", {})
        values = [row["system"], f"{row['n']:.0e}", cell(row.get("unique"), ".3f"), cell(row["build_s"], ".2f"),
                  cell(row["n"] / row["build_s"] / 1e6, ".1f"), cell(row["peak_gb"], ".2f"),
                  cell(row["disk_per_code"], ".2f"), cell(row["loaded_per_code"], ".2f"),
                  cell(row.get("lookups_per_s"), ".3g"), cell(row.get("lookups_per_s_1"), ".3g"),
                  cell(row.get("lookup_one_us"), ".1f")]
        values += [cell(probes.get(str(L)), ".3g") for L in (1, 16, 256)]
        values += [cell(row.get("collisions_s"), ".1f"), cell(row.get("metrics_s"), ".1f")]
        print("| " + " | ".join(values) + " |")
    print(f"\n{threads} thread(s) for every system unless said; peak RSS includes the N codes (8 B each) held in "
          "memory, except for the Parquet row (bounded build, 1 GiB budget).")
    for row in rows:
        if "retrieved" in row:
            print(f"{row['system']} N={row['n']:.0e}: {N_LOOKUPS:.0e} lookups retrieved {row['retrieved']} positions "
                  f"({row['hits']} queries hit)")
        if "document" in row:
            doc = row["document"]
            print(f"{row['system']} N={row['n']:.0e}: labels {row['labels_s']:.0f} s (bank {row['bank_size']}, "
                  f"{row['queries']:.0e} queries of each kind), fingerprint files {row['fingerprints_s']:.0f} s, "
                  f"evaluate_run peak RSS {row['metrics_peak_gb']:.2f} GB; internal collisions "
                  f"{doc['internal_collisions']}, recall {doc['equidict']['recall']:.4f}, perfect retrieval "
                  f"{doc['equidict']['perfect_retrieval_rate']:.4f}, recall with L = 256 "
                  f"{doc['multiprobe'][-1]['recall']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="*", default=[1e6, 1e7, 1e8])
    parser.add_argument("--faiss-sizes", type=float, nargs="*", default=[1e6, 1e7])
    parser.add_argument("--evaluate-size", type=float, default=1e8, help="0: no evaluation row")
    parser.add_argument("--queries", type=float, default=1e6,
                        help="positive queries, negative queries and negative pairs of the evaluation row")
    parser.add_argument("--threads", type=int, default=None, help="default: the CPUs of this process (<= 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        task = json.loads(args.child)
        kind = task.pop("kind")
        result = {"equihash": measure_equihash, "faiss": measure_faiss, "evaluate": measure_evaluation}[kind](**task)
        print(json.dumps(result))
        return

    from equihash.index.inverted import default_threads

    threads = args.threads or default_threads()
    try:
        import faiss  # noqa: F401
        faiss_sizes = args.faiss_sizes
    except ImportError:
        print("faiss-cpu is not installed (pip install faiss-cpu): faiss rows skipped", file=sys.stderr)
        faiss_sizes = []
    tasks = []
    for n in sorted(set(args.sizes) | set(faiss_sizes)):
        if n in args.sizes:
            tasks.append({"kind": "equihash", "n": int(n), "seed": args.seed, "threads": threads})
        if n in faiss_sizes:
            tasks.append({"kind": "faiss", "n": int(n), "seed": args.seed, "threads": threads})
    if args.evaluate_size:
        tasks.append({"kind": "evaluate", "n": int(args.evaluate_size), "seed": args.seed, "threads": threads,
                      "queries": int(args.queries)})
    rows = []
    for task in tasks:
        row = run_child(task)
        if row is not None:
            rows.append(row)
            print(f"done: {row['system']} N={row['n']:.0e}", file=sys.stderr)
    print_table(rows, threads)


if __name__ == "__main__":
    main()
