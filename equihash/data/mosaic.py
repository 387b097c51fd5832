"""Mosaic instances (docs/method.md sections 2.1, 2.2): a label (tuple of bank ids) plus keyed noise.

``MnistMosaic``: a 2x2 grid of 28x28 MNIST digits (row-major: ids[0] ids[1] / ids[2]
ids[3]) as a 56x56 float32 tile with values /255, plus i.i.d. Gaussian noise of
standard deviation ``noise_sigma`` (0.2) on every pixel, no clipping.

``OpenImagesMosaic``: the NoisyOpenImagesMosaic of docs/method.md section 2.2. Two 180x180 RGB
images (left, right) are blended over an overlap of 90 columns into a 180x270 uint8
*clean mosaic*; its noisy instance gets an HLS hue and lightness jitter, then a
spatial distortion by a Perlin flow field (docs/method.md section 3) resampled bilinearly, and is
stored as (3, 180, 270) uint8 (CHW).

The noise of an instance is drawn from the keyed stream of its (seed, split, stream,
index[, sub]), so an instance is bit-identical whatever batch, shard or process
computes it. The OpenImages noise runs on the CPU in float32 torch: elementwise
operations that IEEE arithmetic rounds exactly (no transcendental functions, no fused
ops), so a result does not depend on where an element falls in a vectorised loop, and
``grid_sample``, which runs the same kernel for every instance of a batch.

Choices where the thesis leaves room (docs/method.md section 2.2), against its published code:

* uint8 conversions round to nearest (ties to even) after clipping, where the published
  code truncates (:func:`to_uint8` says why); the two differ by at most one level.
* The identity sampling grid is the ``align_corners=False`` pixel centres, and the flow
  mask is evaluated there, so a zero flow field leaves the image unchanged. (The
  published code builds its base grid with the ``align_corners=True`` coordinates,
  linspace(-1, 1), while sampling with ``align_corners=False``: a slight zoom.)

torch is imported inside the functions that use it, so that reading the task registry
(``equihash.tasks``, the configuration checks of the Snakefile) does not pay for importing it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from equihash.data.keyed import KeyedRandom

if TYPE_CHECKING:  # annotations only; the functions import torch where they use it
    import torch


def check_labels(labels, cells: int, bank_size: int) -> np.ndarray:
    """``labels`` as an (n, cells) array of ids below ``bank_size``, else ValueError."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != cells:
        raise ValueError(f"labels must be (n, {cells}), got {labels.shape}")
    if labels.size and int(labels.max()) >= bank_size:
        raise ValueError(f"label id {int(labels.max())} out of range for a bank of {bank_size}")
    return labels


class MnistMosaic:
    """The NoisyMnist mosaic task (thesis config name ``FastMnistMosaic``)."""

    cells = 4  # m, the label length
    grid = (2, 2)
    tile = (28, 28)
    shape = (56, 56)

    def __init__(self, bank: np.ndarray, noise_sigma: float = 0.2):
        bank = np.asarray(bank)
        if bank.dtype != np.uint8 or bank.ndim != 3 or bank.shape[1:] != self.tile:
            raise ValueError(f"MNIST bank must be (n, 28, 28) uint8, got {bank.shape} {bank.dtype}")
        self.bank = bank
        self.sigma = float(noise_sigma)

    @property
    def bank_size(self) -> int:
        return len(self.bank)

    def clean(self, labels: np.ndarray) -> np.ndarray:
        """(n, 4) ids -> (n, 56, 56) float32 tiles of the four digits, values in [0, 1]."""
        labels = check_labels(labels, self.cells, self.bank_size)
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


