"""Keyed randomness: every random draw is a pure function of (seed, split, stream, index).

A draw never depends on batch size, shard count, worker count or on what was drawn
before, so instance ``i`` of a database is bit-identical whoever computes it.

The generator is numpy's Philox-4x64 counter-based bit generator. Its 128-bit key is
``(seed, crc32(split) << 32 | crc32(stream))`` and the counter of item ``index`` (and
optional ``sub``-item, e.g. the two views of a training pair) starts at
``(0, index, sub, 0)``; one item may consume up to 2**64 blocks of 256 bits, so items
never overlap. Philox with numpy's ziggurat samplers gives the same numbers on every
platform.

The draw that dominates the data's cost, the float32 noise of a mosaic
(:meth:`KeyedRandom.standard_normal_rows`), runs compiled and without the GIL
(``equihash/data/_keyed.pyx``); its numbers are those of ``at(index,
sub).standard_normal(width, dtype=np.float32)`` bit for bit.
"""

from __future__ import annotations

import zlib

import numpy as np

from equihash.data import _keyed

_MASK64 = (1 << 64) - 1


def _key(seed: int, split: str, stream: str) -> np.ndarray:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    tag = (zlib.crc32(split.encode()) << 32) | zlib.crc32(stream.encode())
    return np.array([seed & _MASK64, tag], dtype=np.uint64)


class KeyedRandom:
    """The random stream ``(seed, split, stream)``; ``at(index)`` gives item ``index``'s generator.

    >>> a = KeyedRandom(0, "test", "database").at(7).random()
    >>> b = KeyedRandom(0, "test", "database").at(7).random()
    >>> a == b
    True
    """

    def __init__(self, seed: int, split: str, stream: str):
        self.seed, self.split, self.stream = int(seed), split, stream
        self._key = _key(self.seed, split, stream)
        self._bitgen = np.random.Philox(key=self._key)
        self._generator = np.random.Generator(self._bitgen)
        self._state = self._bitgen.state

    def copy(self) -> "KeyedRandom":
        """The same stream, with a generator of its own (for another thread)."""
        return KeyedRandom(self.seed, self.split, self.stream)

    def at(self, index: int, sub: int = 0) -> np.random.Generator:
        """Generator positioned at the start of item ``index`` (sub-item ``sub``).

        The returned object is reused by the next call: draw from it before calling again.
        """
        if index < 0 or sub < 0:
            raise ValueError(f"index and sub must be >= 0, got {index}, {sub}")
        state = self._state
        state["state"]["counter"] = np.array([0, index, sub, 0], dtype=np.uint64)
        state["buffer_pos"] = 4  # discard any buffered output
        state["has_uint32"] = 0
        self._bitgen.state = state
        return self._generator

    def standard_normal_rows(self, indices, width: int, *, sub: int = 0, out=None) -> np.ndarray:
        """Row r = the first ``width`` float32 standard normals of item ``indices[r]``.

        Those of ``self.at(indices[r], sub).standard_normal(width, dtype=np.float32)``;
        ``out``, if given, is a C-contiguous float32 (len(indices), width) array.
        """
        indices = np.ascontiguousarray(indices, dtype=np.int64).reshape(-1)
        if sub < 0:
            raise ValueError(f"sub must be >= 0, got {sub}")
        if out is None:
            out = np.empty((len(indices), width), dtype=np.float32)
        elif out.shape != (len(indices), width) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 ({len(indices)}, {width}) array, "
                             f"got {out.dtype} {out.shape}")
        _keyed.standard_normal_rows(int(self._key[0]), int(self._key[1]), indices, sub, out)
        return out
