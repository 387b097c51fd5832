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
(``equihash.index.build.build_partitioned_index_from_parquet``), so the machines build in
parallel without exchanging data. Lookup: a router computes the key of every query code, sends
each to the partition of its prefix, and puts the answers back in query order; the
result is identical to the single index's. Multi-probing routes each probe code alike.

On-disk format: ``equihash.index.format`` (``write_index``, ``read_index``).
"""

from __future__ import annotations

import numpy as np

from equihash.io import InputError

from .inverted import MAX_PREFIX_BITS, as_codes, code_keys, default_threads, one_code, run_parallel
from .multiprobe import Multiprobing

DEFAULT_PREFIX_BITS = 2  # 4 partitions


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
        codes = as_codes(codes, "lookup codes", self.nbytes)
        return (code_keys(codes) >> np.uint64(64 - self.prefix_bits)).astype(np.intp)

    def lookup(self, codes, *, threads: int | None = None):
        """Posting lists of ``codes`` (q, B) as CSR ``(offsets, positions)``, as
        :meth:`InvertedIndex.lookup`: each code is answered by the partition of its prefix."""
        codes = as_codes(codes, "lookup codes", self.nbytes)
        threads = self.threads if threads is None else max(1, int(threads))
        part = self.route(codes)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(len(self.partitions) + 1))
        selections = [order[bounds[v]:bounds[v + 1]] for v in range(len(self.partitions))]
        answers = run_parallel(lambda v: self.partitions[v].lookup(codes[selections[v]], threads=1),
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
