"""Inverted index: fingerprint -> posting list of database positions (docs/method.md section 8).

An equihash function makes near-duplicate retrieval an exact lookup: the retrieved set
of a query is every database position whose fingerprint equals the query's. The thesis
keeps a chained hash table (about 32 bytes per code, 1.9M codes/s to build); this index
is a *sorted key array with a bucket directory*: every fingerprint gets a 64-bit key
that mixes its bits, the distinct keys are stored once in increasing order, and a
directory over the top bits of the keys leads a lookup straight to a handful of
neighbouring keys. It builds with a radix sort, stores flat arrays that memory-map,
and answers batches of lookups in compiled loops without the GIL (``_core.pyx``).

Keys
----
The key of a code of B bytes is the splitmix64 chain of ``_core.pyx`` over its
little-endian 8-byte words. For B <= 8 (the fast path; B = 8 for k = 64) it is a
*bijection* of the code: the key is the fingerprint itself, scrambled, so the index
stores no code bytes, and the keys are uniform whatever the bit statistics of the
network (a poorly balanced bit cannot crowd a bucket). For B > 8 keys are hashes and the
code bytes are kept beside them (``fingerprints``) to settle equal keys.

Layout (N positions, U distinct fingerprints; ``idx`` = uint32 when the database has
fewer than 2**32 positions, else uint64)
----------------------------------------------------------------------------
``keys``          (U,) uint64: the distinct keys in increasing order (for B > 8, equal
                  keys of distinct codes are ordered by code bytes).
``offsets``       (U+1,) idx: the posting list of key u is
                  ``positions[offsets[u]:offsets[u+1]]``; offsets[0] = 0, offsets[U] = N.
``positions``     (N,) idx: database positions grouped by key, increasing in each list.
``directory``     (2**b + 1,) idx: ``directory[t]`` = index of the first key whose
                  bucket is >= t, where the bucket of a key is its ``b`` bits below the
                  ``p`` prefix bits (``(key << p) >> (64 - b)``); ``directory[2**b] = U``.
                  b is the largest value with 4 * 2**b <= U (0 below 8 keys), so a bucket
                  holds 4 to 8 keys on average: a lookup reads one directory entry,
                  about one cache line of keys, two offsets and its postings.
``fingerprints``  (U, B) uint8, only for B > 8: the code of each key.

Bytes per database code with r = U/N (uint32 idx): 4 + r (8 + 4 + 0.5..1 of directory),
about 13 at r = 0.69 (37% repeated labels, 10% noisy bits), against 21 for the former
open-addressing layout and about 32 for the thesis table.

Prefix (partitioned indexes): an index may hold only the codes whose key starts with the
``p``-bit value ``prefix`` (``equihash.index.partitioned``); codes with another prefix
are absent from it. A whole index has p = 0.

On-disk format (a directory, version 3)
---------------------------------------
``header.json``: {"format": "equihash-inverted-index", "version": 3, "nbytes": B,
"size": N, "database_size": D (positions are < D; D = N for a whole index),
"n_unique": U, "key": "splitmix64-le64-words", "directory_bits": b, "prefix_bits": p,
"prefix": v, "index_dtype": "uint32" or "uint64", "arrays": {name: {"file", "dtype",
"shape", "crc32"}}}. Each array is a raw little-endian file ``<name>.bin`` with exactly
``prod(shape) * itemsize`` bytes (no numpy header, so the bounded-memory build can
append to it): ``np.memmap(path, dtype, mode="r", shape=shape)`` reads it; ``crc32`` is
the CRC-32 (``zlib.crc32``) of the file's bytes, computed from the written files before
the header is written. The directory is written under a temporary name and renamed
when complete. Version 2 (no checksums) is refused: rebuild the index.

``load`` checks the header, then every file's size against its dtype and shape (a
truncated or padded file is an error naming it and the expected size), then, unless
``verify=False``, every file's CRC-32 against the header, then the end values of
``offsets`` and ``directory``, and memory-maps the arrays. The checksums catch any
changed byte: CRC-32 detects every error burst of up to 32 bits (so every changed byte)
and misses a random larger change with probability 2**-32. It guards against damage
(a bad disk, a torn copy, a stray write), not against a forger. Verifying reads every
file once (the files in parallel on the index's threads): ``benchmarks/index_load.py``
measured 2.6 GB/s on one thread of a 2-core Xeon with the files in the page cache, so a
1e9-code index (13 GB) verifies in about 5 s, or at the disk's read rate when it is not
cached; the read leaves the arrays in the page cache for the lookups that follow.
``verify=False`` skips that read (a single query on a large index): the lookups then
still never read outside an array (``_core`` checks every directory and posting-list
range it follows, and a looked-up position must be below D), so a damaged index raises
InputError naming the file or, where the damage keeps every range valid, answers wrongly.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from equihash.io import InputError, atomic_path, column_to_numpy, read_schema
from equihash.progress import Progress, format_duration, logger

from . import _core
from .multiprobe import Multiprobing

FORMAT_NAME = "equihash-inverted-index"
FORMAT_VERSION = 3
KEY_NAME = "splitmix64-le64-words"
HEADER_FILE = "header.json"
INDEX_DTYPES = ("uint32", "uint64")
MAX_PREFIX_BITS = 16
MIN_PARALLEL = 1 << 16  # records or queries below which one thread does the work
PARQUET_BATCH_ROWS = 1 << 20
MAX_CHUNK_BITS = 8  # at most 256 key-range chunks (and spill files per column) in a bounded build
DEFAULT_MEMORY_BUDGET = 1 << 30
CHECKSUM_BLOCK = 1 << 23  # bytes read at a time when checksumming an array file

_HASH_SEED = 0x9E3779B97F4A7C15
_MIX_MULTIPLIERS = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


# ----------------------------------------------------------------------------- small helpers
def _index_dtype(database_size: int) -> np.dtype:
    """uint32 positions and offsets below 2**32 database positions, uint64 beyond."""
    return np.dtype(np.uint32 if database_size < 2**32 else np.uint64)


def _directory_bits(n_unique: int) -> int:
    """Largest b with 4 * 2**b <= U (0 when U < 8): 4 to 8 keys per bucket on average."""
    return max(0, (n_unique // 4).bit_length() - 1)


def _split_bits(n: int, available: int) -> int:
    """Key bits of the first radix pass: buckets of ~2**14 records (cache-sized sorts)."""
    return max(0, min(n.bit_length() - 14, 14, available))


def default_threads() -> int:
    """Threads used by builds and batch queries: the CPUs this process may run on (<= 8)."""
    return max(1, min(8, len(os.sched_getaffinity(0))))


def _ranges(total: int, parts: int) -> list[tuple[int, int]]:
    cuts = np.linspace(0, total, parts + 1).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _run_parallel(fn, tasks, threads: int) -> list:
    """``[fn(*task) for task in tasks]`` on ``threads`` threads (the loops release the GIL)."""
    if threads <= 1 or len(tasks) <= 1:
        return [fn(*task) for task in tasks]
    with ThreadPoolExecutor(threads) as pool:
        return [future.result() for future in [pool.submit(fn, *task) for task in tasks]]


def one_code(code, nbytes: int) -> np.ndarray:
    """One fingerprint ((B,) uint8 or bytes) as a (1, B) batch; InputError for another shape."""
    if isinstance(code, (bytes, bytearray, memoryview)):
        code = np.frombuffer(code, dtype=np.uint8)
    code = np.asarray(code)
    if code.ndim != 1:
        raise InputError(f"code: expected one fingerprint of shape ({nbytes},), got {code.shape}")
    return code[None, :]


def _as_codes(codes, name: str, nbytes: int | None = None) -> np.ndarray:
    """Check a (n, B) uint8 code array (B = ``nbytes`` when given); return it C-contiguous."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise InputError(f"{name}: expected dtype uint8 fingerprints, got {codes.dtype}")
    if codes.ndim != 2:
        raise InputError(f"{name}: expected shape (n, B) fingerprints, got {codes.shape}")
    if nbytes is None:
        if codes.shape[1] < 1:
            raise InputError(f"{name}: expected fingerprints of at least 1 byte, got shape {codes.shape}")
    elif codes.shape[1] != nbytes:
        raise InputError(
            f"{name}: expected fingerprints of {nbytes} bytes ({8 * nbytes} bits), "
            f"got {codes.shape[1]} bytes ({8 * codes.shape[1]} bits)"
        )
    return np.ascontiguousarray(codes)


