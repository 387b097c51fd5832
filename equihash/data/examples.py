"""The mosaic-examples picture: clean and noisy instances side by side.

``mosaic_examples`` draws ``count`` keyed random labels of distinct ids from one split and
lays out one row per label, ``[clean | noisy]``, on a white background with a gutter of a
few pixels around and between the tiles, so a reader sees what the instance noise of a
task does (docs/method.md section 2.1 Gaussian pixel noise, 2.2 colour jitter and Perlin flow).

Labels come from ``KeyedRandom(seed, split, "examples_labels")`` item 0 and the noisy
instance of row r is instance r of ``KeyedRandom(seed, split, "examples")``, so the
picture is a pure function of (task data, count, seed, split). ``write_png`` stores it
atomically with no timestamp or text chunk: identical pictures give identical bytes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from equihash.data.keyed import KeyedRandom
from equihash.data.mosaic import distinct_labels
from equihash.io import atomic_path

LABELS_STREAM = "examples_labels"
NOISE_STREAM = "examples"


def example_labels(mosaic, count: int = 8, *, seed: int = 0, split: str = "test") -> np.ndarray:
    """The ``count`` labels of the picture, (count, m) uint32, each of m distinct bank ids."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    generator = KeyedRandom(seed, split, LABELS_STREAM).at(0)
    return distinct_labels(generator, count, mosaic.bank_size, mosaic.cells)


def display_pixels(instances: np.ndarray) -> np.ndarray:
    """A batch of instances as RGB pixels (n, H, W, 3) uint8.

    uint8 colour instances (n, 3, H, W) (OpenImagesMosaic) are moved to channels-last;
    grayscale instances (n, H, W) (MnistMosaic: floats around [0, 1], noise included) are
    shown as grey levels ``round(clip(x, 0, 1) * 255)``.
    """
    instances = np.asarray(instances)
    if instances.ndim == 4 and instances.shape[1] == 3 and instances.dtype == np.uint8:
        return np.ascontiguousarray(instances.transpose(0, 2, 3, 1))
    if instances.ndim == 3:
        if instances.dtype != np.uint8:
            instances = np.rint(np.clip(instances, 0, 1) * 255).astype(np.uint8)
        return np.repeat(instances[..., None], 3, axis=-1)
    raise ValueError("instances must be (n, 3, H, W) uint8 colour or (n, H, W) grayscale, "
                     f"got {instances.shape} {instances.dtype}")


def mosaic_examples(mosaic, *, count: int = 8, seed: int = 0, split: str = "test",
                    gutter: int = 4, scale: int = 1) -> np.ndarray:
    """The picture (H, W, 3) uint8: ``count`` rows of ``[clean | noisy]`` mosaics of ``mosaic``.

    Tiles are the instances enlarged ``scale`` times (nearest neighbour); ``gutter`` white
    pixels surround every tile, so H = count * h + (count + 1) * gutter and
    W = 2 * w + 3 * gutter for tiles of h x w pixels.
    """
    if gutter < 0 or scale < 1:
        raise ValueError(f"gutter must be >= 0 and scale >= 1, got {gutter} and {scale}")
    labels = example_labels(mosaic, count, seed=seed, split=split)
    columns = (mosaic.clean(labels), mosaic.noisy(labels, KeyedRandom(seed, split, NOISE_STREAM), np.arange(count)))
    tiles = [display_pixels(column).repeat(scale, axis=1).repeat(scale, axis=2) for column in columns]
    height, width = tiles[0].shape[1:3]
    picture = np.full((count * height + (count + 1) * gutter, 2 * width + 3 * gutter, 3), 255, dtype=np.uint8)
    for column, column_tiles in enumerate(tiles):
        left = gutter + column * (width + gutter)
        for row, tile in enumerate(column_tiles):
            top = gutter + row * (height + gutter)
            picture[top:top + height, left:left + width] = tile
    return picture


def write_png(path, image: np.ndarray) -> None:
    """Write an (H, W, 3) or (H, W) uint8 image as PNG, atomically; identical images, identical bytes.

    Pillow writes no time or text chunk unless asked, and zlib at a fixed level is
    deterministic, so the bytes depend on the pixels only.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"{path}: a PNG image must be (H, W, 3) or (H, W) uint8, got {image.shape} {image.dtype}")
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", compress_level=9)
