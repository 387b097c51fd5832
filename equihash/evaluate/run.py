"""Evaluate one (task, model, variant, database): the index and fingerprints -> metrics.json.

The figures come in two steps, so that a database too large for one machine is evaluated
as a fan-out of bounded jobs (one per partition of its index, ``index.partitions``):

1. :func:`evaluate_partition`: what one partition of the index (or the whole index)
   contributes, :class:`PartitionCounts`: the internal collisions among its positions,
   and for every query and every number of lookups the size of its retrieved set and of
   that set's intersection with the ground truth, counting only the partition's positions;
2. :func:`combine_partitions`: the sums over the partitions, then every figure of
   docs/method.md sections 9 and 10 and the binary metrics of the triplets.

A database position lies in one partition, and equal fingerprints share a partition, so
every count of the whole index is the sum of its partitions' counts: metrics.json is
byte-identical for any number of partitions. :func:`evaluate_run` does both steps in one
process (the ``equihash evaluate`` command); the workflow runs one job per partition
(:func:`evaluate_partition_files`) and one that combines them (:func:`combine_partition_files`).
"""

from __future__ import annotations

import json
import subprocess
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import equihash
from equihash.config import config_sha256
from equihash.evaluate.metrics import (binary_metrics, equidict_from_counts, equiset_from_sizes,
                                       internal_collisions, metrics_document, multiprobe_entry_from_counts,
                                       retrieval_counts)
from equihash.index import InvertedIndex, PartitionedIndex, read_index
from equihash.index.build import DEFAULT_MEMORY_BUDGET
from equihash.io import (InputError, check_schema, code_type, gather_label_rows, partition_counts_schema,
                         read_columns, read_ground_truth, read_schema, write_json, write_table)
from equihash.progress import Progress, logger

#: The key of the schema metadata of a partition-counts file that holds its scalars.
COUNTS_METADATA = b"equihash"


@dataclass(frozen=True)
class PartitionCounts:
    """What one partition of an index (``prefix`` of ``prefix_bits`` bits; the whole index
    for 0 bits) contributes to the figures of a run: ``size`` of the ``database_size``
    positions, the internal collisions among them, and for each number of lookups of
    ``lookups`` (row i) the per-query counts |R_j| of the positive queries
    (``positive_retrieved``), |R_j & G_j| (``positive_common``) and |R_j| of the negative
    queries (``negative_retrieved``), R_j restricted to the partition's positions."""

    prefix_bits: int
    prefix: int
    database_size: int
    size: int
    nbits: int
    internal_collisions: int
    lookups: tuple[int, ...]
    positive_retrieved: np.ndarray
    positive_common: np.ndarray
    negative_retrieved: np.ndarray

    @property
    def partitions(self) -> int:
        return 2 ** self.prefix_bits


#: Working bytes per member position in :func:`posting_collisions` (its position, its list,
#: its labels and the sorts of ``internal_collisions``).
MEMBER_BYTES = 96
#: Posting lists read at a time from the (memory-mapped) offsets of an index.
LIST_CHUNK = 1 << 22
#: Queries looked up (or multi-probed) at a time by :func:`evaluate_partition`.
QUERY_BLOCK = 1 << 18
#: The most key bits that split the members of :func:`posting_collisions` into rounds.
MAX_ROUND_BITS = 16


def _list_members(index: InvertedIndex, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """The positions of the posting lists [lo, hi) of ``index`` that hold >= 2 positions
    (the members), and the list of each (its index in ``index.keys``), read LIST_CHUNK
    lists at a time."""
    members, lists = [], []
    for first in range(lo, hi, LIST_CHUNK):
        offsets = np.asarray(index.offsets[first:min(hi, first + LIST_CHUNK) + 1], dtype=np.int64)
        sizes = np.diff(offsets)
        shared = np.flatnonzero(sizes >= 2)
        if not shared.size:
            continue
        lengths = sizes[shared]
        starts = np.repeat(offsets[shared] - (np.cumsum(lengths) - lengths), lengths)
        members.append(index.positions[starts + np.arange(int(lengths.sum()))].astype(np.int64))
        lists.append(np.repeat(shared + first, lengths).astype("<u8"))
    if not members:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype="<u8")
    return np.concatenate(members), np.concatenate(lists)


