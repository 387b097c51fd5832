"""The evaluation chain of one run at N database fingerprints as a fan-out of bounded jobs.

The stages of the workflow after encoding, each job a child process as a SLURM job would be
(its peak RSS read from the kernel when it exits), ``--jobs`` at a time:

1. ``labels``: ``write_labels`` (m = 2, the OpenImages mosaic; a bank of B images with
   B**2 just above N, so about a third of the database repeats a label), with ``--queries``
   positive queries, negative queries and negative pairs;
2. ``fingerprints``: ``--shards`` jobs, each the fingerprints of one contiguous range of
   the database labels under the code model of ``benchmarks/index.py`` (a fixed random
   64-bit code per label, one bit flipped on 10% of the instances), one job for the
   queries (codes and logits) and the triplets, then ``merge_shards``;
3. ``index``: one job per partition (``build_index_from_parquet`` with the partition's
   prefix, sorting in chunks of half ``--memory-mb``), then ``join_partitions``;
4. ``evaluate``: one ``evaluate_partition_files`` job per partition, then
   ``combine_partition_files`` writes metrics.json.

With ``--check-whole`` it also evaluates the unpartitioned index of the same database in
one job (``evaluate_run``) and asserts that the two metrics.json are the same bytes.

    python benchmarks/scale.py [--n 1e9] [--partitions 16] [--queries 1e6] [--shards 16]
                               [--memory-mb 8000] [--jobs 2] [--workdir DIR] [--check-whole]

Prints one table: per stage its jobs, wall time, the largest peak RSS of its jobs and the
disk used under the work folder when it ends. The work folder is removed at the end
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOOKUPS = [1, 2, 4, 16, 64, 256]
NAMES = {"task": "OpenImagesMosaic", "model": "synthetic", "variant": "main", "database": "benchmark"}
PROVENANCE = {"equihash_version": "benchmark", "git_commit": None, "dirty": None, "config_sha256": None,
              "nb_shards": None}


# ----------------------------------------------------------------------------- the jobs
def job_labels(out, n, queries, bank_size, seed):
    from equihash.data.labels import write_labels

    write_labels(out, bank_size=bank_size, m=2, n_database=n, n_positive=queries, n_negative=queries,
                 n_pairs=queries, seed=seed, split="test")


def job_shard(labels, out, start, stop, bank_size, seed):
    """Fingerprints of database rows [start, stop) under the code model of benchmarks/index.py."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from index import noisy_codes

    from equihash.data.labels import encode_labels
    from equihash.io import atomic_path, codes_array, column_to_numpy, fingerprint_schema

    schema = fingerprint_schema(8)
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer, \
            pq.ParquetFile(labels, pre_buffer=False) as reader:
        row = 0
        for batch in reader.iter_batches(batch_size=1 << 20, columns=["labels"]):
            lo, hi = max(start, row), min(stop, row + batch.num_rows)
            if lo < hi:
                rows = column_to_numpy(batch.column("labels"))[lo - row:hi - row]
                codes, _ = noisy_codes(encode_labels(rows, bank_size), np.random.default_rng([seed, 10, lo]))
                writer.write_table(pa.table([pa.array(np.arange(lo, hi, dtype=np.uint64)), codes_array(codes)],
                                            schema=schema))
            row += batch.num_rows
            if row >= stop:
                break


def job_queries(labels_dir, out_dir, bank_size, seed):
    import numpy as np
    import pyarrow as pa

    from index import logits_of, noisy_codes

    from equihash.data.labels import encode_labels
    from equihash.io import codes_array, logits_array, query_schema, read_labels, triplet_schema, write_table

    labels_dir, out_dir = Path(labels_dir), Path(out_dir)
    for stream, name in enumerate(("positive_queries", "negative_queries")):
        rng = np.random.default_rng([seed, 20 + stream])
        codes, flipped = noisy_codes(encode_labels(read_labels(labels_dir / f"{name}.parquet", 2), bank_size), rng)
        write_table(pa.table([pa.array(np.arange(len(codes), dtype=np.uint64)), codes_array(codes),
                              logits_array(logits_of(codes, flipped, rng))], schema=query_schema(8)),
                    out_dir / f"{name}.parquet")
    rng = np.random.default_rng([seed, 30])
    pairs = labels_dir / "negative_pairs.parquet"
    anchor = encode_labels(read_labels(pairs, 2, column="anchor"), bank_size)
    negative = encode_labels(read_labels(pairs, 2, column="negative"), bank_size)
    members = {name: codes_array(noisy_codes(keys, rng)[0])
               for name, keys in (("anchor", anchor), ("positive", anchor), ("negative", negative))}
    write_table(pa.table(members, schema=triplet_schema(8)), out_dir / "triplets.parquet")


