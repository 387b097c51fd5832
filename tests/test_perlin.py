"""Perlin noise generation (docs/method.md section 3): equihash.data.perlin."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from equihash.data.keyed import KeyedRandom
from equihash.data.perlin import (
    DATASETS, DEFAULT_PERIODS, FIELD_SHAPE, FORMAT, PERLIN_BOUND, SCALE, THESIS_FIELDS,
    corner_gradients, fade, generate_perlin_file, gradient_noise, lattice_shape, perlin_fields,
    quantise,
)
from equihash.io import InputError


# --------------------------------------------------------------------------- reference
def scalar_perlin(seed: int, stream: str, index: int, period: int, shape, y: int, x: int) -> float:
    """Textbook per-pixel Perlin noise in float64, from the documented key layout."""
    rows, cols = -(-shape[0] // period) + 1, -(-shape[1] // period) + 1
    u = KeyedRandom(seed, "perlin", stream).at(index).random(rows * cols)
    angle = lambda j, i: 2 * math.pi * u[j * cols + i]  # noqa: E731  row-major corners
    py, px = y / period, x / period
    j, i = y // period, x // period

    def dot(cj, ci):
        a = angle(cj, ci)
        return math.cos(a) * (px - ci) + math.sin(a) * (py - cj)

    s = lambda t: 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3  # noqa: E731
    sx, sy = s(px - i), s(py - j)
    top = dot(j, i) + sx * (dot(j, i + 1) - dot(j, i))
    bottom = dot(j + 1, i) + sx * (dot(j + 1, i + 1) - dot(j + 1, i))
    return top + sy * (bottom - top)


# --------------------------------------------------------------------------- definition
def test_constants():
    assert DEFAULT_PERIODS == (180, 90)
    assert THESIS_FIELDS == 61_728 and THESIS_FIELDS * 2 * 180 * 270 <= 6e9 < (THESIS_FIELDS + 1) * 97_200
    assert SCALE == pytest.approx(127 * math.sqrt(2))
    assert lattice_shape((180, 270), 90) == (3, 4)
    assert lattice_shape((180, 270), 30) == (7, 10)
    assert lattice_shape((180, 270), 50) == (5, 7)   # pixel 179 lies in cell 3, pixel 269 in cell 5
    np.testing.assert_allclose(fade(np.array([0, 0.5, 1])), [0, 0.5, 1])


def test_bound_is_half_sqrt2_at_the_cell_centre():
    """max over unit gradients of a cell point's value = sum_c w_c |p - c|; its max is sqrt(2)/2."""
    t = np.linspace(0, 1, 1001)
    fx, fy = np.meshgrid(t, t)
    sx, sy = fade(fx), fade(fy)
    best = ((1 - sx) * (1 - sy) * np.hypot(fx, fy) + sx * (1 - sy) * np.hypot(1 - fx, fy)
            + (1 - sx) * sy * np.hypot(fx, 1 - fy) + sx * sy * np.hypot(1 - fx, 1 - fy))
    at = np.unravel_index(best.argmax(), best.shape)
    assert best.max() == pytest.approx(PERLIN_BOUND, abs=1e-12)
    assert (fx[at], fy[at]) == (0.5, 0.5)


def test_bound_is_attained_and_maps_to_127():
    """Gradients pointing at the centre of cell (0, 0) give +bound there (-bound reversed)."""
    period = 10
    gx, gy = np.zeros((2, 1, 2, 2), dtype=np.float32)
    h = np.float32(math.sqrt(0.5))
    gx[0] = [[h, -h], [h, -h]]     # corner (row j, column i): gradient (x, y) towards (5, 5)
    gy[0] = [[h, h], [-h, -h]]
    noise = gradient_noise(np.concatenate([gx, -gx]), np.concatenate([gy, -gy]), period, (10, 10))
    assert noise[0, 5, 5] == pytest.approx(PERLIN_BOUND, rel=1e-6)
    assert np.abs(noise).max() == pytest.approx(PERLIN_BOUND, rel=1e-6)
    fields = quantise(noise)
    assert fields[0, 5, 5] == 127 and fields[1, 5, 5] == -127
    assert fields[0].max() == 127 and fields[1].min() == -127


@pytest.mark.parametrize("period", [30, 50, 90])
def test_zero_at_lattice_corners(period):
    fields = perlin_fields(3, "resolution1", range(6), period)
    assert fields.shape == (6, *FIELD_SHAPE) and fields.dtype == np.int8
    assert not fields[:, ::period, ::period].any()
    # off the corners the field is not identically zero
    assert np.count_nonzero(fields) > 0.9 * fields.size


def test_matches_scalar_reference():
    """The vectorised blend equals the per-pixel textbook formula (float64) at random pixels."""
    rng = np.random.default_rng(5)
    for stream, period in (("resolution1", 90), ("resolution2", 30), ("other", 47)):
        indices = [0, 4, 11]
        lattice = lattice_shape(FIELD_SHAPE, period)
        noise = gradient_noise(*corner_gradients(7, stream, indices, lattice), period, FIELD_SHAPE)
        fields = perlin_fields(7, stream, indices, period)
        for row, index in enumerate(indices):
            for y, x in zip(rng.integers(0, 180, 40), rng.integers(0, 270, 40)):
                ref = scalar_perlin(7, stream, index, period, FIELD_SHAPE, int(y), int(x))
                assert abs(noise[row, y, x] - ref) < 2e-6
                assert abs(int(fields[row, y, x]) - round(ref * SCALE)) <= 1