# --------------------------------------------------------------------------- OpenImages mosaic
IMAGE_SIDE = 180  # a bank image is IMAGE_SIDE x IMAGE_SIDE RGB
MOSAIC_WIDTH = 270  # the clean mosaic is IMAGE_SIDE x MOSAIC_WIDTH
BLEND_P = 0.99  # the blend weight runs from 1 - p to p across the overlap: L = ln(p / (1 - p))
HUE_SHIFT = 1 / 16  # hue += U(-HUE_SHIFT, HUE_SHIFT), modulo 1
LIGHTNESS_JITTER = 0.2  # a ~ U(-LIGHTNESS_JITTER, LIGHTNESS_JITTER)
PERLIN_DIVISORS = (320, 640)  # displacement = resolution1 / 320 + resolution2 / 640
#: Largest displacement of one axis in normalised grid units, 127/320 + 127/640: the flow
#: mask ramps from 0 at the frame edge to 1 at this distance from it.
FLOW_MAX = 127 / PERLIN_DIVISORS[0] + 127 / PERLIN_DIVISORS[1]
#: The RGB channels' offsets, in twelfths of the hue circle, in the HLS -> RGB formula.
_HUE_OFFSETS = (0.0, 8.0, 4.0)
#: Instances per pass of :meth:`OpenImagesMosaic.noisy` (about 19 MB per float32 intermediate):
#: big enough for cheap intra-op threading, small enough to stay near the CPU caches.
NOISE_CHUNK = 32
_TINY = float(np.finfo(np.float32).tiny)  # divisor floor: a zero numerator stays zero


def blend_weights(image_width: int = IMAGE_SIDE, mosaic_width: int = MOSAIC_WIDTH,
                  p: float = BLEND_P) -> tuple[torch.Tensor, torch.Tensor]:
    """The overlap blend of docs/method.md section 2.2: (left, right) per-column weights, float32 (image_width,).

    The two images overlap on ``2 * image_width - mosaic_width`` columns (90). With
    ``L = ln(p / (1 - p))`` the right image's weight on its first overlap columns is
    ``sigmoid(linspace(-L, L, overlap))`` and 1 on the others; the left image's weight is
    that vector reversed. Computed in float64, rounded once to float32.
    """
    import torch
    overlap = 2 * image_width - mosaic_width
    if not 0 < overlap <= image_width:
        raise ValueError(f"two images {image_width} wide cannot make a mosaic {mosaic_width} wide")
    logit = math.log(p / (1 - p))
    right = torch.ones(image_width, dtype=torch.float64)
    right[:overlap] = torch.sigmoid(torch.linspace(-logit, logit, overlap, dtype=torch.float64))
    right = right.to(torch.float32)
    return right.flip(0), right


def rgb_to_hls(rgb: torch.Tensor) -> torch.Tensor:
    """RGB -> HLS on the channel axis -3 of a float tensor (..., 3, H, W), values in [0, 1].

    Standard HLS as Python's ``colorsys.rgb_to_hls`` defines it, vectorised: l = (max + min)/2;
    s = range/(max + min) if l <= 1/2 else range/(2 - max - min); the hue sector is that of
    the first maximal channel in the order r, g, b: h = ((g - b)/range, 2 + (b - r)/range or
    4 + (r - g)/range) / 6 mod 1. Grey pixels (range 0) get h = s = 0.
    """
    import torch
    r, g, b = rgb.unbind(-3)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    rangec = maxc - minc
    hls = torch.empty_like(rgb)
    hue, lightness, saturation = hls.unbind(-3)
    torch.add(maxc, minc, out=lightness)  # max + min, halved below
    # max + min when l <= 1/2, else 2 - (max + min); a grey pixel divides 0 by a positive number
    torch.div(rangec, torch.minimum(lightness, 2 - lightness).clamp_min_(_TINY), out=saturation)
    lightness.mul_(0.5)
    # 0/1 sector masks, exclusive: 1 + sign(x - max) is 1 where x is maximal and 0 elsewhere
    red = torch.sign(r - maxc).add_(1)
    not_red = 1 - red
    green = torch.sign(g - maxc).add_(1).mul_(not_red)
    blue = not_red.sub_(green)
    torch.mul(g - b, red, out=hue)
    hue.add_((b - r).mul_(green)).add_((r - g).mul_(blue))
    hue.div_(rangec.clamp_min_(_TINY)).add_(green.mul_(2)).add_(blue.mul_(4))
    hue.div_(6).remainder_(1.0)
    return hls


def hls_to_rgb(hls: torch.Tensor) -> torch.Tensor:
    """HLS -> RGB on the channel axis -3 (..., 3, H, W), the inverse of :func:`rgb_to_hls`.

    Equal to ``colorsys.hls_to_rgb`` (to float rounding) in its piecewise-linear form: with
    the half chroma ``c = s * min(l, 1 - l)`` and, for a channel's hue offset o (0 red,
    8 green, 4 blue, in twelfths of the hue circle), ``k = (o + 12 h) mod 12``, the channel
    is ``l + c * clip(|k - 6| - 3, -1, 1)`` (l - c at its own hue, l + c opposite).
    """
    import torch
    hue, lightness, saturation = (part.unsqueeze(-3) for part in hls.unbind(-3))
    chroma = torch.minimum(lightness, 1 - lightness).mul_(saturation)
    offsets = torch.tensor(_HUE_OFFSETS, dtype=hls.dtype, device=hls.device).view(3, 1, 1)
    k = torch.add(offsets, hue * 12).remainder_(12.0)  # (..., 3, H, W) by broadcasting
    ramp = k.sub_(6).abs_().sub_(3).clamp_(-1.0, 1.0)
    return ramp.mul_(chroma).add_(lightness)