def job_merge(shards, out):
    from equihash.encode import merge_shards

    merge_shards(shards, out, nbytes=8)


def job_index(database, out, prefix_bits, prefix, memory_mb):
    from equihash.index import build_index_from_parquet

    build_index_from_parquet(database, out, prefix_bits=prefix_bits, prefix=prefix, memory_budget=memory_mb << 19)


def job_join(index_dir, prefix_bits):
    from equihash.index.format import join_partitions

    join_partitions(index_dir, prefix_bits)


def run_files(work: Path, index_dir: Path) -> dict:
    return dict(index_dir=index_dir, database_labels=work / "labels" / "database.parquet",
                positive_labels=work / "labels" / "positive_queries.parquet",
                negative_labels=work / "labels" / "negative_queries.parquet",
                database=work / "fingerprints" / "database.parquet",
                positive_queries=work / "fingerprints" / "positive_queries.parquet",
                negative_queries=work / "fingerprints" / "negative_queries.parquet")


def job_evaluate_partition(work, index_dir, out, memory_mb):
    from equihash.evaluate.run import evaluate_partition_files

    evaluate_partition_files(**run_files(Path(work), Path(index_dir)), lookups=LOOKUPS, out_path=out,
                             memory_budget=memory_mb << 19)


def job_combine(work, partitions, out):
    from equihash.evaluate.run import combine_partition_files

    work = Path(work)
    combine_partition_files(partitions=partitions, positive_labels=work / "labels" / "positive_queries.parquet",
                            triplets=work / "fingerprints" / "triplets.parquet", names=NAMES, out_path=out,
                            provenance=PROVENANCE)


def job_whole(work, out, memory_mb):
    from equihash.evaluate.run import evaluate_run
    from equihash.index import build_index_from_parquet

    work = Path(work)
    files = run_files(work, work / "whole-index")
    build_index_from_parquet(files["database"], files["index_dir"], memory_budget=memory_mb << 19)
    evaluate_run(**files, triplets=work / "fingerprints" / "triplets.parquet", lookups=LOOKUPS, names=NAMES,
                 out_path=out, provenance=PROVENANCE, memory_budget=memory_mb << 19)


JOBS = {name.removeprefix("job_"): fn for name, fn in globals().items() if name.startswith("job_")}


