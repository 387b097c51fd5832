"""Keyed randomness, MnistMosaic instances (docs/method.md sections 2.1, 4) and MnistMosaicCNN (5)."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from equihash.data.keyed import KeyedRandom
from equihash.data.mosaic import MnistMosaic, distinct_labels
from equihash.nn.mnist import MnistMosaicCNN
from equihash.tasks import build_network


def small_bank(n=10):
    # image i has pixel (r, c) = (i + r + c) mod 256
    i, r, c = np.ogrid[:n, :28, :28]
    return ((i + r + c) % 256).astype(np.uint8)


def test_keyed_draw_depends_only_on_its_key():
    rng = KeyedRandom(3, "test", "database")
    alone = rng.standard_normal_rows([5], 16)
    batch = rng.standard_normal_rows([9, 5, 0], 16)
    np.testing.assert_array_equal(alone[0], batch[1])
    again = KeyedRandom(3, "test", "database").standard_normal_rows([5], 16)
    np.testing.assert_array_equal(alone, again)
    for other in (KeyedRandom(4, "test", "database"), KeyedRandom(3, "valid", "database"),
                  KeyedRandom(3, "test", "positive_queries")):
        assert not np.array_equal(alone, other.standard_normal_rows([5], 16))
    assert not np.array_equal(alone, rng.standard_normal_rows([5], 16, sub=1))


def test_clean_tile_places_the_four_digits_row_major():
    mosaic = MnistMosaic(small_bank())
    tile = mosaic.clean(np.array([[1, 2, 3, 4]], dtype=np.uint32))[0]
    assert tile.shape == (56, 56) and tile.dtype == np.float32
    # top-left (0,0) is image 1 pixel (0,0) = 1; top-right (0,28) is image 2 pixel (0,0) = 2;
    # bottom-left (28,0) is image 3 pixel (0,0) = 3; bottom-right (55,55) is image 4 pixel (27,27) = 58
    assert tile[0, 0] * 255 == pytest.approx(1)
    assert tile[0, 28] * 255 == pytest.approx(2)
    assert tile[28, 0] * 255 == pytest.approx(3)
    assert tile[55, 55] * 255 == pytest.approx(58)
    assert tile[10, 40] * 255 == pytest.approx(2 + 10 + 12)


def test_noise_is_gaussian_with_sigma_and_unclipped():
    mosaic = MnistMosaic(small_bank(), noise_sigma=0.2)
    labels = np.zeros((200, 4), dtype=np.uint32)
    noise = mosaic.noisy(labels, KeyedRandom(0, "test", "database"), np.arange(200)) - mosaic.clean(labels)
    assert noise.std() == pytest.approx(0.2, rel=0.01)
    assert abs(noise.mean()) < 0.002
    assert (mosaic.noisy(labels, KeyedRandom(0, "test", "database"), np.arange(200)) < 0).any()


def test_instance_is_bit_identical_whatever_batch_or_process():
    bank = small_bank()
    mosaic = MnistMosaic(bank)
    labels = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 9, 9]], dtype=np.uint32)
    rng = KeyedRandom(7, "test", "database")
    batch = mosaic.noisy(labels, rng, np.array([100, 101, 102]))
    alone = mosaic.noisy(labels[2:], rng, np.array([102]))
    np.testing.assert_array_equal(batch[2], alone[0])
    code = (
        "import numpy as np, hashlib\n"
        "from equihash.data.keyed import KeyedRandom\n"
        "from equihash.data.mosaic import MnistMosaic\n"
        "i, r, c = np.ogrid[:10, :28, :28]\n"
        "m = MnistMosaic(((i + r + c) % 256).astype(np.uint8))\n"
        "x = m.noisy(np.array([[0, 0, 9, 9]], np.uint32), KeyedRandom(7, 'test', 'database'), [102])\n"
        "print(hashlib.sha256(x.tobytes()).hexdigest())\n"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == hashlib.sha256(alone.tobytes()).hexdigest()


def test_distinct_labels_are_distinct_and_keyed():
    a = distinct_labels(KeyedRandom(0, "train", "train_labels").at(3), 500, 5, 4)
    b = distinct_labels(KeyedRandom(0, "train", "train_labels").at(3), 500, 5, 4)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint32 and a.max() < 5
    assert all(len(set(row)) == 4 for row in a.tolist())
    with pytest.raises(ValueError, match="distinct"):
        distinct_labels(KeyedRandom(0, "train", "x").at(0), 1, 3, 4)


def test_bad_bank_and_labels_are_named():
    with pytest.raises(ValueError, match=r"\(n, 28, 28\) uint8"):
        MnistMosaic(np.zeros((3, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match="out of range"):
        MnistMosaic(small_bank(3)).clean(np.array([[0, 1, 2, 3]], dtype=np.uint32))


def test_mnist_mosaic_cnn_shapes_and_parameter_count():
    net = MnistMosaicCNN(64)
    # conv 1->24 5x5: 624, BN 48, conv 24->32 3x3: 6944, BN 64, conv 32->48 3x3: 13872,
    # Linear 1728->512: 885248, Linear 512->64: 32832, BN1d: 128
    assert sum(p.numel() for p in net.parameters()) == 939760
    assert net(torch.zeros(3, 2, 56, 56)).shape == (3, 2, 64)
    assert net(torch.zeros(5, 56, 56)).shape == (5, 64)
    assert build_network("MnistMosaic", 32)(torch.zeros(2, 56, 56)).shape == (2, 32)
