"""NoisyOpenImagesMosaic instances (docs/method.md section 2.2): overlap blend, HLS jitter, Perlin flow, keyed noise."""

import colorsys
import math

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from equihash.data import mosaic as mosaic_module
from equihash.data.keyed import KeyedRandom
from equihash.data.mosaic import (FLOW_MAX, OpenImagesMosaic, blend_weights, displacement_field, flow_mask,
                                  hls_to_rgb, jitter_and_distort, pixel_centres, rgb_to_hls, sampling_grid,
                                  to_uint8)

L = math.log(0.99 / 0.01)


def random_bank(n=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 180, 180, 3), dtype=np.uint8)


def random_perlin(n=5, seed=1):
    g = np.random.default_rng(seed)
    return tuple(g.integers(-127, 128, (n, 180, 270), dtype=np.int8) for _ in range(2))


@pytest.fixture(scope="module")
def mosaic():
    return OpenImagesMosaic(random_bank(), random_perlin())


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


# --------------------------------------------------------------------------- clean mosaic
def test_blend_weights_follow_the_formula():
    left, right = blend_weights()
    assert left.dtype == right.dtype == torch.float32 and left.shape == right.shape == (180,)
    expected = np.array([sigmoid(-L + 2 * L * j / 89) for j in range(90)])
    np.testing.assert_allclose(right[:90].numpy(), expected, rtol=0, atol=1e-7)
    assert right[0].item() == pytest.approx(0.01, abs=1e-7) and right[89].item() == pytest.approx(0.99, abs=1e-7)
    assert (right[90:] == 1).all() and (left[:90] == 1).all()
    np.testing.assert_array_equal(left.numpy(), right.numpy()[::-1])
    # across the overlap the two weights sum to one (sigmoid(-x) = 1 - sigmoid(x))
    np.testing.assert_allclose((left[90:] + right[:90]).numpy(), 1.0, atol=1e-6)


def test_clean_mosaic_places_the_images_and_blends_the_overlap():
    bank = random_bank(4)
    bank[2] = (200, 100, 0)  # constant colours for hand-computed overlap columns
    bank[3] = (10, 250, 60)
    m = OpenImagesMosaic(bank, random_perlin(2))
    out = m.clean(np.array([[0, 1], [2, 3]], dtype=np.uint32))
    assert out.shape == (2, 3, 180, 270) and out.dtype == np.uint8
    chw = bank.transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(out[0, ..., :90], chw[0, ..., :90])  # left image alone
    np.testing.assert_array_equal(out[0, ..., 180:], chw[1, ..., 90:])  # right image alone
    # overlap column 90 + j: left image column 90 + j weighted sigmoid(-x_j), right image
    # column j weighted sigmoid(x_j), x_j = -L + 2 L j / 89; red channel by hand:
    # j = 0: 200 * 0.99 + 10 * 0.01 = 198.1; j = 45: 200 * 0.48710 + 10 * 0.51290 = 102.55;
    # j = 89: 200 * 0.01 + 10 * 0.99 = 11.9
    assert out[1, 0, 0, 90] == 198 and out[1, 0, 77, 135] == 103 and out[1, 0, 179, 179] == 12
    # blue: 0 * 0.99 + 60 * 0.01 = 0.6 -> 1 and 0 * 0.01 + 60 * 0.99 = 59.4 -> 59 (nearest, not truncated)
    assert out[1, 2, 5, 90] == 1 and out[1, 2, 5, 179] == 59
    # the whole band against the formula in float64 (rounded to nearest)
    x = -L + 2 * L * np.arange(90) / 89
    band = (chw[0, ..., 90:180] * (1 / (1 + np.exp(x))) + chw[1, ..., :90] * (1 / (1 + np.exp(-x))))
    exact = np.clip(np.rint(band), 0, 255)
    near_tie = np.abs(band - np.floor(band) - 0.5) < 1e-3
    assert np.array_equal(out[0, ..., 90:180][~near_tie], exact[~near_tie])
    assert np.abs(out[0, ..., 90:180].astype(int) - exact).max() <= 1


