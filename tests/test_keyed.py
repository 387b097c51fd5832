"""The compiled keyed normals (equihash/data/_keyed.pyx) against numpy's Generator, bit for bit."""

import threading

import numpy as np
import pytest

from equihash.data import _keyed
from equihash.data.keyed import KeyedRandom

#: numpy's float32 ziggurat starts its tail at r = 3.6541529: a larger |x| came from the tail.
TAIL_START = 3.6541529


def numpy_rows(rng: KeyedRandom, indices, width: int, sub: int = 0) -> np.ndarray:
    """The definition: row r is item indices[r]'s Generator, drawing float32 normals."""
    return np.stack([rng.at(int(index), sub).standard_normal(width, dtype=np.float32)
                     for index in indices]).reshape(len(indices), width)


@pytest.mark.parametrize("seed, split, stream, sub", [
    (0, "test", "database", 0),
    (3, "train", "train_noise", 1),
    (2**63 + 12345, "valid", "eval_anchor", 2),
])
def test_rows_are_numpys_normals_bit_for_bit(seed, split, stream, sub):
    rng = KeyedRandom(seed, split, stream)
    indices = np.concatenate([np.arange(150), [2**40 + 7, 2**63 - 1, 999_983]])
    fast = rng.standard_normal_rows(indices, 3136, sub=sub)
    assert fast.tobytes() == numpy_rows(rng, indices, 3136, sub).tobytes()
    # 480,000 normals: ~3,400 draws took numpy's slow path (wedges), ~120 its tail
    assert (np.abs(fast) > TAIL_START).sum() > 20


@pytest.mark.parametrize("width", [0, 1, 31, 32, 33, 257])
def test_widths_that_end_inside_a_refill(width):
    rng = KeyedRandom(5, "test", "database")
    indices = np.arange(400)
    assert rng.standard_normal_rows(indices, width).tobytes() == numpy_rows(rng, indices, width).tobytes()


def test_rows_written_into_a_given_array_and_from_any_index_order():
    rng = KeyedRandom(1, "test", "database")
    out = np.full((3, 64), np.nan, dtype=np.float32)
    assert rng.standard_normal_rows([9, 0, 9], 64, out=out) is out
    np.testing.assert_array_equal(out, numpy_rows(rng, [9, 0, 9], 64))


def test_fast_path_tables_read_from_numpy_reproduce_its_samples():
    threshold, width = _keyed.fast_path_tables()
    assert threshold.shape == width.shape == (256,)
    assert (threshold <= 2**23).all() and (width > 0).sum() >= 250
    # every accepted fast-path draw of a raw stream is rabs * width, signed
    rng = KeyedRandom(8, "test", "database")
    rng.at(0)
    raw = rng._bitgen.random_raw(2000)
    draws = np.empty(4000, dtype=np.uint64)
    draws[0::2], draws[1::2] = raw & 0xFFFFFFFF, raw >> 32
    normals = rng.at(0).standard_normal(4000, dtype=np.float32)
    layer, magnitude = draws & 0xFF, (draws >> 9) & 0x7FFFFF
    fast = magnitude < threshold[layer]
    prefix = int(np.argmin(fast))  # draws before the first slow one map one to one
    assert prefix > 10
    expected = (magnitude[:prefix].astype(np.float32) * width[layer[:prefix]])
    expected = np.where((draws[:prefix] >> 8) & 1 == 1, -expected, expected)
    np.testing.assert_array_equal(normals[:prefix], expected)


def test_threads_draw_in_parallel_with_the_same_numbers():
    rng = KeyedRandom(2, "test", "database")
    indices = np.arange(3000)
    expected = rng.standard_normal_rows(indices, 3136)
    results = [None, None]

    def work(slot):
        results[slot] = rng.copy().standard_normal_rows(indices, 3136)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        assert result.tobytes() == expected.tobytes()


def test_bad_rows_are_refused():
    rng = KeyedRandom(0, "test", "database")
    with pytest.raises(ValueError, match="indices must be >= 0"):
        rng.standard_normal_rows([3, -1], 8)
    with pytest.raises(ValueError, match="sub must be >= 0"):
        rng.standard_normal_rows([3], 8, sub=-1)
    for out in (np.empty((2, 8), np.float32), np.empty((3, 9), np.float32)):
        with pytest.raises(ValueError, match=r"out must be a C-contiguous float32 \(3, 8\) array"):
            rng.standard_normal_rows([1, 2, 3], 8, out=out)
