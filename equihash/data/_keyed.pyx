# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled float32 normals of the keyed streams (``equihash/data/keyed.py``).

``standard_normal_rows`` gives, row by row, exactly the numbers of
``np.random.Generator(Philox(key, counter=(0, index, sub, 0))).standard_normal(width,
dtype=np.float32)``, about four times faster and without the GIL:

* The Philox-4x64-10 counter-based generator (Salmon et al., "Parallel random numbers:
  as easy as 1, 2, 3", SC 2011) is computed here, with numpy's conventions: the counter is
  incremented before a block is made, a block's four 64-bit words are used in order, and a
  32-bit draw takes the low half of a word, then its high half.
* numpy's float32 sampler is a ziggurat: a 32-bit draw ``r`` gives a layer ``r & 0xff``,
  a sign ``(r >> 8) & 1`` and a magnitude ``rabs = r >> 9``; when ``rabs`` is below the
  layer's threshold the normal is ``rabs * width[layer]`` (about 99% of draws). That fast
  path runs here. Its two tables are not written in this file: they are read from numpy's
  own sampler when the module is imported (:func:`_read_tables`), so they are numpy's bit
  for bit. Every other draw (the wedges and the tail, which need more draws and a
  logarithm) is handed to numpy's compiled sampler, ``random_standard_normal_f``, from
  the same stream, so the result is numpy's by construction.

tests/test_keyed.py compares every row with numpy's Generator, including rows whose draws
take the slow path.
"""

from libc.stdint cimport int64_t, uint32_t, uint64_t
from numpy.random cimport bitgen_t
from numpy.random.c_distributions cimport random_standard_normal_f


cdef extern from *:
    """
    #include <string.h>
    static inline uint64_t equihash_mulhilo64(uint64_t a, uint64_t b, uint64_t *hi) {
        __uint128_t product = (__uint128_t)a * b;
        *hi = (uint64_t)(product >> 64);
        return (uint64_t)product;
    }
    static inline float equihash_flip_sign(float value, uint32_t sign_bit) {
        /* value, negated when sign_bit is 0x80000000 (IEEE negation flips the sign bit):
           no branch on a random bit. */
        uint32_t bits;
        memcpy(&bits, &value, sizeof bits);
        bits ^= sign_bit;
        memcpy(&value, &bits, sizeof bits);
        return value;
    }
    """
    uint64_t mulhilo64 "equihash_mulhilo64"(uint64_t a, uint64_t b, uint64_t *hi) noexcept nogil
    float flip_sign "equihash_flip_sign"(float value, uint32_t sign_bit) noexcept nogil


# The Philox-4x64 multipliers and Weyl key increments of the paper.
cdef uint64_t PHILOX_M0 = 0xD2E7470EE14C6C93ULL
cdef uint64_t PHILOX_M1 = 0xCA5A826395121157ULL
cdef uint64_t PHILOX_W0 = 0x9E3779B97F4A7C15ULL
cdef uint64_t PHILOX_W1 = 0xBB67AE8584CAA73BULL


cdef enum:
    BLOCKS = 4  # Philox blocks made together (four independent chains of multiplications)
    DRAWS = 32  # 32-bit draws they give (eight per block)


cdef struct Stream:
    uint64_t key[2]
    uint64_t counter[4]
    uint32_t draws[DRAWS]  # the next BLOCKS blocks' words as 32-bit draws, low half first
    int position           # next unused draw (DRAWS: none left)
    int has_replay         # the next draw is ``replay`` (a draw the fast path rejected)
    uint32_t replay


cdef inline void increment(uint64_t *counter) noexcept nogil:
    counter[0] += 1
    if counter[0] == 0:
        counter[1] += 1
        if counter[1] == 0:
            counter[2] += 1
            if counter[2] == 0:
                counter[3] += 1


cdef inline void refill(Stream *s) noexcept nogil:
    """The next BLOCKS Philox-4x64-10 blocks (counter incremented before each)."""
    cdef uint64_t c0[BLOCKS]
    cdef uint64_t c1[BLOCKS]
    cdef uint64_t c2[BLOCKS]
    cdef uint64_t c3[BLOCKS]
    cdef uint64_t hi0, hi1, lo0, lo1, k0 = s.key[0], k1 = s.key[1]
    cdef int block, i
    for block in range(BLOCKS):
        increment(s.counter)
        c0[block], c1[block], c2[block], c3[block] = s.counter[0], s.counter[1], s.counter[2], s.counter[3]
    for i in range(10):
        for block in range(BLOCKS):
            lo0 = mulhilo64(PHILOX_M0, c0[block], &hi0)
            lo1 = mulhilo64(PHILOX_M1, c2[block], &hi1)
            c0[block], c1[block], c2[block], c3[block] = hi1 ^ c1[block] ^ k0, lo1, hi0 ^ c3[block] ^ k1, lo0
        k0 += PHILOX_W0
        k1 += PHILOX_W1
    for block in range(BLOCKS):
        put_word(s.draws, 8 * block, c0[block])
        put_word(s.draws, 8 * block + 2, c1[block])
        put_word(s.draws, 8 * block + 4, c2[block])
        put_word(s.draws, 8 * block + 6, c3[block])
    s.position = 0


cdef inline void put_word(uint32_t *draws, int at, uint64_t word) noexcept nogil:
    draws[at] = <uint32_t>word
    draws[at + 1] = <uint32_t>(word >> 32)


cdef inline uint32_t next32(Stream *s) noexcept nogil:
    if s.position == DRAWS:
        refill(s)
    s.position += 1
    return s.draws[s.position - 1]


cdef uint32_t bitgen_next32(void *state) noexcept nogil:
    cdef Stream *s = <Stream *>state
    if s.has_replay:
        s.has_replay = 0
        return s.replay
    return next32(s)


# numpy's float32 sampler draws only 32 bits (next_uint32, and next_float from it); the
# 64-bit entries, which a bitgen_t must have, take two 32-bit draws.
cdef uint64_t bitgen_next64(void *state) noexcept nogil:
    cdef uint64_t low = bitgen_next32(state)
    return low | (<uint64_t>bitgen_next32(state) << 32)


cdef double bitgen_next_double(void *state) noexcept nogil:
    return (bitgen_next64(state) >> 11) * (1.0 / 9007199254740992.0)


cdef inline void stream_at(Stream *s, uint64_t key0, uint64_t key1, uint64_t index,
                           uint64_t sub) noexcept nogil:
    s.key[0], s.key[1] = key0, key1
    s.counter[0], s.counter[1], s.counter[2], s.counter[3] = 0, index, sub, 0
    s.position = DRAWS
    s.has_replay = 0


# ---------------------------------------------------------------- numpy's fast-path tables
cdef uint32_t THRESHOLD[256]  # the fast path takes a draw of layer i when rabs < THRESHOLD[i]
cdef float WIDTH[256]         # ... and returns rabs * WIDTH[i], negated when the sign bit is set


cdef struct Script:
    uint32_t first   # the first 32-bit draw
    int calls        # 32-bit draws served so far


cdef uint32_t script_next32(void *state) noexcept nogil:
    # Draws after the first are 2**31: as a uniform 1/2, which ends the tail's loop at once;
    # as a new first draw layer 0 with magnitude 2**22, below numpy's threshold for layer 0
    # (about 0.93 * 2**23). So a rejected first draw ends in a few draws.
    cdef Script *script = <Script *>state
    script.calls += 1
    return script.first if script.calls == 1 else 0x80000000U


cdef uint64_t script_next64(void *state) noexcept nogil:
    return script_next32(state)


cdef double script_next_double(void *state) noexcept nogil:
    return script_next32(state) * (1.0 / 4294967296.0)


cdef (int, float) numpy_sample(uint32_t draw) noexcept nogil:
    """numpy's float32 normal when the stream's first 32-bit draw is ``draw``, and the draws it took."""
    cdef Script script
    cdef bitgen_t bitgen
    script.first, script.calls = draw, 0
    bitgen.state = &script
    bitgen.next_uint64 = &script_next64
    bitgen.next_uint32 = &script_next32
    bitgen.next_double = &script_next_double
    bitgen.next_raw = &script_next64
    cdef float value = random_standard_normal_f(&bitgen)
    return script.calls, value


cdef void _read_tables() noexcept nogil:
    """Read numpy's threshold and width of every layer from its sampler.

    A draw is taken by the fast path exactly when numpy returns after one 32-bit draw, and
    that holds for the magnitudes below the threshold, so a bisection over the 23-bit
    magnitude finds it. With magnitude 1 the fast path returns ``1 * width``, the width
    itself; a layer whose threshold is at most 1 never multiplies by its width (0 * w = 0).
    """
    cdef uint32_t layer, low, high, middle
    cdef int calls
    cdef float value
    for layer in range(256):
        low, high = 0, 1 << 23  # the threshold lies in [low, high]
        while low < high:
            middle = (low + high) // 2
            calls, value = numpy_sample((middle << 9) | layer)
            if calls == 1:
                low = middle + 1
            else:
                high = middle
        THRESHOLD[layer] = low
        WIDTH[layer] = 0.0
        if low > 1:
            calls, value = numpy_sample((1 << 9) | layer)
            WIDTH[layer] = value


_read_tables()


cdef void fill_row(Stream *s, bitgen_t *bitgen, float *out, Py_ssize_t width) noexcept nogil:
    """``out[:width]`` = the stream's next ``width`` normals (the draw position kept in a register)."""
    cdef Py_ssize_t column
    cdef int position = s.position
    cdef uint32_t draw, layer, magnitude
    for column in range(width):
        if position == DRAWS:
            refill(s)
            position = 0
        draw = s.draws[position]
        position += 1
        layer = draw & 0xff
        magnitude = (draw >> 9) & 0x7fffff
        if magnitude < THRESHOLD[layer]:
            out[column] = flip_sign(<float>magnitude * WIDTH[layer], (draw & 0x100) << 23)
        else:
            s.position, s.replay, s.has_replay = position, draw, 1
            out[column] = random_standard_normal_f(bitgen)
            position = s.position
    s.position = position


def standard_normal_rows(uint64_t key0, uint64_t key1, const int64_t[::1] indices, uint64_t sub,
                         float[:, ::1] out):
    """Row r of ``out`` = the first ``out.shape[1]`` float32 normals of item ``indices[r]``.

    Item ``i`` (sub-item ``sub``) is the Philox stream of key ``(key0, key1)`` whose counter
    starts at ``(0, i, sub, 0)``, as :meth:`equihash.data.keyed.KeyedRandom.at` positions it.
    """
    cdef Py_ssize_t rows = indices.shape[0], width = out.shape[1], row
    if out.shape[0] != rows:
        raise ValueError(f"out has {out.shape[0]} rows for {rows} indices")
    cdef Stream stream
    cdef bitgen_t bitgen
    bitgen.state = &stream
    bitgen.next_uint64 = &bitgen_next64
    bitgen.next_uint32 = &bitgen_next32
    bitgen.next_double = &bitgen_next_double
    bitgen.next_raw = &bitgen_next64
    for row in range(rows):
        if indices[row] < 0:
            raise ValueError(f"indices must be >= 0, got {indices[row]}")
    with nogil:
        for row in range(rows):
            stream_at(&stream, key0, key1, <uint64_t>indices[row], sub)
            fill_row(&stream, &bitgen, &out[row, 0], width)


def fast_path_tables():
    """(threshold uint32 (256,), width float32 (256,)): numpy's fast-path tables as read at import."""
    import numpy as np
    return (np.array(<uint32_t[:256]>THRESHOLD, dtype=np.uint32),
            np.array(<float[:256]>WIDTH, dtype=np.float32))