# --------------------------------------------------------------------------- colour jitter
def test_rgb_hls_round_trip_and_colorsys():
    g = np.random.default_rng(2)
    colours = np.concatenate([
        g.random((4000, 3)),
        g.integers(0, 256, (4000, 3)) / 255,
        np.repeat(g.random((100, 1)), 3, axis=1),  # greys
        [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 0.5]],
    ]).astype(np.float32)
    rgb = torch.from_numpy(colours).view(-1, 3, 1, 1)
    hls = rgb_to_hls(rgb)
    back = hls_to_rgb(hls)
    assert (back - rgb).abs().max().item() < 1e-5  # far inside the 1/255 of a grey level
    for row in g.choice(len(colours), 600, replace=False).tolist() + list(range(len(colours) - 9, len(colours))):
        h, l, s = colorsys.rgb_to_hls(*colours[row].astype(float))
        ours = hls[row, :, 0, 0].numpy()
        assert min(abs(ours[0] - h), 1 - abs(ours[0] - h)) < 1e-6  # hue is circular
        assert ours[1] == pytest.approx(l, abs=1e-6) and ours[2] == pytest.approx(s, abs=1e-6)
    triples = g.random((600, 3)).astype(np.float32)
    ours = hls_to_rgb(torch.from_numpy(triples).view(-1, 3, 1, 1))[:, :, 0, 0].numpy()
    expected = np.array([colorsys.hls_to_rgb(*t.astype(float)) for t in triples])
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def zero_flow(n):
    return torch.zeros((n, 2, 180, 270))


def test_noise_free_path_returns_the_clean_mosaic(mosaic):
    # with rounding to nearest the float round trip (errors ~1e-4 grey levels) is invisible
    clean = torch.from_numpy(mosaic.clean(np.array([[0, 1], [2, 3], [4, 4], [7, 5]])))
    out = jitter_and_distort(clean, torch.zeros(4), torch.zeros(4), zero_flow(4))
    assert torch.equal(out, clean)
    # zero Perlin fields and the noisy path: only the colour jitter remains
    zero = tuple(np.zeros((3, 180, 270), dtype=np.int8) for _ in range(2))
    flat = OpenImagesMosaic(random_bank(), zero)
    labels = np.array([[0, 1], [2, 3]])
    hue, light, _ = flat.noise_draws(KeyedRandom(0, "test", "database"), [0, 1])
    expected = jitter_and_distort(torch.from_numpy(flat.clean(labels)), torch.from_numpy(hue),
                                  torch.from_numpy(light), zero_flow(2))
    np.testing.assert_array_equal(flat.noisy(labels, KeyedRandom(0, "test", "database"), [0, 1]), expected.numpy())


def test_to_uint8_rounds_to_nearest_and_clips():
    levels = torch.tensor([-3.0, 0.49, 0.5, 1.5, 2.5, 127.51, 254.6, 255.0, 300.0])
    assert to_uint8(levels).tolist() == [0, 0, 0, 2, 2, 128, 255, 255, 255]


def test_hue_and_lightness_jitter_known_answers():
    image = torch.zeros((3, 3, 180, 270), dtype=torch.uint8)
    image[0, 0] = 255  # pure red: h = 0, l = 1/2, s = 1
    image[1:] = 100  # grey 100: s = 0
    out = jitter_and_distort(image, torch.tensor([1 / 16, 0.05, 0.0]), torch.tensor([0.0, 0.2, -0.2]), zero_flow(3))
    # red turned by 1/16 of the hue circle: colorsys.hls_to_rgb(1/16, 0.5, 1) = (1, 0.375, 0)
    assert out[0, :, 50, 50].tolist() == [255, 96, 0]
    # a = +0.2: l' = 0.8 l + 0.2 -> 0.8 * 100 + 51 = 131; a = -0.2: l' = 0.8 l -> 80; grey stays grey
    assert (out[1] == 131).all() and (out[2] == 80).all()


# --------------------------------------------------------------------------- Perlin flow
def test_flow_mask_values():
    t = torch.tensor([-1.0, -0.5, -0.3, 0.0, 1 - FLOW_MAX, 1 - FLOW_MAX / 2, 1.0])
    np.testing.assert_allclose(flow_mask(t).numpy(), [0, 0.5 / FLOW_MAX, 1, 1, 1, 0.5, 0], atol=1e-6)
    assert FLOW_MAX == pytest.approx(127 / 320 + 127 / 640)