def test_range_and_use_of_the_range():
    for period in DEFAULT_PERIODS:
        fields = perlin_fields(0, "resolution1", range(64), period)
        assert fields.min() >= -127 and fields.max() <= 127
        peaks = np.abs(fields.astype(np.int16)).max(axis=(1, 2))
        assert peaks.max() >= 110            # a sizeable part of the range is used ...
        assert peaks.mean() >= 80             # ... by a typical field, not only the rare one
        assert 30 <= fields.std() <= 50       # and values are spread, not concentrated at 0
        assert abs(fields.mean()) < 3         # symmetric noise


def test_finer_period_is_rougher():
    """Horizontal and vertical differences scale with 1/period: 3x rougher at 30 than at 90."""
    coarse = perlin_fields(0, "resolution1", range(32), 90).astype(np.float32)
    fine = perlin_fields(0, "resolution2", range(32), 30).astype(np.float32)
    for axis in (1, 2):
        ratio = np.abs(np.diff(fine, axis=axis)).mean() / np.abs(np.diff(coarse, axis=axis)).mean()
        assert 2.5 < ratio < 3.5
    # and the coarse field's power sits at lower spatial frequencies
    def mean_frequency(f):
        power = np.abs(np.fft.rfft(f - f.mean(axis=2, keepdims=True), axis=2)) ** 2
        freq = np.arange(power.shape[-1])
        return (power * freq).sum() / power.sum()
    assert mean_frequency(fine) > 2 * mean_frequency(coarse)


def test_batch_independence_and_keys():
    batch = perlin_fields(1, "resolution2", range(40), 30)
    for index in (0, 17, 39):
        alone = perlin_fields(1, "resolution2", [index], 30)
        assert alone.tobytes() == batch[index].tobytes()
    shuffled = [39, 3, 17, 3]
    assert perlin_fields(1, "resolution2", shuffled, 30).tobytes() == batch[shuffled].tobytes()
    assert perlin_fields(1, "resolution2", np.array([5], dtype=np.uint32), 30).tobytes() == batch[5].tobytes()
    assert perlin_fields(1, "resolution2", [], 30).shape == (0, *FIELD_SHAPE)
    # a different seed, stream or index gives a different field
    assert not np.array_equal(perlin_fields(2, "resolution2", [0], 30)[0], batch[0])
    assert not np.array_equal(perlin_fields(1, "resolution1", [0], 30)[0], batch[0])
    assert not np.array_equal(batch[0], batch[1])


# --------------------------------------------------------------------------- the file
def test_file_contents_layout_and_reproducible_bytes(tmp_path):
    path = generate_perlin_file(tmp_path / "a.hdf5", 7, periods=(60, 20), seed=4, block=3)
    assert path == tmp_path / "a.hdf5"
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT and f.attrs["seed"] == 4
        assert list(f.attrs["periods"]) == [60, 20]
        for name, period in zip(DATASETS, (60, 20)):
            data = f[name]
            assert data.shape == (7, 180, 270) and data.dtype == np.int8
            assert data.chunks is None and data.compression is None   # contiguous: memory-mappable
            assert data.id.get_offset() is not None
            assert data.attrs["period"] == period and data.attrs["stream"] == name
            np.testing.assert_array_equal(data[:], perlin_fields(4, name, range(7), period))
    raw = path.read_bytes()
    for block in (1, 7, 100):
        other = generate_perlin_file(tmp_path / f"block{block}.hdf5", 7, periods=(60, 20), seed=4, block=block)
        assert other.read_bytes() == raw
    assert generate_perlin_file(tmp_path / "seed5.hdf5", 7, periods=(60, 20), seed=5).read_bytes() != raw
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.hdf5", "block1.hdf5", "block100.hdf5", "block7.hdf5", "seed5.hdf5"]  # no temporaries left


def test_default_file_memory_maps(tmp_path):
    """The datasets are plain contiguous int8 at a file offset: np.memmap reads them as written."""
    path = generate_perlin_file(tmp_path / "p.hdf5", 2)
    with h5py.File(path, "r") as f:
        offsets = {name: f[name].id.get_offset() for name in DATASETS}
    for name, period in zip(DATASETS, DEFAULT_PERIODS):
        mapped = np.memmap(path, dtype=np.int8, mode="r", offset=offsets[name], shape=(2, 180, 270))
        np.testing.assert_array_equal(mapped, perlin_fields(0, name, range(2), period))


@pytest.mark.parametrize("kwargs, argument", [
    (dict(n=0), "'n'"), (dict(n=-3), "'n'"), (dict(n=2.0), "'n'"), (dict(n=True), "'n'"),
    (dict(n=2, periods=(30, 90)), "'periods'"), (dict(n=2, periods=(30, 30)), "'periods'"),
    (dict(n=2, periods=(90,)), "'periods'"), (dict(n=2, periods=(90, 0)), "'periods'"),
    (dict(n=2, periods=(90.5, 30)), "'periods'"), (dict(n=2, periods=90), "'periods'"),
    (dict(n=2, seed=-1), "'seed'"), (dict(n=2, block=0), "'block'"),
])
def test_generate_rejects_bad_arguments(tmp_path, kwargs, argument):
    with pytest.raises(InputError, match=argument):
        generate_perlin_file(tmp_path / "bad.hdf5", **kwargs)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, argument", [
    ((0, "s", [0], 0), "'period'"), ((0, "s", [0], 2.5), "'period'"),
    ((0, "s", [-1], 30), "'indices'"), ((0, "s", [0.5], 30), "'indices'"),
    ((0, "s", [[0]], 30), "'indices'"), ((-1, "s", [0], 30), "'seed'"),
    ((0, 3, [0], 30), "'stream'"), ((0, "s", [0], 30, (180,)), "'shape'"),
    ((0, "s", [0], 30, (180, 0)), "'shape'"),
])
def test_fields_reject_bad_arguments(args, argument):
    with pytest.raises(InputError, match=argument):
        perlin_fields(*args)
