"""Partitioned inverted index: one index cut by key prefix, a partition per machine.

When one machine's RAM cannot hold the index of a database (docs/scale.md), the index is
split by the first ``p`` bits of the fingerprint *keys* (the mixed fingerprints of
``equihash.index.inverted``; for B <= 8 bytes a key is a bijection of the code, so this is
a partition by code prefix after a fixed scramble of the bits). Partition v holds every
code whose key starts with the p-bit value v: an :class:`InvertedIndex` built with
``prefix_bits = p, prefix = v``, whose positions are positions of the whole database.
Keys are uniform whatever the bit statistics of the network, so the 2**p partitions are
balanced (N / 2**p codes each, up to sampling noise), which a prefix of the raw code
would not be when a bit is biased.

Build: each partition reads the shared merged database once and keeps its share
(:meth:`InvertedIndex.build_parquet` with a prefix), so the machines build in parallel
without exchanging data. Lookup: a router computes the key of every query code, sends
each to the partition of its prefix, and puts the answers back in query order; the
result is identical to the single index's. Multi-probing routes each probe code alike.

On-disk format (a directory, version 1): ``partitions.json`` =
{"format": "equihash-partitioned-index", "version": 1, "prefix_bits": p, "nbytes": B,
"database_size": N, "partitions": ["part-0", ..., "part-<2**p - 1>"]}, and one index
directory (``equihash.index.inverted`` format) per partition, named in that list.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from equihash.io import InputError, atomic_path
from equihash.progress import Progress

from .inverted import (DEFAULT_MEMORY_BUDGET, MAX_PREFIX_BITS, InvertedIndex, _as_codes, one_code, _check_prefix,
                       _run_parallel, code_keys, default_threads)
from .multiprobe import Multiprobing

FORMAT_NAME = "equihash-partitioned-index"
FORMAT_VERSION = 1
MANIFEST_FILE = "partitions.json"
DEFAULT_PREFIX_BITS = 2  # 4 partitions


def _partition_names(prefix_bits: int) -> list[str]:
    return [f"part-{v}" for v in range(2**prefix_bits)]


class PartitionedIndex(Multiprobing):
    """2**p :class:`InvertedIndex` partitions by key prefix, queried as one index.

    ``lookup``, ``multiprobe`` and their single-query forms answer exactly as the single
    index of the same codes would.
    """

    def __init__(self, partitions, *, threads: int | None = None):
        """Wrap partitions 0..2**p-1 (partition v built with prefix_bits = p, prefix = v)."""
        partitions = list(partitions)
        prefix_bits = (len(partitions) - 1).bit_length()
        if len(partitions) != 2**prefix_bits or not 1 <= prefix_bits <= MAX_PREFIX_BITS:
            raise InputError(f"partitions: expected 2**p partitions with 1 <= p <= {MAX_PREFIX_BITS}, "
                             f"got {len(partitions)}")
        first = partitions[0]
        for v, part in enumerate(partitions):
            if (part.prefix_bits, part.prefix) != (prefix_bits, v):
                raise InputError(f"partition {v}: built for prefix {part.prefix} of {part.prefix_bits} bits, "
                                 f"expected prefix {v} of {prefix_bits} bits")
            if (part.nbytes, part.database_size) != (first.nbytes, first.database_size):
                raise InputError(f"partition {v}: {part.nbytes}-byte codes of a database of {part.database_size}, "
                                 f"expected {first.nbytes}-byte codes of a database of {first.database_size} "
                                 "(partition 0)")
        self.partitions = partitions
        self.prefix_bits = prefix_bits
        self.threads = default_threads() if threads is None else max(1, int(threads))

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, codes, *, prefix_bits: int = DEFAULT_PREFIX_BITS,
              threads: int | None = None) -> "PartitionedIndex":
        """Partition the index of ``codes`` (N, B) uint8 in memory (row i = position i)."""
        codes = _as_codes(codes, "codes")
        prefix_bits, _ = _check_prefix(prefix_bits, 0)
        parts = []
        with Progress(2**prefix_bits, "index partitions", "partition") as bar:
            for v in range(2**prefix_bits):
                parts.append(InvertedIndex.build(codes, prefix_bits=prefix_bits, prefix=v, threads=threads))
                bar.update()
        return cls(parts, threads=threads)

    @classmethod
    def build_parquet(cls, database, out_dir, *, prefix_bits: int = DEFAULT_PREFIX_BITS,
                      memory_budget: int = DEFAULT_MEMORY_BUDGET, threads: int | None = None,
                      batch_rows: int | None = None) -> "PartitionedIndex":
        """Build every partition from the merged fingerprint database into ``out_dir``
        (one subdirectory each, as separate machines would, each in bounded memory), write
        the manifest, and return the index memory-mapped. A progress bar ``index partitions``
        counts the partitions built; each has its own ``index spill`` / ``index sort`` bars."""
        prefix_bits, _ = _check_prefix(prefix_bits, 0)
        if prefix_bits == 0:
            raise InputError("prefix_bits: expected at least 1 bit (2 partitions), got 0")
        options = {"memory_budget": memory_budget, "threads": threads}
        if batch_rows is not None:
            options["batch_rows"] = batch_rows
        with atomic_path(out_dir, directory=True) as tmp, \
                Progress(2**prefix_bits, "index partitions", "partition") as bar:
            parts = []
            for v, name in enumerate(_partition_names(prefix_bits)):
                parts.append(InvertedIndex.build_parquet(database, tmp / name, prefix_bits=prefix_bits, prefix=v,
                                                         **options))
                bar.update()
            _write_manifest(tmp, prefix_bits, parts[0].nbytes, parts[0].database_size)
            del parts
        return cls.load(out_dir, threads=threads, verify=False)  # each partition checksummed as it was written

    # ------------------------------------------------------------------ properties
    @property
    def nbytes(self) -> int:
        return self.partitions[0].nbytes

    @property
    def database_size(self) -> int:
        return self.partitions[0].database_size

    @property
    def size(self) -> int:
        """Indexed positions, all partitions together."""
        return sum(part.size for part in self.partitions)

    @property
    def n_unique(self) -> int:
        return sum(part.n_unique for part in self.partitions)

    @property
    def memory_usage(self) -> int:
        return sum(part.memory_usage for part in self.partitions)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        sizes = ", ".join(str(part.size) for part in self.partitions)
        return f"PartitionedIndex(prefix_bits={self.prefix_bits}, nbits={8 * self.nbytes}, sizes=[{sizes}])"

    # ------------------------------------------------------------------ queries
    def route(self, codes) -> np.ndarray:
        """The partition of every code (q, B): the top ``prefix_bits`` bits of its key."""
        codes = _as_codes(codes, "lookup codes", self.nbytes)
        return (code_keys(codes) >> np.uint64(64 - self.prefix_bits)).astype(np.intp)

    def lookup(self, codes, *, threads: int | None = None):
        """Posting lists of ``codes`` (q, B) as CSR ``(offsets, positions)``, as
        :meth:`InvertedIndex.lookup`: each code is answered by the partition of its prefix."""
        codes = _as_codes(codes, "lookup codes", self.nbytes)
        threads = self.threads if threads is None else max(1, int(threads))
        part = self.route(codes)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(len(self.partitions) + 1))
        selections = [order[bounds[v]:bounds[v + 1]] for v in range(len(self.partitions))]
        answers = _run_parallel(lambda v: self.partitions[v].lookup(codes[selections[v]], threads=1),
                                [(v,) for v in range(len(self.partitions))], threads)
        lengths = np.zeros(len(codes), dtype=np.int64)
        for selection, (offsets, _) in zip(selections, answers):
            lengths[selection] = np.diff(offsets)
        out_offsets = np.zeros(len(codes) + 1, dtype=np.int64)
        np.cumsum(lengths, out=out_offsets[1:])
        out = np.empty(int(out_offsets[-1]), dtype=self.partitions[0].positions.dtype)
        for selection, (offsets, positions) in zip(selections, answers):
            # the j-th answer of this partition goes to its query's segment
            shift = np.repeat(out_offsets[selection] - offsets[:-1], np.diff(offsets))
            out[shift + np.arange(len(positions))] = positions
        return out_offsets, out

    def lookup_one(self, code) -> np.ndarray:
        """Posting list of one fingerprint: (B,) uint8 or bytes."""
        return self.lookup(one_code(code, self.nbytes), threads=1)[1]

    # ------------------------------------------------------------------ persistence
    def save(self, directory) -> None:
        """Write the manifest and every partition's index directory, atomically as a whole."""
        with atomic_path(directory, directory=True) as tmp:
            for part, name in zip(self.partitions, _partition_names(self.prefix_bits)):
                part.save(tmp / name)
            _write_manifest(tmp, self.prefix_bits, self.nbytes, self.database_size)

    @classmethod
    def load(cls, directory, mmap: bool = True, *, verify: bool = True,
             threads: int | None = None) -> "PartitionedIndex":
        """Open a saved partitioned index (each partition memory-mapped with ``mmap``, its
        checksums verified with ``verify``, as :meth:`InvertedIndex.load`).

        Raises InputError naming the file when the manifest is missing or malformed, or
        when a partition is missing, damaged (see :meth:`InvertedIndex.load`) or built
        for another prefix, code width or database.
        """
        directory = Path(directory)
        path = directory / MANIFEST_FILE
        if not path.is_file():
            raise InputError(f"{path}: partition manifest not found (expected a directory written by "
                             "PartitionedIndex.save or build_parquet)")
        try:
            manifest = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise InputError(f"{path}: field 'format' is not {FORMAT_NAME!r}")
        if manifest.get("version") != FORMAT_VERSION:
            raise InputError(f"{path}: field 'version' is {manifest.get('version')!r}, expected {FORMAT_VERSION}")
        prefix_bits = manifest.get("prefix_bits")
        if not isinstance(prefix_bits, int) or not 1 <= prefix_bits <= MAX_PREFIX_BITS:
            raise InputError(f"{path}: field 'prefix_bits' is {prefix_bits!r}, expected 1..{MAX_PREFIX_BITS}")
        if manifest.get("partitions") != _partition_names(prefix_bits):
            raise InputError(f"{path}: field 'partitions' is {manifest.get('partitions')!r}, "
                             f"expected {_partition_names(prefix_bits)!r}")
        parts = [InvertedIndex.load(directory / name, mmap=mmap, verify=verify, threads=threads)
                 for name in manifest["partitions"]]
        for v, part in enumerate(parts):
            where = directory / manifest["partitions"][v] / "header.json"
            expected = (prefix_bits, v, manifest.get("nbytes"), manifest.get("database_size"))
            found = (part.prefix_bits, part.prefix, part.nbytes, part.database_size)
            if found != expected:
                raise InputError(f"{where}: (prefix_bits, prefix, nbytes, database_size) = {found}, expected "
                                 f"{expected} from {path}")
        if sum(part.size for part in parts) != manifest["database_size"]:
            raise InputError(f"{path}: the partitions hold {sum(part.size for part in parts)} positions, "
                             f"expected database_size = {manifest['database_size']}")
        return cls(parts, threads=threads)


def _write_manifest(directory: Path, prefix_bits: int, nbytes: int, database_size: int) -> None:
    manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "prefix_bits": prefix_bits, "nbytes": nbytes,
                "database_size": database_size, "partitions": _partition_names(prefix_bits)}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
