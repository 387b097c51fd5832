# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled loops of the inverted index (THESIS.md sections 8 and 10).

Only what cannot be vectorised lives here: filling and probing the open-addressing
hash table, gathering posting lists into CSR form, sorting CSR segments, and the
lazy heap enumeration of multi-probing flip sets. Every loop runs without the GIL
on typed memoryviews (read-only inputs are ``const`` so memory-mapped arrays work).

The hash of a code (part of the on-disk format, see ``equihash/index/inverted.py``):
the B code bytes are cut into ceil(B/8) words of 8 bytes, each read little-endian
(the last one zero-padded); starting from ``h = 0x9E3779B97F4A7C15``, every word w
updates ``h = mix64(h ^ w)`` where ``mix64`` is the splitmix64 finaliser. A code sits in
slot ``h & (capacity - 1)`` or, with linear probing, in the next free slot after it.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort
from libc.string cimport memcmp, memcpy

import numpy as np

ctypedef fused slot_t:
    int32_t
    int64_t

ctypedef fused pos_t:
    uint32_t
    uint64_t

cdef uint64_t HASH_SEED = 0x9E3779B97F4A7C15ULL


# ----------------------------------------------------------------------------- hashing
cdef inline uint64_t mix64(uint64_t x) noexcept nogil:
    """splitmix64 finaliser: a bijective avalanche mix of 64 bits."""
    x ^= x >> 30
    x *= 0xBF58476D1CE4E5B9ULL
    x ^= x >> 27
    x *= 0x94D049BB133111EBULL
    x ^= x >> 31
    return x


cdef inline uint64_t load_le(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """Read ``n <= 8`` bytes as a little-endian word (zero-padded), independent of the host."""
    cdef uint64_t w = 0
    cdef Py_ssize_t i
    for i in range(n):
        w |= (<uint64_t>p[i]) << (8 * i)
    return w


cdef inline uint64_t hash_code(const uint8_t* p, Py_ssize_t nbytes) noexcept nogil:
    cdef uint64_t h = HASH_SEED
    cdef Py_ssize_t start = 0
    while start + 8 <= nbytes:
        h = mix64(h ^ load_le(p + start, 8))
        start += 8
    if start < nbytes:
        h = mix64(h ^ load_le(p + start, nbytes - start))
    return h


def code_hashes(const uint8_t[:, ::1] codes):
    """The 64-bit table hash of every code row ((n, B) uint8 -> (n,) uint64)."""
    cdef Py_ssize_t n = codes.shape[0], nbytes = codes.shape[1], i
    out = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] h = out
    with nogil:
        for i in range(n):
            h[i] = hash_code(&codes[i, 0], nbytes)
    return out


# ----------------------------------------------------------------------------- hash table
def fill_slots(const uint8_t[:, ::1] keys, slot_t[::1] slots):
    """Insert key rows 0..U-1 into ``slots`` (all -1, power-of-two capacity > U).

    Keys are distinct, so insertion only looks for the first free slot of the
    linear probe sequence; the result depends only on the key order.
    """
    cdef Py_ssize_t n_keys = keys.shape[0], nbytes = keys.shape[1], u
    cdef uint64_t mask = <uint64_t>slots.shape[0] - 1, s
    if n_keys >= slots.shape[0]:
        raise ValueError(f"capacity {slots.shape[0]} cannot hold {n_keys} keys")
    with nogil:
        for u in range(n_keys):
            s = hash_code(&keys[u, 0], nbytes) & mask
            while slots[s] >= 0:
                s = (s + 1) & mask
            slots[s] = <slot_t>u


def find_keys(const uint8_t[:, ::1] keys, const slot_t[::1] slots,
              const uint8_t[:, ::1] queries, int64_t[::1] found):
    """``found[j]`` = row of ``keys`` equal to ``queries[j]``, or -1 when absent."""
    cdef Py_ssize_t q = queries.shape[0], nbytes = keys.shape[1], j
    cdef uint64_t mask = <uint64_t>slots.shape[0] - 1, s, word
    cdef int64_t u
    cdef uint64_t a, b
    with nogil:
        if nbytes == 8:  # fast path: one machine word per code
            for j in range(q):
                word = load_le(&queries[j, 0], 8)
                s = mix64(HASH_SEED ^ word) & mask
                found[j] = -1
                while True:
                    u = slots[s]
                    if u < 0:
                        break
                    memcpy(&a, &keys[u, 0], 8)
                    memcpy(&b, &queries[j, 0], 8)
                    if a == b:
                        found[j] = u
                        break
                    s = (s + 1) & mask
        else:
            for j in range(q):
                s = hash_code(&queries[j, 0], nbytes) & mask
                found[j] = -1
                while True:
                    u = slots[s]
                    if u < 0:
                        break
                    if memcmp(&keys[u, 0], &queries[j, 0], nbytes) == 0:
                        found[j] = u
                        break
                    s = (s + 1) & mask


def posting_offsets(const int64_t[::1] offsets, const int64_t[::1] found, int64_t[::1] out_offsets):
    """CSR offsets of the gathered posting lists: ``out_offsets[j+1] - out_offsets[j]`` is
    the length of key ``found[j]``'s posting list (0 when absent)."""
    cdef Py_ssize_t q = found.shape[0], j
    cdef int64_t u, total = 0
    with nogil:
        out_offsets[0] = 0
        for j in range(q):
            u = found[j]
            if u >= 0:
                total += offsets[u + 1] - offsets[u]
            out_offsets[j + 1] = total


