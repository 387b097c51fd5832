"""Fixed perceptual hashes as encoders: pHash, dHash, aHash, wHash (the ``imagehash``
package's definitions) and Facebook's PDQ (the ``pdqhash`` package).

They are the practitioner's baseline for near-duplicate detection: no training, the
hash is the encoder. Each :class:`PerceptualHash` maps a batch of mosaic instances to
logits like a network does, so that fingerprints, the index, multi-probing and every
metric treat it like a learned model. Bit b of the hash is ``logit_b > 0`` and the logit
is the hash's own *margin*, the distance of the quantity it thresholds to its threshold:

- ``aHash`` (64 bits): the image in grayscale resized to 8 x 8; bit = pixel > mean of the
  pixels; logit = pixel - mean.
- ``dHash`` (64 bits): grayscale resized to 9 wide x 8 high; bit = pixel > its left
  neighbour; logit = the difference of the two.
- ``pHash`` (64 bits): grayscale resized to 32 x 32, 2-D DCT-II (unnormalised, as
  ``scipy.fftpack.dct``), its 8 x 8 lowest frequencies; bit = coefficient > their median;
  logit = coefficient - median.
- ``wHash`` (64 bits): grayscale resized to the largest power of two within the image's
  shorter side, scaled to [0, 1], its coarsest Haar approximation removed, then the Haar
  approximation at 8 x 8; bit = coefficient > their median; logit = coefficient - median.
- ``PDQ`` (256 bits): PDQ's 16 x 16 DCT coefficients (``pdqhash.compute_float``); bit =
  coefficient > their median; logit = coefficient - median.

Multi-probing flips the bits of smallest |logit| first: the bits nearest their threshold,
those that a little noise flips. The grayscale conversion and the resizing are Pillow's
(``Image.convert("L")``, Lanczos resampling), as in ``imagehash``; the bits equal the
libraries' bit for bit (``tests/test_perceptual.py``), in their order: row-major over the
8 x 8 (or 16 x 16) grid.

Instances: NoisyMnist mosaics (56 x 56 float) are clipped to [0, 1] and rounded to uint8
grayscale images; OpenImages mosaics (3 x 180 x 270 uint8) are RGB images.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch
from PIL import Image

from equihash.models import HASH_BITS

# The package each hash needs beyond Pillow and numpy, and what provides it.
_REQUIRES = {"pHash": ("scipy.fftpack", "scipy"), "wHash": ("pywt", "PyWavelets"), "PDQ": ("pdqhash", "pdqhash")}


def _module(name: str):
    module, package = _REQUIRES[name]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"the perceptual hash {name} needs the package {package}: pip install {package} "
                          "(the equihash install command installs it)") from None


def to_images(instances: np.ndarray) -> list[Image.Image]:
    """Mosaic instances as Pillow images: float (n, H, W) -> grayscale, uint8 (n, 3, H, W) -> RGB."""
    if instances.ndim == 3 and instances.dtype.kind == "f":
        pixels = (np.clip(instances, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        return [Image.fromarray(image, mode="L") for image in pixels]
    if instances.ndim == 4 and instances.shape[1] == 3 and instances.dtype == np.uint8:
        return [Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), mode="RGB") for image in instances]
    raise ValueError(f"instances: expected float (n, H, W) grayscale or uint8 (n, 3, H, W) RGB mosaics, got "
                     f"{instances.shape} {instances.dtype}")


def _gray(images: list[Image.Image], width: int, height: int) -> np.ndarray:
    """(n, height, width) uint8: each image in grayscale, resized with Lanczos resampling."""
    return np.stack([np.asarray(image.convert("L").resize((width, height), Image.LANCZOS)) for image in images])


def ahash_logits(images: list[Image.Image]) -> np.ndarray:
    pixels = _gray(images, 8, 8).reshape(len(images), 64).astype(np.float64)
    return pixels - pixels.mean(axis=1, keepdims=True)


def dhash_logits(images: list[Image.Image]) -> np.ndarray:
    pixels = _gray(images, 9, 8).astype(np.int16)
    return (pixels[:, :, 1:] - pixels[:, :, :-1]).reshape(len(images), 64).astype(np.float64)


def _above_median(values: np.ndarray) -> np.ndarray:
    return values - np.median(values, axis=1, keepdims=True)


def phash_logits(images: list[Image.Image]) -> np.ndarray:
    fftpack = _module("pHash")
    pixels = _gray(images, 32, 32)
    dct = np.stack([fftpack.dct(fftpack.dct(p, axis=0), axis=1) for p in pixels])
    return _above_median(dct[:, :8, :8].reshape(len(images), 64))


def whash_logits(images: list[Image.Image]) -> np.ndarray:
    pywt = _module("wHash")
    out = np.empty((len(images), 64))
    for i, image in enumerate(images):
        scale = max(2 ** int(np.log2(min(image.size))), 8)
        levels = int(np.log2(scale))
        pixels = np.asarray(image.convert("L").resize((scale, scale), Image.LANCZOS)) / 255.0
        coefficients = list(pywt.wavedec2(pixels, "haar", level=levels))
        coefficients[0] *= 0  # the coarsest approximation: the mean brightness
        pixels = pywt.waverec2(coefficients, "haar")
        out[i] = pywt.wavedec2(pixels, "haar", level=levels - 3)[0].reshape(64)
    return _above_median(out)


def pdq_logits(images: list[Image.Image]) -> np.ndarray:
    pdqhash = _module("PDQ")
    return _above_median(np.stack([pdqhash.compute_float(np.asarray(image.convert("RGB")))[0] for image in images]))


_LOGITS = {"pHash": phash_logits, "dHash": dhash_logits, "aHash": ahash_logits, "wHash": whash_logits,
           "PDQ": pdq_logits}


def perceptual_logits(name: str, instances: np.ndarray) -> np.ndarray:
    """(..., bits) float32 margins of the hash ``name`` of each instance (bit = margin > 0):
    float grayscale instances (..., H, W) or uint8 RGB instances (..., 3, H, W)."""
    if name not in _LOGITS:
        raise ValueError(f"unknown perceptual hash '{name}'; known: {', '.join(HASH_BITS)}")
    instances = np.asarray(instances)
    item = 2 if instances.dtype.kind == "f" else 3
    if instances.ndim < item:
        raise ValueError(f"instances: expected float (..., H, W) grayscale or uint8 (..., 3, H, W) RGB mosaics, "
                         f"got {instances.shape} {instances.dtype}")
    lead = instances.shape[:instances.ndim - item]
    flat = instances.reshape(-1, *instances.shape[instances.ndim - item:])
    return _LOGITS[name](to_images(flat)).astype(np.float32).reshape(*lead, HASH_BITS[name])


class PerceptualHash(torch.nn.Module):
    """A perceptual hash with the interface of a network: instances (..., H, W) or
    (..., 3, H, W) in, (..., bits) logits out.

    It has no parameters; ``forward`` runs on the CPU, whatever device its input is on.
    """

    def __init__(self, name: str):
        super().__init__()
        if name not in HASH_BITS:
            raise ValueError(f"unknown perceptual hash '{name}'; known: {', '.join(HASH_BITS)}")
        if name in _REQUIRES:
            _module(name)  # a missing package fails here, naming it, not at the first batch
        self.name = name
        self.nbits = HASH_BITS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = perceptual_logits(self.name, x.detach().cpu().numpy())
        return torch.from_numpy(logits).to(x.device)

    def extra_repr(self) -> str:
        return f"{self.name}, {self.nbits} bits"