def test_flow_mask_never_pulls_a_pixel_from_outside_the_frame():
    extremes = []
    for s1x, s2x, s1y, s2y in np.array(np.meshgrid(*[[-127, 127]] * 4)).reshape(4, -1).T:
        r1 = torch.tensor([s1x, s1y], dtype=torch.int8).view(2, 1, 1).expand(2, 180, 270)
        r2 = torch.tensor([s2x, s2y], dtype=torch.int8).view(2, 1, 1).expand(2, 180, 270)
        extremes.append(displacement_field(r1, r2))
    displacement = torch.stack(extremes)  # every sign pattern of the four fields at +-127
    assert displacement.abs().max().item() == pytest.approx(FLOW_MAX, abs=1e-7)
    grid = sampling_grid(displacement)
    assert grid.min().item() >= -1 and grid.max().item() <= 1
    # in pixel units (align_corners=False): within [-0.5, size - 0.5], the outer pixel edges
    x = ((grid[..., 0] + 1) * 270 - 1) / 2
    y = ((grid[..., 1] + 1) * 180 - 1) / 2
    assert x.min() >= -0.5 and x.max() <= 269.5 and y.min() >= -0.5 and y.max() <= 179.5
    # the interior, at least FLOW_MAX from the frame edge, moves by the full displacement
    centre = pixel_centres(270)
    interior = centre.abs() <= 1 - FLOW_MAX
    moved = grid[..., 0] - centre
    torch.testing.assert_close(moved[:, :, interior], displacement[:, 0][:, :, interior], rtol=0, atol=1e-6)


def test_sampling_grid_of_zero_flow_is_the_identity():
    grid = sampling_grid(torch.zeros((1, 2, 180, 270)))
    image = torch.rand((1, 3, 180, 270))
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(out, image, rtol=0, atol=1e-4)  # float rounding of the centres


def test_displacement_pulls_from_grid_plus_displacement():
    # a uniform x displacement of one pixel (2/270 in grid units): where the mask is 1 the
    # output pixel x is the input pixel x + 1
    g = np.random.default_rng(3)
    image = torch.from_numpy(g.integers(0, 256, (1, 3, 180, 270), dtype=np.uint8))
    displacement = zero_flow(1)
    displacement[:, 0] = 2 / 270
    out = jitter_and_distort(image, torch.zeros(1), torch.zeros(1), displacement)
    interior = np.flatnonzero(pixel_centres(270).abs().numpy() <= 1 - FLOW_MAX)
    np.testing.assert_array_equal(out[..., interior].numpy(), image[..., interior + 1].numpy())
    # column 0 (centre -1 + 1/270) moves by mask = (1/270) / FLOW_MAX of a pixel towards column 1
    fraction = (1 / 270) / FLOW_MAX
    edge = (1 - fraction) * image[..., 0].double() + fraction * image[..., 1].double()
    assert (out[..., 0].double() - edge).abs().max() <= 0.5 + 1e-3


# --------------------------------------------------------------------------- keyed noise
def test_noise_draws_ranges(mosaic):
    hue, light, fields = mosaic.noise_draws(KeyedRandom(0, "test", "database"), np.arange(3000))
    assert hue.dtype == light.dtype == np.float32 and fields.shape == (3000, 4)
    assert np.abs(hue).max() < 1 / 16 and hue.std() == pytest.approx(1 / 16 / math.sqrt(3), rel=0.05)
    assert np.abs(light).max() < 0.2 and light.std() == pytest.approx(0.2 / math.sqrt(3), rel=0.05)
    n1, n2 = mosaic.field_counts
    assert fields.min() == 0 and fields[:, :2].max() == n1 - 1 and fields[:, 2:].max() == n2 - 1
    assert (fields[:, 0] != fields[:, 1]).mean() == pytest.approx(1 - 1 / n1, abs=0.03)  # x, y independent


