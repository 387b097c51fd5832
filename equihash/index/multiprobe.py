"""Prioritised multi-probing (docs/method.md section 10).

A network gives k logits z per query; bit b of the fingerprint is ``z_b > 0``. Read as
independent Bernoulli bits with P(b = 1) = sigmoid(z_b), the most likely code is the
sign code, and flipping a set F of bits divides its probability by
prod_{i in F} exp(|z_i|). The L most likely codes are therefore the sign code with the
flip sets F of the L smallest *flip costs* ``cost(F) = sum_{i in F} |z_i|``.

Enumeration (done lazily, best-first, in ``_core.probe_flip_sets``): rank the bits by
|z| increasingly (ties by bit index: a stable argsort). A flip set is a set of ranks,
explored from a heap seeded with {0}; the successors of a set whose largest rank is m are

- *shift*: m moved to m+1, and
- *expand*: m+1 added,

when m+1 < k. Every non-empty set has exactly one predecessor (remove m if m-1 is also
in the set, otherwise move m back to m-1), so the heap produces every flip set exactly
once, and a successor never costs less than its predecessor, so the heap pops them in
increasing cost. The empty set (the sign code, cost 0) comes first.

Probing order, exactly (this defines the tie-break): flip sets are sorted by
``(cost, rank mask)``, where the cost is the float64 sum of the float32 |z| of the
flipped bits added one by one in increasing rank order, and the rank mask is the integer
``sum_{r in F} 2**r``. Both keys strictly increase from a set to its successors, so
the best-first enumeration yields exactly this order, ties included.

Ranks are held in a 256-bit mask, so only the 256 lowest-|z| bits can be flipped. This is
no restriction for k <= 256 (PDQ's 256-bit codes included); for longer codes it is exact
as long as L <= 257, because a flip set containing rank r comes after the sign code and
the r singletons {0}, ..., {r-1}.
For the same reason the first L probes flip only ranks < L - 1, so only the L - 1
smallest |z| of a query are ranked (one partition, not a sort of all k).

Batches (``multiprobe_lookup``): queries are enumerated and looked up in blocks of about
PROBES_PER_BLOCK probe codes, so memory stays bounded for any number of queries and L,
and the blocks run on several threads (the enumeration and the lookups release the GIL).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from equihash.io import InputError

from . import _core

MAX_FLIP_RANKS = 256  # the rank mask of _core.probe_flip_sets (MASK_WORDS x 64 bits)


def _check_logits(logits) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim == 1:
        logits = logits[None, :]
    if logits.ndim != 2:
        raise InputError(f"logits: expected shape (k,) or (q, k), got {logits.shape}")
    if not np.issubdtype(logits.dtype, np.floating):
        raise InputError(f"logits: expected a float array, got dtype {logits.dtype}")
    k = logits.shape[1]
    if k == 0 or k % 8:
        raise InputError(f"logits: expected k a positive multiple of 8 bits, got k = {k}")
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    if not np.isfinite(logits).all():
        raise InputError("logits: expected finite values, got NaN or infinity")
    return logits


def max_probes(k: int) -> int:
    """The largest number of codes ``probe_codes`` can enumerate for k-bit fingerprints."""
    return 2**k if k <= MAX_FLIP_RANKS else MAX_FLIP_RANKS + 1


def _lowest_ranks(magnitude: np.ndarray, n_ranks: int):
    """The bits of the ``n_ranks`` smallest |z| of every row, in the order of a stable argsort
    of |z| (ties by bit index), and those |z| as float64.

    A flip set whose largest rank is m comes after the sign code and the m singletons of
    lower rank (each costs at most |z| of rank m and has a smaller rank mask), so the first
    L probes only flip ranks < L - 1: only that many ranks are selected, with one
    ``np.partition`` over the unique keys ``(float bits of |z|) * 2**32 + bit`` (for
    non-negative floats the bit pattern orders like the value).
    """
    q, k = magnitude.shape
    keys = magnitude.view(np.uint32).astype(np.uint64) << np.uint64(32)
    keys |= np.arange(k, dtype=np.uint64)
    if n_ranks < k:
        keys = np.partition(keys, n_ranks - 1, axis=1)[:, :n_ranks]
    keys.sort(axis=1)
    rank_bits = (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
    sorted_abs = (keys >> np.uint64(32)).astype(np.uint32).view(np.float32).astype(np.float64)
    return np.ascontiguousarray(rank_bits), np.ascontiguousarray(sorted_abs)


def probe_codes(logits, L: int, *, return_costs: bool = False):
    """The L most likely fingerprints of each query, in probing order.

    Parameters
    ----------
    logits : (k,) or (q, k) float array
        Network outputs; k a multiple of 8.
    L : int
        Number of codes per query (number of lookups), 1 <= L <= 2**k (L <= 257 if k > 256).
    return_costs : bool
        Also return the flip costs (q, L) float64 (0 for the first, sign code).

    Returns
    -------
    codes : (q, L, k/8) uint8
        Row 0 is the sign code ``packbits(z > 0)``; row l flips the l-th cheapest flip
        set (order and tie-break: see the module docstring). Rows of a query are distinct.
    """
    logits = _check_logits(logits)
    q, k = logits.shape
    L = int(L)
    if not 1 <= L <= max_probes(k):
        raise InputError(f"L: expected 1 <= L <= {max_probes(k)} for k = {k} bits, got {L}")
    top_codes = np.packbits(logits > 0, axis=1)
    if L == 1:
        codes = np.ascontiguousarray(top_codes[:, None, :])
        return (codes, np.zeros((q, 1))) if return_costs else codes
    rank_bits, sorted_abs = _lowest_ranks(np.abs(logits), min(k, MAX_FLIP_RANKS, L - 1))
    codes = np.empty((q, L, k // 8), dtype=np.uint8)
    costs = np.empty((q, L), dtype=np.float64)
    _core.probe_flip_sets(
        np.ascontiguousarray(sorted_abs),
        np.ascontiguousarray(rank_bits, dtype=np.int64),
        np.ascontiguousarray(top_codes),
        codes,
        costs,
    )
    return (codes, costs) if return_costs else codes


PROBES_PER_BLOCK = 1 << 18  # probe codes enumerated and looked up at once (bounds memory)


def multiprobe_lookup(index, logits, L: int, *, threads: int = 1):
    """Retrieved sets of multi-probing: the union of the posting lists of the L most likely
    codes of each query, as CSR ``(offsets (q+1) int64, positions)`` with each query's
    positions sorted increasingly. Distinct codes have disjoint posting lists, so the
    union is a concatenation and has no duplicates.

    ``index`` is anything with ``nbytes`` and ``lookup(codes, threads=...)`` (an
    InvertedIndex or a PartitionedIndex). Queries are processed in blocks of about
    PROBES_PER_BLOCK probe codes (memory stays bounded for any q and L), the blocks
    spread over ``threads`` threads (every loop releases the GIL).
    """
    logits = _check_logits(logits)
    if logits.shape[1] != 8 * index.nbytes:
        raise InputError(
            f"logits: expected k = {8 * index.nbytes} bits for this index, got k = {logits.shape[1]}"
        )
    L = int(L)
    q = logits.shape[0]
    block = max(1, PROBES_PER_BLOCK // max(L, 1))

    def retrieve(lo, hi):
        codes = probe_codes(logits[lo:hi], L)
        offsets, positions = index.lookup(codes.reshape((hi - lo) * L, index.nbytes), threads=1)
        query_offsets = np.ascontiguousarray(offsets[::L])
        if L > 1:
            _core.sort_segments(query_offsets, positions)
        return query_offsets, positions

    starts = list(range(0, q, block)) or [0]
    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(lambda lo: retrieve(lo, min(lo + block, q)), starts))
    else:
        parts = [retrieve(lo, min(lo + block, q)) for lo in starts]
    if len(parts) == 1:
        return parts[0]
    sizes = np.array([len(positions) for _, positions in parts], dtype=np.int64)
    shifts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    offsets = np.concatenate([parts[0][0][:1]] + [o[1:] + s for (o, _), s in zip(parts, shifts)])
    return offsets, np.concatenate([positions for _, positions in parts])


class Multiprobing:
    """``multiprobe`` and ``multiprobe_one`` for an index class with ``nbytes``, ``threads``
    and ``lookup(codes, threads=...)`` (InvertedIndex, PartitionedIndex): one place that
    routes a query's probe codes through the index's own lookup."""

    def multiprobe(self, logits, L: int, *, threads: int | None = None):
        """Multi-probing retrieval (docs/method.md section 10) for logits (q, k): CSR ``(offsets, positions)``
        of the union of the posting lists of each query's L most likely codes, increasing."""
        return multiprobe_lookup(self, logits, L, threads=self.threads if threads is None else threads)

    def multiprobe_one(self, logits, L: int) -> np.ndarray:
        """Multi-probing retrieved set of one query's logits (k,): increasing positions."""
        logits = np.asarray(logits)
        if logits.ndim != 1:
            raise InputError(f"logits: expected one query of shape ({8 * self.nbytes},), got {logits.shape}")
        return multiprobe_lookup(self, _check_logits(logits), L, threads=1)[1]
