"""Encoding (docs/method.md section 7): database shards, their merge, queries and triplets.

Database instance ``i`` is the noisy mosaic of ``labels[i]`` with the noise of item ``i``
of the keyed stream ``(seed, split, "database")``; positive and negative queries and the
three members of each triplet have streams of their own.

The network always runs on batches of exactly the *forward batch* of instances
(``encode.forward_batch``, default :data:`FORWARD_BATCH`; the last batch padded): CPU kernels
round differently for different batch sizes, though never for different batch contents or
positions, so a fixed forward batch makes every fingerprint independent of where a shard
starts, and the merged database byte-identical for any shard count. The fingerprint of an
instance is thus a function of (model file, bank split, labels row, seed, split, position,
forward batch, precision); how the work is cut (shards, parts, row groups, resumptions) never
changes it. Fingerprint files record the forward batch and the precision in their schema
metadata (``equihash.io.fingerprint_encoding``), and the merge refuses shards that differ in
either.

Resumable shards. A shard is encoded in *parts* of ``part_rows`` rows; each finished
part is saved (atomically) in ``.{shard file}.partial/`` beside the shard file, together
with the SHA-256 of the labels rows it was computed from. A killed job (preempted,
out of time, SIGKILL) that runs again reuses every saved part whose labels still match
and encodes only the rest, then writes the shard file, byte-identical to an
uninterrupted run, and removes the partial directory. The directory is not a rule
output, so Snakemake keeps it when a job fails. Its ``spec.json`` records what every
part depends on besides its labels (SHA-256 of the model file bytes and of the bank
split, seed, split, shard range, part size, forward batch, torch version, device,
precision and, on the CPU, what selects its kernels: :func:`cpu_kernels`): a partial state
of another model, bank, shard, precision or kind of CPU is discarded, never mixed in.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from equihash.codes import pack_codes
from equihash.data.keyed import KeyedRandom
from equihash.tasks import array_identity, make_mosaic, open_bank
from equihash.io import (ENCODING_KEYS, InputError, atomic_path, check_schema, codes_array, column_to_numpy,
                         fingerprint_encoding, fingerprint_schema, labels_type, logits_array, query_schema,
                         read_label_rows, read_labels, triplet_schema, write_json, write_table)
from equihash.nn.cpu import cpu_flags, keep_freed_memory
from equihash.nn.precision import precision_context, resolve_precision
from equihash.progress import Progress, logger
from equihash.train.loop import load_model, resolve_device

ROW_GROUP = 1 << 20  # rows per Parquet row group of fingerprint files
FORWARD_BATCH = 256  # the default forward batch, config encode.forward_batch's (tests/test_encode.py checks)
#: Forward batches encoded at once (Encoder.logits), each lane holding one batch's
#: activations: the OpenImagesMosaic encoder (ResNet-18) peaks at 3.4 GB in bf16 and 4.9 GB
#: in fp32 (benchmarks/encode.py --task OpenImagesMosaic).
LANES = 2
PART_ROWS = 1 << 16  # rows per resumable part of a shard: at most this much work is lost to a kill
PARTIAL_FORMAT = 1


def shard_range(n: int, shard: int, nb_shards: int) -> tuple[int, int]:
    """Contiguous, balanced row range [start, stop) of shard ``shard`` of ``nb_shards``."""
    if nb_shards < 1 or not 0 <= shard < nb_shards:
        raise InputError(f"shard index {shard} out of range for nb_shards = {nb_shards}")
    return n * shard // nb_shards, n * (shard + 1) // nb_shards


#: CPU features that decide which kernels torch (ATen) and oneDNN run the network with.
KERNEL_FEATURES = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_kernels() -> dict:
    """What selects the CPU kernels of the network's pass, and so the last bits of its
    float32 logits: ATen's vector capability, oneDNN's ceiling (``ONEDNN_MAX_CPU_ISA``, unset
    by default) and the CPU's instruction-set features. Two machines that agree on these run
    the same kernels; others may round a logit differently by about 1e-7 (measured between
    AVX-512 and AVX2 kernels), which flips a fingerprint bit only when the logit lies that
    close to 0. The resumption spec of a shard records it, so that a shard resumed on
    another kind of CPU is recomputed, never mixed."""
    flags = cpu_flags()
    return {"aten": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
            "features": [feature for feature in KERNEL_FEATURES if feature in flags]}


class Encoder:
    """A trained network and its task's mosaic: labels -> logits for keyed instances."""

    def __init__(self, model_path, bank, *, perlin=None, device: str = "cpu", precision: str = "fp32",
                 batch_size: int = FORWARD_BATCH, _loaded=None):
        """``bank``: the images of the database's split (``equihash.tasks.open_bank``);
        ``perlin``: the Perlin file of an OpenImagesMosaic model (its path or opened pair);
        ``device``: where the network runs (``cpu``, ``cuda`` or ``auto``, config
        ``encode.device``). Instances are always generated on the CPU. A fingerprint is
        bit-identical for any shard or batch on one device; CUDA and CPU kernels round
        differently, so the device is part of a shard's resumption spec; ``precision``: the
        arithmetic of the network's pass (``fp32``, ``bf16`` or ``auto``, config
        ``encode.precision``, equihash.nn.precision), resolved on the device: part of the spec too;
        ``batch_size``: the forward batch (``encode.forward_batch``, see the module docstring)."""
        keep_freed_memory()
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device, "encode")
        self.net, self.config = _loaded or load_model(model_path)
        self.net = self.net.to(self.device, memory_format=torch.channels_last)
        self.mosaic = make_mosaic(self.config["task"], bank, noise_sigma=self.config.get("noise_sigma"),
                                  perlin=perlin)
        self.nbits = self.config["nbits"]
        self.batch_size = batch_size
        self.identity = {  # what a fingerprint depends on besides its labels, seed, split and position
            "model_sha256": hashlib.sha256(Path(model_path).read_bytes()).hexdigest(),
            "bank_sha256": array_identity(self.mosaic.bank),
            "forward_batch": batch_size,
            "torch": torch.__version__,
            "device": self.device.type,
            "precision": self.precision,
        }
        if self.device.type == "cpu":
            self.identity["cpu_kernels"] = cpu_kernels()
        if perlin is not None:
            self.identity["perlin"] = [array_identity(field) for field in self.mosaic.perlin]

    @property
    def encoding(self) -> dict:
        """What a fingerprint file records of its encoder (equihash.io.fingerprint_encoding)."""
        return {"precision": self.precision, "forward_batch": self.batch_size}

    @classmethod
    def for_split(cls, model_path, *, split: str, bank, perlin=None, in_memory: bool = False,
                  noise_sigma: float | None = None, device: str = "cpu", precision: str = "fp32",
                  batch_size: int = FORWARD_BATCH) -> "Encoder":
        """The encoder of a model on split ``split`` of the bank ``bank`` (arguments as
        ``equihash.tasks.open_mosaic``). The noise is the one the model was trained
        with; a ``noise_sigma`` that differs from the model's is an error."""
        net, config = load_model(model_path)
        if noise_sigma is not None and noise_sigma != config.get("noise_sigma"):
            raise InputError(f"{model_path}: the model was trained with noise_sigma {config.get('noise_sigma')}, "
                             f"the configuration asks for {noise_sigma}")
        images = open_bank(config["task"], bank, split, in_memory=in_memory)
        return cls(model_path, images, perlin=perlin, device=device, precision=precision, batch_size=batch_size,
                   _loaded=(net, config))

    def check_labels(self, labels: np.ndarray, path, *, column: str = "labels", first_row: int = 0) -> np.ndarray:
        """``labels`` (rows ``first_row``.. of ``column`` of ``path``), or InputError naming the first
        row with an image id beyond the bank split."""
        size = self.mosaic.bank_size
        if labels.size and int(labels.max()) >= size:
            row = int(np.flatnonzero((labels >= size).any(axis=1))[0])
            raise InputError(f"{path}: column '{column}' row {first_row + row} holds image id "
                             f"{int(labels[row].max())}; expected ids below {size}, the size of the bank "
                             "split (labels of another bank or split?)")
        return labels

    def logits(self, labels: np.ndarray, rng: KeyedRandom, indices: np.ndarray, progress=None) -> np.ndarray:
        """(n, k) float32 logits of the instances ``indices`` of stream ``rng`` with these labels."""
        return self.stream_logits([(labels, rng, indices)], progress)[0]

    def stream_logits(self, streams: list[tuple[np.ndarray, KeyedRandom, np.ndarray]],
                      progress=None) -> list[np.ndarray]:
        """The logits of each stream's instances, ``(labels, rng, indices)`` as :meth:`logits` takes them.

        The streams' instances run as one sequence of forward batches, so a batch may end one
        stream and begin the next: five query sets of 100 take two passes of 256, not five.
        A row's logits depend on the forward batch's size, never on the other rows in it
        (see the module docstring), so they are those of each stream encoded alone.

        The forward batches run in ``LANES`` threads, each making the instances of its
        batch and then running the network on it, with the torch threads shared out among
        the lanes: while one lane makes instances (numpy's generators release the GIL), the
        other's network pass keeps the cores busy, and no core waits on another within a
        pass. A batch is the same and its logits the same for any number of lanes or threads
        (tested), so the logits are those of a plain loop.
        """
        bounds = np.cumsum([0] + [len(labels) for labels, _, _ in streams])
        out = np.empty((bounds[-1], self.nbits), dtype=np.float32)
        bs = self.batch_size
        starts = range(0, bounds[-1], bs)
        lanes = max(1, min(LANES, len(starts)))
        threads = torch.get_num_threads()
        failed = threading.Event()
        lock = threading.Lock()

        def instances(lo: int, hi: int, rngs: list[KeyedRandom]) -> np.ndarray:
            """The instances of rows ``lo:hi`` of the streams placed end to end."""
            pieces = []
            for (labels, _, indices), rng, first, end in zip(streams, rngs, bounds, bounds[1:]):
                a, b = max(lo, first) - first, min(hi, end) - first
                if a < b:
                    pieces.append(self.mosaic.noisy(labels[a:b], rng, indices[a:b]))
            return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

        def lane(first: int) -> None:
            torch.set_num_threads(max(1, threads // lanes))
            own = [rng.copy() for _, rng, _ in streams]  # a KeyedRandom is positioned per item: one per thread
            with torch.inference_mode(), precision_context(self.precision, self.device):
                for lo in starts[first::lanes]:
                    if failed.is_set():
                        return
                    try:
                        x = instances(lo, min(lo + bs, bounds[-1]), own)
                        out[lo:lo + len(x)] = self._batch_logits(x)
                    except BaseException:
                        failed.set()
                        raise
                    if progress is not None:
                        with lock:
                            progress.update(len(x))

        try:
            with ThreadPoolExecutor(lanes, thread_name_prefix="encode-lane") as pool:
                for done in [pool.submit(lane, first) for first in range(lanes)]:
                    done.result()
        finally:
            torch.set_num_threads(threads)
        return [out[first:end] for first, end in zip(bounds, bounds[1:])]

    @torch.inference_mode()
    def forward(self, instances: np.ndarray) -> np.ndarray:
        """(n, k) float32 logits of ``instances`` (n, ...) such as ``mosaic.noisy`` makes, in forward
        batches of exactly ``batch_size`` at the encoder's precision, as every fingerprint is computed."""
        out = np.empty((len(instances), self.nbits), dtype=np.float32)
        with precision_context(self.precision, self.device):
            for lo in range(0, len(instances), self.batch_size):
                x = instances[lo:lo + self.batch_size]
                out[lo:lo + len(x)] = self._batch_logits(x)
        return out

    def _batch_logits(self, x: np.ndarray) -> np.ndarray:
        """The network's float32 logits of at most one forward batch, padded with zeros to a
        full one: the network always sees full batches (see the module docstring)."""
        n = len(x)
        if n < self.batch_size:
            x = np.concatenate([x, np.zeros((self.batch_size - n, *x.shape[1:]), x.dtype)])
        return self.net(torch.from_numpy(x).to(self.device))[:n].float().cpu().numpy()


def partial_dir(out_path) -> Path:
    """Where the finished parts of a shard being encoded are kept: ``.{name}.partial`` beside it."""
    out_path = Path(out_path)
    return out_path.parent / f".{out_path.name}.partial"


class ShardParts:
    """The saved parts of one shard being encoded (the resumption state, see the module docstring).

    Part ``j`` covers the ``part_rows`` rows from database position ``start + j * part_rows``
    and is the file ``part-{j:06d}.npz`` holding ``codes`` (rows, B) uint8 and ``labels_sha256``.
    """

    def __init__(self, directory, spec: dict):
        self.directory = Path(directory)
        self.start, self.part_rows = spec["start"], spec["part_rows"]
        spec_path = self.directory / "spec.json"
        if self.directory.exists():
            try:
                found = json.loads(spec_path.read_text())
            except (OSError, ValueError):
                found = None
            if found != spec:
                logger.info("%s: partial encoding of another model, bank or shard; discarded", self.directory)
                shutil.rmtree(self.directory)
        if not self.directory.exists():
            self.directory.mkdir(parents=True)
            write_json(spec, spec_path)
        self.reused = 0

    def path(self, part: int) -> Path:
        return self.directory / f"part-{part:06d}.npz"

    @staticmethod
    def digest(labels: np.ndarray) -> np.ndarray:
        return np.frombuffer(hashlib.sha256(np.ascontiguousarray(labels, np.uint32).data).digest(), np.uint8)

    def load(self, part: int, labels: np.ndarray, nbytes: int) -> np.ndarray | None:
        """The saved codes of ``part`` if they were computed from ``labels``; None otherwise."""
        path = self.path(part)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as saved:
                codes, digest = saved["codes"], saved["labels_sha256"]
        except Exception as exc:  # a damaged part is encoded again
            logger.info("%s: unreadable part (%s), encoding it again", path, exc)
            return None
        if codes.shape != (len(labels), nbytes) or codes.dtype != np.uint8 or not np.array_equal(
                digest, self.digest(labels)):
            logger.info("%s: part of other labels, encoding it again", path)
            return None
        self.reused += 1
        return codes

    def save(self, part: int, codes: np.ndarray, labels: np.ndarray) -> None:
        with atomic_path(self.path(part)) as tmp, open(tmp, "wb") as f:
            np.savez(f, codes=codes, labels_sha256=self.digest(labels))

    def codes(self, encoder: Encoder, labels: np.ndarray, first: int, rng: KeyedRandom, bar) -> np.ndarray:
        """Fingerprints of database positions ``first``.. with these ``labels`` (whole parts),
        each part loaded when saved, else encoded and saved."""
        nbytes = encoder.nbits // 8
        codes = np.empty((len(labels), nbytes), dtype=np.uint8)
        for lo in range(0, len(labels), self.part_rows):
            rows = slice(lo, min(lo + self.part_rows, len(labels)))
            part = (first + lo - self.start) // self.part_rows
            saved = self.load(part, labels[rows], nbytes)
            if saved is None:
                ids = np.arange(first + rows.start, first + rows.stop, dtype=np.uint64)
                saved = pack_codes(encoder.logits(labels[rows], rng, ids, bar))
                self.save(part, saved, labels[rows])
            else:
                bar.update(len(saved))
            codes[rows] = saved
        return codes

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def encode_database_shard(encoder: Encoder, labels_path, *, seed: int, split: str, shard: int,
                          nb_shards: int, out_path, part_rows: int = PART_ROWS) -> None:
    """Write shard ``shard`` of ``nb_shards``: `id`, `code` for its contiguous range of positions.

    Resumable: finished parts of ``part_rows`` rows survive a kill and are reused by the
    next call with the same model, bank, labels and shard (see the module docstring);
    ``part_rows`` (a power of two up to ``ROW_GROUP``) does not change the output bytes.
    """
    if part_rows < 1 or ROW_GROUP % part_rows:
        raise InputError(f"part_rows: expected a power of two up to {ROW_GROUP}, got {part_rows}")
    check_schema(labels_path, {"labels": labels_type(encoder.mosaic.cells)})
    start, stop = shard_range(pq.ParquetFile(labels_path).metadata.num_rows, shard, nb_shards)
    rng = KeyedRandom(seed, split, "database")
    schema = fingerprint_schema(encoder.nbits // 8, encoder.encoding)
    spec = {"format": PARTIAL_FORMAT, **encoder.identity, "seed": seed, "split": split, "shard": shard,
            "nb_shards": nb_shards, "start": start, "stop": stop, "part_rows": part_rows}
    parts = ShardParts(partial_dir(out_path), spec)
    try:
        with atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer, \
                Progress(stop - start, f"encode shard {shard}/{nb_shards}", "mosaic") as bar:
            for lo in range(start, stop, ROW_GROUP):
                hi = min(lo + ROW_GROUP, stop)
                labels = encoder.check_labels(read_label_rows(labels_path, lo, hi), labels_path, first_row=lo)
                codes = parts.codes(encoder, labels, lo, rng, bar)
                ids = np.arange(lo, hi, dtype=np.uint64)
                writer.write_table(pa.table([pa.array(ids), codes_array(codes)], schema=schema))
    except InputError:  # bad labels: the saved parts are of no use
        parts.discard()
        raise
    if parts.reused:
        logger.info("%s: %d parts of %d rows reused from an interrupted run", out_path, parts.reused, part_rows)
    parts.discard()


def describe_encoding(encoding: dict) -> str:
    """``precision bf16, forward batch 256``: a fingerprint file's encoding, for messages."""
    return ", ".join(f"{name.replace('_', ' ')} {encoding.get(name, 'unrecorded')}" for name in ENCODING_KEYS)


def merge_shards(shard_paths, out_path, nbytes: int) -> int:
    """Concatenate shards in order into one file; checks that ids form one contiguous range 0..N-1.

    Row groups are re-cut to ``ROW_GROUP`` rows, so the bytes do not depend on the shard count.
    Every shard's schema is checked before anything is written, and every shard must record
    the same precision and forward batch (fingerprints of different ones never mix in one
    database; the merged file records them); a progress bar ``merge <n> shards`` counts the
    rows copied.
    """
    shard_paths = [Path(path) for path in shard_paths]
    encodings = {path: fingerprint_encoding(path) for path in shard_paths}
    first = shard_paths[0] if shard_paths else None
    for path, encoding in encodings.items():
        if encoding != encodings[first]:
            raise InputError(f"{path}: fingerprints encoded with {describe_encoding(encoding)}, {first} "
                             f"with {describe_encoding(encodings[first])}; the shards of one database are "
                             "encoded with one encode.precision and encode.forward_batch: encode them again")
    schema = fingerprint_schema(nbytes, encodings.get(first))
    for path in shard_paths:
        check_schema(path, {"id": pa.uint64(), "code": schema.field("code").type})
    total = 0
    for path in shard_paths:
        with pq.ParquetFile(path) as reader:
            total += reader.metadata.num_rows
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

    with atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer, \
            Progress(total, f"merge {len(shard_paths)} shards", "row") as bar:
        ids_buf, codes_buf = [np.empty(0, np.uint64)], [np.empty((0, nbytes), np.uint8)]
        for path in shard_paths:
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
                bar.update(len(ids))
        flush(writer, final=True)
    return expected_id


def encode_queries(encoder: Encoder, labels_dir, *, seed: int, split: str, out_positive, out_negative,
                   out_triplets) -> None:
    """Fingerprints and logits of the positive and negative queries; codes of the triplets.

    The five streams (two query sets, three triplet members) are encoded as one sequence of
    forward batches (:meth:`Encoder.stream_logits`)."""
    labels_dir = Path(labels_dir)
    nbytes = encoder.nbits // 8
    queries = {}
    for name in ("positive_queries", "negative_queries"):
        path = labels_dir / f"{name}.parquet"
        queries[name] = encoder.check_labels(read_labels(path, encoder.mosaic.cells), path)
    pairs_path = labels_dir / "negative_pairs.parquet"
    kind = labels_type(encoder.mosaic.cells)
    check_schema(pairs_path, {"anchor": kind, "negative": kind})
    pairs = {column: encoder.check_labels(read_labels(pairs_path, encoder.mosaic.cells, column=column), pairs_path,
                                          column=column) for column in ("anchor", "negative")}
    members = {"triplet_anchor": pairs["anchor"], "triplet_positive": pairs["anchor"],
               "triplet_negative": pairs["negative"]}
    streams = {**queries, **members}
    ids = {name: np.arange(len(labels), dtype=np.uint64) for name, labels in streams.items()}
    with Progress(sum(map(len, ids.values())), "encode queries and triplets", "mosaic") as bar:
        logits = dict(zip(streams, encoder.stream_logits(
            [(labels, KeyedRandom(seed, split, name), ids[name]) for name, labels in streams.items()], bar)))
    for name, out in (("positive_queries", out_positive), ("negative_queries", out_negative)):
        table = pa.table([pa.array(ids[name]), codes_array(pack_codes(logits[name])), logits_array(logits[name])],
                         schema=query_schema(nbytes, encoder.encoding))
        write_table(table, out)
    codes = {name.removeprefix("triplet_"): codes_array(pack_codes(logits[name])) for name in members}
    write_table(pa.table(codes, schema=triplet_schema(nbytes)), out_triplets)
