"""Benchmark of the labels stage (docs/method.md section 4): wall time, throughput and peak memory.

    python benchmarks/labels.py [--bank 10000] [--m 4] [--n-database 10000000]
                                [--n-positive 1000000] [--n-negative 1000000] [--n-pairs 1000000]

The work runs in a fresh child process that reports its own peak resident set size
(``ru_maxrss``, interpreter and imports included), so the memory figure is the honest
peak of the process that generated the labels. Files go to a temporary directory.
Phases are timed from the stage's progress callbacks: pass 1 (draw the positive
candidates and read their labels), pass 2 (draw the negative candidates, generate and
write the database, match it against the candidates), then accepting the queries (and
any rare rescan), drawing the pairs and writing the three query files.
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
    """Run write_labels in this process and return timings and the peak RSS."""
    import resource

    from equihash.data.labels import LABEL_FILES, write_labels

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    marks: dict[str, float] = {}

    def progress(stage, done, total):
        marks[stage] = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        counts = write_labels(
            out, bank_size=args.bank, m=args.m, n_database=args.n_database,
            n_positive=args.n_positive, n_negative=args.n_negative, n_pairs=args.n_pairs,
            seed=args.seed, split="test", progress=progress,
        )
        end = time.perf_counter()
        sizes = {name: os.path.getsize(Path(out) / f"{name}.parquet") for name in LABEL_FILES}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    pass1_end = marks.get("positive query labels", start)
    pass2_end = marks.get("database", pass1_end)
    return {
        "counts": counts, "sizes": sizes, "baseline_kib": baseline, "peak_kib": peak,
        "phases": {
            "pass 1: positive candidates' labels": pass1_end - start,
            "pass 2: database written + matched": pass2_end - pass1_end,
            "queries + pairs built and written": end - pass2_end,
            "total": end - start,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", type=int, default=10_000, help="bank size B (images in the split)")
    parser.add_argument("--m", type=int, default=4, help="cells per mosaic")
    parser.add_argument("--n-database", type=int, default=10_000_000)
    parser.add_argument("--n-positive", type=int, default=1_000_000)
    parser.add_argument("--n-negative", type=int, default=1_000_000)
    parser.add_argument("--n-pairs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(work(args)))
        return

    command = [sys.executable, __file__, "--worker"] + sys.argv[1:]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout)

    n = args.n_database
    print(f"labels stage: B={args.bank} m={args.m} N={n:,} positive={args.n_positive:,} "
          f"negative={args.n_negative:,} pairs={args.n_pairs:,} ({os.cpu_count()} CPUs)")
    print(f"{'phase':<36} {'wall s':>8} {'db rows/s':>14}")
    for phase, seconds in result["phases"].items():
        rate = f"{n / seconds:,.0f}" if phase.startswith(("pass", "total")) and seconds > 0 else "-"
        print(f"{phase:<36} {seconds:>8.2f} {rate:>14}")
    print(f"{'peak RSS MiB (baseline after imports)':<36} {result['peak_kib'] / 1024:>8.0f} "
          f"{'(' + format(result['baseline_kib'] / 1024, '.0f') + ')':>14}")
    counts = result["counts"]
    print(f"ground-truth positions {counts['ground_truth_positions']:,}, draws: positive "
          f"{counts['positive_draws']:,}, negative {counts['negative_draws']:,}; file MB: "
          + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in result["sizes"].items()))


if __name__ == "__main__":
    main()