def _check_prefix(prefix_bits: int, prefix: int) -> tuple[int, int]:
    if not isinstance(prefix_bits, (int, np.integer)) or not 0 <= prefix_bits <= MAX_PREFIX_BITS:
        raise InputError(f"prefix_bits: expected an integer in [0, {MAX_PREFIX_BITS}], got {prefix_bits!r}")
    if not isinstance(prefix, (int, np.integer)) or not 0 <= prefix < 2**prefix_bits:
        raise InputError(f"prefix: expected an integer in [0, 2**{prefix_bits}), got {prefix!r}")
    return int(prefix_bits), int(prefix)


def code_keys(codes) -> np.ndarray:
    """The 64-bit index key of every fingerprint ((n, B) uint8 -> (n,) uint64)."""
    return _core.code_hashes(_as_codes(codes, "codes"))


def keys_to_codes(keys, nbytes: int) -> np.ndarray:
    """Invert the key of B <= 8 byte fingerprints: (U,) uint64 keys -> (U, B) uint8 codes."""
    if not 1 <= nbytes <= 8:
        raise InputError(f"nbytes: keys are invertible for 1 to 8 bytes, got {nbytes}")
    x = np.array(keys, dtype=np.uint64)
    first, second = (np.uint64(pow(m, -1, 2**64)) for m in _MIX_MULTIPLIERS)
    with np.errstate(over="ignore"):
        x ^= (x >> np.uint64(31)) ^ (x >> np.uint64(62))
        x *= second
        x ^= (x >> np.uint64(27)) ^ (x >> np.uint64(54))
        x *= first
        x ^= (x >> np.uint64(30)) ^ (x >> np.uint64(60))
    x ^= np.uint64(_HASH_SEED)
    return np.ascontiguousarray(x.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :nbytes])


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
    return sum(_run_parallel(_core.sort_buckets, tasks, threads))


