"""The mosaic-examples picture: layout, gutter, keyed content, deterministic PNG."""

import io

import numpy as np
import pytest
from PIL import Image

from equihash.data.examples import display_pixels, example_labels, mosaic_examples, write_png
from equihash.data.keyed import KeyedRandom
from equihash.data.mosaic import MnistMosaic, OpenImagesMosaic


@pytest.fixture(scope="module")
def openimages():
    g = np.random.default_rng(0)
    bank = g.integers(0, 256, (6, 180, 180, 3), dtype=np.uint8)
    perlin = tuple(g.integers(-127, 128, (4, 180, 270), dtype=np.int8) for _ in range(2))
    return OpenImagesMosaic(bank, perlin)


@pytest.fixture(scope="module")
def mnist():
    i, r, c = np.ogrid[:10, :28, :28]
    return MnistMosaic(((i * 25 + r * c) % 256).astype(np.uint8))


def tile(picture, row, column, height, width, gutter):
    top, left = gutter + row * (height + gutter), gutter + column * (width + gutter)
    return picture[top:top + height, left:left + width]


def gutter_mask(count, height, width, gutter):
    """True on the pixels outside every tile."""
    mask = np.ones((count * height + (count + 1) * gutter, 2 * width + 3 * gutter), dtype=bool)
    for row in range(count):
        for column in range(2):
            top, left = gutter + row * (height + gutter), gutter + column * (width + gutter)
            mask[top:top + height, left:left + width] = False
    return mask


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        chunks.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return chunks


def test_openimages_grid_layout_and_content(openimages):
    count, gutter = 3, 5
    picture = mosaic_examples(openimages, count=count, seed=2, split="test", gutter=gutter)
    assert picture.shape == (3 * 180 + 4 * 5, 2 * 270 + 3 * 5, 3) and picture.dtype == np.uint8
    assert (picture[gutter_mask(count, 180, 270, gutter)] == 255).all()
    labels = example_labels(openimages, count, seed=2, split="test")
    assert labels.shape == (3, 2) and (labels[:, 0] != labels[:, 1]).all()
    clean = openimages.clean(labels).transpose(0, 2, 3, 1)
    noisy = openimages.noisy(labels, KeyedRandom(2, "test", "examples"), np.arange(count)).transpose(0, 2, 3, 1)
    for row in range(count):
        np.testing.assert_array_equal(tile(picture, row, 0, 180, 270, gutter), clean[row])
        np.testing.assert_array_equal(tile(picture, row, 1, 180, 270, gutter), noisy[row])
        assert not np.array_equal(clean[row], noisy[row])
    # keyed: the same arguments give the same picture, another seed another one
    np.testing.assert_array_equal(mosaic_examples(openimages, count=count, seed=2, gutter=gutter), picture)
    assert not np.array_equal(mosaic_examples(openimages, count=count, seed=3, gutter=gutter), picture)


def test_mnist_grid_is_grey_and_scaled(mnist):
    count, gutter, scale = 4, 3, 2
    picture = mosaic_examples(mnist, count=count, gutter=gutter, scale=scale)
    side = 56 * scale
    assert picture.shape == (count * side + (count + 1) * gutter, 2 * side + 3 * gutter, 3)
    assert (picture[gutter_mask(count, side, side, gutter)] == 255).all()
    assert (picture[..., 0] == picture[..., 1]).all() and (picture[..., 0] == picture[..., 2]).all()
    labels = example_labels(mnist, count)
    assert all(len(set(row)) == 4 for row in labels.tolist())  # distinct ids
    clean = np.rint(mnist.clean(labels) * 255).astype(np.uint8)  # noise-free: exact grey levels
    noisy = mnist.noisy(labels, KeyedRandom(0, "test", "examples"), np.arange(count))
    noisy = np.rint(np.clip(noisy, 0, 1) * 255).astype(np.uint8)
    for row in range(count):
        enlarged = tile(picture, row, 0, side, side, gutter)[..., 0]
        np.testing.assert_array_equal(enlarged[::scale, ::scale], clean[row])
        np.testing.assert_array_equal(enlarged[1::scale, 1::scale], clean[row])
        np.testing.assert_array_equal(tile(picture, row, 1, side, side, gutter)[::scale, ::scale, 0], noisy[row])


def test_display_pixels():
    grey = np.array([[[-0.2, 0.0, 0.5, 0.999, 1.7]]], dtype=np.float32)
    assert display_pixels(grey)[0, 0].tolist() == [[0] * 3, [0] * 3, [128] * 3, [255] * 3, [255] * 3]
    colour = np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(display_pixels(colour), colour.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="instances must be"):
        display_pixels(np.zeros((2, 4, 5, 5), dtype=np.uint8))


def test_png_bytes_are_deterministic_and_lossless(tmp_path, openimages):
    picture = mosaic_examples(openimages, count=2)
    first, second = tmp_path / "a" / "examples.png", tmp_path / "b.png"
    write_png(first, picture)
    write_png(second, mosaic_examples(openimages, count=2))
    data = first.read_bytes()
    assert data == second.read_bytes()
    chunks = png_chunks(data)
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    assert not {b"tIME", b"tEXt", b"iTXt", b"zTXt"} & set(chunks)  # no timestamp, no metadata text
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), picture)
    assert sorted(p.name for p in first.parent.iterdir()) == ["examples.png"]  # no temporary left


def test_write_png_rejects_bad_images(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "x.png", np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        write_png(tmp_path / "x.png", np.zeros((4, 4, 4), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []
