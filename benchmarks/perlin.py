"""Benchmark of the Perlin noise file (docs/method.md section 3): fields per second, peak memory, thesis projection.

    python benchmarks/perlin.py [--n 2048] [--blocks 16 64 256 1024] [--periods 180 90]

For every block size a fresh child process writes a Perlin file of ``--n`` fields per
dataset (so 2n fields) with ``generate_perlin_file`` to a temporary directory and
reports its wall time, the time spent in ``perlin_fields`` alone (generation without
HDF5 writes) and its peak resident set size (``ru_maxrss``, interpreter and imports
included; the baseline after imports is printed beside it). The thesis-size file
(``THESIS_FIELDS`` per dataset, about 6 GB) is projected from each measured rate, and
its size from the measured file: n * 97,200 bytes of data plus the file's metadata.
The projection is linear because generation has no per-file state: each block costs
the same. Wall times are noisy on a shared machine.
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

ROOT = Path(__file__).resolve().parents[1]


def work(args) -> dict:
    """Write one file in this process; return timings, sizes and peak RSS."""
    import resource

    import equihash.data.perlin as perlin

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    generating = 0.0
    fields = perlin.perlin_fields

    def timed_fields(*a, **k):
        nonlocal generating
        start = time.perf_counter()
        out = fields(*a, **k)
        generating += time.perf_counter() - start
        return out

    perlin.perlin_fields = timed_fields  # generate_perlin_file looks the name up at call time
    with tempfile.TemporaryDirectory(dir=args.dir) as out:
        path = Path(out) / "perlin180x270.hdf5"
        start = time.perf_counter()
        perlin.generate_perlin_file(path, args.n, periods=tuple(args.periods), block=args.block)
        wall = time.perf_counter() - start
        size = path.stat().st_size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    data = args.n * len(perlin.DATASETS) * perlin.FIELD_BYTES
    return {"wall": wall, "generating": generating, "size": size, "overhead": size - data,
            "baseline_kib": baseline, "peak_kib": peak, "thesis_fields": perlin.THESIS_FIELDS,
            "fields": args.n * len(perlin.DATASETS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2048, help="fields per dataset in each measured file")
    parser.add_argument("--blocks", type=int, nargs="+", default=[16, 64, 256, 1024])
    from equihash.data.perlin import DEFAULT_PERIODS

    parser.add_argument("--periods", type=int, nargs=2, default=list(DEFAULT_PERIODS))
    parser.add_argument("--dir", default=None, help="directory for the temporary files (default: system temp)")
    parser.add_argument("--block", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(work(args)))
        return

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    print(f"Perlin file: n={args.n:,} fields per dataset ({2 * args.n:,} fields), periods "
          f"{tuple(args.periods)}, {os.cpu_count()} CPUs")
    header = (f"{'block':>6} {'fields/s':>9} {'gen only':>9} {'peak RSS MiB':>13} {'(baseline)':>10} "
              f"{'thesis file min':>16} {'thesis GB':>10}")
    print(header)
    for block in args.blocks:
        command = [sys.executable, __file__, "--worker", "--block", str(block), "--n", str(args.n),
                   "--periods", *map(str, args.periods)] + (["--dir", args.dir] if args.dir else [])
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True,
                                           env=env).stdout)
        rate = result["fields"] / result["wall"]
        thesis_fields = 2 * result["thesis_fields"]
        thesis_bytes = thesis_fields * 48_600 + result["overhead"]
        print(f"{block:>6} {rate:>9,.0f} {result['fields'] / result['generating']:>9,.0f} "
              f"{result['peak_kib'] / 1024:>13,.0f} {result['baseline_kib'] / 1024:>10,.0f} "
              f"{thesis_fields / rate / 60:>16.1f} {thesis_bytes / 1e9:>10.3f}")
    print(f"thesis file: THESIS_FIELDS={result['thesis_fields']:,} per dataset = {thesis_fields:,} fields; "
          f"metadata overhead {result['overhead']:,} bytes")


if __name__ == "__main__":
    main()