def pixel_centres(size: int) -> torch.Tensor:
    """Normalised coordinates of the pixel centres of an axis of ``size`` pixels, float32.

    ``(2 j + 1) / size - 1`` for j = 0..size-1: the positions ``grid_sample`` with
    ``align_corners=False`` maps back onto the pixels themselves (the identity grid).
    """
    import torch
    return ((torch.arange(size, dtype=torch.float64) * 2 + 1) / size - 1).to(torch.float32)


def flow_mask(t: torch.Tensor, flow_max: float = FLOW_MAX) -> torch.Tensor:
    """The flow-field border mask of docs/method.md section 2.2: ``clip((1 - |t|) / m, 0, 1)``, m = 127/320 + 127/640.

    Multiplying a displacement of at most ``m`` in absolute value at coordinate t in
    [-1, 1] by this mask keeps ``t + displacement`` within [-1, 1]: no pixel is pulled in
    from outside the frame.
    """
    return ((1 - t.abs()) / flow_max).clamp_(0.0, 1.0)


def displacement_field(resolution1: torch.Tensor, resolution2: torch.Tensor) -> torch.Tensor:
    """Displacement of one axis from two int8 Perlin fields: ``r1 / 320 + r2 / 640``, float32.

    In normalised grid units ([-1, 1] spans the image), so at most ``FLOW_MAX`` in absolute value.
    """
    import torch
    first, second = PERLIN_DIVISORS
    return resolution1.to(torch.float32) / first + resolution2.to(torch.float32) / second


def sampling_grid(displacement: torch.Tensor) -> torch.Tensor:
    """``grid_sample`` grid (n, H, W, 2) of a displacement (n, 2, H, W) (x then y, unmasked).

    Sampling point = pixel centre + displacement * mask, the x displacement scaled by the
    flow mask of the column coordinate, the y displacement by that of the row coordinate.
    """
    import torch
    n, axes, height, width = displacement.shape
    if axes != 2:
        raise ValueError(f"displacement must be (n, 2, H, W), got {tuple(displacement.shape)}")
    xs, ys = pixel_centres(width), pixel_centres(height)
    grid = torch.empty((n, height, width, 2), dtype=torch.float32)
    torch.add(xs, displacement[:, 0] * flow_mask(xs), out=grid[..., 0])
    torch.add(ys[:, None], displacement[:, 1] * flow_mask(ys)[:, None], out=grid[..., 1])
    return grid


def to_uint8(levels: torch.Tensor) -> torch.Tensor:
    """Float grey levels in [0, 255] -> uint8: clip to [0, 255], round to nearest (ties to even).

    The thesis code truncates (a plain cast); rounding instead keeps the mean level
    unbiased (truncation darkens by half a level on average) and makes the noise-free
    path exact: an instance with no hue shift, no lightness change and a zero flow field
    equals its clean mosaic. The two conventions differ by at most one level.
    """
    import torch
    return levels.clamp(0.0, 255.0).round_().to(torch.uint8)


def jitter_and_distort(clean: torch.Tensor, hue_shift: torch.Tensor, lightness: torch.Tensor,
                       displacement: torch.Tensor) -> torch.Tensor:
    """The noise of docs/method.md section 2.2 on clean mosaics, given its draws; uint8 (n, 3, H, W) in and out.

    ``hue_shift`` and ``lightness`` (the a of the thesis) are (n,) float32, ``displacement``
    (n, 2, H, W) float32 (x then y, before the flow mask). On the float image in [0, 1]:
    RGB -> HLS, hue += shift mod 1, l' = (1 - |a|) l + max(0, a), HLS -> RGB, clip to [0, 1];
    then bilinear resampling at the masked sampling grid (align_corners=False, border
    padding), clip, scale by 255 and round (:func:`to_uint8`). Every operation is
    per-pixel or per-instance, so row r does not depend on the other rows.
    """
    import torch
    import torch.nn.functional as F
    hls = rgb_to_hls(clean.to(torch.float32).div_(255))
    hue, light = hls[:, 0], hls[:, 1]
    hue.add_(hue_shift.view(-1, 1, 1)).remainder_(1.0)
    light.mul_((1 - lightness.abs()).view(-1, 1, 1)).add_(lightness.clamp(min=0).view(-1, 1, 1))
    rgb = hls_to_rgb(hls).clamp_(0.0, 1.0)
    warped = F.grid_sample(rgb, sampling_grid(displacement), mode="bilinear",
                           padding_mode="border", align_corners=False)
    return to_uint8(warped.clamp_(0.0, 1.0).mul_(255))


