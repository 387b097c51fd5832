"""Inverted index of fingerprints and prioritised multi-probing (docs/method.md sections 8, 10).

By concern:
- ``inverted``: :class:`InvertedIndex`, fingerprint -> increasing database positions
  (sorted 64-bit keys with a bucket directory) and its lookups; ``partitioned``:
  :class:`PartitionedIndex`, one index cut by key prefix into partitions that can live on
  separate machines, queried as one;
- ``multiprobe``: the L most likely fingerprints of a query's logits (``probe_codes``)
  and the lookups of multi-probing;
- ``build``: :func:`build_index` (codes in memory, radix sort) and
  :func:`build_index_from_parquet` (a merged fingerprint database, bounded memory), and
  their partitioned forms;
- ``format``: the on-disk formats, :func:`write_index` and :func:`read_index` (checksums
  verified);
- ``_core``: the compiled loops (Cython).
"""

from .build import (build_index, build_index_from_parquet, build_partitioned_index,
                    build_partitioned_index_from_parquet, read_database_codes)
from .format import read_index, write_index
from .inverted import InvertedIndex, code_keys
from .multiprobe import probe_codes
from .partitioned import PartitionedIndex

__all__ = ["InvertedIndex", "PartitionedIndex", "build_index", "build_index_from_parquet", "build_partitioned_index",
           "build_partitioned_index_from_parquet", "code_keys", "probe_codes", "read_database_codes", "read_index",
           "write_index"]
