"""Mosaic instances (THESIS.md 2.1): a label (tuple of bank ids) plus keyed noise.

``MnistMosaic``: a 2x2 grid of 28x28 MNIST digits (row-major: ids[0] ids[1] / ids[2]
ids[3]) as a 56x56 float32 tile with values /255, plus i.i.d. Gaussian noise of
standard deviation ``sigma`` (0.2) on every pixel, no clipping. The noise of an
instance is drawn from the keyed stream of its (seed, split, stream, index), so an
instance is bit-identical whatever batch, shard or process computes it.
"""

from __future__ import annotations

import numpy as np

from equihash.data.keyed import KeyedRandom


class MnistMosaic:
    """The NoisyMnist mosaic task (thesis config name ``FastMnistMosaic``)."""

    name = "MnistMosaic"
    cells = 4  # m, the label length
    grid = (2, 2)
    tile = (28, 28)
    shape = (56, 56)

    def __init__(self, bank: np.ndarray, sigma: float = 0.2):
        bank = np.asarray(bank)
        if bank.dtype != np.uint8 or bank.ndim != 3 or bank.shape[1:] != self.tile:
            raise ValueError(f"MNIST bank must be (n, 28, 28) uint8, got {bank.shape} {bank.dtype}")
        self.bank = bank
        self.sigma = float(sigma)

    @property
    def bank_size(self) -> int:
        return len(self.bank)

    def clean(self, labels: np.ndarray) -> np.ndarray:
        """(n, 4) ids -> (n, 56, 56) float32 tiles of the four digits, values in [0, 1]."""
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.shape[1] != self.cells:
            raise ValueError(f"labels must be (n, {self.cells}), got {labels.shape}")
        if labels.size and int(labels.max()) >= self.bank_size:
            raise ValueError(f"label id {int(labels.max())} out of range for a bank of {self.bank_size}")
        rows, cols = self.grid
        h, w = self.tile
        cells = self.bank[labels]  # (n, 4, 28, 28) uint8
        tiles = cells.reshape(-1, rows, cols, h, w).transpose(0, 1, 3, 2, 4)
        out = tiles.reshape(-1, rows * h, cols * w).astype(np.float32)
        out *= np.float32(1 / 255)
        return out

    def noisy(self, labels: np.ndarray, rng: KeyedRandom, indices, *, sub: int = 0) -> np.ndarray:
        """Noisy instances: row r is the instance ``indices[r]`` of stream ``rng`` with label ``labels[r]``."""
        out = self.clean(labels)
        noise = rng.standard_normal_rows(indices, self.shape[0] * self.shape[1], sub=sub)
        noise *= np.float32(self.sigma)
        out += noise.reshape(out.shape)
        return out


TASKS = {MnistMosaic.name: MnistMosaic}


def task_class(name: str):
    """The mosaic class of a task name; unknown names raise naming the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task '{name}'; known tasks: {', '.join(sorted(TASKS))}") from None


def distinct_labels(generator: np.random.Generator, n: int, bank_size: int, m: int) -> np.ndarray:
    """``n`` uniform labels of ``m`` distinct ids (the training and 6.6 labels), (n, m) uint32.

    Rows with a repeated id are redrawn until none is left; the draws come only from
    ``generator``, so a keyed generator gives a keyed result.
    """
    if bank_size < m:
        raise ValueError(f"a label needs {m} distinct images, the split has only {bank_size}")
    labels = generator.integers(0, bank_size, size=(n, m), dtype=np.uint32)
    while True:
        ordered = np.sort(labels, axis=1)
        bad = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
        if bad.size == 0:
            return labels
        labels[bad] = generator.integers(0, bank_size, size=(bad.size, m), dtype=np.uint32)