def gather_postings(const int64_t[::1] offsets, const pos_t[::1] positions,
                    const int64_t[::1] found, const int64_t[::1] out_offsets, pos_t[::1] out):
    """Copy the posting list of every found key into its CSR segment of ``out``."""
    cdef Py_ssize_t q = found.shape[0], j
    cdef int64_t u, start, length
    with nogil:
        for j in range(q):
            u = found[j]
            if u >= 0:
                start = offsets[u]
                length = offsets[u + 1] - start
                if length > 0:
                    memcpy(&out[out_offsets[j]], &positions[start], length * sizeof(pos_t))


# ----------------------------------------------------------------------------- CSR sorting
cdef int cmp_u32(const void* a, const void* b) noexcept nogil:
    cdef uint32_t x = (<const uint32_t*>a)[0], y = (<const uint32_t*>b)[0]
    return (x > y) - (x < y)


cdef int cmp_u64(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t*>a)[0], y = (<const uint64_t*>b)[0]
    return (x > y) - (x < y)


def sort_segments(const int64_t[::1] offsets, pos_t[::1] values):
    """Sort every CSR segment ``values[offsets[j]:offsets[j+1]]`` increasingly, in place."""
    cdef Py_ssize_t q = offsets.shape[0] - 1, j
    cdef int64_t start, length
    with nogil:
        for j in range(q):
            start = offsets[j]
            length = offsets[j + 1] - start
            if length > 1:
                if pos_t is uint32_t:
                    qsort(&values[start], length, sizeof(pos_t), cmp_u32)
                else:
                    qsort(&values[start], length, sizeof(pos_t), cmp_u64)


# ----------------------------------------------------------------------------- multi-probing
cdef struct FlipSet:
    double cost      # sum of |z| over the flipped ranks, added in increasing rank order
    double base      # the same sum without the largest rank
    uint64_t ranks   # bit r set <=> the r-th smallest |z| is flipped
    int top          # largest flipped rank


cdef inline bint before(const FlipSet* a, const FlipSet* b) noexcept nogil:
    """Probing order: by cost, ties by the rank mask as an integer."""
    return a.cost < b.cost or (a.cost == b.cost and a.ranks < b.ranks)


cdef inline void heap_push(FlipSet* heap, Py_ssize_t* size, FlipSet item) noexcept nogil:
    cdef Py_ssize_t i = size[0], parent
    size[0] += 1
    while i > 0:
        parent = (i - 1) >> 1
        if not before(&item, &heap[parent]):
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = item


cdef inline FlipSet heap_pop(FlipSet* heap, Py_ssize_t* size) noexcept nogil:
    cdef FlipSet first = heap[0]
    cdef FlipSet last
    cdef Py_ssize_t n, i = 0, child
    size[0] -= 1
    n = size[0]
    if n > 0:
        last = heap[n]
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and before(&heap[child + 1], &heap[child]):
                child += 1
            if not before(&heap[child], &last):
                break
            heap[i] = heap[child]
            i = child
        heap[i] = last
    return first


def probe_flip_sets(const double[:, ::1] sorted_abs, const int64_t[:, ::1] rank_bits,
                    const uint8_t[:, ::1] top_codes, uint8_t[:, :, ::1] out, double[:, ::1] costs):
    """Write the L most likely codes of every query into ``out`` (q, L, B), in probing order.

    ``sorted_abs[j]`` holds |z| of query j sorted increasingly (only its first
    ``min(k, 64)`` ranks are used), ``rank_bits[j, r]`` the bit index of rank r and
    ``top_codes[j]`` the most likely code sign(z). Flip sets are visited best-first
    from a heap seeded with {0}; the successors of a set with largest rank m are
    *shift* (m moved to m+1) and *expand* (m+1 added). Every non-empty set has exactly
    one predecessor (drop m when m-1 is in the set, else move m back to m-1), so each
    set is produced once, and a successor never precedes its predecessor in the
    (cost, rank mask) order, so the pops come out in that order. The caller checks
    L <= 2**min(k, 64).
    """
    cdef Py_ssize_t q = out.shape[0], n_probes = out.shape[1], nbytes = out.shape[2]
    cdef Py_ssize_t n_ranks = sorted_abs.shape[1], j, l, i, size
    cdef int r, bit
    cdef FlipSet item, child
    if n_ranks > 64:
        n_ranks = 64
    cdef FlipSet* heap = <FlipSet*>malloc((2 * n_probes + 2) * sizeof(FlipSet))
    if heap == NULL:
        raise MemoryError()
    try:
        with nogil:
            for j in range(q):
                for l in range(n_probes):
                    for i in range(nbytes):
                        out[j, l, i] = top_codes[j, i]
                costs[j, 0] = 0.0
                size = 0
                if n_probes > 1:
                    item.base = 0.0
                    item.cost = sorted_abs[j, 0]
                    item.ranks = 1
                    item.top = 0
                    heap_push(heap, &size, item)
                for l in range(1, n_probes):
                    item = heap_pop(heap, &size)
                    costs[j, l] = item.cost
                    for r in range(item.top + 1):
                        if (item.ranks >> r) & 1:
                            bit = <int>rank_bits[j, r]
                            out[j, l, bit >> 3] ^= <uint8_t>(0x80 >> (bit & 7))
                    if item.top + 1 < n_ranks:
                        # shift: move the largest rank one step up
                        child.base = item.base
                        child.top = item.top + 1
                        child.cost = child.base + sorted_abs[j, child.top]
                        child.ranks = (item.ranks ^ ((<uint64_t>1) << item.top)) | ((<uint64_t>1) << child.top)
                        heap_push(heap, &size, child)
                        # expand: add the rank above the largest
                        child.base = item.cost
                        child.cost = child.base + sorted_abs[j, child.top]
                        child.ranks = item.ranks | ((<uint64_t>1) << child.top)
                        heap_push(heap, &size, child)
    finally:
        free(heap)
