"""Inverted index: fingerprint -> posting list of database positions (THESIS.md section 8).

An equihash function makes near-duplicate retrieval an exact lookup: the retrieved set
of a query is every database position whose fingerprint equals the query's. The thesis
uses a chained hash table; this index is *sort-based CSR plus an open-addressing table*,
which builds with one vectorised sort, stores flat arrays that memory-map, and answers
a batch of lookups in compiled loops without the GIL (``_core.pyx``).

Layout (N database codes of B bytes, U distinct codes)
-----------------------------------------------------
``keys``       (U, B) uint8: the distinct codes, in increasing lexicographic byte order.
``offsets``    (U+1,) int64: the posting list of ``keys[u]`` is
               ``positions[offsets[u]:offsets[u+1]]``; offsets[0] = 0, offsets[U] = N.
``positions``  (N,) uint32 if N < 2**32 else uint64: database positions grouped by code
               (the stable argsort of the codes), increasing inside each group.
``slots``      (C,) int32 if U < 2**31 else int64: open-addressing hash table, C the
               smallest power of two >= max(2U, 1); an entry is a row of ``keys`` or -1
               (empty). Key u is inserted, in order u = 0..U-1, at the first free slot
               of the linear probe sequence h(key), h(key)+1, ... (mod C), where h is the
               hash of ``_core.pyx``: splitmix64 chained over the little-endian 8-byte
               words of the code (last word zero-padded), seeded with 0x9E3779B97F4A7C15.

A lookup probes from h(code) & (C-1) until it meets the code (hit) or an empty slot
(miss); the load factor is at most 1/2, so a probe visits ~1.5 slots on a hit.
Memory: B + 8 bytes per distinct code, 4 (or 8) per database code, 4 (or 8) per slot.

On-disk format (a directory, version 1)
---------------------------------------
``header.json``  {"format": "equihash-inverted-index", "version": 1, "nbytes": B,
                  "size": N, "n_unique": U, "capacity": C, "hash": "splitmix64-le64-words",
                  "dtypes": {"keys": "uint8", "offsets": "int64", "positions": ..., "slots": ...}}
``keys.npy``, ``offsets.npy``, ``positions.npy``, ``slots.npy``: the arrays above (numpy
format, little-endian). The directory is written under a temporary name and renamed when
complete; ``load`` memory-maps the arrays and checks them against the header.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from equihash.io import InputError, atomic_path, read_columns, read_schema

from . import _core
from .multiprobe import _check_logits, multiprobe_lookup

FORMAT_NAME = "equihash-inverted-index"
FORMAT_VERSION = 1
HASH_NAME = "splitmix64-le64-words"
HEADER_FILE = "header.json"
ARRAY_NAMES = ("keys", "offsets", "positions", "slots")
POSITION_DTYPES = ("uint32", "uint64")
SLOT_DTYPES = ("int32", "int64")


def _position_dtype(n: int) -> np.dtype:
    return np.dtype(np.uint32 if n < 2**32 else np.uint64)


def _slot_dtype(n_unique: int) -> np.dtype:
    return np.dtype(np.int32 if n_unique < 2**31 else np.int64)


def _capacity(n_unique: int) -> int:
    """Smallest power of two >= max(2U, 1): load factor <= 1/2, always an empty slot."""
    return 1 << max(2 * n_unique - 1, 0).bit_length()


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


def _sort_codes(codes: np.ndarray):
    """Stable order of positions by code (lexicographic bytes) and the group starts.

    Codes are read as big-endian 64-bit words (zero-padded), so integer order is byte
    order: one stable argsort for B <= 8, a (stable) lexsort over the words otherwise.
    """
    n, nbytes = codes.shape
    n_words = -(-nbytes // 8)
    if nbytes % 8:
        padded = np.zeros((n, 8 * n_words), dtype=np.uint8)
        padded[:, :nbytes] = codes
    else:
        padded = codes
    words = padded.view(">u8").astype(np.uint64)  # (n, n_words), native byte order
    if n_words == 1:
        words = words[:, 0]
        order = np.argsort(words, kind="stable")
        ordered = words[order]
        new_group = ordered[1:] != ordered[:-1]
    else:
        order = np.lexsort(words.T[::-1])
        ordered = words[order]
        new_group = (ordered[1:] != ordered[:-1]).any(axis=1)
    starts = np.flatnonzero(new_group) + 1
    starts = np.concatenate([np.zeros(min(n, 1), dtype=np.int64), starts])
    return order, starts


class InvertedIndex:
    """Map each fingerprint to the sorted database positions holding it.

    Build with :meth:`build` (codes in memory), :meth:`from_parquet` (a merged fingerprint
    database) or :meth:`load` (a saved index, memory-mapped). Query with :meth:`lookup`
    (exact fingerprints) or :meth:`multiprobe` (the L most likely fingerprints of logits).
    Results are CSR pairs ``(offsets, positions)``: the retrieved set of query j is
    ``positions[offsets[j]:offsets[j+1]]``, increasing.
    """

    def __init__(self, keys, offsets, positions, slots):
        """Wrap arrays in the layout of the module docstring (use the classmethods instead)."""
        self.keys = keys
        self.offsets = offsets
        self.positions = positions
        self.slots = slots

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, codes) -> "InvertedIndex":
        """Index fingerprints ``codes`` (N, B) uint8; row i is database position i."""
        codes = _as_codes(codes, "codes")
        n = codes.shape[0]
        order, starts = _sort_codes(codes)
        keys = np.ascontiguousarray(codes[order[starts]])
        offsets = np.append(starts, n).astype(np.int64)
        positions = order.astype(_position_dtype(n))
        del order
        slots = np.full(_capacity(len(keys)), -1, dtype=_slot_dtype(len(keys)))
        _core.fill_slots(keys, slots)
        return cls(keys, offsets, positions, slots)

    @classmethod
    def from_parquet(cls, path) -> "InvertedIndex":
        """Index a merged fingerprint database (columns ``id`` uint64 = 0..N-1 in order,
        ``code`` fixed_size_binary[B]; shared/ARTIFACTS.md)."""
        path = Path(path)
        schema = read_schema(path)
        if "code" not in schema.names:
            raise InputError(f"{path}: missing column 'code' (expected fixed_size_binary[B])")
        kind = schema.field("code").type
        if not pa.types.is_fixed_size_binary(kind):
            raise InputError(f"{path}: column 'code' has type {kind}, expected fixed_size_binary[B]")
        columns = read_columns(path, {"id": pa.uint64(), "code": kind})
        ids = columns["id"]
        if len(ids) and (ids[0] != 0 or np.any(np.diff(ids) != 1)):
            raise InputError(f"{path}: column 'id' must be the database positions 0..N-1 in order")
        return cls.build(columns["code"])

    # ------------------------------------------------------------------ properties
    @property
    def nbytes(self) -> int:
        """Bytes per fingerprint, B = k/8."""
        return int(self.keys.shape[1])

    @property
    def size(self) -> int:
        """Number of indexed database positions N."""
        return int(self.positions.shape[0])

    @property
    def n_unique(self) -> int:
        """Number of distinct fingerprints U."""
        return int(self.keys.shape[0])

    @property
    def capacity(self) -> int:
        """Number of hash-table slots C (a power of two >= 2U)."""
        return int(self.slots.shape[0])

    @property
    def memory_usage(self) -> int:
        """Bytes held by the four index arrays (in RAM, or mapped from disk)."""
        return int(sum(getattr(self, name).nbytes for name in ARRAY_NAMES))

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (
            f"InvertedIndex(size={self.size}, n_unique={self.n_unique}, "
            f"nbits={8 * self.nbytes}, capacity={self.capacity})"
        )

    # ------------------------------------------------------------------ queries
    def lookup(self, codes):
        """Posting lists of ``codes`` (q, B) uint8 as CSR ``(offsets (q+1) int64, positions)``.

        ``positions[offsets[j]:offsets[j+1]]`` are the database positions whose fingerprint
        equals ``codes[j]``, increasing; empty when the code is absent.
        """
        codes = _as_codes(codes, "lookup codes", self.nbytes)
        found = np.empty(codes.shape[0], dtype=np.int64)
        _core.find_keys(self.keys, self.slots, codes, found)
        out_offsets = np.empty(codes.shape[0] + 1, dtype=np.int64)
        _core.posting_offsets(self.offsets, found, out_offsets)
        out = np.empty(int(out_offsets[-1]), dtype=self.positions.dtype)
        _core.gather_postings(self.offsets, self.positions, found, out_offsets, out)
        return out_offsets, out

    def lookup_one(self, code) -> np.ndarray:
        """Posting list (increasing positions) of one fingerprint: (B,) uint8 or bytes."""
        if isinstance(code, (bytes, bytearray, memoryview)):
            code = np.frombuffer(code, dtype=np.uint8)
        code = np.asarray(code)
        if code.ndim != 1:
            raise InputError(f"code: expected one fingerprint of shape ({self.nbytes},), got {code.shape}")
        return self.lookup(code[None, :])[1]

    def multiprobe(self, logits, L: int):
        """Multi-probing retrieval (THESIS.md 10) for logits (q, k): CSR ``(offsets, positions)``
        of the union of the posting lists of each query's L most likely codes, increasing."""
        return multiprobe_lookup(self, logits, L)

    def multiprobe_one(self, logits, L: int) -> np.ndarray:
        """Multi-probing retrieved set of one query's logits (k,): increasing positions."""
        logits = np.asarray(logits)
        if logits.ndim != 1:
            raise InputError(f"logits: expected one query of shape ({8 * self.nbytes},), got {logits.shape}")
        return multiprobe_lookup(self, _check_logits(logits), L)[1]

    # ------------------------------------------------------------------ persistence
    def header(self) -> dict:
        """The JSON header of the on-disk format."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "nbytes": self.nbytes,
            "size": self.size,
            "n_unique": self.n_unique,
            "capacity": self.capacity,
            "hash": HASH_NAME,
            "dtypes": {name: np.dtype(getattr(self, name).dtype).name for name in ARRAY_NAMES},
        }

    def save(self, directory) -> None:
        """Write the index directory atomically (header.json plus one .npy per array)."""
        with atomic_path(directory, directory=True) as tmp:
            for name in ARRAY_NAMES:
                np.save(tmp / f"{name}.npy", np.asarray(getattr(self, name)), allow_pickle=False)
            (tmp / HEADER_FILE).write_text(json.dumps(self.header(), indent=2) + "\n")

    @classmethod
    def load(cls, directory, mmap: bool = True) -> "InvertedIndex":
        """Open a saved index; with ``mmap`` the arrays are memory-mapped read-only.

        Raises InputError, naming the file and the expectation, when the header is
        missing, malformed or of another version, or when an array file is missing,
        truncated or inconsistent with the header.
        """
        directory = Path(directory)
        header_path = directory / HEADER_FILE
        if not header_path.is_file():
            raise InputError(f"{header_path}: index header not found (expected a directory written by InvertedIndex.save)")
        try:
            header = json.loads(header_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"{header_path}: not valid JSON ({exc})") from None
        header = _check_header(header, header_path)

        n, n_unique, nbytes = header["size"], header["n_unique"], header["nbytes"]
        dtypes = header["dtypes"]
        expected = {
            "keys": ((n_unique, nbytes), "uint8"),
            "offsets": ((n_unique + 1,), "int64"),
            "positions": ((n,), dtypes["positions"]),
            "slots": ((header["capacity"],), dtypes["slots"]),
        }
        arrays = {}
        for name, (shape, dtype) in expected.items():
            path = directory / f"{name}.npy"
            want = f"{dtype} array of shape {shape}"
            if not path.is_file():
                raise InputError(f"{path}: index array '{name}' not found (expected {want})")
            try:
                array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise InputError(f"{path}: truncated or unreadable index array '{name}' (expected {want}; {exc})") from None
            if array.shape != shape or array.dtype != np.dtype(dtype) or not array.flags.c_contiguous:
                raise InputError(
                    f"{path}: index array '{name}' is {array.dtype} of shape {array.shape}, expected {want}"
                )
            arrays[name] = array
        offsets = arrays["offsets"]
        if offsets[0] != 0 or offsets[-1] != n:
            raise InputError(
                f"{directory / 'offsets.npy'}: offsets must run from 0 to N = {n}, "
                f"got {int(offsets[0])} .. {int(offsets[-1])}"
            )
        return cls(**arrays)


def _check_header(header, path) -> dict:
    """Validate the fields of an index header (format, version, sizes, dtypes)."""
    if not isinstance(header, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(header).__name__}")
    if header.get("format") != FORMAT_NAME:
        raise InputError(f"{path}: field 'format' is {header.get('format')!r}, expected {FORMAT_NAME!r}")
    if header.get("version") != FORMAT_VERSION:
        raise InputError(f"{path}: field 'version' is {header.get('version')!r}, expected {FORMAT_VERSION}")
    if header.get("hash") != HASH_NAME:
        raise InputError(f"{path}: field 'hash' is {header.get('hash')!r}, expected {HASH_NAME!r}")
    for field in ("nbytes", "size", "n_unique", "capacity"):
        value = header.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InputError(f"{path}: field '{field}' is {value!r}, expected a non-negative integer")
    if header["nbytes"] < 1:
        raise InputError(f"{path}: field 'nbytes' is {header['nbytes']}, expected >= 1")
    if header["n_unique"] > header["size"]:
        raise InputError(f"{path}: field 'n_unique' is {header['n_unique']}, expected <= size {header['size']}")
    if header["capacity"] != _capacity(header["n_unique"]):
        raise InputError(
            f"{path}: field 'capacity' is {header['capacity']}, expected {_capacity(header['n_unique'])} "
            f"for n_unique = {header['n_unique']}"
        )
    dtypes = header.get("dtypes")
    if not isinstance(dtypes, dict):
        raise InputError(f"{path}: field 'dtypes' is missing, expected an object")
    for name, allowed in (("keys", ("uint8",)), ("offsets", ("int64",)),
                          ("positions", POSITION_DTYPES), ("slots", SLOT_DTYPES)):
        if dtypes.get(name) not in allowed:
            raise InputError(f"{path}: field 'dtypes.{name}' is {dtypes.get(name)!r}, expected one of {allowed}")
    return header