def posting_collisions(index: InvertedIndex, database_labels, *, memory_budget: int) -> int:
    """The internal collisions (docs/method.md section 9) among the positions ``index`` (a
    partition, or the whole index) holds, from its posting lists.

    A posting list holds the positions of one fingerprint, so only the positions of lists
    of two or more (the *members*) can collide, and only their labels are read, from
    ``database_labels`` (the row groups that hold one). Members are counted first; when
    more than ``memory_budget`` / MEMBER_BYTES of them, they are taken in 2**r rounds by the
    next r bits of the key (keys are uniform, so the rounds hold about equal shares), one
    pass over their label rows each. The posting lists are read LIST_CHUNK at a time from
    the index's memory-mapped arrays, so memory follows the budget, not the index size;
    only a single list larger than the budget takes a round beyond it. Equal to
    ``internal_collisions`` of the positions' codes and labels."""
    n_lists = index.n_unique
    members = 0
    for first in range(0, n_lists, LIST_CHUNK):
        sizes = np.diff(np.asarray(index.offsets[first:min(n_lists, first + LIST_CHUNK) + 1], dtype=np.int64))
        members += int(sizes[sizes >= 2].sum())
    if members == 0:
        return 0
    rounds = -(-members // max(1, memory_budget // MEMBER_BYTES))
    bits = min((rounds - 1).bit_length(), MAX_ROUND_BITS, 64 - index.prefix_bits)
    base, step = index.prefix << (64 - index.prefix_bits), 1 << (64 - index.prefix_bits - bits)
    bounds = [0] + [int(np.searchsorted(index.keys, np.uint64(base + r * step))) for r in range(1, 2**bits)] + [n_lists]
    collisions = 0
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        positions, lists = _list_members(index, lo, hi)
        if positions.size:
            labels = gather_label_rows(database_labels, positions)
            collisions += internal_collisions(lists.view(np.uint8).reshape(-1, 8), labels)
    return collisions


def _ground_truth_rows(ground_truth, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Queries [lo, hi) of a ground-truth CSR."""
    offsets, positions = ground_truth
    return offsets[lo:hi + 1] - offsets[lo], positions[offsets[lo]:offsets[hi]]


def evaluate_partition(index: InvertedIndex, *, database_labels, ground_truth, positive: dict, negative: dict,
                       lookups, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                       bar: Progress | None = None) -> PartitionCounts:
    """:class:`PartitionCounts` of ``index`` (a partition or the whole index): ``positive`` and
    ``negative`` hold the query codes (``code``) and logits (``logits``), ``ground_truth``
    the CSR of the positive queries' database positions. Lookups of codes of other
    partitions find nothing here, so each query counts only this partition's positions.

    Memory: the internal collisions follow ``memory_budget`` (:func:`posting_collisions`),
    the queries are looked up QUERY_BLOCK at a time, and the index stays memory-mapped, so
    at a fixed number of queries what the job holds does not grow with the database."""
    lookups = tuple(int(L) for L in lookups)

    def stage(name):
        return bar.stage(name) if bar is not None else nullcontext()

    def retrieved(queries, L, lo, hi):
        if L == 1:
            return index.lookup(queries["code"][lo:hi])
        return index.multiprobe(queries["logits"][lo:hi], L)

    with stage("internal collisions"):
        collisions = posting_collisions(index, database_labels, memory_budget=memory_budget)
    logger.info("internal collisions: %d among %d positions", collisions, index.size)
    rows = {"positive_retrieved": [], "positive_common": [], "negative_retrieved": []}
    n_positive, n_negative = len(positive["code"]), len(negative["code"])
    for L in lookups:
        with stage("exact lookups" if L == 1 else f"multi-probing with {L} lookups"):
            sizes, common, negative_sizes = [], [], []
            for lo in range(0, n_positive, QUERY_BLOCK):
                hi = min(n_positive, lo + QUERY_BLOCK)
                block_sizes, block_common = retrieval_counts(retrieved(positive, L, lo, hi),
                                                             _ground_truth_rows(ground_truth, lo, hi))
                sizes.append(block_sizes)
                common.append(block_common)
            for lo in range(0, n_negative, QUERY_BLOCK):
                negative_sizes.append(np.diff(retrieved(negative, L, lo, min(n_negative, lo + QUERY_BLOCK))[0]))
            empty = np.empty(0, dtype=np.int64)
            rows["positive_retrieved"].append(np.concatenate([empty, *sizes]))
            rows["positive_common"].append(np.concatenate([empty, *common]))
            rows["negative_retrieved"].append(np.concatenate([empty, *negative_sizes]))
    return PartitionCounts(prefix_bits=index.prefix_bits, prefix=index.prefix, database_size=index.database_size,
                           size=index.size, nbits=8 * index.nbytes, internal_collisions=int(collisions),
                           lookups=lookups, **{key: np.stack(value) for key, value in rows.items()})


def write_partition_counts(counts: PartitionCounts, path) -> None:
    """The partition-counts file of ``counts`` (docs/artifacts.md): one row per number of
    lookups, the scalars in the schema metadata."""
    scalars = {"prefix_bits": counts.prefix_bits, "prefix": counts.prefix, "database_size": counts.database_size,
               "size": counts.size, "nbits": counts.nbits, "internal_collisions": counts.internal_collisions}
    schema = partition_counts_schema().with_metadata({COUNTS_METADATA: json.dumps(scalars).encode()})
    lists = {key: pa.array([row.astype(np.uint64) for row in getattr(counts, key)], type=pa.list_(pa.uint64()))
             for key in ("positive_retrieved", "positive_common", "negative_retrieved")}
    write_table(pa.table({"lookups": pa.array(counts.lookups, type=pa.uint32()), **lists}, schema=schema), path)


def read_partition_counts(path) -> PartitionCounts:
    """A partition-counts file, checked: its columns, its scalars and one count per query."""
    check_schema(path, dict(zip(partition_counts_schema().names, partition_counts_schema().types)))
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(COUNTS_METADATA)
    keys = ("prefix_bits", "prefix", "database_size", "size", "nbits", "internal_collisions")
    try:
        scalars = json.loads(raw)
        scalars = {key: int(scalars[key]) for key in keys}
    except (TypeError, ValueError, KeyError):
        raise InputError(f"{path}: schema metadata '{COUNTS_METADATA.decode()}' must hold the integers "
                         f"{', '.join(keys)}") from None
    arrays = {}
    for key in ("positive_retrieved", "positive_common", "negative_retrieved"):
        column = table[key].combine_chunks()
        sizes = set(np.diff(column.offsets.to_numpy()).tolist())
        if len(sizes) > 1:
            raise InputError(f"{path}: column '{key}' holds lists of {sorted(sizes)} queries; expected one "
                             "count per query on every row")
        arrays[key] = column.values.to_numpy().astype(np.int64).reshape(len(column), -1)
    return PartitionCounts(**scalars, lookups=tuple(int(L) for L in table["lookups"].to_numpy()), **arrays)


def combine_partitions(parts, *, truth_sizes, binary: dict, names: dict) -> dict:
    """metrics.json (without provenance) from the :class:`PartitionCounts` of every partition
    of one index, in any order (an iterable: one partition's counts are held at a time);
    ``truth_sizes``: |G_j| of each positive query; ``binary``: the :func:`binary_metrics`
    of the triplets. Partitions missing, repeated, or counted over other queries, lookups
    or databases are an InputError naming the partition."""
    keys = ("positive_retrieved", "positive_common", "negative_retrieved")
    first, seen, total, sizes, collisions = None, [], None, 0, 0
    for part in parts:
        shape = (part.database_size, part.nbits, part.lookups, part.positive_retrieved.shape,
                 part.negative_retrieved.shape, part.prefix_bits)
        if first is None:
            first, want = part, shape
            total = {key: np.zeros_like(getattr(part, key)) for key in keys}
        elif shape != want:
            raise InputError(f"partition counts {part.prefix} of {part.partitions}: (database_size, nbits, lookups, "
                             f"positive counts, negative counts, prefix bits) = {shape}, the first read has {want}")
        seen.append(part.prefix)
        for key in keys:
            total[key] += getattr(part, key)
        sizes += part.size
        collisions += part.internal_collisions
    if first is None or sorted(seen) != list(range(first.partitions)):
        found = sorted(seen) if first is not None else []
        raise InputError(f"partition counts: got partitions {found}"
                         + (f" of {first.partitions}, expected each of 0..{first.partitions - 1} once"
                            if first is not None else ", expected at least one"))
    if sizes != first.database_size:
        raise InputError(f"partition counts: the partitions hold {sizes} positions, expected the database's "
                         f"{first.database_size}")
    truth_sizes = np.asarray(truth_sizes, dtype=np.int64)
    if truth_sizes.size != first.positive_retrieved.shape[1]:
        raise InputError(f"partition counts: {first.positive_retrieved.shape[1]} positive queries counted, the ground "
                         f"truth has {truth_sizes.size}")
    if first.lookups[0] != 1:
        raise InputError(f"partition counts: lookups {list(first.lookups)} must start with 1 (the exact lookup)")
    entries = [multiprobe_entry_from_counts(L, total["positive_retrieved"][i], total["positive_common"][i],
                                            truth_sizes, total["negative_retrieved"][i])
               for i, L in enumerate(first.lookups)]
    return metrics_document(
        **names, nbits=first.nbits, database_size=first.database_size, internal_collisions=collisions,
        equidict=equidict_from_counts(total["positive_retrieved"][0], total["positive_common"][0], truth_sizes),
        equiset=equiset_from_sizes(total["positive_retrieved"][0], total["negative_retrieved"][0]),
        binary=binary, multiprobe=entries,
    )


def _queries(path, nbits: int) -> dict:
    kind = code_type(nbits // 8)
    return read_columns(path, {"code": kind, "logits": pa.list_(pa.float32(), nbits)})


def _triplet_metrics(triplets, nbits: int) -> dict:
    kind = code_type(nbits // 8)
    trip = read_columns(triplets, {"anchor": kind, "positive": kind, "negative": kind})
    return binary_metrics(trip["anchor"], trip["positive"], trip["negative"])


def evaluate_run(*, index_dir, database_labels, positive_labels, database, positive_queries,
                 negative_queries, triplets, lookups, names: dict, out_path,
                 provenance: dict | None = None, negative_labels=None,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET) -> dict:
    """Compute every figure of docs/method.md section 9 and the multi-probe list; write metrics.json atomically.

    ``index_dir`` is a whole or a partitioned index; its partitions are evaluated one after
    the other (:func:`evaluate_partition`) and combined (:func:`combine_partitions`).
    ``provenance`` (a :func:`run_provenance` dict) becomes the document's last key; without
    it the code version is recorded and the config hash and shard count are null.
    Before any work the inputs are checked to belong together (:func:`check_run_inputs`;
    ``negative_labels``, the labels file of the negative queries, is optional and only
    counted), and InputError names the two files that disagree. ``memory_budget``: bytes
    for the internal collisions of each partition (:func:`posting_collisions`).
    """
    index = read_index(index_dir)
    nbits = 8 * index.nbytes
    ground_truth = check_run_inputs(index, index_dir=index_dir, database=database, database_labels=database_labels,
                                    positive_labels=positive_labels, positive_queries=positive_queries,
                                    negative_queries=negative_queries, negative_labels=negative_labels)
    parts = index.partitions if isinstance(index, PartitionedIndex) else [index]
    positive, negative = _queries(positive_queries, nbits), _queries(negative_queries, nbits)
    # One bar over the stages; each stage's duration is logged as it ends.
    stages = len(parts) * (1 + len(lookups)) + 1
    with Progress(stages, "evaluate " + "/".join(str(value) for value in names.values()), unit="stage") as bar:
        counts = [evaluate_partition(part, database_labels=database_labels, ground_truth=ground_truth,
                                     positive=positive, negative=negative, lookups=lookups,
                                     memory_budget=memory_budget, bar=bar) for part in parts]
        with bar.stage("binary metrics"):
            binary = _triplet_metrics(triplets, nbits)
    document = combine_partitions(counts, truth_sizes=np.diff(ground_truth[0]), binary=binary, names=names)
    document["provenance"] = run_provenance() if provenance is None else provenance
    write_json(document, out_path)
    return document


def evaluate_partition_files(*, index_dir, database_labels, positive_labels, database, positive_queries,
                             negative_queries, lookups, out_path, negative_labels=None,
                             memory_budget: int = DEFAULT_MEMORY_BUDGET,
                             threads: int | None = None) -> PartitionCounts:
    """One job of a run's evaluation: the :class:`PartitionCounts` of the index partition at
    ``index_dir`` (``v-of-P`` of the index's folder), written to ``out_path``; its lookups
    run on ``threads`` threads (default: every core), its internal collisions within
    ``memory_budget`` bytes (:func:`evaluate_partition`)."""
    index = read_index(index_dir, threads=threads)
    if not isinstance(index, InvertedIndex):
        raise InputError(f"{index_dir}: a partitioned index; expected one partition of it (its folder v-of-P)")
    ground_truth = check_run_inputs(index, index_dir=index_dir, database=database, database_labels=database_labels,
                                    positive_labels=positive_labels, positive_queries=positive_queries,
                                    negative_queries=negative_queries, negative_labels=negative_labels, whole=False)
    nbits = 8 * index.nbytes
    with Progress(1 + len(lookups), f"evaluate partition {index.prefix} of {2 ** index.prefix_bits}",
                  unit="stage") as bar:
        counts = evaluate_partition(index, database_labels=database_labels, ground_truth=ground_truth,
                                    positive=_queries(positive_queries, nbits),
                                    negative=_queries(negative_queries, nbits), lookups=lookups,
                                    memory_budget=memory_budget, bar=bar)
    write_partition_counts(counts, out_path)
    return counts


def combine_partition_files(*, partitions, positive_labels, triplets, names: dict, out_path,
                            provenance: dict | None = None) -> dict:
    """The last job of a run's evaluation: metrics.json from the partition-counts files of
    every partition (:func:`combine_partitions`) and the triplets' binary metrics."""
    partitions = list(partitions)
    if not partitions:
        raise InputError("partitions: expected the partition-counts file of every partition, got none")
    first = read_partition_counts(partitions[0])  # its code width reads the triplets; combine keeps it anyway
    truth_sizes = np.diff(read_ground_truth(positive_labels)[0])
    document = combine_partitions(chain([first], (read_partition_counts(path) for path in partitions[1:])),
                                  truth_sizes=truth_sizes, binary=_triplet_metrics(triplets, first.nbits), names=names)
    document["provenance"] = run_provenance() if provenance is None else provenance
    write_json(document, out_path)
    return document


def parquet_rows(path) -> int:
    """The number of rows of a Parquet file (from its footer), or InputError naming it."""
    read_schema(path)
    with pq.ParquetFile(path) as reader:
        return reader.metadata.num_rows


def check_query_ids(path, labels_path, n_labels: int | None) -> None:
    """The ``id`` column of a query file must be the rows 0..n-1 of its labels file in
    order, n = ``n_labels`` (without a labels file: 0..n-1 over the file's own rows)."""
    check_schema(path, {"id": pa.uint64()})
    ids = pq.read_table(path, columns=["id"])["id"].to_numpy()
    if n_labels is not None and len(ids) != n_labels:
        raise InputError(f"{path}: {len(ids)} queries, but {labels_path} has {n_labels} label rows; "
                         "expected one query per row of the labels file")
    wrong = np.flatnonzero(ids != np.arange(len(ids), dtype=np.uint64))
    if wrong.size:
        row = int(wrong[0])
        rows = f"the rows of {labels_path}" if labels_path is not None else "the query rows"
        raise InputError(f"{path}: column 'id' must be 0..{len(ids) - 1} in order, {rows} (row {row} holds id "
                         f"{int(ids[row])}: queries permuted, repeated or from other labels)")


def check_run_inputs(index, *, index_dir, database, database_labels, positive_labels, positive_queries,
                     negative_queries, negative_labels=None, whole: bool = True):
    """Check that the files of one evaluation belong together; return the ground truth.

    The index (a whole or partitioned one; with ``whole=False`` also one partition) is
    built from a database of N positions and, unless a partition, holds all of them; the
    merged fingerprint database has N rows of the index's code width and its labels file N
    rows; the ids of each query file are the
    rows 0..n-1 of its labels file in order (one query per label row), and every
    ground-truth position is below N. Each failure is an InputError naming both files.
    """
    header = Path(index_dir) / ("partitions.json" if isinstance(index, PartitionedIndex) else "header.json")
    n = index.database_size
    if whole and (index.size != n or (isinstance(index, InvertedIndex) and index.prefix_bits)):
        raise InputError(f"{header}: an index of {index.size} of the {n} database positions (prefix of "
                         f"{index.prefix_bits} bits); expected the index of the whole database {database}")
    check_schema(database, {"code": code_type(index.nbytes)})
    database_rows = parquet_rows(database)
    if database_rows != n:
        raise InputError(f"{database}: {database_rows} fingerprint rows, but the index {header} holds {n} "
                         "database positions; expected the database the index was built from")
    label_rows = parquet_rows(database_labels)
    if label_rows != n:
        raise InputError(f"{database_labels}: {label_rows} label rows, but {database} has {n} fingerprint rows; "
                         "expected one label row per database position")
    ground_truth = read_ground_truth(positive_labels)
    offsets, positions = ground_truth
    if positions.size and int(positions.max()) >= n:
        query = int(np.searchsorted(offsets, int(np.argmax(positions)), side="right")) - 1
        raise InputError(f"{positive_labels}: column 'ground_truth' row {query} holds position "
                         f"{int(positions.max())}, expected positions below {n}, the rows of {database}")
    check_query_ids(positive_queries, positive_labels, len(offsets) - 1)
    n_negative = None if negative_labels is None else parquet_rows(negative_labels)
    check_query_ids(negative_queries, negative_labels, n_negative)
    return ground_truth


def git_commit(directory) -> str | None:
    """The HEAD commit of the git checkout whose top level is ``directory``; None when
    ``directory`` is not the top of a checkout (an installed package) or git is missing."""
    try:
        out = subprocess.run(["git", "-C", str(directory), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(out) != 2 or Path(out[0]).resolve() != Path(directory).resolve():
        return None
    return out[1]


def git_dirty(directory) -> bool | None:
    """Whether the checkout whose top level is ``directory`` differs from its HEAD commit
    (changed, staged or untracked files that .gitignore does not exclude); None when
    ``directory`` is not the top of a checkout."""
    if git_commit(directory) is None:
        return None
    try:
        out = subprocess.run(["git", "-C", str(directory), "status", "--porcelain"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.strip())


def run_provenance(*, run_config: dict | None = None, nb_shards: int | None = None) -> dict:
    """Where a metrics.json comes from: the equihash version, the git commit of the code
    when it runs from a checkout (else None) and whether that checkout had uncommitted
    changes (``dirty``; None outside a checkout), the sha256 of the run's configuration and
    the number of database encode shards (None when unknown). Figures do not depend on the
    shard count; it is recorded to reproduce the job layout."""
    root = Path(equihash.__file__).resolve().parents[1]
    return {
        "equihash_version": equihash.__version__,
        "git_commit": git_commit(root),
        "dirty": git_dirty(root),
        "config_sha256": None if run_config is None else config_sha256(run_config),
        "nb_shards": None if nb_shards is None else int(nb_shards),
    }
