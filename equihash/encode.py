"""Encoding (THESIS.md 7): database shards, their merge, queries and triplets.

Database instance ``i`` is the noisy mosaic of ``labels[i]`` with the noise of item ``i``
of the keyed stream ``(seed, split, "database")``; positive and negative queries and the
three members of each triplet have streams of their own.

The network always runs on batches of exactly ``FORWARD_BATCH`` instances (the last one
padded): CPU kernels round differently for different batch sizes, though never for
different batch contents or positions, so a fixed forward batch makes every fingerprint
independent of where a shard starts, and the merged database byte-identical for any
shard count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from equihash.codes import pack_codes
from equihash.data.keyed import KeyedRandom
from equihash.data.mosaic import task_class
from equihash.io import (InputError, atomic_path, check_schema, codes_array, column_to_numpy, fingerprint_schema,
                         labels_type, logits_array, query_schema, read_label_rows, read_labels,
                         triplet_schema, write_table)
from equihash.nn.cpu import keep_freed_memory
from equihash.progress import Progress
from equihash.train.loop import load_model

ROW_GROUP = 1 << 20  # rows per Parquet row group of fingerprint files
FORWARD_BATCH = 256  # part of the fingerprint definition; measured fastest on 2 CPU cores (benchmarks/encode.py)


def shard_range(n: int, shard: int, nb_shards: int) -> tuple[int, int]:
    """Contiguous, balanced row range [start, stop) of shard ``shard`` of ``nb_shards``."""
    if nb_shards < 1 or not 0 <= shard < nb_shards:
        raise InputError(f"shard index {shard} out of range for nb_shards = {nb_shards}")
    return n * shard // nb_shards, n * (shard + 1) // nb_shards


class Encoder:
    """A trained network and its task's mosaic: labels -> logits for keyed instances."""

    def __init__(self, model_path, bank: np.ndarray, batch_size: int = FORWARD_BATCH):
        keep_freed_memory()
        self.net, self.config = load_model(model_path)
        self.net = self.net.to(memory_format=torch.channels_last)
        self.mosaic = task_class(self.config["task"])(bank, sigma=self.config["noise_sigma"])
        self.nbits = self.config["nbits"]
        self.batch_size = batch_size

    @torch.inference_mode()
    def logits(self, labels: np.ndarray, rng: KeyedRandom, indices: np.ndarray, progress=None) -> np.ndarray:
        """(n, k) float32 logits of the instances ``indices`` of stream ``rng`` with these labels."""
        out = np.empty((len(labels), self.nbits), dtype=np.float32)
        bs = self.batch_size
        for lo in range(0, len(labels), bs):
            hi = min(lo + bs, len(labels))
            x = self.mosaic.noisy(labels[lo:hi], rng, indices[lo:hi])
            if hi - lo < bs:  # pad: the network always sees full batches
                x = np.concatenate([x, np.zeros((bs - (hi - lo), *x.shape[1:]), np.float32)])
            out[lo:hi] = self.net(torch.from_numpy(x))[: hi - lo].numpy()
            if progress is not None:
                progress.update(hi - lo)
        return out


