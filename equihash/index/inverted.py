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

An index is built by ``equihash.index.build`` (from codes in memory, or from a merged
fingerprint database in bounded memory) and saved and opened by ``equihash.index.format``
(``write_index``, ``read_index``: the on-disk format and its verification). This module
holds the index itself: its arrays, its keys and its lookups; multi-probing is
``equihash.index.multiprobe``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from equihash.io import InputError

from . import _core
from .multiprobe import Multiprobing

MAX_PREFIX_BITS = 16
MIN_PARALLEL = 1 << 16  # records or queries below which one thread does the work

_HASH_SEED = 0x9E3779B97F4A7C15
_MIX_MULTIPLIERS = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


# ----------------------------------------------------------------------------- small helpers
def position_dtype(database_size: int) -> np.dtype:
    """uint32 positions and offsets below 2**32 database positions, uint64 beyond."""
    return np.dtype(np.uint32 if database_size < 2**32 else np.uint64)


def directory_bits_for(n_unique: int) -> int:
    """Largest b with 4 * 2**b <= U (0 when U < 8): 4 to 8 keys per bucket on average."""
    return max(0, (n_unique // 4).bit_length() - 1)


def default_threads() -> int:
    """Threads used by builds and batch queries: the CPUs this process may run on (<= 8)."""
    return max(1, min(8, len(os.sched_getaffinity(0))))


def split_ranges(total: int, parts: int) -> list[tuple[int, int]]:
    cuts = np.linspace(0, total, parts + 1).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def run_parallel(fn, tasks, threads: int) -> list:
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


def as_codes(codes, name: str, nbytes: int | None = None) -> np.ndarray:
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


def check_prefix(prefix_bits: int, prefix: int) -> tuple[int, int]:
    if not isinstance(prefix_bits, (int, np.integer)) or not 0 <= prefix_bits <= MAX_PREFIX_BITS:
        raise InputError(f"prefix_bits: expected an integer in [0, {MAX_PREFIX_BITS}], got {prefix_bits!r}")
    if not isinstance(prefix, (int, np.integer)) or not 0 <= prefix < 2**prefix_bits:
        raise InputError(f"prefix: expected an integer in [0, 2**{prefix_bits}), got {prefix!r}")
    return int(prefix_bits), int(prefix)


def code_keys(codes) -> np.ndarray:
    """The 64-bit index key of every fingerprint ((n, B) uint8 -> (n,) uint64)."""
    return _core.code_hashes(as_codes(codes, "codes"))


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


# ----------------------------------------------------------------------------- the index
class InvertedIndex(Multiprobing):
    """Map each fingerprint to the increasing database positions holding it (docs/method.md section 8).

    Build with ``equihash.index.build`` (:func:`~equihash.index.build.build_index` from codes,
    :func:`~equihash.index.build.build_index_from_parquet` from a merged fingerprint
    database in bounded memory) or open a saved one with
    :func:`~equihash.index.format.read_index` (memory-mapped). Query with
    :meth:`lookup` (exact fingerprints) or :meth:`multiprobe` (the L most likely
    fingerprints of logits, docs/method.md section 10). Results are CSR pairs ``(offsets, positions)``:
    the retrieved set of query j is ``positions[offsets[j]:offsets[j+1]]``, increasing.
    Layout and format: the module docstring.
    """

    def __init__(self, keys, offsets, positions, directory, fingerprints=None, *, nbytes: int,
                 database_size: int | None = None, prefix_bits: int = 0, prefix: int = 0,
                 threads: int | None = None):
        """Wrap arrays in the layout of the module docstring.

        The array lengths are checked against each other (what the lookups rely on to stay
        inside the arrays); their values are checked by the lookups and, for a saved index,
        by the checksums of :meth:`load`."""
        n_keys = len(keys)
        expected = {"offsets": (len(offsets), n_keys + 1),
                    "directory": (len(directory), 2**directory_bits_for(n_keys) + 1)}
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
        self.prefix_bits, self.prefix = check_prefix(prefix_bits, prefix)
        self.threads = default_threads() if threads is None else max(1, int(threads))
        self._fingerprints_or_empty = (fingerprints if fingerprints is not None
                                       else np.empty((0, self.nbytes), dtype=np.uint8))
        self._directory_bits = int(len(directory) - 1).bit_length() - 1
        self._plain_positions = np.asarray(positions)  # the same memory, without np.memmap's slicing cost
        self.source: Path | None = None  # the directory it was loaded from (named in errors)


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
        codes = as_codes(codes, "lookup codes", self.nbytes)
        threads = self.threads if threads is None else max(1, int(threads))
        q = codes.shape[0]
        ranges = split_ranges(q, threads if q >= MIN_PARALLEL else 1) or [(0, 0)]
        parts = run_parallel(self._lookup_batch, [(codes[lo:hi],) for lo, hi in ranges], threads)
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
        code = as_codes(one_code(code, self.nbytes), "code", self.nbytes)[0]
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