def _check_array_like(array, what: str, item_shape: tuple[int, ...], dtype) -> None:
    """ValueError unless ``array`` has ``shape`` (n, *item_shape) with n >= 1 and ``dtype``."""
    shape, kind = getattr(array, "shape", None), getattr(array, "dtype", None)
    if shape is None or kind is None:
        raise ValueError(f"{what} must be an array-like with shape and dtype, got {type(array).__name__}")
    expected = "(n, " + ", ".join(map(str, item_shape)) + f") {np.dtype(dtype)}"
    if np.dtype(kind) != np.dtype(dtype) or len(shape) != 1 + len(item_shape) or tuple(shape[1:]) != item_shape:
        raise ValueError(f"{what} must be {expected}, got {tuple(shape)} {kind}")
    if shape[0] == 0:
        raise ValueError(f"{what} must be {expected} with n >= 1, got an empty array")


def _take(array, ids: np.ndarray) -> np.ndarray:
    """Rows ``ids`` (any order, repeats allowed) of an array-like.

    A numpy array (or memmap) is indexed directly; any other reader (an HDF5 dataset, a
    bank reader) is asked for the sorted distinct rows once, in increasing order, as HDF5
    requires, and the rows are then put in the order of ``ids``.
    """
    if isinstance(array, np.ndarray):
        return np.asarray(array[ids])
    if ids.size == 0:
        return np.empty((0, *array.shape[1:]), dtype=array.dtype)
    distinct, inverse = np.unique(ids, return_inverse=True)
    return np.asarray(array[distinct])[inverse.reshape(-1)]