def _radix_scatter(n: int, bits: int, count, scatter, threads: int) -> np.ndarray:
    """The first radix pass over n records, on consecutive ranges of them across threads:
    ``count(lo, hi, counts)`` adds the bucket sizes of records [lo, hi), then
    ``scatter(lo, hi, cursor)`` writes each record at ``cursor[bucket]++``. Range r writes
    each bucket after the records of ranges < r, so the pass is stable. Returns the bucket
    starts (2**bits + 1)."""
    ranges = _ranges(n, threads if n >= MIN_PARALLEL else 1)
    counts = np.zeros((len(ranges), 2**bits), dtype=np.int64)
    _run_parallel(count, [(lo, hi, counts[r]) for r, (lo, hi) in enumerate(ranges)], threads)
    starts = np.zeros(2**bits + 1, dtype=np.int64)
    np.cumsum(counts.sum(axis=0), out=starts[1:])
    cursors = starts[:-1] + np.cumsum(counts, axis=0) - counts  # (range, bucket): first slot
    _run_parallel(scatter, [(lo, hi, cursors[r].copy()) for r, (lo, hi) in enumerate(ranges)], threads)
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
    bits = _directory_bits(len(keys))
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


def _database_batches(path: Path, batch_rows: int = PARQUET_BATCH_ROWS):
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


def _little(dtype) -> np.dtype:
    return np.dtype(dtype).newbyteorder("<")


