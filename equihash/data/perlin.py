"""Perlin noise file (docs/method.md section 3): 2-D gradient noise fields for the flow-field noise.

The OpenImages mosaic noise (docs/method.md section 2.2, step 2) displaces every pixel of a 180x270
mosaic by ``r1/320 + r2/640`` normalised grid units per axis, where ``r1`` is a field of
the dataset ``resolution1`` and ``r2`` one of ``resolution2`` of the *Perlin noise
file*: HDF5, datasets ``resolution1`` and ``resolution2``, each (n, 180, 270) int8 in
[-127, 127]. This module generates that file; any file of that layout (for example the
thesis's own ``perlin180x270.hdf5``) can be used in its place.

Field definition (``perlin_fields``)
    Classic 2-D gradient (Perlin) noise on a square lattice of ``period`` pixels. Pixel
    ``(y, x)`` sits at lattice coordinate ``(y / period, x / period)``, so the field
    starts at a lattice corner: pixel (0, 0) and every pixel whose coordinates are both
    multiples of ``period`` are corners, where gradient noise is exactly 0. An axis of
    ``N`` pixels uses ``ceil(N / period) + 1`` corners (indices 0 .. ceil(N / period)),
    exactly the corners the pixels 0 .. N-1 touch. Every corner carries a unit gradient
    ``(cos a, sin a)`` (x then y component) with angle ``a = 2 pi u``; the ``u`` of field
    ``i`` are ``KeyedRandom(seed, "perlin", stream).at(i).random(Ly * Lx)`` in row-major
    corner order, so field ``i`` depends only on ``(seed, stream, i, period, shape)``.
    A pixel's value is the bilinear blend of the four corner dot products
    ``g . (p - corner)``, blended with the quintic fade ``6t^5 - 15t^4 + 10t^3``.

Normalisation (``PERLIN_BOUND``)
    With unit gradients, a point at offset ``(fx, fy)`` in its cell attains at most
    ``sum_c w_c(fx, fy) |p - c|`` (each gradient aligned with its offset), and that
    maximum over the cell is ``sqrt(2)/2`` at the cell centre, where all four weights are
    1/4 and all four offsets have length ``sqrt(2)/2``. (``tests/test_perlin.py`` checks
    this numerically on a dense grid of the cell.) Values are therefore multiplied by
    ``127 / (sqrt(2)/2) = 127 sqrt(2) ~ 179.6``, rounded and clipped to [-127, 127]: the
    theoretical extreme maps to +-127 and clipping only absorbs float rounding. Real
    fields use less of the range (an extreme needs all four gradients of a cell aligned):
    measured on 256 fields, the largest |value| of a field averages about 93 at period 90
    (6 cells) and 108 at period 30 (54 cells), and the standard deviation is about 39.

Lattice periods (``DEFAULT_PERIODS = (180, 90)``)
    ``resolution1`` is the large, slow warp and ``resolution2`` a finer wiggle at half
    its weight (displacement ``r1/320 + r2/640``). A coarse period of 180 pixels puts one
    lattice cell across the 180-pixel height and one and a half across the 270-pixel
    width: the coarse field bends the mosaic as a whole, a swell or two per axis. The
    fine period is half of it, 90 pixels: a wiggle within one bank image. Amplitudes
    follow from the thesis weights: the extreme ``r1`` = 127 moves a pixel 127/320 = 0.40
    normalised units (36 pixels vertically, 54 horizontally), ``r2`` half that; the RMS
    horizontal displacement is about 18 pixels. Where the warp's slope is below -1 it
    reverses the local pixel order (a fold: a mirrored smear after resampling). Measured
    on 128 fields (fields of both resolutions added, before the border masks), horizontal
    folds touch 0.6% of adjacent pixel pairs with these periods, 12% with (90, 45) and
    18% with (90, 30); vertical ones 0%, 1.5% and 5%. Shorter periods turn photographs
    into marbled swirls that are no longer near-duplicates of anything a person would
    call the same picture; these keep the warp a warp (docs/mosaic_examples.png). The
    periods are config values (``perlin.periods``), and a thesis file can be used instead.

Thesis-size file (``THESIS_FIELDS``)
    One field is 180 * 270 = 48,600 bytes and the file holds two datasets, so n fields
    take 97,200 n bytes. The thesis file is 6 GB: ``THESIS_FIELDS = floor(6e9 / 97,200)
    = 61,728`` fields, 5,999,961,600 bytes of data plus a few kilobytes of HDF5 metadata.

Writing (``generate_perlin_file``)
    Blocks of ``block`` fields are generated and written one at a time (bounded memory,
    a ``Progress`` bar "perlin" counting fields of both datasets), to a temporary file
    renamed when complete (``equihash.io.atomic_path``). Datasets are contiguous with no
    filters, so readers can memory-map them, and carry no timestamps: identical arguments
    give identical bytes, whatever ``block`` is, because each field is computed by
    exactly-rounded element-wise float32 arithmetic whose result does not depend on the
    batch it is computed in.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import h5py
import numpy as np

from equihash.data.keyed import KeyedRandom
from equihash.io import InputError, atomic_path
from equihash.progress import Progress

#: (height, width) of one field: the OpenImages mosaic size (docs/method.md section 2.2).
FIELD_SHAPE = (180, 270)
#: The two datasets of the file, also the KeyedRandom streams of their gradients.
DATASETS = ("resolution1", "resolution2")
#: KeyedRandom split of all Perlin draws.
SPLIT = "perlin"
#: Lattice periods in pixels of ``resolution1`` (coarse) and ``resolution2`` (fine).
DEFAULT_PERIODS = (180, 90)
#: Largest |value| of 2-D gradient noise with unit gradients (reached at a cell centre).
PERLIN_BOUND = math.sqrt(2.0) / 2.0
#: Multiplier from noise units to int8 units: the bound maps to 127.
SCALE = 127.0 / PERLIN_BOUND
#: Bytes of one int8 field.
FIELD_BYTES = FIELD_SHAPE[0] * FIELD_SHAPE[1]
THESIS_FILE_BYTES = 6_000_000_000
#: n giving the thesis's 6 GB file: floor(6e9 / (2 * 48,600)).
THESIS_FIELDS = THESIS_FILE_BYTES // (len(DATASETS) * FIELD_BYTES)
#: Value of the file's ``format`` attribute.
FORMAT = "equihash-perlin-1"
#: Fields per block: 64 keeps a block's float32 temporaries (about 0.8 MB per field) in
#: cache-friendly sizes and was fastest in benchmarks/perlin.py (16: slower, 1024: 3x slower).
DEFAULT_BLOCK = 64


def fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic fade ``6t^5 - 15t^4 + 10t^3`` (zero first and second derivative at 0 and 1)."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def lattice_shape(shape: tuple[int, int], period: int) -> tuple[int, int]:
    """Corners per axis, ``ceil(N / period) + 1``: every corner the pixels 0 .. N-1 touch."""
    return tuple(-(-size // period) + 1 for size in shape)


def _check_positive_int(value, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{where}: argument '{name}' must be an integer >= 1, got {value!r}")
    return int(value)


def _check_shape(shape, where: str) -> tuple[int, int]:
    try:
        size = len(shape)
    except TypeError:
        size = None
    if size != 2:
        raise InputError(f"{where}: argument 'shape' must be (height, width), got {shape!r}")
    return tuple(_check_positive_int(s, "shape", where) for s in shape)


def _check_seed(seed, where: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"{where}: argument 'seed' must be an integer >= 0, got {seed!r}")
    return int(seed)


def corner_gradients(seed: int, stream: str, indices, lattice: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Unit corner gradients of fields ``indices``: ``(gx, gy)``, each (len(indices), Ly, Lx) float32.

    Field ``i``'s angles are ``2 pi * KeyedRandom(seed, "perlin", stream).at(i).random(Ly * Lx)``
    (row-major corners). Each field is computed alone (same array length every time), so
    its gradients never depend on the other indices.
    """
    keyed = KeyedRandom(seed, SPLIT, stream)
    count = lattice[0] * lattice[1]
    gx = np.empty((len(indices), *lattice), dtype=np.float32)
    gy = np.empty_like(gx)
    for row, index in enumerate(indices):
        angles = (2 * np.pi) * keyed.at(index).random(count)
        gx[row] = np.cos(angles).reshape(lattice)
        gy[row] = np.sin(angles).reshape(lattice)
    return gx, gy


