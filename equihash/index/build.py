"""Building an inverted index: from fingerprints in memory, or from a merged fingerprint
database in bounded memory (docs/method.md section 8).

In memory (:func:`build_index`): a fused radix sort. One pass counts the first-level
buckets of the keys, a second recomputes each key and scatters its record (key,
position) into its bucket, then each bucket is sorted in cache (``_core``, threads over
ranges of records, the GIL released); runs of equal keys are the posting lists.

From Parquet (:func:`build_index_from_parquet`): one pass over the row groups of the
merged database appends each record to its *chunk*, a range of keys chosen so that a
chunk fits the memory budget; the chunks are spilled to files, then sorted one after the
other in key order and appended to the index files. Peak memory: one batch, one chunk and
the directory, whatever N. A partitioned index (:func:`build_partitioned_index`,
:func:`build_partitioned_index_from_parquet`) builds each partition alike from the
codes of its key prefix.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from equihash.io import InputError, atomic_path, column_to_numpy, read_schema
from equihash.progress import Progress, format_duration, logger

from . import _core
from .format import header_for, little, partition_names, read_index, seal, write_index, write_manifest
from .inverted import (MIN_PARALLEL, InvertedIndex, as_codes, check_prefix, default_threads, directory_bits_for,
                       position_dtype, run_parallel, split_ranges)
from .partitioned import DEFAULT_PREFIX_BITS, PartitionedIndex

PARQUET_BATCH_ROWS = 1 << 20
MAX_CHUNK_BITS = 8  # at most 256 key-range chunks (and spill files per column) in a bounded build
DEFAULT_MEMORY_BUDGET = 1 << 30


def _split_bits(n: int, available: int) -> int:
    """Key bits of the first radix pass: buckets of ~2**14 records (cache-sized sorts)."""
    return max(0, min(n.bit_length() - 14, 14, available))


# ----------------------------------------------------------------------------- sorting records
def _sort_buckets(keys, values, starts, sorted_bits: int, threads: int) -> int:
    """Sort each radix bucket of the scattered records in place, buckets split across
    threads; returns the number of distinct keys."""
    n_buckets = len(starts) - 1
    n = int(starts[-1])
    parts = threads if n >= MIN_PARALLEL else 1
    # cut the bucket range where the record counts are balanced
    cuts = np.unique(np.searchsorted(starts, np.linspace(0, n, parts + 1)).clip(0, n_buckets))
    cuts[0], cuts[-1] = 0, n_buckets
    tasks = [(keys, values, starts, int(a), int(b), sorted_bits) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    return sum(run_parallel(_core.sort_buckets, tasks, threads))


def _radix_scatter(n: int, bits: int, count, scatter, threads: int) -> np.ndarray:
    """The first radix pass over n records, on consecutive ranges of them across threads:
    ``count(lo, hi, counts)`` adds the bucket sizes of records [lo, hi), then
    ``scatter(lo, hi, cursor)`` writes each record at ``cursor[bucket]++``. Range r writes
    each bucket after the records of ranges < r, so the pass is stable. Returns the bucket
    starts (2**bits + 1)."""
    ranges = split_ranges(n, threads if n >= MIN_PARALLEL else 1)
    counts = np.zeros((len(ranges), 2**bits), dtype=np.int64)
    run_parallel(count, [(lo, hi, counts[r]) for r, (lo, hi) in enumerate(ranges)], threads)
    starts = np.zeros(2**bits + 1, dtype=np.int64)
    np.cumsum(counts.sum(axis=0), out=starts[1:])
    cursors = starts[:-1] + np.cumsum(counts, axis=0) - counts  # (range, bucket): first slot
    run_parallel(scatter, [(lo, hi, cursors[r].copy()) for r, (lo, hi) in enumerate(ranges)], threads)
    return starts


def _hash_and_sort(codes: np.ndarray, index_dtype, threads: int):
    """Records (key, position) of every code row, sorted by key, positions increasing within
    a key; and the number of distinct keys.

    Fused radix sort: one pass counts the first-level buckets of the keys, a second
    recomputes each key and scatters its record into its bucket, then each bucket is
    sorted in cache. 12 bytes per code of working memory (uint32 positions).
    """
    n = codes.shape[0]
    bits = _split_bits(n, 64)
    keys = np.empty(n, dtype=np.uint64)
    values = np.empty(n, dtype=index_dtype)
    starts = _radix_scatter(
        n, bits, lambda lo, hi, counts: _core.count_code_buckets(codes[lo:hi], bits, counts),
        lambda lo, hi, cursor: _core.scatter_codes(codes[lo:hi], bits, cursor, keys, values, lo), threads)
    n_unique = _sort_buckets(keys, values, starts, bits, threads)
    return keys, values, n_unique


def _sort_records(keys: np.ndarray, values: np.ndarray, skip: int, threads: int):
    """Records (key, value) given in value order, sorted by key (stable), and the number of
    distinct keys; the keys share their top ``skip`` bits. New arrays (24 bytes per record
    at the peak)."""
    n = len(keys)
    bits = _split_bits(n, 64 - skip)
    out_keys = np.empty_like(keys)
    out_values = np.empty_like(values)
    starts = _radix_scatter(
        n, bits, lambda lo, hi, counts: _core.count_record_buckets(keys[lo:hi], skip, bits, counts),
        lambda lo, hi, cursor: _core.scatter_records(keys[lo:hi], values[lo:hi], skip, bits, cursor,
                                                     out_keys, out_values), threads)
    n_unique = _sort_buckets(out_keys, out_values, starts, skip + bits, threads)
    return out_keys, out_values, n_unique


def _shrink(array: np.ndarray, size: int) -> np.ndarray:
    """``array[:size]`` without keeping the rest alive (in-place resize when possible)."""
    try:
        array.resize(size, refcheck=False)
        return array
    except ValueError:
        return array[:size].copy()


def _posting_lists(keys, values, n_unique: int, nbytes: int, codes=None, positions=None):
    """Cut key-sorted records into the index arrays ``(keys, offsets, positions, fingerprints)``.

    For B <= 8 equal keys are equal codes: the ``n_unique`` runs of equal keys are the
    posting lists.
    For B > 8, ``values`` index the rows of ``codes`` (and of ``positions``, the database
    positions, when given; else the values are the positions); records of equal keys but
    different codes (a 64-bit hash collision, rare) are reordered by code bytes, then
    runs of equal codes are the posting lists.
    """
    n = len(keys)
    index_dtype = values.dtype
    if nbytes <= 8:
        offsets = np.empty(n_unique + 1, dtype=index_dtype)
        _core.cut_runs(keys, offsets)
        return _shrink(keys, n_unique), offsets, values, None
    record_codes = codes[values]
    same_key = keys[1:] == keys[:-1]
    pairs = np.flatnonzero(same_key)
    same_code = same_key.copy()
    same_code[pairs] = (record_codes[pairs + 1] == record_codes[pairs]).all(axis=1)
    if not np.array_equal(same_code, same_key):  # one 64-bit key shared by distinct codes
        _order_collisions(values, record_codes, same_key, same_code)
        same_code[pairs] = (record_codes[pairs + 1] == record_codes[pairs]).all(axis=1)
    first = np.flatnonzero(np.concatenate([[n > 0], ~same_code]))
    offsets = np.append(first, n).astype(index_dtype)
    out_positions = values if positions is None else positions[values]
    return (keys[first], offsets, out_positions.astype(index_dtype, copy=False),
            np.ascontiguousarray(record_codes[first]))


def _order_collisions(values, record_codes, same_key, same_code) -> None:
    """Reorder, in place, each run of equal keys that holds distinct codes by (code bytes,
    value): its codes then form consecutive groups, positions increasing in each."""
    n = len(values)
    run_start = np.flatnonzero(np.concatenate([[True], ~same_key]))
    run_stop = np.append(run_start[1:], n)
    collided = np.flatnonzero(same_key & ~same_code)
    for run in np.unique(np.searchsorted(run_start, collided, side="right") - 1):
        part = slice(int(run_start[run]), int(run_stop[run]))
        order = np.lexsort((values[part],) + tuple(record_codes[part].T[::-1]))
        values[part] = values[part][order]
        record_codes[part] = record_codes[part][order]


def _directory(keys: np.ndarray, prefix_bits: int, index_dtype) -> np.ndarray:
    bits = directory_bits_for(len(keys))
    directory = np.empty(2**bits + 1, dtype=index_dtype)
    filled = _core.fill_directory(keys, 0, prefix_bits, bits, directory, 0)
    directory[filled:] = len(keys)
    return directory


# ----------------------------------------------------------------------------- Parquet input
def _open_database(path: Path) -> tuple[int, int]:
    """Check the merged fingerprint database's schema (equihash/io.py); its code width B and rows N."""
    schema = read_schema(path)
    for name in ("id", "code"):
        if name not in schema.names:
            kind = "uint64" if name == "id" else "fixed_size_binary[B]"
            raise InputError(f"{path}: missing column '{name}' (expected {kind})")
    if schema.field("id").type != pa.uint64():
        raise InputError(f"{path}: column 'id' has type {schema.field('id').type}, expected uint64")
    kind = schema.field("code").type
    if not pa.types.is_fixed_size_binary(kind):
        raise InputError(f"{path}: column 'code' has type {kind}, expected fixed_size_binary[B]")
    with pq.ParquetFile(path) as reader:
        return kind.byte_width, reader.metadata.num_rows