def test_instances_are_keyed(mosaic):
    labels = np.array([[1, 2], [1, 2]], dtype=np.uint32)
    rng = KeyedRandom(5, "test", "database")
    a = mosaic.noisy(labels, rng, [10, 11])
    assert a.shape == (2, 3, 180, 270) and a.dtype == np.uint8
    assert not np.array_equal(a[0], a[1])  # two instances of one label differ
    again = mosaic.noisy(labels[:1], KeyedRandom(5, "test", "database"), [10])
    np.testing.assert_array_equal(again[0], a[0])  # identical key, identical instance
    for other, sub in ((KeyedRandom(6, "test", "database"), 0), (KeyedRandom(5, "valid", "database"), 0),
                       (KeyedRandom(5, "test", "positive_queries"), 0), (rng, 1)):
        assert not np.array_equal(mosaic.noisy(labels[:1], other, [10], sub=sub)[0], a[0])


def test_instance_is_bit_identical_whatever_batch(mosaic, monkeypatch):
    labels = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [1, 1]], dtype=np.uint32)
    indices = np.array([3, 0, 9, 4, 100])
    rng = KeyedRandom(1, "test", "database")
    batch = mosaic.noisy(labels, rng, indices)
    for r in range(5):
        np.testing.assert_array_equal(mosaic.noisy(labels[r:r + 1], rng, indices[r:r + 1])[0], batch[r])
    order = np.array([4, 2, 0, 3, 1])
    np.testing.assert_array_equal(mosaic.noisy(labels[order], rng, indices[order]), batch[order])
    monkeypatch.setattr(mosaic_module, "NOISE_CHUNK", 2)  # chunk boundaries inside the batch
    np.testing.assert_array_equal(mosaic.noisy(labels, rng, indices), batch)


def test_hdf5_datasets_give_the_same_instances(tmp_path, mosaic):
    path = tmp_path / "data.hdf5"
    with h5py.File(path, "w") as f:
        f["images"] = mosaic.bank
        f["resolution1"], f["resolution2"] = mosaic.perlin
    labels = np.array([[5, 1], [1, 5], [5, 5]], dtype=np.uint32)  # unsorted and repeated reads
    rng = KeyedRandom(0, "test", "database")
    with h5py.File(path, "r") as f:
        from_file = OpenImagesMosaic(f["images"], (f["resolution1"], f["resolution2"]))
        assert from_file.bank_size == 8
        np.testing.assert_array_equal(from_file.noisy(labels, rng, [2, 1, 0]), mosaic.noisy(labels, rng, [2, 1, 0]))


# --------------------------------------------------------------------------- validation
def test_bad_shapes_and_labels_raise():
    perlin = random_perlin(2)
    with pytest.raises(ValueError, match=r"bank must be \(n, 180, 180, 3\) uint8"):
        OpenImagesMosaic(np.zeros((2, 180, 180), dtype=np.uint8), perlin)
    with pytest.raises(ValueError, match="uint8"):
        OpenImagesMosaic(np.zeros((2, 180, 180, 3), dtype=np.float32), perlin)
    with pytest.raises(ValueError, match=r"resolution2 must be \(n, 180, 270\) int8"):
        OpenImagesMosaic(random_bank(2), (perlin[0], np.zeros((2, 180, 270), dtype=np.uint8)))
    with pytest.raises(ValueError, match="pair"):
        OpenImagesMosaic(random_bank(2), perlin[0])
    with pytest.raises(ValueError, match="n >= 1"):
        OpenImagesMosaic(random_bank(2), (perlin[0][:0], perlin[1]))
    m = OpenImagesMosaic(random_bank(2), perlin)
    with pytest.raises(ValueError, match=r"labels must be \(n, 2\)"):
        m.clean(np.zeros((1, 4), dtype=np.uint32))
    with pytest.raises(ValueError, match="out of range"):
        m.clean(np.array([[0, 2]]))
    with pytest.raises(ValueError, match="instance indices"):
        m.noisy(np.array([[0, 1]]), KeyedRandom(0, "test", "database"), [0, 1])


def test_task_is_registered():
    from equihash.tasks import get_task

    assert get_task("OpenImagesMosaic").mosaic is OpenImagesMosaic
    assert OpenImagesMosaic.cells == 2 and OpenImagesMosaic.shape == (180, 270)