def encode_database_shard(encoder: Encoder, labels_path, *, seed: int, split: str, shard: int,
                          nb_shards: int, out_path) -> None:
    """Write shard ``shard`` of ``nb_shards``: `id`, `code` for its contiguous range of positions."""
    check_schema(labels_path, {"labels": labels_type(encoder.mosaic.cells)})
    start, stop = shard_range(pq.ParquetFile(labels_path).metadata.num_rows, shard, nb_shards)
    rng = KeyedRandom(seed, split, "database")
    schema = fingerprint_schema(encoder.nbits // 8)
    with atomic_path(out_path) as tmp, \
            Progress(stop - start, f"encode shard {shard}/{nb_shards}", "mosaic") as bar:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for lo in range(start, stop, ROW_GROUP):
                hi = min(lo + ROW_GROUP, stop)
                labels = read_label_rows(labels_path, lo, hi)
                ids = np.arange(lo, hi, dtype=np.uint64)
                codes = pack_codes(encoder.logits(labels, rng, ids, bar))
                writer.write_table(pa.table([pa.array(ids), codes_array(codes)], schema=schema))


def merge_shards(shard_paths, out_path, nbytes: int) -> int:
    """Concatenate shards in order into one file; checks that ids form one contiguous range 0..N-1.

    Row groups are re-cut to ``ROW_GROUP`` rows, so the bytes do not depend on the shard count.
    """
    schema = fingerprint_schema(nbytes)
    expected_id = 0
    ids_buf, codes_buf = [], []

    def flush(writer, final=False):
        nonlocal ids_buf, codes_buf
        ids, codes = np.concatenate(ids_buf), np.concatenate(codes_buf)
        cut = len(ids) if final else len(ids) - len(ids) % ROW_GROUP
        if cut:
            writer.write_table(pa.table([pa.array(ids[:cut]), codes_array(codes[:cut])], schema=schema),
                               row_group_size=ROW_GROUP)
        ids_buf, codes_buf = [ids[cut:]], [codes[cut:]]

    with atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        ids_buf, codes_buf = [np.empty(0, np.uint64)], [np.empty((0, nbytes), np.uint8)]
        for path in shard_paths:
            check_schema(path, {"id": pa.uint64(), "code": schema.field("code").type})
            for batch in pq.ParquetFile(path).iter_batches(batch_size=ROW_GROUP):
                ids = batch.column("id").to_numpy()
                if len(ids) and (ids[0] != expected_id or np.any(np.diff(ids.astype(np.int64)) != 1)):
                    raise InputError(f"{path}: ids must continue the contiguous range at {expected_id}, "
                                     f"got {ids[0]}..{ids[-1]} with gaps")
                expected_id += len(ids)
                ids_buf.append(ids)
                codes_buf.append(column_to_numpy(batch.column("code")))
                if sum(len(b) for b in ids_buf) >= ROW_GROUP:
                    flush(writer)
        flush(writer, final=True)
    return expected_id


def encode_queries(encoder: Encoder, labels_dir, *, seed: int, split: str, out_positive, out_negative,
                   out_triplets) -> None:
    """Fingerprints and logits of the positive and negative queries; codes of the triplets."""
    labels_dir = Path(labels_dir)
    nbytes = encoder.nbits // 8
    for name, out in (("positive_queries", out_positive), ("negative_queries", out_negative)):
        labels = read_labels(labels_dir / f"{name}.parquet", encoder.mosaic.cells)
        ids = np.arange(len(labels), dtype=np.uint64)
        with Progress(len(labels), f"encode {name}", "mosaic") as bar:
            logits = encoder.logits(labels, KeyedRandom(seed, split, name), ids, bar)
        table = pa.table([pa.array(ids), codes_array(pack_codes(logits)), logits_array(logits)],
                         schema=query_schema(nbytes))
        write_table(table, out)
    pairs_path = labels_dir / "negative_pairs.parquet"
    kind = labels_type(encoder.mosaic.cells)
    check_schema(pairs_path, {"anchor": kind, "negative": kind})
    anchor = read_labels(pairs_path, encoder.mosaic.cells, column="anchor")
    negative = read_labels(pairs_path, encoder.mosaic.cells, column="negative")
    ids = np.arange(len(anchor), dtype=np.uint64)
    members = {}
    with Progress(3 * len(anchor), "encode triplets", "mosaic") as bar:
        for member, labels in (("anchor", anchor), ("positive", anchor), ("negative", negative)):
            rng = KeyedRandom(seed, split, f"triplet_{member}")
            members[member] = codes_array(pack_codes(encoder.logits(labels, rng, ids, bar)))
    write_table(pa.table(members, schema=triplet_schema(nbytes)), out_triplets)