def database_batches(path: Path, batch_rows: int = PARQUET_BATCH_ROWS):
    """Yield (first position, codes (n, B) uint8) per batch; ids must be 0..N-1 in order.

    The reader does not pre-buffer: pyarrow would otherwise keep ~10 bytes per row read
    until the file is closed, and memory would grow with N."""
    expected = 0
    with pq.ParquetFile(path, pre_buffer=False) as reader:
        for batch in reader.iter_batches(batch_size=batch_rows, columns=["id", "code"]):
            ids = batch.column("id").to_numpy()
            if len(ids) and (ids[0] != expected or np.any(np.diff(ids) != 1)):
                raise InputError(f"{path}: column 'id' must be the database positions 0..N-1 in order "
                                 f"(rows from {expected} hold ids {int(ids[0])}..{int(ids[-1])})")
            codes = np.ascontiguousarray(column_to_numpy(batch.column("code"), path=path, name="code"))
            yield expected, codes
            expected += len(ids)


class _SpillPlan:
    """The bounded-memory build of :func:`build_index_from_parquet`.

    Records are (key, position[, code bytes for B > 8]) of the codes whose key has the
    prefix. The ``chunk_bits`` key bits below the prefix cut them into 2**chunk_bits
    *chunks*, consecutive key ranges, so that sorting the chunks one by one sorts
    everything. Keys are uniform (for B <= 8 a bijective mix of the code), so a chunk
    holds about n / 2**chunk_bits records; chunk_bits is the smallest (at most
    MAX_CHUNK_BITS) that brings that under the memory budget. The records of one
    fingerprint are never split: a degenerate network that gives most instances one
    code makes one large chunk.
    """

    def __init__(self, path, nbytes, n_rows, prefix_bits, prefix, batch_rows, memory_budget):
        self.path, self.nbytes = path, nbytes
        self.prefix_bits, self.prefix, self.batch_rows = prefix_bits, prefix, batch_rows
        self.index_dtype = position_dtype(n_rows)
        isize = self.index_dtype.itemsize
        # bytes per record while a chunk is sorted: the chunk, its sorted copy, the offsets
        record_bytes = 2 * (8 + isize) + isize + (2 * nbytes + 8 if nbytes > 8 else 0)
        expected = -(-n_rows // 2**prefix_bits) * record_bytes  # uniform keys: this prefix's share
        needed = -(-expected // max(1, int(memory_budget)))
        self.chunk_bits = min(MAX_CHUNK_BITS, max(0, needed - 1).bit_length())
        self.n_chunks = 2**self.chunk_bits
        self.columns = {"keys": (np.dtype("<u8"), ()), "positions": (little(self.index_dtype), ())}
        if nbytes > 8:
            self.columns["codes"] = (np.dtype(np.uint8), (nbytes,))

    def spill(self, tmp: Path, n_rows: int, part: str) -> None:
        """One pass over the database: each record to its chunk, in position order (kept in
        memory when there is one chunk, else appended to ``<column>-<chunk>.spill`` files).
        A progress bar ``index spill<part>`` counts the ``n_rows`` codes read."""
        self.chunk_sizes = np.zeros(self.n_chunks, dtype=np.int64)
        self.held = {name: [] for name in self.columns} if self.n_chunks == 1 else None
        handles = {} if self.held is not None else {
            (name, c): open(tmp / f"{name}-{c}.spill", "wb") for name in self.columns for c in range(self.n_chunks)}
        bar = Progress(n_rows, f"index spill{part}", "code")
        try:
            for first, codes in database_batches(self.path, self.batch_rows):
                bar.update(len(codes))
                keys = _core.code_hashes(codes)
                positions = np.arange(first, first + len(codes), dtype=self.index_dtype)
                if self.prefix_bits:
                    kept = np.flatnonzero((keys >> np.uint64(64 - self.prefix_bits)) == np.uint64(self.prefix))
                    keys, positions, codes = keys[kept], positions[kept], codes[kept]
                columns = {"keys": keys, "positions": positions, "codes": codes}
                if self.held is not None:
                    for name in self.columns:
                        self.held[name].append(columns[name])
                    self.chunk_sizes[0] += len(keys)
                    continue
                chunk = ((keys << np.uint64(self.prefix_bits)) >> np.uint64(64 - self.chunk_bits)).astype(np.uint8)
                order = np.argsort(chunk, kind="stable")  # a radix sort for uint8
                bounds = np.searchsorted(chunk[order], np.arange(self.n_chunks + 1))
                for name, (dtype, _) in self.columns.items():
                    column = np.ascontiguousarray(columns[name][order], dtype=dtype)
                    for c in np.flatnonzero(np.diff(bounds)):
                        handles[name, c].write(memoryview(column[bounds[c]:bounds[c + 1]]).cast("B"))
                self.chunk_sizes += np.diff(bounds)
        finally:
            bar.close()
            for handle in handles.values():
                handle.close()
        self.n_kept = int(self.chunk_sizes.sum())

    def chunk(self, tmp: Path, c: int) -> dict:
        """The records of chunk c, in position order (released from memory or disk)."""
        if self.held is not None:
            records = {name: np.concatenate(parts) if parts else np.zeros((0, *self.columns[name][1]),
                                                                            dtype=self.columns[name][0])
                       for name, parts in self.held.items()}
            self.held = None
            return records
        records = {}
        for name, (dtype, row) in self.columns.items():
            path = tmp / f"{name}-{c}.spill"
            records[name] = np.fromfile(path, dtype=dtype).reshape(-1, *row)
            path.unlink()
        return records

    def sort_chunks(self, tmp: Path, threads: int, part: str) -> int:
        """Sort the chunks, in key order, and append their posting lists to the index files;
        returns the number U of distinct fingerprints. A progress bar ``index sort<part>``
        counts the records sorted."""
        names = ("keys", "offsets", "positions") + (("fingerprints",) if self.nbytes > 8 else ())
        outputs = {name: open(tmp / f"{name}.bin", "wb") for name in names}
        stored = little(self.index_dtype)
        n_unique, first = 0, 0
        bar = Progress(self.n_kept, f"index sort{part}", "code")
        try:
            for c in range(self.n_chunks):
                records = self.chunk(tmp, c)
                size = len(records["keys"])
                if size == 0:
                    continue
                positions = records.pop("positions").astype(self.index_dtype, copy=False)
                shared = self.prefix_bits + self.chunk_bits  # key bits equal within the chunk
                if self.nbytes <= 8:
                    keys, values, runs = _sort_records(records.pop("keys"), positions, shared, threads)
                    del positions
                    lists = _posting_lists(keys, values, runs, self.nbytes)
                else:
                    local = np.arange(size, dtype=self.index_dtype)
                    keys, values, runs = _sort_records(records.pop("keys"), local, shared, threads)
                    del local
                    lists = _posting_lists(keys, values, runs, self.nbytes, codes=records["codes"],
                                           positions=positions)
                    del positions
                del records, keys, values
                keys, offsets, positions, fingerprints = lists
                offsets = offsets[:-1].astype(np.uint64)
                offsets += np.uint64(first)
                offsets.astype(stored).tofile(outputs["offsets"])
                keys.astype("<u8", copy=False).tofile(outputs["keys"])
                positions.astype(stored, copy=False).tofile(outputs["positions"])
                if fingerprints is not None:
                    fingerprints.tofile(outputs["fingerprints"])
                n_unique += len(keys)
                first += size
                del lists, keys, offsets, positions, fingerprints
                bar.update(size)
            np.array([self.n_kept], dtype=stored).tofile(outputs["offsets"])
        finally:
            bar.close()
            for handle in outputs.values():
                handle.close()
        return n_unique




# ----------------------------------------------------------------------------- builders
def build_index(codes, *, prefix_bits: int = 0, prefix: int = 0, threads: int | None = None) -> InvertedIndex:
    """Index fingerprints ``codes`` (N, B) uint8; row i is database position i.

    With ``prefix_bits`` > 0 only the codes whose key starts with ``prefix`` are indexed
    (one partition of a :class:`~equihash.index.partitioned.PartitionedIndex`).
    """
    codes = as_codes(codes, "codes")
    prefix_bits, prefix = check_prefix(prefix_bits, prefix)
    threads = default_threads() if threads is None else max(1, int(threads))
    n, nbytes = codes.shape
    index_dtype = position_dtype(n)
    if prefix_bits == 0:
        keys, values, n_unique = _hash_and_sort(codes, index_dtype, threads)
    else:
        all_keys = _core.code_hashes(codes)
        kept = np.flatnonzero((all_keys >> np.uint64(64 - prefix_bits)) == np.uint64(prefix))
        keys, values, n_unique = _sort_records(all_keys[kept], kept.astype(index_dtype), prefix_bits, threads)
        del all_keys, kept
    keys, offsets, positions, fingerprints = _posting_lists(keys, values, n_unique, nbytes, codes=codes)
    return InvertedIndex(keys, offsets, positions, _directory(keys, prefix_bits, index_dtype), fingerprints,
                         nbytes=nbytes, database_size=n, prefix_bits=prefix_bits, prefix=prefix, threads=threads)


def read_database_codes(path, *, batch_rows: int = PARQUET_BATCH_ROWS) -> np.ndarray:
    """Every code of a merged fingerprint database (columns ``id`` uint64 = 0..N-1 in order,
    ``code`` fixed_size_binary[B]; docs/artifacts.md) as (N, B) uint8, read batch by batch."""
    path = Path(path)
    nbytes, n = _open_database(path)
    codes = np.empty((n, nbytes), dtype=np.uint8)
    with Progress(n, f"index read {path.name}", "code") as bar:
        for first, batch in database_batches(path, batch_rows):
            codes[first:first + len(batch)] = batch
            bar.update(len(batch))
    return codes


def build_index_from_parquet(database, out_dir, *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                             prefix_bits: int = 0, prefix: int = 0, threads: int | None = None,
                             batch_rows: int = PARQUET_BATCH_ROWS) -> InvertedIndex:
    """Build the index of a merged fingerprint database into ``out_dir`` in bounded memory,
    and return it memory-mapped.

    One pass over row-group batches of the Parquet file appends each record (key,
    position) to its *chunk*, a range of keys (``2**c`` chunks by the key bits below the
    prefix, c the smallest that makes a chunk fit ``memory_budget`` bytes at ~28 bytes per
    record while it is sorted); when everything fits one chunk, the codes are read into
    memory and indexed by :func:`build_index`, else the chunks are spilled to files in the
    output's temporary directory. Then the chunks are sorted one after the other, in key
    order, and their keys, offsets and positions appended to the index files; the
    directory is filled by one scan of the keys. Peak memory: one batch, one chunk and the
    directory (4 bytes per 4..8 distinct codes), whatever N. With ``prefix_bits`` > 0 only
    the codes whose key starts with ``prefix`` are indexed (a partition).
    """
    path = Path(database)
    prefix_bits, prefix = check_prefix(prefix_bits, prefix)
    threads = default_threads() if threads is None else max(1, int(threads))
    nbytes, n_rows = _open_database(path)
    plan = _SpillPlan(path, nbytes, n_rows, prefix_bits, prefix, batch_rows, memory_budget)
    if plan.n_chunks == 1 and prefix_bits == 0:  # it all fits: the fused in-memory build
        start = time.monotonic()
        index = build_index(read_database_codes(path, batch_rows=batch_rows), threads=threads)
        logger.info("index %s: %d codes, %d distinct fingerprints, built in %s", path.name, index.size,
                    index.n_unique, format_duration(time.monotonic() - start))
        write_index(index, out_dir)
        return read_index(out_dir, threads=threads, verify=False)
    part = f" prefix {prefix:0{prefix_bits}b}" if prefix_bits else ""
    with atomic_path(out_dir, directory=True) as tmp:
        _spill_and_sort(plan, tmp, n_rows, nbytes, part, threads, label=Path(out_dir))
    return read_index(out_dir, threads=threads, verify=False)  # checksummed from these very files


def _spill_and_sort(plan: _SpillPlan, tmp: Path, n_rows: int, nbytes: int, part: str, threads: int,
                    label: Path) -> None:
    """The spilled build of :func:`build_index_from_parquet` into the directory ``tmp``."""
    plan.spill(tmp, n_rows, part)
    logger.info("index %s: %d of %d codes in %d chunk(s) of at most %d records", label, plan.n_kept,
                n_rows, plan.n_chunks, int(plan.chunk_sizes.max()))
    n_unique = plan.sort_chunks(tmp, threads, part)
    bits = directory_bits_for(n_unique)
    directory = np.empty(2**bits + 1, dtype=plan.index_dtype)
    filled, block = 0, 1 << 22
    for lo in range(0, n_unique, block):
        keys = np.fromfile(tmp / "keys.bin", dtype="<u8", count=min(block, n_unique - lo), offset=8 * lo)
        filled = _core.fill_directory(keys, lo, plan.prefix_bits, bits, directory, filled)
    directory[filled:] = n_unique
    directory.astype(little(plan.index_dtype)).tofile(tmp / "directory.bin")
    header = header_for(nbytes=nbytes, size=plan.n_kept, database_size=n_rows, n_unique=n_unique,
                        directory_bits=bits, prefix_bits=plan.prefix_bits, prefix=plan.prefix,
                        index_dtype=plan.index_dtype)
    seal(tmp, header, threads)


def build_partitioned_index(codes, *, prefix_bits: int = DEFAULT_PREFIX_BITS,
                            threads: int | None = None) -> PartitionedIndex:
    """Partition the index of ``codes`` (N, B) uint8 in memory (row i = position i)."""
    codes = as_codes(codes, "codes")
    prefix_bits, _ = check_prefix(prefix_bits, 0)
    parts = []
    with Progress(2**prefix_bits, "index partitions", "partition") as bar:
        for v in range(2**prefix_bits):
            parts.append(build_index(codes, prefix_bits=prefix_bits, prefix=v, threads=threads))
            bar.update()
    return PartitionedIndex(parts, threads=threads)


def build_partitioned_index_from_parquet(database, out_dir, *, prefix_bits: int = DEFAULT_PREFIX_BITS,
                                         memory_budget: int = DEFAULT_MEMORY_BUDGET, threads: int | None = None,
                                         batch_rows: int = PARQUET_BATCH_ROWS) -> PartitionedIndex:
    """Build every partition from the merged fingerprint database into ``out_dir`` (one
    subdirectory each, as separate machines would, each in bounded memory), write the
    manifest, and return the index memory-mapped. A progress bar ``index partitions``
    counts the partitions built; each has its own ``index spill`` / ``index sort`` bars."""
    prefix_bits, _ = check_prefix(prefix_bits, 0)
    if prefix_bits == 0:
        raise InputError("prefix_bits: expected at least 1 bit (2 partitions), got 0")
    with atomic_path(out_dir, directory=True) as tmp, \
            Progress(2**prefix_bits, "index partitions", "partition") as bar:
        parts = []
        for v, name in enumerate(partition_names(prefix_bits)):
            parts.append(build_index_from_parquet(database, tmp / name, prefix_bits=prefix_bits, prefix=v,
                                                  memory_budget=memory_budget, threads=threads,
                                                  batch_rows=batch_rows))
            bar.update()
        write_manifest(tmp, prefix_bits, parts[0].nbytes, parts[0].database_size)
        del parts
    return read_index(out_dir, threads=threads, verify=False)  # each partition checksummed as it was written