def _axis(size: int, period: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell index, offset in the cell (exact ``(p mod period) / period``) and its fade, per pixel."""
    pixel = np.arange(size)
    offset = ((pixel % period) / period).astype(np.float32)
    return pixel // period, offset, fade(offset)


def gradient_noise(gx: np.ndarray, gy: np.ndarray, period: int, shape=FIELD_SHAPE) -> np.ndarray:
    """2-D gradient noise in noise units (|value| <= ``PERLIN_BOUND``): (n, H, W) float32.

    ``gx``, ``gy`` (n, Ly, Lx) are the corner gradient components (``lattice_shape``).
    Vectorised over the whole batch: the four corner dot products are blended along x for
    every lattice row first (``along_x``, the x part of the dot products, and ``gy_x``,
    the blended y gradient component, each (n, Ly, W)), then along y per pixel, which is
    algebraically the bilinear fade blend of the four dot products. All arithmetic is
    element-wise float32, so a field's values never depend on the rest of the batch.
    """
    height, width = shape
    cell_x, fx, sx = _axis(width, period)
    cell_y, fy, sy = _axis(height, period)
    # Along x, for every lattice row j: the lerp of gx * (x - corner) between the corners
    # (j, cx) and (j, cx + 1), and the lerp of their y components gy.
    gx0, gx1 = gx[:, :, cell_x], gx[:, :, cell_x + 1]
    left = gx0 * fx
    along_x = left + sx * (gx1 * (fx - 1) - left)
    del gx0, gx1, left
    gy0 = gy[:, :, cell_x]
    gy_x = gy0 + sx * (gy[:, :, cell_x + 1] - gy0)
    del gy0
    # Along y: the top corners' blend is along_x + fy * gy_x, the bottom corners'
    # along_x + (fy - 1) * gy_x; blend the two with the fade of fy.
    fy, sy = fy[:, None], sy[:, None]
    top = along_x[:, cell_y] + fy * gy_x[:, cell_y]
    bottom = along_x[:, cell_y + 1] + (fy - 1) * gy_x[:, cell_y + 1]
    bottom -= top
    bottom *= sy
    top += bottom
    return top


def quantise(noise: np.ndarray) -> np.ndarray:
    """Noise units -> int8: multiply by ``SCALE`` (bound -> 127), round half to even, clip to +-127.

    Overwrites ``noise``.
    """
    noise *= np.float32(SCALE)
    np.rint(noise, out=noise)
    np.clip(noise, -127, 127, out=noise)
    return noise.astype(np.int8)


def perlin_fields(seed: int, stream: str, indices, period: int, shape=FIELD_SHAPE) -> np.ndarray:
    """Fields ``indices`` of the Perlin stream ``(seed, stream)``: (len(indices), H, W) int8.

    Field ``i`` is the gradient noise (``gradient_noise``) of lattice ``period`` with the
    corner gradients of ``corner_gradients(seed, stream, [i], ...)``, scaled so the
    theoretical extreme ``sqrt(2)/2`` maps to 127 (``quantise``); see the module
    docstring. Field ``i`` is bit-identical whatever batch it is computed in.
    """
    where = "perlin_fields"
    seed = _check_seed(seed, where)
    period = _check_positive_int(period, "period", where)
    shape = _check_shape(shape, where)
    if not isinstance(stream, str):
        raise InputError(f"{where}: argument 'stream' must be a string, got {stream!r}")
    array = np.asarray(indices)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise InputError(f"{where}: argument 'indices' must be a 1-D sequence of integers >= 0, "
                         f"got {indices!r}")
    if array.size and array.min() < 0:
        raise InputError(f"{where}: argument 'indices' must be integers >= 0, got {array.min()}")
    indices = array.tolist()
    gx, gy = corner_gradients(seed, stream, indices, lattice_shape(shape, period))
    return quantise(gradient_noise(gx, gy, period, shape))


def generate_perlin_file(out_path, n: int, periods=DEFAULT_PERIODS, seed: int = 0,
                         block: int = DEFAULT_BLOCK) -> Path:
    """Write the Perlin noise file (docs/method.md section 3) with ``n`` fields per dataset.

    ``resolution1`` holds fields ``0 .. n-1`` of stream ``"resolution1"`` at lattice
    period ``periods[0]`` (coarse), ``resolution2`` those of ``"resolution2"`` at
    ``periods[1]`` (fine, ``periods[0] > periods[1]``). Memory is bounded by ``block``
    fields at a time; the bytes do not depend on ``block``. Root attributes: ``format``,
    ``seed``, ``periods``, ``scale``; each dataset's: ``period``, ``stream``.
    Returns ``out_path``.
    """
    where = "generate_perlin_file"
    n = _check_positive_int(n, "n", where)
    seed = _check_seed(seed, where)
    block = _check_positive_int(block, "block", where)
    try:
        count = len(periods)
    except TypeError:
        count = None
    if count != 2:
        raise InputError(f"{where}: argument 'periods' must be two lattice periods (coarse, fine), "
                         f"got {periods!r}")
    periods = tuple(_check_positive_int(p, "periods", where) for p in periods)
    if periods[0] <= periods[1]:
        raise InputError(f"{where}: argument 'periods' must have periods[0] (resolution1, coarse) > "
                         f"periods[1] (resolution2, fine), got {periods}")

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        with h5py.File(tmp, "w", track_order=False) as f, \
                Progress(len(DATASETS) * n, "perlin", unit="fields") as progress:
            f.attrs["format"] = FORMAT
            f.attrs["seed"] = seed
            f.attrs["periods"] = np.array(periods, dtype=np.int64)
            f.attrs["scale"] = SCALE
            for name, period in zip(DATASETS, periods):
                data = f.create_dataset(name, shape=(n, *FIELD_SHAPE), dtype=np.int8, track_times=False)
                data.attrs["period"] = period
                data.attrs["stream"] = name
                for start in range(0, n, block):
                    stop = min(start + block, n)
                    data[start:stop] = perlin_fields(seed, name, range(start, stop), period)
                    progress.update(stop - start)
    return out_path
