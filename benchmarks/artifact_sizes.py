"""Disk size of every artifact a configuration writes, computed with the real writers.

    python benchmarks/artifact_sizes.py --configfile config/thesis_openimages.yaml
    python benchmarks/artifact_sizes.py --configfile config/thesis_mnist.yaml --task MnistMosaic

The configuration is merged over config/config.yaml as Snakemake merges a --configfile.
Fixed-size artifacts (the Perlin file, the bank, the model) are computed from their
shapes; each Parquet artifact is written for a sample of rows with the pipeline's own
writers (labels: ``write_labels``; fingerprints: random codes and logits, which is what
a trained network's near-uniform bits look like to the compressor) and scaled linearly
to the configured count; the index is built from a sample and scaled by its bytes per
code. The bank of source ``hdf5`` is the user's files, read in place (listed, not
written); its split sizes default to the thesis' 100000 images (``--bank-size``).
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from equihash.data.labels import write_labels
from equihash.index import build_index, write_index
from equihash.io import codes_array, fingerprint_schema, logits_array, query_schema, triplet_schema, write_table
from equihash.tasks import build_network, get_task

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = 1_000_000  # rows written per Parquet artifact before scaling


def merged(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def parquet_bytes_per_row(table: pa.Table, directory: Path, name: str) -> float:
    path = directory / f"{name}.parquet"
    write_table(table, path)
    return file_bytes(path) / len(table)


def sizes(config: dict, task: str, db_name: str, bank_size: int) -> list[tuple[str, float, str]]:
    tc = config["tasks"][task]
    db = tc["databases"][db_name]
    record = get_task(task)
    k, m = tc["nbits"], record.cells
    nbytes = k // 8
    n, q_pos, q_neg, pairs = db["size"], db["positive_queries"], db["negative_queries"], db["negative_pairs"]
    rng = np.random.default_rng(0)
    rows: list[tuple[str, float, str]] = []
    if record.perlin:
        fields = config["perlin"]["fields"]
        rows.append(("perlin/perlin180x270.hdf5", 2 * fields * 180 * 270, f"2 x {fields} fields of 180x270 int8"))
    if not record.bank.single_file:  # one file per split, each of bank_size images
        where = "read in place" if tc["bank"]["source"] in record.bank.in_place else "written"
        (h, w), c, files = record.mosaic.tile, getattr(record.mosaic, "channels", 1), record.bank.files
        rows.append((f"bank: {'/'.join(files)}", len(files) * bank_size * h * w * c,
                     f"{len(files)} x {bank_size} images of {h}x{w}x{c} uint8 ({where})"))
    network = build_network(task, k, **tc.get("network", {}))
    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    params = sum(p.numel() for p in network.parameters())
    rows.append(("models/.../model.pt", buffer.tell(), f"{params:,} parameters, float32"))
    rows.append(("models/.../checkpoints/last.pt", 3 * buffer.tell(),
                 "network + Adam's two moments (one checkpoint, overwritten)"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sample = min(n, SAMPLE)
        write_labels(tmp / "labels", bank_size=bank_size, m=m, n_database=sample,
                     n_positive=min(q_pos, sample // 2), n_negative=min(q_neg, sample // 2),
                     n_pairs=min(pairs, sample // 2), seed=0, split="test")
        for name, count, what in (("database", n, "labels"), ("positive_queries", q_pos, "labels + ground truth"),
                                  ("negative_queries", q_neg, "labels"), ("negative_pairs", pairs, "2 labels")):
            written = pq.ParquetFile(tmp / "labels" / f"{name}.parquet").metadata.num_rows
            per_row = file_bytes(tmp / "labels" / f"{name}.parquet") / max(written, 1)
            rows.append((f"labels/.../{name}.parquet", per_row * count, f"{count:,} rows x {per_row:.1f} B ({what})"))
        codes = rng.integers(0, 256, size=(sample, nbytes), dtype=np.uint8)
        ids = pa.array(np.arange(sample, dtype=np.uint64))
        fp = pa.Table.from_arrays([ids, codes_array(codes)], schema=fingerprint_schema(nbytes))
        per_row = parquet_bytes_per_row(fp, tmp, "fingerprints")
        rows.append(("fingerprints/.../shards/*.parquet", per_row * n, f"{n:,} rows x {per_row:.1f} B, all shards"))
        rows.append(("fingerprints/.../database.parquet", per_row * n, "the merged shards"))
        q = min(max(q_pos, q_neg), SAMPLE)
        logits = rng.standard_normal((q, k)).astype(np.float32)
        queries = pa.Table.from_arrays([pa.array(np.arange(q, dtype=np.uint64)), codes_array(codes[:q]),
                                        logits_array(logits)], schema=query_schema(nbytes))
        per_row = parquet_bytes_per_row(queries, tmp, "queries")
        for name, count in (("positive_queries", q_pos), ("negative_queries", q_neg)):
            rows.append((f"fingerprints/.../{name}.parquet", per_row * count,
                         f"{count:,} rows x {per_row:.1f} B (code + {k} float32 logits)"))
        t = min(pairs, SAMPLE)
        triplets = pa.Table.from_arrays([codes_array(codes[:t])] * 3, schema=triplet_schema(nbytes))
        per_row = parquet_bytes_per_row(triplets, tmp, "triplets")
        rows.append(("fingerprints/.../triplets.parquet", per_row * pairs, f"{pairs:,} rows x {per_row:.1f} B"))
        index = build_index(codes)
        write_index(index, tmp / "index")
        per_code = file_bytes(tmp / "index") / sample
        rows.append(("index/.../", per_code * n, f"{per_code:.2f} B per database code"))
    rows.append(("metrics/.../metrics.json", 4096 + 16 * k, "figures and two histograms of k+1 counts"))
    return rows


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    raise AssertionError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", type=Path, help="merged over config/config.yaml")
    parser.add_argument("--task", default="OpenImagesMosaic")
    parser.add_argument("--database", default="default")
    parser.add_argument("--bank-size", type=int, default=100_000, help="images in the database's split")
    args = parser.parse_args()
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    if args.configfile:
        config = merged(config, yaml.safe_load(args.configfile.read_text()))
    rows = sizes(config, args.task, args.database, args.bank_size)
    print(f"{args.task}, database '{args.database}', under {config['results']}/ "
          f"({args.configfile or 'config/config.yaml'})")
    print(f"| artifact | size | how |\n|---|---:|---|")
    for name, size, how in rows:
        print(f"| {name} | {human(size)} | {how} |")
    written = sum(size for name, size, how in rows if "read in place" not in how)
    print(f"| **written in all** | **{human(written)}** | |")


if __name__ == "__main__":
    main()
