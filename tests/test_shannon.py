"""Tests of the Shannon term (docs/method.md section 6.1): the batched gradient of -sum_T H_T."""

import itertools
import math

import numpy as np
import pytest
import torch

from equihash.train.evaluation import subset_family
from equihash.train.shannon import entropy_of_tuples, shannon_gradient, tuple_family


def random_logits(n_instances, k, scale=2.0, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(n_instances, k, generator=generator, dtype=torch.float64)).to(dtype)


def autograd_gradient(z, tuple_size):
    """d(-sum_T H_T)/dz by autograd through the direct entropy."""
    z = z.clone().requires_grad_(True)
    entropy = entropy_of_tuples(z, tuple_size)
    (-entropy).backward()
    return z.grad, entropy.detach()


def literal_gradient(z, tuple_size, gradient="normal", prior=1.0, tuples=None):
    """The formula of docs/method.md section 6.1 written out with Python loops over tuples (all of them,
    or the list ``tuples``), bits and configurations (numpy float64):
    ``(grad of -sum_T H_T, sum_T H_T)``."""
    z = np.asarray(z, dtype=np.float64)
    n_instances, k = z.shape
    p1 = 1 / (1 + np.exp(-z))
    p0 = 1 / (1 + np.exp(z))
    hard = z > 0
    prob = {0: p0, 1: p1}
    grad = np.zeros_like(z)
    total_entropy = 0.0
    if tuples is None:
        tuples = itertools.combinations(range(k), tuple_size)
    for tuple_bits in tuples:
        for config in itertools.product((0, 1), repeat=tuple_size):
            p = np.mean(np.prod([prob[c][:, b] for b, c in zip(tuple_bits, config)], axis=0))
            total_entropy -= p * math.log(p)
        for i in tuple_bits:
            sub = [b for b in tuple_bits if b != i]
            for config in itertools.product((0, 1), repeat=tuple_size - 1):
                p_sub = np.prod([prob[c][:, b] for b, c in zip(sub, config)], axis=0)
                if gradient == "normal":
                    l = math.log(np.sum(p1[:, i] * p_sub)) - math.log(np.sum(p0[:, i] * p_sub))
                else:
                    match = np.all(hard[:, sub] == np.array(config, dtype=bool), axis=1)
                    ones = np.sum(match & hard[:, i])
                    zeros = np.sum(match & ~hard[:, i])
                    l = math.log(ones + prior) - math.log(zeros + prior)
                grad[:, i] += p1[:, i] * p0[:, i] / n_instances * p_sub * l
    return grad, total_entropy


@pytest.mark.parametrize("tuple_size", [2, 3, 4])
@pytest.mark.parametrize("k", [6, 8])
def test_gradient_and_entropy_match_autograd(tuple_size, k):
    z = random_logits(20, k, seed=k * 10 + tuple_size)
    grad, entropy = shannon_gradient(z, tuple_size)
    expected_grad, expected_entropy = autograd_gradient(z, tuple_size)
    assert grad.dtype == torch.float64 and grad.shape == z.shape
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)
    assert entropy.item() == pytest.approx(expected_entropy.item(), rel=1e-12)


@pytest.mark.parametrize("gradient", ["normal", "pseudo-smooth"])
@pytest.mark.parametrize("tuple_size", [2, 3])
def test_matches_literal_loop_over_tuples(gradient, tuple_size):
    z = random_logits(7, 5, scale=1.5, seed=3)
    grad, entropy = shannon_gradient(z, tuple_size, gradient, prior=0.7)
    expected_grad, expected_entropy = literal_gradient(z.numpy(), tuple_size, gradient, prior=0.7)
    np.testing.assert_allclose(grad.numpy(), expected_grad, rtol=1e-10, atol=1e-14)
    assert entropy.item() == pytest.approx(expected_entropy, rel=1e-12)


@pytest.mark.parametrize("tuple_size", [2, 3, 4])
def test_zero_logits_are_uniform_with_zero_gradient(tuple_size):
    # P_j(b=1) = 1/2 everywhere: every tuple is uniform (H_T = t ln 2), A1 == A0, l == 0.
    k = 7
    z = torch.zeros(12, k, dtype=torch.float64)
    grad, entropy = shannon_gradient(z, tuple_size)
    assert torch.equal(grad, torch.zeros_like(z))
    uniform = math.comb(k, tuple_size) * tuple_size * math.log(2)
    assert entropy.item() == pytest.approx(uniform, rel=1e-13)


