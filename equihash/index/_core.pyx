# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled loops of the inverted index (docs/method.md sections 8 and 10).

Only what cannot be vectorised lives here: hashing fingerprints into the index's key
order, the radix sort of (key, position) records, cutting the sorted records into
posting lists, the bucket directory, the prefetching batch lookup, gathering posting
lists into CSR form, sorting CSR segments, and the lazy heap enumeration of
multi-probing flip sets. Every loop runs without the GIL on typed memoryviews (read-only
inputs are ``const`` so memory-mapped arrays work), so Python threads run them in
parallel.

The key of a code (part of the on-disk format, see ``equihash/index/inverted.py``):
the B code bytes are cut into ceil(B/8) words of 8 bytes, each read little-endian
(the last one zero-padded); starting from ``h = 0x9E3779B97F4A7C15``, every word w
updates ``h = mix64(h ^ w)`` where ``mix64`` is the splitmix64 finaliser. For B <= 8 this
is a bijection of the code, so the key *is* the code, well mixed.

The lookups trust no array: every directory range and posting-list range they read is
checked against the array it indexes (two comparisons per query), and a range that
breaks the layout raises :class:`CorruptIndex` instead of reading out of bounds, so even
an index loaded without its checksums never crashes the process.
"""

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort
from libc.string cimport memcmp, memcpy

import numpy as np

cdef extern from *:
    """
    #define EQUIHASH_PREFETCH(p) __builtin_prefetch((const void *)(p))
    """
    void EQUIHASH_PREFETCH(const void* p) noexcept nogil

ctypedef fused idx_t:
    uint32_t
    uint64_t

cdef uint64_t HASH_SEED = 0x9E3779B97F4A7C15ULL

# what a lookup found broken (CorruptIndex.array)
cdef enum:
    INTACT = 0
    BAD_DIRECTORY = 1
    BAD_OFFSETS = 2


class CorruptIndex(ValueError):
    """An index array breaks the layout: ``array`` names it ('directory' or 'offsets'),
    the message says which entries."""

    def __init__(self, array: str, message: str):
        super().__init__(message)
        self.array = array


cdef object corrupt(int what, int64_t at, int64_t first, int64_t second, int64_t bound):
    """The CorruptIndex of a range [first, second) at entry ``at`` that is not within [0, bound]."""
    name = "directory" if what == BAD_DIRECTORY else "offsets"
    return CorruptIndex(name, f"'{name}' entries {at} and {at + 1} are {first} and {second}: expected "
                              f"0 <= {name}[{at}] <= {name}[{at + 1}] <= {bound}")

# Radix sort: runs of at most INSERTION_MAX records are insertion-sorted; a longer run is
# split by its next RADIX_BITS key bits (a stable counting sort), recursively.
cdef enum:
    INSERTION_MAX = 24
    RADIX_BITS = 11
# Batch lookup: a query's four dependent memory reads (directory, keys, offsets,
# postings) are issued AHEAD queries apart (8 measured best: 16 was 30% slower);
# RING >= 4 * AHEAD slots hold the queries in flight.
cdef enum:
    AHEAD = 8
    RING = 64


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


cdef inline uint64_t top_bits(uint64_t h, int skip, int bits) noexcept nogil:
    """The ``bits`` key bits below the ``skip`` highest ones (0 when ``bits`` is 0)."""
    if bits == 0:
        return 0
    return (h << skip) >> (64 - bits)


def code_hashes(const uint8_t[:, ::1] codes):
    """The 64-bit key of every code row ((n, B) uint8 -> (n,) uint64)."""
    cdef Py_ssize_t n = codes.shape[0], nbytes = codes.shape[1], i
    out = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] h = out
    with nogil:
        for i in range(n):
            h[i] = hash_code(&codes[i, 0], nbytes)
    return out


# ----------------------------------------------------------------------------- radix sort
def count_code_buckets(const uint8_t[:, ::1] codes, int bits, int64_t[::1] counts):
    """``counts[t] +=`` the number of codes whose key has ``bits`` top bits equal to t."""
    cdef Py_ssize_t n = codes.shape[0], nbytes = codes.shape[1], i
    with nogil:
        for i in range(n):
            counts[top_bits(hash_code(&codes[i, 0], nbytes), 0, bits)] += 1


def scatter_codes(const uint8_t[:, ::1] codes, int bits, int64_t[::1] cursor,
                  uint64_t[::1] out_keys, idx_t[::1] out_positions, uint64_t first_position):
    """Counting-sort scatter of codes by the top ``bits`` of their key: the record
    (key, first_position + i) of code i goes to ``cursor[t]++`` where t is its bucket.
    Records of one bucket keep the order of the codes (the scatter is stable)."""
    cdef Py_ssize_t n = codes.shape[0], nbytes = codes.shape[1], i
    cdef uint64_t h
    cdef int64_t c
    with nogil:
        for i in range(n):
            h = hash_code(&codes[i, 0], nbytes)
            c = cursor[top_bits(h, 0, bits)]
            cursor[top_bits(h, 0, bits)] = c + 1
            out_keys[c] = h
            out_positions[c] = <idx_t>(first_position + i)


def count_record_buckets(const uint64_t[::1] keys, int skip, int bits, int64_t[::1] counts):
    """``counts[t] +=`` the number of keys whose ``bits`` bits below the top ``skip`` equal t."""
    cdef Py_ssize_t n = keys.shape[0], i
    with nogil:
        for i in range(n):
            counts[top_bits(keys[i], skip, bits)] += 1


def scatter_records(const uint64_t[::1] keys, const idx_t[::1] values, int skip, int bits,
                    int64_t[::1] cursor, uint64_t[::1] out_keys, idx_t[::1] out_values):
    """Stable counting-sort scatter of (key, value) records by key bits [skip, skip + bits)."""
    cdef Py_ssize_t n = keys.shape[0], i
    cdef uint64_t t
    cdef int64_t c
    with nogil:
        for i in range(n):
            t = top_bits(keys[i], skip, bits)
            c = cursor[t]
            cursor[t] = c + 1
            out_keys[c] = keys[i]
            out_values[c] = values[i]


cdef void sort_run(uint64_t* keys, idx_t* values, Py_ssize_t n, int low_bits,
                   uint64_t* tmp_keys, idx_t* tmp_values) noexcept nogil:
    """Sort n records by key, stably; their key bits above the ``low_bits`` lowest are equal.

    MSD radix: a run longer than INSERTION_MAX whose keys are not all equal is split by
    its next RADIX_BITS bits with a stable counting sort through ``tmp_*`` (n slots),
    and each part is sorted in turn; short runs are insertion-sorted (stable: a record
    only moves past strictly larger keys).
    """
    cdef Py_ssize_t i, j, start
    cdef uint64_t key, mask
    cdef idx_t value
    cdef int r, shift, d
    cdef Py_ssize_t count[(1 << RADIX_BITS) + 1]
    if n <= INSERTION_MAX:
        for i in range(1, n):
            key = keys[i]
            value = values[i]
            j = i
            while j > 0 and keys[j - 1] > key:
                keys[j] = keys[j - 1]
                values[j] = values[j - 1]
                j -= 1
            keys[j] = key
            values[j] = value
        return
    if low_bits == 0:
        return
    i = 1
    while i < n and keys[i] == keys[0]:
        i += 1
    if i == n:  # one fingerprint repeated: already in position order
        return
    r = RADIX_BITS if low_bits > RADIX_BITS else low_bits
    shift = low_bits - r
    mask = ((<uint64_t>1) << r) - 1
    for d in range((1 << r) + 1):
        count[d] = 0
    for i in range(n):
        count[((keys[i] >> shift) & mask) + 1] += 1
    for d in range(1 << r):
        count[d + 1] += count[d]
    for i in range(n):
        d = <int>((keys[i] >> shift) & mask)
        tmp_keys[count[d]] = keys[i]
        tmp_values[count[d]] = values[i]
        count[d] += 1
    memcpy(keys, tmp_keys, n * sizeof(uint64_t))
    memcpy(values, tmp_values, n * sizeof(idx_t))
    start = 0
    for d in range(1 << r):  # count[d] is now the end of digit d
        if count[d] - start > 1:
            sort_run(keys + start, values + start, count[d] - start, shift, tmp_keys, tmp_values)
        start = count[d]


def sort_buckets(uint64_t[::1] keys, idx_t[::1] values, const int64_t[::1] starts,
                 Py_ssize_t first, Py_ssize_t last, int sorted_bits):
    """Sort the records of buckets [first, last) by key, stably, in place, and return the
    number of distinct keys in them (counted while the bucket is in cache).

    Bucket t holds records ``[starts[t], starts[t+1])`` whose keys share their top
    ``sorted_bits`` bits. Thread-safe for disjoint bucket ranges (own scratch space).
    """
    cdef Py_ssize_t t, largest = 0, size, i, runs = 0
    cdef uint64_t* tmp_keys
    cdef idx_t* tmp_values
    for t in range(first, last):
        size = starts[t + 1] - starts[t]
        if size > largest:
            largest = size
    if largest < 2:
        return sum(1 for t in range(first, last) if starts[t + 1] > starts[t])
    tmp_keys = <uint64_t*>malloc(largest * sizeof(uint64_t))
    tmp_values = <idx_t*>malloc(largest * sizeof(idx_t))
    if tmp_keys == NULL or tmp_values == NULL:
        free(tmp_keys)
        free(tmp_values)
        raise MemoryError()
    with nogil:
        for t in range(first, last):
            size = starts[t + 1] - starts[t]
            if size > 1:
                sort_run(&keys[starts[t]], &values[starts[t]], size, 64 - sorted_bits,
                         tmp_keys, tmp_values)
            if size > 0:
                runs += 1
                for i in range(starts[t] + 1, starts[t + 1]):
                    runs += keys[i] != keys[i - 1]
    free(tmp_keys)
    free(tmp_values)
    return runs


def cut_runs(uint64_t[::1] keys, idx_t[::1] offsets):
    """Cut sorted keys into runs of equal keys, in place: ``keys[:U]`` become the distinct
    keys and ``offsets[u]`` the start of run u, ``offsets[U]`` = n (``offsets`` has U + 1
    entries, U from :func:`sort_buckets`)."""
    cdef Py_ssize_t n = keys.shape[0], i, u = 0
    if n == 0:
        offsets[0] = 0
        return
    with nogil:
        offsets[0] = 0
        for i in range(1, n):
            if keys[i] != keys[u]:
                u += 1
                keys[u] = keys[i]
                offsets[u] = <idx_t>i
        offsets[u + 1] = <idx_t>n


def fill_directory(const uint64_t[::1] keys, uint64_t first_key, int skip, int bits,
                   idx_t[::1] directory, int64_t bucket):
    """Extend the bucket directory over a block of sorted distinct keys.

    ``directory[t]`` is the index of the first key whose bucket (key bits [skip, skip+bits))
    is >= t. ``keys`` are keys number first_key, first_key+1, ... of the index; ``bucket``
    is the first directory entry not yet written. Returns the next entry to write.
    """
    cdef Py_ssize_t n = keys.shape[0], i
    cdef int64_t t = bucket, b
    with nogil:
        for i in range(n):
            b = <int64_t>top_bits(keys[i], skip, bits)
            while t <= b:
                directory[t] = <idx_t>(first_key + i)
                t += 1
    return t


# ----------------------------------------------------------------------------- lookups
def find_postings(const uint64_t[::1] keys, const idx_t[::1] directory, const uint8_t[:, ::1] codes,
                  const idx_t[::1] offsets, const idx_t[::1] positions, const uint8_t[:, ::1] queries,
                  int prefix_bits, uint64_t prefix, int directory_bits, int64_t[::1] out_start,
                  int64_t[::1] out_offsets, idx_t[::1] out):
    """Look up every query code: its posting list starts at ``positions[out_start[j]]`` and
    fills CSR segment ``out_offsets[j]:out_offsets[j+1]`` (empty when the code is absent).

    A query's key h selects its bucket (key bits below the ``prefix_bits`` prefix), the
    directory gives the bucket's key range, a short scan of the sorted keys finds h (for
    B > 8 the stored code bytes ``codes`` are compared too, keys being hashes then), and
    ``offsets`` give the posting list, copied into ``out`` while it has room. The five
    dependent steps of one query are software-pipelined: step s of query j runs with step
    s-1 of query j + AHEAD, each step prefetching what the next one reads, so many cache
    misses are in flight at once. Codes whose key lacks the index's prefix are absent.

    Returns the number of queries whose postings were copied (all of them unless ``out``
    ran out of room; the caller then gathers the rest with :func:`gather_postings`).
    Raises CorruptIndex when a directory range leaves [0, U] or a posting-list range
    leaves [0, N].
    """
    cdef Py_ssize_t q = queries.shape[0], nbytes = queries.shape[1], step, j, i, s
    cdef Py_ssize_t capacity = out.shape[0], copied = 0
    cdef int64_t n_keys = keys.shape[0], n_positions = positions.shape[0]
    cdef bint compare_codes = nbytes > 8
    cdef int broken = INTACT
    cdef int64_t broken_at = 0, broken_first = 0, broken_second = 0
    cdef uint64_t h, word
    cdef int64_t u, lo, hi, length, src, dst
    cdef uint64_t ring_key[RING]
    cdef int64_t ring_bucket[RING]
    cdef int64_t ring_lo[RING]
    cdef int64_t ring_hi[RING]
    cdef int64_t ring_found[RING]
    with nogil:
        out_offsets[0] = 0
        for step in range(q + 4 * AHEAD):
            j = step  # step 1: key and bucket; prefetch the directory entry
            if j < q:
                s = j & (RING - 1)
                if nbytes == 8:
                    memcpy(&word, &queries[j, 0], 8)  # little-endian hosts (x86-64, arm64)
                    h = mix64(HASH_SEED ^ word)
                else:
                    h = hash_code(&queries[j, 0], nbytes)
                ring_key[s] = h
                if prefix_bits > 0 and (h >> (64 - prefix_bits)) != prefix:
                    ring_bucket[s] = -1
                else:
                    ring_bucket[s] = <int64_t>top_bits(h, prefix_bits, directory_bits)
                    EQUIHASH_PREFETCH(&directory[ring_bucket[s]])
            j = step - AHEAD  # step 2: the bucket's key range; prefetch its first keys
            if 0 <= j < q:
                s = j & (RING - 1)
                if ring_bucket[s] >= 0:
                    lo = directory[ring_bucket[s]]
                    hi = directory[ring_bucket[s] + 1]
                    if lo > hi or hi > n_keys or lo < 0:
                        broken = BAD_DIRECTORY
                        broken_at = ring_bucket[s]
                        broken_first = lo
                        broken_second = hi
                        break
                else:
                    lo = 0
                    hi = 0
                ring_lo[s] = lo
                ring_hi[s] = hi
                if lo < hi:
                    EQUIHASH_PREFETCH(&keys[lo])
                    if compare_codes:
                        EQUIHASH_PREFETCH(&codes[lo, 0])
            j = step - 2 * AHEAD  # step 3: scan the bucket; prefetch the offsets
            if 0 <= j < q:
                s = j & (RING - 1)
                h = ring_key[s]
                u = -1
                for i in range(ring_lo[s], ring_hi[s]):
                    if keys[i] == h:
                        if not compare_codes or memcmp(&codes[i, 0], &queries[j, 0], nbytes) == 0:
                            u = i
                            break
                    elif keys[i] > h:
                        break
                ring_found[s] = u
                if u >= 0:
                    EQUIHASH_PREFETCH(&offsets[u])
            j = step - 3 * AHEAD  # step 4: the posting list's range; prefetch its first positions
            if 0 <= j < q:
                s = j & (RING - 1)
                u = ring_found[s]
                if u >= 0:
                    lo = offsets[u]
                    hi = offsets[u + 1]
                    if lo > hi or hi > n_positions or lo < 0:
                        broken = BAD_OFFSETS
                        broken_at = u
                        broken_first = lo
                        broken_second = hi
                        break
                    out_start[j] = lo
                    length = hi - lo
                    EQUIHASH_PREFETCH(&positions[out_start[j]])
                else:
                    out_start[j] = 0
                    length = 0
                out_offsets[j + 1] = out_offsets[j] + length
            j = step - 4 * AHEAD  # step 5: copy the postings while ``out`` has room
            if 0 <= j < q and copied == j and out_offsets[j + 1] <= capacity:
                src = out_start[j]
                dst = out_offsets[j]
                length = out_offsets[j + 1] - dst
                if length <= 4:
                    for i in range(length):
                        out[dst + i] = positions[src + i]
                else:
                    memcpy(&out[dst], &positions[src], length * sizeof(idx_t))
                copied = j + 1
    if broken != INTACT:
        raise corrupt(broken, broken_at, broken_first, broken_second,
                      n_keys if broken == BAD_DIRECTORY else n_positions)
    return copied


def find_one(const uint64_t[::1] keys, const idx_t[::1] directory, const uint8_t[:, ::1] codes,
             const idx_t[::1] offsets, const idx_t[::1] positions, uint64_t database_size,
             const uint8_t[::1] query, int prefix_bits, uint64_t prefix, int directory_bits):
    """``(start, length)`` of the posting list of one code, as :func:`find_postings`
    without the batch machinery (the latency of a single query from Python), with the
    same range checks, and a check that its positions are below ``database_size``."""
    cdef Py_ssize_t nbytes = query.shape[0], i, n_positions = positions.shape[0]
    cdef uint64_t h = hash_code(&query[0], nbytes), bucket
    cdef int64_t lo, hi, p
    if prefix_bits > 0 and (h >> (64 - prefix_bits)) != prefix:
        return 0, 0
    bucket = top_bits(h, prefix_bits, directory_bits)
    lo = directory[bucket]
    hi = directory[bucket + 1]
    if lo > hi or hi > keys.shape[0] or lo < 0:
        raise corrupt(BAD_DIRECTORY, bucket, lo, hi, keys.shape[0])
    for i in range(lo, hi):
        if keys[i] == h:
            if nbytes <= 8 or memcmp(&codes[i, 0], &query[0], nbytes) == 0:
                lo = offsets[i]
                hi = offsets[i + 1]
                if lo > hi or hi > n_positions or lo < 0:
                    raise corrupt(BAD_OFFSETS, i, lo, hi, n_positions)
                for p in range(lo, hi):
                    if positions[p] >= database_size:
                        raise CorruptIndex("positions", f"entry {p} is {positions[p]}, expected positions below "
                                                        f"database_size = {database_size}")
                return int(lo), int(hi - lo)
        elif keys[i] > h:
            break
    return 0, 0


def gather_postings(const idx_t[::1] positions, const int64_t[::1] start, const int64_t[::1] out_offsets,
                    idx_t[::1] out):
    """Copy posting list ``positions[start[j]:start[j] + length]`` into CSR segment j of
    ``out`` (length = out_offsets[j+1] - out_offsets[j]), prefetching AHEAD lists ahead."""
    cdef Py_ssize_t q = start.shape[0], j, i, length
    cdef int64_t src, dst
    with nogil:
        for j in range(q):
            if j + AHEAD < q and out_offsets[j + AHEAD + 1] > out_offsets[j + AHEAD]:
                EQUIHASH_PREFETCH(&positions[start[j + AHEAD]])
            length = out_offsets[j + 1] - out_offsets[j]
            src = start[j]
            dst = out_offsets[j]
            if length <= 4:
                for i in range(length):
                    out[dst + i] = positions[src + i]
            else:
                memcpy(&out[dst], &positions[src], length * sizeof(idx_t))


# ----------------------------------------------------------------------------- CSR sorting
cdef int cmp_u32(const void* a, const void* b) noexcept nogil:
    cdef uint32_t x = (<const uint32_t*>a)[0], y = (<const uint32_t*>b)[0]
    return (x > y) - (x < y)


cdef int cmp_u64(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t*>a)[0], y = (<const uint64_t*>b)[0]
    return (x > y) - (x < y)


def sort_segments(const int64_t[::1] offsets, idx_t[::1] values):
    """Sort every CSR segment ``values[offsets[j]:offsets[j+1]]`` increasingly, in place."""
    cdef Py_ssize_t q = offsets.shape[0] - 1, j
    cdef int64_t start, length
    with nogil:
        for j in range(q):
            start = offsets[j]
            length = offsets[j + 1] - start
            if length > 1:
                if idx_t is uint32_t:
                    qsort(&values[start], length, sizeof(idx_t), cmp_u32)
                else:
                    qsort(&values[start], length, sizeof(idx_t), cmp_u64)


# ----------------------------------------------------------------------------- multi-probing
cdef enum:
    MASK_WORDS = 4  # rank masks of 4 x 64 bits: up to 256 ranks (MAX_FLIP_RANKS of multiprobe.py)


cdef struct FlipSet:
    double cost      # sum of |z| over the flipped ranks, added in increasing rank order
    double base      # the same sum without the largest rank
    uint64_t ranks[MASK_WORDS]  # bit r (word r >> 6) set <=> the r-th smallest |z| is flipped
    int top          # largest flipped rank


cdef inline bint before(const FlipSet* a, const FlipSet* b) noexcept nogil:
    """Probing order: by cost, ties by the rank mask as an integer (its highest word first)."""
    cdef int w
    if a.cost != b.cost:
        return a.cost < b.cost
    for w in range(MASK_WORDS - 1, -1, -1):
        if a.ranks[w] != b.ranks[w]:
            return a.ranks[w] < b.ranks[w]
    return False


cdef inline void flip_rank(FlipSet* item, int r) noexcept nogil:
    item.ranks[r >> 6] ^= (<uint64_t>1) << (r & 63)


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
    ``min(k, 256)`` ranks are used), ``rank_bits[j, r]`` the bit index of rank r and
    ``top_codes[j]`` the most likely code sign(z). Flip sets are visited best-first
    from a heap seeded with {0}; the successors of a set with largest rank m are
    *shift* (m moved to m+1) and *expand* (m+1 added). Every non-empty set has exactly
    one predecessor (drop m when m-1 is in the set, else move m back to m-1), so each
    set is produced once, and a successor never precedes its predecessor in the
    (cost, rank mask) order, so the pops come out in that order. The caller checks
    L <= 2**min(k, 256).
    """
    cdef Py_ssize_t q = out.shape[0], n_probes = out.shape[1], nbytes = out.shape[2]
    cdef Py_ssize_t n_ranks = sorted_abs.shape[1], j, l, i, size
    cdef int r, bit, w
    cdef FlipSet item, child
    if n_ranks > 64 * MASK_WORDS:
        n_ranks = 64 * MASK_WORDS
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
                    for w in range(MASK_WORDS):
                        item.ranks[w] = 0
                    item.ranks[0] = 1
                    item.top = 0
                    heap_push(heap, &size, item)
                for l in range(1, n_probes):
                    item = heap_pop(heap, &size)
                    costs[j, l] = item.cost
                    for r in range(item.top + 1):
                        if (item.ranks[r >> 6] >> (r & 63)) & 1:
                            bit = <int>rank_bits[j, r]
                            out[j, l, bit >> 3] ^= <uint8_t>(0x80 >> (bit & 7))
                    if item.top + 1 < n_ranks:
                        # shift: move the largest rank one step up
                        child = item
                        child.top = item.top + 1
                        child.cost = child.base + sorted_abs[j, child.top]
                        flip_rank(&child, item.top)
                        flip_rank(&child, child.top)
                        heap_push(heap, &size, child)
                        # expand: add the rank above the largest
                        child = item
                        child.top = item.top + 1
                        child.base = item.cost
                        child.cost = child.base + sorted_abs[j, child.top]
                        flip_rank(&child, child.top)
                        heap_push(heap, &size, child)
    finally:
        free(heap)
