"""Inverted index of fingerprints and prioritised multi-probing (docs/method.md sections 8, 10).

``InvertedIndex`` maps a fingerprint to the increasing database positions holding it
(sorted 64-bit keys with a bucket directory, built by radix sort, memory-mappable;
layout and on-disk format in ``equihash.index.inverted``). ``PartitionedIndex`` cuts
one index by key prefix into partitions that can live on separate machines
(``equihash.index.partitioned``). ``probe_codes`` enumerates the L most likely
fingerprints of a query's logits, the lookups of multi-probing.
"""

from .inverted import InvertedIndex, code_keys
from .multiprobe import probe_codes
from .partitioned import PartitionedIndex

__all__ = ["InvertedIndex", "PartitionedIndex", "code_keys", "probe_codes"]