@pytest.mark.parametrize("prior", [1.0, 0.5])
def test_pseudo_smooth_by_hand(prior):
    # Hard codes (b0, b1): (1,1), (1,0), (0,0), (1,1); one tuple {0, 1}; N = 4.
    z = torch.tensor([[2.0, 2.0], [2.0, -2.0], [-2.0, -2.0], [3.0, 1.0]], dtype=torch.float64)
    a = prior
    # l for bit 0 given bit 1: c1=0 -> counts (b0=1: 1, b0=0: 1); c1=1 -> (2, 0).
    l0 = {0: math.log(1 + a) - math.log(1 + a), 1: math.log(2 + a) - math.log(0 + a)}
    # l for bit 1 given bit 0: c0=0 -> counts (b1=1: 0, b1=0: 1); c0=1 -> (2, 1).
    l1 = {0: math.log(0 + a) - math.log(1 + a), 1: math.log(2 + a) - math.log(1 + a)}
    s = torch.sigmoid(z)
    ds = s * (1 - s)
    expected = torch.stack(
        [
            ds[:, 0] / 4 * ((1 - s[:, 1]) * l0[0] + s[:, 1] * l0[1]),
            ds[:, 1] / 4 * ((1 - s[:, 0]) * l1[0] + s[:, 0] * l1[1]),
        ],
        dim=1,
    )
    grad, entropy = shannon_gradient(z, 2, "pseudo-smooth", prior=prior)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-15)
    # The returned entropy is the soft one in both variants.
    assert entropy.item() == pytest.approx(entropy_of_tuples(z, 2).item(), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gradient", ["normal", "pseudo-smooth"])
def test_saturated_logits_are_safe(dtype, gradient):
    # |z| = 50: products of sigmoid(-50) ~ 2e-22 underflow in float32; nothing may be NaN/inf.
    generator = torch.Generator().manual_seed(5)
    signs = torch.randint(0, 2, (40, 9), generator=generator) * 2 - 1
    z = (50.0 * signs).to(dtype)
    grad, entropy = shannon_gradient(z, 3, gradient)
    assert grad.dtype == dtype
    assert torch.isfinite(grad).all() and torch.isfinite(entropy)
    # Bits are certain, so p_T is the empirical distribution of the hard codes.
    codes = (signs > 0).numpy()
    expected = 0.0
    for tuple_bits in itertools.combinations(range(9), 3):
        _, counts = np.unique(codes[:, tuple_bits], axis=0, return_counts=True)
        p = counts / 40
        expected -= np.sum(p * np.log(p))
    assert entropy.item() == pytest.approx(expected, rel=1e-9)


def test_saturated_logits_match_autograd_in_float64():
    z = random_logits(16, 6, scale=1.0, seed=9)
    z[:8] = 50.0 * torch.sign(z[:8])
    grad, _ = shannon_gradient(z, 3)
    expected, _ = autograd_gradient(z, 3)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("gradient", ["normal", "pseudo-smooth"])
def test_chunking_does_not_change_the_result(gradient):
    z = random_logits(30, 10, seed=11)
    whole, entropy_whole = shannon_gradient(z, 3, gradient, max_chunk_elements=1 << 30)
    for chunk in (1, 30 * 4 * 7, 30 * 4 * 16):  # one sub-tuple per chunk, uneven, even
        chunked, entropy_chunked = shannon_gradient(z, 3, gradient, max_chunk_elements=chunk)
        torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-15)
        assert entropy_chunked.item() == pytest.approx(entropy_whole.item(), rel=1e-13)


def test_reruns_are_bit_identical_and_instances_are_exchangeable():
    z = random_logits(64, 12, seed=2, dtype=torch.float32)
    grad, entropy = shannon_gradient(z, 3)
    again, entropy_again = shannon_gradient(z, 3)
    assert torch.equal(grad, again) and torch.equal(entropy, entropy_again)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(4))
    permuted, entropy_permuted = shannon_gradient(z[order], 3)
    torch.testing.assert_close(permuted, grad[order], rtol=1e-5, atol=1e-7)
    assert entropy_permuted.item() == pytest.approx(entropy.item(), rel=1e-6)


