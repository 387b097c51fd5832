"""Inverted index of fingerprints and prioritised multi-probing (THESIS.md sections 8, 10).

``InvertedIndex`` maps a fingerprint to the increasing database positions holding it
(sort-based CSR plus an open-addressing hash table, memory-mappable; layout and on-disk
format in ``equihash.index.inverted``). ``probe_codes`` enumerates the L most likely
fingerprints of a query's logits, the lookups of multi-probing.
"""

from .inverted import InvertedIndex
from .multiprobe import probe_codes

__all__ = ["InvertedIndex", "probe_codes"]