class OpenImagesMosaic:
    """The NoisyOpenImagesMosaic task (docs/method.md section 2.2): 1x2 labels (left id, right id).

    ``bank``: (n, 180, 180, 3) uint8 HWC RGB images of one split; ``perlin``: the pair
    (resolution1, resolution2) of (n_fields, 180, 270) int8 Perlin fields (docs/method.md section 3).
    Both may be numpy arrays, memmaps or readers indexed by an int array (HDF5 datasets).
    Instances are (3, 180, 270) uint8 CHW; ``shape`` is their spatial size.
    """

    cells = 2  # m, the label length
    grid = (1, 2)
    tile = (IMAGE_SIDE, IMAGE_SIDE)
    shape = (IMAGE_SIDE, MOSAIC_WIDTH)
    channels = 3

    def __init__(self, bank, perlin):
        _check_array_like(bank, "OpenImages bank", (*self.tile, self.channels), np.uint8)
        if not isinstance(perlin, (tuple, list)) or len(perlin) != 2:
            raise ValueError("perlin must be the pair (resolution1, resolution2) of Perlin field arrays, "
                             f"got {type(perlin).__name__}")
        for name, fields in zip(("resolution1", "resolution2"), perlin):
            _check_array_like(fields, f"Perlin {name}", self.shape, np.int8)
        self.bank = bank
        self.perlin = tuple(perlin)
        self.left_weight, self.right_weight = blend_weights(IMAGE_SIDE, MOSAIC_WIDTH, BLEND_P)

    @property
    def bank_size(self) -> int:
        return len(self.bank)

    @property
    def field_counts(self) -> tuple[int, int]:
        """Number of Perlin fields at resolution 1 and at resolution 2."""
        return len(self.perlin[0]), len(self.perlin[1])

    def clean(self, labels: np.ndarray) -> np.ndarray:
        """(n, 2) ids -> (n, 3, 180, 270) uint8 clean mosaics (docs/method.md section 2.2).

        The weighted sum of the left image at columns [0, 180) and the right image at
        [90, 270) with the :func:`blend_weights`. Both weights are exactly 1 outside the
        90 overlap columns, so columns [0, 90) are the left image and [180, 270) the right
        image unchanged; the overlap is computed in float32, clipped and rounded to
        nearest (:func:`to_uint8`).
        """
        import torch
        labels = check_labels(labels, self.cells, self.bank_size)
        n = len(labels)
        side = IMAGE_SIDE
        overlap = 2 * side - MOSAIC_WIDTH
        images = torch.from_numpy(_take(self.bank, labels.reshape(-1)).reshape(n, 2, side, side, 3))
        left, right = images[:, 0].permute(0, 3, 1, 2), images[:, 1].permute(0, 3, 1, 2)  # CHW views
        out = torch.empty((n, 3, side, MOSAIC_WIDTH), dtype=torch.uint8)
        out[..., :side - overlap] = left[..., :side - overlap]
        out[..., side:] = right[..., overlap:]
        band = left[..., side - overlap:].to(torch.float32) * self.left_weight[side - overlap:]
        band += right[..., :overlap].to(torch.float32) * self.right_weight[:overlap]
        out[..., side - overlap:side] = to_uint8(band)
        return out.numpy()

    def noise_draws(self, rng: KeyedRandom, indices, *, sub: int = 0):
        """The random draws of instances ``indices`` of stream ``rng``, each from ``rng.at(index, sub)``.

        In this order per instance: the hue shift ~ U(-1/16, 1/16), the lightness a ~
        U(-0.2, 0.2), then four Perlin field indices, uniform over the fields: x and y at
        resolution 1, x and y at resolution 2. Returns (hue_shift (n,) float32, lightness
        (n,) float32, fields (n, 4) int64).
        """
        indices = np.asarray(indices).reshape(-1)
        n1, n2 = self.field_counts
        jitter = np.empty((len(indices), 2), dtype=np.float64)
        fields = np.empty((len(indices), 4), dtype=np.int64)
        for row, index in enumerate(indices.tolist()):
            gen = rng.at(index, sub)
            jitter[row, 0] = gen.uniform(-HUE_SHIFT, HUE_SHIFT)
            jitter[row, 1] = gen.uniform(-LIGHTNESS_JITTER, LIGHTNESS_JITTER)
            fields[row, :2] = gen.integers(0, n1, size=2)
            fields[row, 2:] = gen.integers(0, n2, size=2)
        jitter = jitter.astype(np.float32)
        return jitter[:, 0], jitter[:, 1], fields

    def displacement(self, fields: np.ndarray) -> torch.Tensor:
        """(n, 4) Perlin field indices (x1, y1, x2, y2) -> (n, 2, 180, 270) float32 displacement."""
        import torch
        fields = np.asarray(fields)
        n = len(fields)
        first = torch.from_numpy(_take(self.perlin[0], fields[:, :2].reshape(-1)))
        second = torch.from_numpy(_take(self.perlin[1], fields[:, 2:].reshape(-1)))
        return displacement_field(first, second).view(n, 2, *self.shape)

    def noisy(self, labels: np.ndarray, rng: KeyedRandom, indices, *, sub: int = 0) -> np.ndarray:
        """Noisy instances (n, 3, 180, 270) uint8: row r is instance ``indices[r]`` of stream ``rng``
        (sub-item ``sub``) with label ``labels[r]`` (see :func:`jitter_and_distort`).

        Computed ``NOISE_CHUNK`` instances at a time, so the float intermediates of a pass
        stay in the CPU caches; an instance does not depend on the chunking.
        """
        import torch
        labels = check_labels(labels, self.cells, self.bank_size)
        indices = np.asarray(indices).reshape(-1)
        if len(indices) != len(labels):
            raise ValueError(f"{len(labels)} labels but {len(indices)} instance indices")
        hue_shift, lightness, fields = self.noise_draws(rng, indices, sub=sub)
        hue_shift, lightness = torch.from_numpy(hue_shift), torch.from_numpy(lightness)
        out = np.empty((len(labels), self.channels, *self.shape), dtype=np.uint8)
        for start in range(0, len(labels), NOISE_CHUNK):
            part = slice(start, start + NOISE_CHUNK)
            out[part] = jitter_and_distort(torch.from_numpy(self.clean(labels[part])), hue_shift[part],
                                           lightness[part], self.displacement(fields[part])).numpy()
        return out


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