def test_float32_agrees_with_float64():
    z = random_logits(256, 16, scale=3.0, seed=8)
    grad64, entropy64 = shannon_gradient(z, 3)
    grad32, entropy32 = shannon_gradient(z.float(), 3)
    assert grad32.dtype == torch.float32
    torch.testing.assert_close(grad32.double(), grad64, rtol=1e-4, atol=1e-7)
    assert entropy32.item() == pytest.approx(entropy64.item(), rel=1e-6)


def test_gradient_ascends_the_entropy():
    # A small step against the returned gradient of -H raises H by about |grad|^2 * step.
    z = random_logits(32, 8, seed=6)
    grad, entropy = shannon_gradient(z, 3)
    step = 1e-3
    _, raised = shannon_gradient(z - step * grad, 3)
    gain = raised.item() - entropy.item()
    assert gain == pytest.approx(step * grad.pow(2).sum().item(), rel=1e-2)


# --------------------------------------------------------------------------- tuple cover
@pytest.mark.parametrize("k, tuple_size", [(64, 3), (64, 4), (10, 3), (7, 4), (8, 2)])
def test_tuple_families_cover_every_subset_of_the_cover_size(k, tuple_size):
    assert tuple_family(k, tuple_size) is None and tuple_family(k, tuple_size, tuple_size) is None
    for cover in range(1, tuple_size):
        family = tuple_family(k, tuple_size, cover, seed=0).numpy()
        # One tuple per cover-subset (the thesis' construction): C(k, c) rows of t ascending bits.
        assert family.dtype == np.int64 and family.shape == (math.comb(k, cover), tuple_size)
        assert (np.diff(family, axis=1) > 0).all()
        # Row r holds the r-th cover-subset in lexicographic order, completed at random.
        for row, subset in zip(family.tolist(), itertools.combinations(range(k), cover)):
            assert set(subset) <= set(row)
        # Fixed by (k, t, cover, seed); another seed, another completion; never the evaluation's.
        assert np.array_equal(tuple_family(k, tuple_size, cover, seed=0).numpy(), family)
        if math.comb(k, tuple_size) > len(family):
            assert not np.array_equal(tuple_family(k, tuple_size, cover, seed=1).numpy(), family)
        if cover == 2:
            assert not np.array_equal(family, subset_family(k, tuple_size, 0))
    with pytest.raises(ValueError, match="cover_size"):
        tuple_family(k, tuple_size, tuple_size + 1)
    with pytest.raises(ValueError, match="cover_size"):
        tuple_family(k, tuple_size, 0)


def test_the_shquad_family_has_one_tuple_per_triple():
    # SHQuad: 4-tuples covering every triple of the 64 bits, C(64, 3) = 41664 of them.
    family = tuple_family(64, 4, 3, seed=0).numpy()
    assert family.shape == (41664, 4)
    covered = {triple for row in family.tolist() for triple in itertools.combinations(row, 3)}
    assert covered >= set(itertools.combinations(range(64), 3))


@pytest.mark.parametrize("cover, tuple_size", [(1, 2), (1, 3), (2, 3), (1, 4), (2, 4), (3, 4)])
def test_cover_gradient_matches_autograd_over_exactly_its_tuples(cover, tuple_size):
    k = 9
    family = tuple_family(k, tuple_size, cover, seed=tuple_size)
    z = random_logits(24, k, seed=20 + tuple_size)
    grad, entropy = shannon_gradient(z, tuple_size, tuples=family)
    leaf = z.clone().requires_grad_(True)
    expected_entropy = entropy_of_tuples(leaf, tuple_size, family)
    (-expected_entropy).backward()
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-10, atol=1e-13)
    assert entropy.item() == pytest.approx(expected_entropy.item(), rel=1e-12)
    # The reference itself sums exactly the family's distinct tuples: the literal loop agrees.
    literal_grad, literal_entropy = literal_gradient(z.numpy(), tuple_size,
                                                     tuples=sorted(set(map(tuple, family.tolist()))))
    np.testing.assert_allclose(grad.numpy(), literal_grad, rtol=1e-10, atol=1e-14)
    assert entropy.item() == pytest.approx(literal_entropy, rel=1e-12)