# ----------------------------------------------------------------------------- running them
def run_jobs(specs: list[tuple[str, dict]], parallel: int) -> float:
    """Run each (job, keyword arguments) as a child process, ``parallel`` at a time; return
    the largest peak RSS in GB. A failed job stops the benchmark with its output."""
    peak, pending, running = 0.0, list(specs), {}
    while pending or running:
        while pending and len(running) < parallel:
            name, kwargs = pending.pop(0)
            child = subprocess.Popen([sys.executable, __file__, "--job", name, json.dumps(kwargs, default=str)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            running[child.pid] = (child, name)
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        child, name = running.pop(pid)
        output = child.stdout.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"job {name} failed:\n{output[-4000:]}")
        peak = max(peak, usage.ru_maxrss / 2**20)  # KB on Linux
    return peak


def disk_gb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=float, default=1e9)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--queries", type=float, default=1e6)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--memory-mb", type=int, default=8000)
    parser.add_argument("--jobs", type=int, default=2, help="jobs at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder in benchmarks/")
    parser.add_argument("--check-whole", action="store_true")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--job", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        JOBS[args.job[0]](**json.loads(args.job[1]))
        return

    n, queries, parts = int(args.n), int(args.queries), args.partitions
    bits = parts.bit_length() - 1
    if parts != 2**bits:
        raise SystemExit(f"--partitions {parts}: expected a power of two")
    bank_size = math.isqrt(n) + 1  # B**2 > N
    work = Path(tempfile.mkdtemp(dir=ROOT / "benchmarks", prefix="scale-")) if args.workdir is None else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    fp, index, counts = work / "fingerprints", work / "index", work / "metrics" / "partitions"
    for folder in (fp / "shards", index, counts):
        folder.mkdir(parents=True, exist_ok=True)
    bounds = [n * s // args.shards for s in range(args.shards + 1)]
    shards = [fp / "shards" / f"{s}-of-{args.shards}.parquet" for s in range(args.shards)]
    names = [f"{v}-of-{parts}" for v in range(parts)]
    stages = [
        ("labels", [("labels", dict(out=work / "labels", n=n, queries=queries, bank_size=bank_size, seed=args.seed))]),
        ("fingerprint shards, queries", [("shard", dict(labels=work / "labels" / "database.parquet", out=shards[s],
                                                        start=bounds[s], stop=bounds[s + 1], bank_size=bank_size,
                                                        seed=args.seed)) for s in range(args.shards)]
         + [("queries", dict(labels_dir=work / "labels", out_dir=fp, bank_size=bank_size, seed=args.seed))]),
        ("merge shards", [("merge", dict(shards=shards, out=fp / "database.parquet"))]),
        (f"index, {parts} partitions", [("index", dict(database=fp / "database.parquet", out=index / name,
                                                       prefix_bits=bits, prefix=v, memory_mb=args.memory_mb))
                                        for v, name in enumerate(names)]),
        ("join index", [("join", dict(index_dir=index, prefix_bits=bits))]),
        (f"evaluate, {parts} partitions", [("evaluate_partition", dict(work=work, index_dir=index / name,
                                                                       out=counts / f"{name}.parquet",
                                                                       memory_mb=args.memory_mb))
                                           for name in names]),
        ("combine", [("combine", dict(work=work, partitions=[counts / f"{name}.parquet" for name in names],
                                      out=work / "metrics" / "metrics.json"))]),
    ]
    if args.check_whole:
        stages.append(("whole index and evaluate_run (check)",
                       [("whole", dict(work=work, out=work / "whole.json", memory_mb=args.memory_mb))]))
    print(f"N = {n:.0e}, {parts} partitions, {queries:.0e} queries of each kind, lookups {LOOKUPS}, "
          f"{args.jobs} jobs at a time, {os.cpu_count()} CPUs, work folder {work}", flush=True)
    rows, start = [], time.monotonic()
    try:
        for name, jobs in stages:
            began = time.monotonic()
            peak = run_jobs(jobs, args.jobs)
            rows.append((name, len(jobs), time.monotonic() - began, peak, disk_gb(work)))
            print(f"  {name}: {rows[-1][2]:.0f} s, peak RSS {peak:.2f} GB, disk {rows[-1][4]:.1f} GB", flush=True)
            if name == "merge shards":
                shutil.rmtree(fp / "shards")  # the merged database replaces them, as in the workflow's scratch
        total = time.monotonic() - start
        metrics = json.loads((work / "metrics" / "metrics.json").read_text())
        if args.check_whole:
            same = (work / "whole.json").read_bytes() == (work / "metrics" / "metrics.json").read_bytes()
            assert same, "metrics.json of the partitions differs from the whole index's"
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("| stage | jobs | wall s | peak RSS per job, GB (max) | disk after, GB |")
    print("|---|---:|---:|---:|---:|")
    for name, jobs, seconds, peak, disk in rows:
        print(f"| {name} | {jobs} | {seconds:,.0f} | {peak:.2f} | {disk:.1f} |")
    print(f"| **all** | {sum(r[1] for r in rows)} | **{total:,.0f}** | **{max(r[3] for r in rows):.2f}** | "
          f"max {max(r[4] for r in rows):.1f} |")
    print(f"\nrecall {metrics['equidict']['recall']:.4f}, internal collisions {metrics['internal_collisions']:,}, "
          f"multi-probe recall at {LOOKUPS[-1]} lookups {metrics['multiprobe'][-1]['recall']:.4f}"
          + ("; metrics.json identical to the whole index's" if args.check_whole else ""))


if __name__ == "__main__":
    main()