def file_crc32(path) -> int:
    """CRC-32 (``zlib.crc32``) of a file's bytes, read in blocks (the GIL is released while
    a block is read and checksummed, so threads checksum files in parallel)."""
    crc = 0
    buffer = bytearray(CHECKSUM_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            crc = zlib.crc32(view[:read], crc)
    return crc


def _seal(directory: Path, header: dict, threads: int) -> None:
    """Record the CRC-32 of every array file of ``directory`` in ``header`` and write
    ``header.json``, last: an index directory is complete once its header exists."""
    names = list(header["arrays"])
    checksums = _run_parallel(file_crc32, [(directory / header["arrays"][name]["file"],) for name in names], threads)
    for name, crc in zip(names, checksums):
        header["arrays"][name]["crc32"] = crc
    (directory / HEADER_FILE).write_text(json.dumps(header, indent=2) + "\n")


class _SpillPlan:
    """The bounded-memory build of :meth:`InvertedIndex.build_parquet`.

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
        self.index_dtype = _index_dtype(n_rows)
        isize = self.index_dtype.itemsize
        # bytes per record while a chunk is sorted: the chunk, its sorted copy, the offsets
        record_bytes = 2 * (8 + isize) + isize + (2 * nbytes + 8 if nbytes > 8 else 0)
        expected = -(-n_rows // 2**prefix_bits) * record_bytes  # uniform keys: this prefix's share
        needed = -(-expected // max(1, int(memory_budget)))
        self.chunk_bits = min(MAX_CHUNK_BITS, max(0, needed - 1).bit_length())
        self.n_chunks = 2**self.chunk_bits
        self.columns = {"keys": (np.dtype("<u8"), ()), "positions": (_little(self.index_dtype), ())}
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
            for first, codes in _database_batches(self.path, self.batch_rows):
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
        little = _little(self.index_dtype)
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
                offsets.astype(little).tofile(outputs["offsets"])
                keys.astype("<u8", copy=False).tofile(outputs["keys"])
                positions.astype(little, copy=False).tofile(outputs["positions"])
                if fingerprints is not None:
                    fingerprints.tofile(outputs["fingerprints"])
                n_unique += len(keys)
                first += size
                del lists, keys, offsets, positions, fingerprints
                bar.update(size)
            np.array([self.n_kept], dtype=little).tofile(outputs["offsets"])
        finally:
            bar.close()
            for handle in outputs.values():
                handle.close()
        return n_unique


# ----------------------------------------------------------------------------- the index
class InvertedIndex(Multiprobing):
    """Map each fingerprint to the increasing database positions holding it (docs/method.md section 8).

    Build with :meth:`build` (codes in memory), :meth:`from_parquet` (a merged fingerprint
    database, read into memory), :meth:`build_parquet` (the same in bounded memory, written
    to a directory) or :meth:`load` (a saved index, memory-mapped). Query with
    :meth:`lookup` (exact fingerprints) or :meth:`multiprobe` (the L most likely
    fingerprints of logits, docs/method.md section 10). Results are CSR pairs ``(offsets, positions)``:
    the retrieved set of query j is ``positions[offsets[j]:offsets[j+1]]``, increasing.
    Layout and format: the module docstring.
    """

    def __init__(self, keys, offsets, positions, directory, fingerprints=None, *, nbytes: int,
                 database_size: int | None = None, prefix_bits: int = 0, prefix: int = 0,
                 threads: int | None = None):
        """Wrap arrays in the layout of the module docstring (use the classmethods instead).

        The array lengths are checked against each other (what the lookups rely on to stay
        inside the arrays); their values are checked by the lookups and, for a saved index,
        by the checksums of :meth:`load`."""
        n_keys = len(keys)
        expected = {"offsets": (len(offsets), n_keys + 1),
                    "directory": (len(directory), 2**_directory_bits(n_keys) + 1)}
        if fingerprints is not None:
            expected["fingerprints"] = (np.shape(fingerprints), (n_keys, int(nbytes)))
        for name, (found, wanted) in expected.items():
            if found != wanted:
                raise InputError(f"index array '{name}': length {found}, expected {wanted} for {n_keys} keys")
        self.keys = keys
        self.offsets = offsets
        self.positions = positions
        self.directory = directory
        self.stored_fingerprints = fingerprints
        self.nbytes = int(nbytes)
        self.database_size = int(len(positions) if database_size is None else database_size)
        self.prefix_bits, self.prefix = _check_prefix(prefix_bits, prefix)
        self.threads = default_threads() if threads is None else max(1, int(threads))
        self._fingerprints_or_empty = (fingerprints if fingerprints is not None
                                       else np.empty((0, self.nbytes), dtype=np.uint8))
        self._directory_bits = int(len(directory) - 1).bit_length() - 1
        self._plain_positions = np.asarray(positions)  # the same memory, without np.memmap's slicing cost
        self.source: Path | None = None  # the directory it was loaded from (named in errors)

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, codes, *, prefix_bits: int = 0, prefix: int = 0, threads: int | None = None) -> "InvertedIndex":
        """Index fingerprints ``codes`` (N, B) uint8; row i is database position i.

        With ``prefix_bits`` > 0 only the codes whose key starts with ``prefix`` are
        indexed (one partition of a :class:`~equihash.index.partitioned.PartitionedIndex`).
        """
        codes = _as_codes(codes, "codes")
        prefix_bits, prefix = _check_prefix(prefix_bits, prefix)
        threads = default_threads() if threads is None else max(1, int(threads))
        n, nbytes = codes.shape
        index_dtype = _index_dtype(n)
        if prefix_bits == 0:
            keys, values, n_unique = _hash_and_sort(codes, index_dtype, threads)
        else:
            all_keys = _core.code_hashes(codes)
            kept = np.flatnonzero((all_keys >> np.uint64(64 - prefix_bits)) == np.uint64(prefix))
            keys, values, n_unique = _sort_records(all_keys[kept], kept.astype(index_dtype), prefix_bits, threads)
            del all_keys, kept
        keys, offsets, positions, fingerprints = _posting_lists(keys, values, n_unique, nbytes, codes=codes)
        return cls(keys, offsets, positions, _directory(keys, prefix_bits, index_dtype), fingerprints,
                   nbytes=nbytes, database_size=n, prefix_bits=prefix_bits, prefix=prefix, threads=threads)

    @classmethod
    def from_parquet(cls, path, *, threads: int | None = None,
                     batch_rows: int = PARQUET_BATCH_ROWS) -> "InvertedIndex":
        """Index a merged fingerprint database (columns ``id`` uint64 = 0..N-1 in order,
        ``code`` fixed_size_binary[B]; equihash/io.py), reading all codes into memory
        (B bytes per code, plus 12 while building). :meth:`build_parquet` bounds the memory."""
        path = Path(path)
        nbytes, n = _open_database(path)
        codes = np.empty((n, nbytes), dtype=np.uint8)
        with Progress(n, f"index read {path.name}", "code") as bar:
            for first, batch in _database_batches(path, batch_rows):
                codes[first:first + len(batch)] = batch
                bar.update(len(batch))
        start = time.monotonic()
        index = cls.build(codes, threads=threads)
        logger.info("index %s: %d codes, %d distinct fingerprints, built in %s", path.name, index.size,
                    index.n_unique, format_duration(time.monotonic() - start))
        return index

    @classmethod
    def build_parquet(cls, database, out_dir, *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                      prefix_bits: int = 0, prefix: int = 0, threads: int | None = None,
                      batch_rows: int = PARQUET_BATCH_ROWS) -> "InvertedIndex":
        """Build the index of a merged fingerprint database into ``out_dir`` in bounded
        memory, and return it memory-mapped.

        One pass over row-group batches of the Parquet file appends each record (key,
        position) to its *chunk*, a range of keys (``2**c`` chunks by the key bits below
        the prefix, c the smallest that makes a chunk fit ``memory_budget`` bytes at ~28
        bytes per record while it is sorted); the chunk stays in memory when there is
        one (for a whole index: :meth:`from_parquet` then :meth:`save`), else the chunks
        are spilled to files in the output's temporary directory.
        Then the chunks are sorted one after the other, in key order, and their keys,
        offsets and positions appended to the index files; the directory is filled by one
        scan of the keys. Peak memory: one batch, one chunk and the directory (4 bytes per
        4..8 distinct codes), whatever N. With ``prefix_bits`` > 0 only the codes whose
        key starts with ``prefix`` are indexed (a partition, ``equihash.index.partitioned``).
        """
        path = Path(database)
        prefix_bits, prefix = _check_prefix(prefix_bits, prefix)
        threads = default_threads() if threads is None else max(1, int(threads))
        nbytes, n_rows = _open_database(path)
        plan = _SpillPlan(path, nbytes, n_rows, prefix_bits, prefix, batch_rows, memory_budget)
        if plan.n_chunks == 1 and prefix_bits == 0:  # it all fits: the fused in-memory build
            cls.from_parquet(path, threads=threads, batch_rows=batch_rows).save(out_dir)
            return cls.load(out_dir, threads=threads, verify=False)
        part = f" prefix {prefix:0{prefix_bits}b}" if prefix_bits else ""
        with atomic_path(out_dir, directory=True) as tmp:
            plan.spill(tmp, n_rows, part)
            logger.info("index %s: %d of %d codes in %d chunk(s) of at most %d records", out_dir, plan.n_kept,
                        n_rows, plan.n_chunks, int(plan.chunk_sizes.max()))
            n_unique = plan.sort_chunks(tmp, threads, part)
            bits = _directory_bits(n_unique)
            directory = np.empty(2**bits + 1, dtype=plan.index_dtype)
            filled, block = 0, 1 << 22
            for lo in range(0, n_unique, block):
                keys = np.fromfile(tmp / "keys.bin", dtype="<u8", count=min(block, n_unique - lo), offset=8 * lo)
                filled = _core.fill_directory(keys, lo, prefix_bits, bits, directory, filled)
            directory[filled:] = n_unique
            directory.astype(_little(plan.index_dtype)).tofile(tmp / "directory.bin")
            header = _header(nbytes=nbytes, size=plan.n_kept, database_size=n_rows, n_unique=n_unique,
                             directory_bits=bits, prefix_bits=prefix_bits, prefix=prefix,
                             index_dtype=plan.index_dtype)
            _seal(tmp, header, threads)
        return cls.load(out_dir, threads=threads, verify=False)  # checksummed from these very files

    # ------------------------------------------------------------------ properties
    @property
    def size(self) -> int:
        """Number of indexed database positions N."""
        return int(self.positions.shape[0])

    @property
    def n_unique(self) -> int:
        """Number of distinct fingerprints U."""
        return int(self.keys.shape[0])

    @property
    def directory_bits(self) -> int:
        """b: the directory has 2**b buckets."""
        return self._directory_bits

    @property
    def fingerprints(self) -> np.ndarray:
        """The distinct fingerprints (U, B) uint8, in key order (decoded from the keys for B <= 8)."""
        if self.stored_fingerprints is not None:
            return self.stored_fingerprints
        return keys_to_codes(self.keys, self.nbytes)

    def arrays(self) -> dict:
        """The index arrays by name (``fingerprints`` only for B > 8)."""
        arrays = {"keys": self.keys, "offsets": self.offsets, "positions": self.positions,
                  "directory": self.directory}
        if self.stored_fingerprints is not None:
            arrays["fingerprints"] = self.stored_fingerprints
        return arrays

    @property
    def memory_usage(self) -> int:
        """Bytes held by the index arrays (in RAM, or mapped from disk)."""
        return int(sum(array.nbytes for array in self.arrays().values()))

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        prefix = f", prefix={self.prefix:0{self.prefix_bits}b}" if self.prefix_bits else ""
        return (f"InvertedIndex(size={self.size}, n_unique={self.n_unique}, nbits={8 * self.nbytes}, "
                f"directory_bits={self.directory_bits}{prefix})")

    # ------------------------------------------------------------------ queries
    def lookup(self, codes, *, threads: int | None = None):
        """Posting lists of ``codes`` (q, B) uint8 as CSR ``(offsets (q+1) int64, positions)``.

        ``positions[offsets[j]:offsets[j+1]]`` are the database positions whose fingerprint
        equals ``codes[j]``, increasing; empty when the code is absent. Large batches are
        split across ``threads`` (default: the index's ``threads``).
        """
        codes = _as_codes(codes, "lookup codes", self.nbytes)
        threads = self.threads if threads is None else max(1, int(threads))
        q = codes.shape[0]
        ranges = _ranges(q, threads if q >= MIN_PARALLEL else 1) or [(0, 0)]
        parts = _run_parallel(self._lookup_batch, [(codes[lo:hi],) for lo, hi in ranges], threads)
        if len(parts) == 1:
            return parts[0]
        shifts = np.cumsum([0] + [len(positions) for _, positions in parts[:-1]])
        offsets = np.concatenate([[0]] + [part_offsets[1:] + shift for (part_offsets, _), shift in zip(parts, shifts)])
        return offsets, np.concatenate([positions for _, positions in parts])

    def _lookup_batch(self, codes: np.ndarray):
        """One thread's lookups: a pipelined pass that copies the postings into an output of
        2 positions per query (+64), then, should they not fit, a gather of the rest."""
        q = codes.shape[0]
        start = np.empty(q, dtype=np.int64)
        offsets = np.empty(q + 1, dtype=np.int64)
        out = np.empty(2 * q + 64, dtype=self.positions.dtype)
        try:
            copied = _core.find_postings(self.keys, self.directory, self._fingerprints_or_empty, self.offsets,
                                         self.positions, codes, self.prefix_bits, self.prefix, self.directory_bits,
                                         start, offsets, out)
        except _core.CorruptIndex as exc:
            raise self._corrupt(exc.array, str(exc)) from None
        total = int(offsets[-1])
        if copied < q:
            done = int(offsets[copied])
            full = np.empty(total, dtype=out.dtype)
            full[:done] = out[:done]
            _core.gather_postings(self.positions, start[copied:], offsets[copied:] - done, full[done:])
            return offsets, self._checked_positions(full)
        return offsets, self._checked_positions(out[:total])

    def lookup_one(self, code) -> np.ndarray:
        """Posting list (increasing positions) of one fingerprint: (B,) uint8 or bytes."""
        code = _as_codes(one_code(code, self.nbytes), "code", self.nbytes)[0]
        try:
            start, length = _core.find_one(self.keys, self.directory, self._fingerprints_or_empty, self.offsets,
                                           self.positions, self.database_size, code, self.prefix_bits, self.prefix,
                                           self.directory_bits)
        except _core.CorruptIndex as exc:
            raise self._corrupt(exc.array, str(exc)) from None
        return self._plain_positions[start:start + length].copy()

    def _checked_positions(self, positions: np.ndarray) -> np.ndarray:
        """``positions`` (looked up), or InputError naming the positions file when one is
        not below database_size."""
        if len(positions) and int(positions.max()) >= self.database_size:
            raise self._corrupt("positions", f"holds position {int(positions.max())}, expected positions "
                                             f"below database_size = {self.database_size}")
        return positions

    def _corrupt(self, name: str, problem: str) -> InputError:
        """The InputError of a damaged array: its file when the index was loaded, else its name."""
        where = f"index array '{name}'" if self.source is None else self.source / f"{name}.bin"
        return InputError(f"{where}: damaged index: {problem}")

    # ------------------------------------------------------------------ persistence
    def header(self) -> dict:
        """The JSON header of the on-disk format, without the checksums of the files."""
        return _header(nbytes=self.nbytes, size=self.size, database_size=self.database_size,
                       n_unique=self.n_unique, directory_bits=self.directory_bits,
                       prefix_bits=self.prefix_bits, prefix=self.prefix, index_dtype=self.positions.dtype)

    def save(self, directory) -> None:
        """Write the index directory atomically (header.json with the arrays' checksums,
        plus one raw .bin file per array)."""
        header = self.header()
        with atomic_path(directory, directory=True) as tmp:
            for name, array in self.arrays().items():
                spec = header["arrays"][name]
                np.ascontiguousarray(array, dtype=np.dtype(spec["dtype"])).tofile(tmp / spec["file"])
            _seal(tmp, header, self.threads)

    @classmethod
    def load(cls, directory, mmap: bool = True, *, verify: bool = True,
             threads: int | None = None) -> "InvertedIndex":
        """Open a saved index; with ``mmap`` the arrays are memory-mapped read-only.

        Raises InputError, naming the file and the expectation, when the header is
        missing, malformed or of another version, or when an array file is missing,
        truncated, inconsistent with the header or (``verify``, the default) has
        another CRC-32 than the header records. ``verify=False`` skips reading the
        files whole; lookups then stay safe but may answer wrongly from a damaged file
        (module docstring).
        """
        directory = Path(directory)
        header_path = directory / HEADER_FILE
        header = _read_header(header_path)
        threads = default_threads() if threads is None else max(1, int(threads))
        paths = {name: directory / spec["file"] for name, spec in header["arrays"].items()}
        for name, spec in header["arrays"].items():
            path = directory / spec["file"]
            dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            want = f"{dtype.name} array of shape {shape}, {expected} bytes"
            if not path.is_file():
                raise InputError(f"{path}: index array '{name}' not found (expected {want})")
            found = path.stat().st_size
            if found != expected:
                problem = "truncated" if found < expected else "too long"
                raise InputError(f"{path}: {problem} index array '{name}': {found} bytes, expected {want} "
                                 f"(as {header_path.name} says)")
        if verify:
            found = _run_parallel(file_crc32, [(path,) for path in paths.values()], threads)
            for (name, path), crc in zip(paths.items(), found):
                if crc != header["arrays"][name]["crc32"]:
                    raise InputError(f"{path}: damaged index array '{name}': its CRC-32 is {crc:08x}, "
                                     f"{header_path.name} records {header['arrays'][name]['crc32']:08x}")
        arrays = {}
        for name, spec in header["arrays"].items():
            path, dtype, shape = paths[name], np.dtype(spec["dtype"]), tuple(spec["shape"])
            if int(np.prod(shape, dtype=np.int64)) == 0:
                arrays[name] = np.empty(shape, dtype=dtype)
            elif mmap:
                arrays[name] = np.memmap(path, dtype=dtype, mode="r", shape=shape)
            else:
                arrays[name] = np.fromfile(path, dtype=dtype).reshape(shape)
        for name in ("offsets", "directory"):
            values = arrays[name]
            end = header["size"] if name == "offsets" else header["n_unique"]
            if int(values[0]) != 0 or int(values[-1]) != end:
                raise InputError(f"{directory / header['arrays'][name]['file']}: '{name}' must run from 0 to "
                                 f"{end}, got {int(values[0])} .. {int(values[-1])}")
        index = cls(arrays["keys"], arrays["offsets"], arrays["positions"], arrays["directory"],
                    arrays.get("fingerprints"), nbytes=header["nbytes"], database_size=header["database_size"],
                    prefix_bits=header["prefix_bits"], prefix=header["prefix"], threads=threads)
        index.source = directory
        return index


# ----------------------------------------------------------------------------- header
def _header(*, nbytes, size, database_size, n_unique, directory_bits, prefix_bits, prefix, index_dtype) -> dict:
    index_dtype = np.dtype(index_dtype)
    idx = _little(index_dtype).str
    arrays = {
        "keys": ("<u8", [n_unique]),
        "offsets": (idx, [n_unique + 1]),
        "positions": (idx, [size]),
        "directory": (idx, [2**directory_bits + 1]),
    }
    if nbytes > 8:
        arrays["fingerprints"] = ("|u1", [n_unique, nbytes])
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "nbytes": int(nbytes),
        "size": int(size),
        "database_size": int(database_size),
        "n_unique": int(n_unique),
        "key": KEY_NAME,
        "directory_bits": int(directory_bits),
        "prefix_bits": int(prefix_bits),
        "prefix": int(prefix),
        "index_dtype": index_dtype.name,
        "arrays": {name: {"file": f"{name}.bin", "dtype": dtype, "shape": shape}
                   for name, (dtype, shape) in arrays.items()},
    }


def _read_header(path: Path) -> dict:
    """Read and validate ``header.json``: every field, and the array list it implies."""
    if not path.is_file():
        raise InputError(f"{path}: index header not found (expected a directory written by InvertedIndex.save)")
    try:
        header = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(header).__name__}")
    if header.get("format") != FORMAT_NAME:
        raise InputError(f"{path}: field 'format' is {header.get('format')!r}, expected {FORMAT_NAME!r}")
    if header.get("version") != FORMAT_VERSION:
        raise InputError(f"{path}: field 'version' is {header.get('version')!r}, expected {FORMAT_VERSION} "
                         "(rebuild the index with this version of equihash)")
    if header.get("key") != KEY_NAME:
        raise InputError(f"{path}: field 'key' is {header.get('key')!r}, expected {KEY_NAME!r}")
    for field in ("nbytes", "size", "database_size", "n_unique", "directory_bits", "prefix_bits", "prefix"):
        value = header.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InputError(f"{path}: field '{field}' is {value!r}, expected a non-negative integer")
    if header["nbytes"] < 1:
        raise InputError(f"{path}: field 'nbytes' is {header['nbytes']}, expected >= 1")
    if header["n_unique"] > header["size"] or header["size"] > header["database_size"]:
        raise InputError(f"{path}: expected n_unique <= size <= database_size, got {header['n_unique']}, "
                         f"{header['size']}, {header['database_size']}")
    if header["n_unique"] == 0 and header["size"] > 0:
        raise InputError(f"{path}: field 'n_unique' is 0 but size is {header['size']}, expected >= 1")
    if header["directory_bits"] != _directory_bits(header["n_unique"]):
        raise InputError(f"{path}: field 'directory_bits' is {header['directory_bits']}, expected "
                         f"{_directory_bits(header['n_unique'])} for n_unique = {header['n_unique']}")
    if header["prefix_bits"] > MAX_PREFIX_BITS or header["prefix"] >= 2**header["prefix_bits"]:
        raise InputError(f"{path}: fields 'prefix_bits', 'prefix' are {header['prefix_bits']}, {header['prefix']}, "
                         f"expected prefix_bits <= {MAX_PREFIX_BITS} and prefix < 2**prefix_bits")
    allowed = INDEX_DTYPES if header["database_size"] < 2**32 else INDEX_DTYPES[1:]
    if header.get("index_dtype") not in allowed:
        raise InputError(f"{path}: field 'index_dtype' is {header.get('index_dtype')!r}, expected one of "
                         f"{allowed} for database_size = {header['database_size']}")
    expected = _header(**{name: header[name] for name in (
        "nbytes", "size", "database_size", "n_unique", "directory_bits", "prefix_bits", "prefix", "index_dtype")})
    arrays = header.get("arrays")
    if not isinstance(arrays, dict) or not all(isinstance(spec, dict) for spec in arrays.values()):
        raise InputError(f"{path}: field 'arrays' is {arrays!r}, expected {expected['arrays']!r} with a 'crc32' each")
    for name, spec in arrays.items():
        crc = spec.get("crc32")
        if not isinstance(crc, int) or isinstance(crc, bool) or not 0 <= crc < 2**32:
            raise InputError(f"{path}: field 'arrays.{name}.crc32' is {crc!r}, expected the CRC-32 of "
                             f"{spec.get('file')!r}, an integer in [0, 2**32)")
    if {name: {k: v for k, v in spec.items() if k != "crc32"} for name, spec in arrays.items()} != expected["arrays"]:
        raise InputError(f"{path}: field 'arrays' is {arrays!r}, expected {expected['arrays']!r} with a 'crc32' each")
    return header