def test_cover_by_hand_one_tuple():
    # Family {(0, 2)} of k = 3 bits: only bits 0 and 2 feel the Shannon term, and the
    # entropy is that of one tuple. Two instances with logits +-ln 3 on bits 0 and 2:
    # P(b=1) = (3/4, 3/4) and (1/4, 1/4); p_T(c) is the mean over the two instances:
    # 00: (1/16 + 9/16)/2 = 5/16, 01 and 10: (3/16 + 3/16)/2 = 3/16, 11: (9/16 + 1/16)/2 = 5/16.
    z = torch.tensor([[math.log(3), 5.0, math.log(3)], [-math.log(3), -5.0, -math.log(3)]], dtype=torch.float64)
    grad, entropy = shannon_gradient(z, 2, tuples=torch.tensor([[2, 0]]))
    assert entropy.item() == pytest.approx(-2 * (5 / 16 * math.log(5 / 16) + 3 / 16 * math.log(3 / 16)), rel=1e-13)
    assert torch.equal(grad[:, 1], torch.zeros(2))
    # Bit 0, instance 0: sigmoid' = 3/16, 1/N = 1/2; l(c2=1) = ln(p(1,1)/p(0,1)) = ln(5/3),
    # l(c2=0) = ln(3/5); P_0(b2=1) = 3/4: 3/16 / 2 * (3/4 ln(5/3) + 1/4 ln(3/5)).
    assert grad[0, 0].item() == pytest.approx(3 / 32 * 0.5 * math.log(5 / 3), rel=1e-13)
    assert grad[0, 2].item() == pytest.approx(grad[0, 0].item(), rel=1e-13)


def test_the_all_family_and_reordered_families_give_the_same_result():
    z = random_logits(30, 8, seed=12)
    every = torch.combinations(torch.arange(8), r=3)
    implicit, entropy = shannon_gradient(z, 3)
    explicit, entropy_explicit = shannon_gradient(z, 3, tuples=every.flip(1)[torch.randperm(len(every))])
    torch.testing.assert_close(explicit, implicit, rtol=1e-12, atol=1e-15)
    assert entropy_explicit.item() == pytest.approx(entropy.item(), rel=1e-13)
    family = tuple_family(8, 3, 2, seed=1)
    once = shannon_gradient(z, 3, "pseudo-smooth", tuples=family)
    twice = shannon_gradient(z, 3, "pseudo-smooth", tuples=torch.cat([family, family.flip(0)]))
    assert torch.equal(once[0], twice[0]) and torch.equal(once[1], twice[1])  # a set of tuples
    for chunk in (1, 30 * 4 * 5):
        chunked = shannon_gradient(z, 3, "pseudo-smooth", tuples=family, max_chunk_elements=chunk)
        torch.testing.assert_close(chunked[0], once[0], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "tuples, message",
    [
        (torch.tensor([[0, 1]]), "tuple_size=3"),
        (torch.tensor([[0.0, 1.0, 2.0]]), "integer"),
        (torch.zeros(0, 3, dtype=torch.int64), "non-empty"),
        (torch.tensor([[0, 1, 1]]), "distinct bit indices"),
        (torch.tensor([[0, 1, 5]]), r"in \[0, 5\)"),
        ([[0, 1, 2]], "tensor"),
    ],
)
def test_bad_tuples_are_rejected(tuples, message):
    with pytest.raises(ValueError, match=message):
        shannon_gradient(torch.zeros(4, 5), 3, tuples=tuples)


def test_bad_tuple_family_settings_are_rejected():
    with pytest.raises(ValueError, match="cover_size"):
        tuple_family(8, 3, 4)
    with pytest.raises(ValueError, match="tuple_size"):
        tuple_family(8, 9, 1)


@pytest.mark.parametrize(
    "z, kwargs, message",
    [
        (torch.zeros(4, 5, 2), {}, "N instances, k bits"),
        (torch.zeros(4, 5, dtype=torch.int64), {}, "floating-point"),
        (torch.zeros(4, 5), {"tuple_size": 1}, "tuple_size"),
        (torch.zeros(4, 5), {"tuple_size": 6}, "tuple_size"),
        (torch.zeros(4, 5), {"tuple_size": 2.5}, "tuple_size"),
        (torch.zeros(4, 5), {"gradient": "smooth"}, "gradient"),
        (torch.zeros(4, 5), {"gradient": "pseudo-smooth", "prior": 0.0}, "prior"),
    ],
)
def test_bad_input_is_rejected(z, kwargs, message):
    with pytest.raises(ValueError, match=message):
        shannon_gradient(z, **kwargs)
