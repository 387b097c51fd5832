"""Verifying a saved index at load: the checksum candidates, and ``InvertedIndex.load``.

A saved index records the CRC-32 of every array file and ``load`` checks them (the
format in ``equihash/index/inverted.py``). This script builds an index of N codes (as
``benchmarks/index.py``: labels drawn with replacement, 10% of the instances one bit off),
saves it, then prints one table:

* ``checksum <name>``: each candidate, run over the bytes of the index arrays held in
  memory, one thread: ``zlib.crc32`` (the one used), ``zlib.adler32``, hashlib's
  ``sha1``, ``sha256`` and ``blake2b``, and a vectorised numpy sum of the 64-bit words
  (fast, but blind to words swapped or changed by opposite amounts);
* ``file_crc32``: the CRC-32 of the array files read back in 8 MiB blocks (one thread),
  what ``load`` runs per file;
* ``load verify=False`` / ``load verify=True``: ``InvertedIndex.load`` (memory-mapped)
  on 1 thread and on ``--threads``; the rate of a verifying load is the index bytes over
  the time the verification adds.

The files were just written, so they are in the page cache: the figures are the CPU
cost. A cold load reads the files at the disk's rate on top (dropping the page cache
needs root, so it is not measured here).

    python benchmarks/index_load.py [--size 2e7] [--threads T] [--repeats 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index import database_codes, timed  # noqa: E402  (the benchmark's synthetic codes)

from equihash.index import build_index, read_index, write_index  # noqa: E402
from equihash.index.format import file_crc32  # noqa: E402
from equihash.index.inverted import default_threads  # noqa: E402


def word_sum(buffer: memoryview) -> int:
    """The sum modulo 2**64 of the little-endian 64-bit words (zero-padded)."""
    head = len(buffer) // 8 * 8
    total = int(np.frombuffer(buffer[:head], dtype="<u8").sum(dtype=np.uint64))
    return total + int.from_bytes(bytes(buffer[head:]), "little")


CANDIDATES = {
    "zlib.crc32": lambda b: zlib.crc32(b),
    "zlib.adler32": lambda b: zlib.adler32(b),
    "hashlib sha1": lambda b: hashlib.sha1(b).digest(),
    "hashlib sha256": lambda b: hashlib.sha256(b).digest(),
    "hashlib blake2b": lambda b: hashlib.blake2b(b).digest(),
    "numpy 64-bit word sum": word_sum,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=float, default=2e7, help="database codes N (default: %(default)g)")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="threads of the second load row (default: %(default)s, this machine's CPUs up to 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per row; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = int(args.size)

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "index"
        write_index(build_index(database_codes(n, args.seed)), directory)
        files = sorted(directory.glob("*.bin"))
        total = sum(path.stat().st_size for path in files)
        buffers = [memoryview(path.read_bytes()) for path in files]
        rows = []
        for name, checksum in CANDIDATES.items():
            seconds, _ = timed(lambda: [checksum(buffer) for buffer in buffers], args.repeats)
            rows.append((f"checksum {name}", 1, seconds, total / seconds))
        del buffers
        seconds, _ = timed(lambda: [file_crc32(path) for path in files], args.repeats)
        rows.append(("file_crc32 (8 MiB reads)", 1, seconds, total / seconds))
        for threads in sorted({1, args.threads}):
            plain, _ = timed(lambda: read_index(directory, verify=False, threads=threads), args.repeats)
            verified, _ = timed(lambda: read_index(directory, threads=threads), args.repeats)
            rows.append(("load verify=False", threads, plain, float("nan")))
            rows.append(("load verify=True", threads, verified, total / max(verified - plain, 1e-9)))

    print(f"index of N = {n:,} codes: {total / 1e9:.3f} GB in {len(files)} array files "
          f"({total / n:.2f} B per code), in the page cache")
    print(f"{'what':<30} {'threads':>7} {'seconds':>9} {'GB/s':>7}")
    for what, threads, seconds, rate in rows:
        print(f"{what:<30} {threads:>7} {seconds:>9.4f} {rate / 1e9:>7.2f}")
    crc = next(rate for what, _, _, rate in rows if what == "file_crc32 (8 MiB reads)")
    print(f"at this rate a 1e9-code index (13 GB) verifies in {13e9 / crc:.1f} s on one thread")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"(benchmark ran {time.perf_counter() - start:.0f} s)")
