"""Tests of the ShannonHamming objective (docs/method.md section 6.1) as a logits gradient."""

import inspect
import math

import numpy as np
import pytest
import torch

from equihash.train.shannon import entropy_of_tuples, shannon_gradient, tuple_family
from equihash.train.shannon_hamming import (
    ShannonHamming,
    hamming_gradient,
    hamming_loss,
    huber_gradient,
    huber_penalty,
)


RNG = np.random.default_rng(0)  # draws the step permutation of shuffle_bits only


def pair_logits(n, k, scale=2.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, 2, k, generator=generator, dtype=torch.float64)


def test_hamming_loss_known_values():
    n, k = 3, 5
    # Uniform bits: P(equal) = 1/2 per bit, so k ln 2 per pair.
    assert hamming_loss(torch.zeros(n, 2, k)).item() == pytest.approx(k * math.log(2), rel=1e-6)
    # sigmoid(ln 3) = 3/4: agreeing logits give P(equal) = 9/16 + 1/16 = 5/8 ...
    same = torch.full((n, 2, k), math.log(3), dtype=torch.float64)
    assert hamming_loss(same).item() == pytest.approx(-k * math.log(5 / 8), rel=1e-12)
    # ... opposite logits 3/16 + 3/16 = 3/8.
    opposite = same.clone()
    opposite[:, 1] *= -1
    assert hamming_loss(opposite).item() == pytest.approx(-k * math.log(3 / 8), rel=1e-12)
    # One pair of each: the mean over pairs.
    mixed = torch.cat([same[:1], opposite[:1]])
    expected = -k * (math.log(5 / 8) + math.log(3 / 8)) / 2
    assert hamming_loss(mixed).item() == pytest.approx(expected, rel=1e-12)


def test_hamming_gradient_matches_autograd_and_is_safe():
    z = pair_logits(6, 7, scale=3.0, seed=1)
    z[0, 0, :3] = torch.tensor([50.0, -50.0, 50.0])
    z[0, 1, :3] = torch.tensor([50.0, 50.0, -50.0])
    leaf = z.clone().requires_grad_(True)
    loss = hamming_loss(leaf)
    loss.backward()
    grad, value = hamming_gradient(z)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-12, atol=1e-15)
    assert value.item() == pytest.approx(loss.item(), rel=1e-14)
    # Disagreeing saturated bits: d(-log P(equal))/dz1 = 1/2 / n towards agreement.
    assert grad[0, 0, 1].item() == pytest.approx(-0.5 / 6, rel=1e-9)
    huge = torch.tensor([[[1e4, -1e4]], [[-1e4, -1e4]]]).permute(0, 2, 1).float()
    grad, value = hamming_gradient(huge)
    assert torch.isfinite(grad).all() and torch.isfinite(value)


def test_huber_known_values_and_smoothness():
    m, knee = 2.0, 9.0  # c = 1/9, b = 9 - 18 = -9
    x = torch.tensor([0.0, 3.0, -3.0, 10.0, -12.0], dtype=torch.float64)
    penalty = torch.tensor([0.0, 1.0, 1.0, 11.0, 15.0], dtype=torch.float64)
    slope = torch.tensor([0.0, 2 / 3, -2 / 3, 2.0, -2.0], dtype=torch.float64)
    torch.testing.assert_close(huber_penalty(x, m, knee), penalty)
    torch.testing.assert_close(huber_gradient(x, m, knee), slope)
    # Continuous and C1 at |x| = K, both signs.
    eps = 1e-7
    for side in (1.0, -1.0):
        inside = torch.tensor([side * (knee - eps)], dtype=torch.float64)
        outside = torch.tensor([side * (knee + eps)], dtype=torch.float64)
        f_in, f_out = (huber_penalty(x, m, knee).item() for x in (inside, outside))
        g_in, g_out = (huber_gradient(x, m, knee).item() for x in (inside, outside))
        assert f_in == pytest.approx(f_out, abs=1e-6)
        assert g_in == pytest.approx(g_out, abs=1e-6)
        assert huber_gradient(outside, m, knee).item() == pytest.approx(side * m)
    # The gradient is the derivative of the penalty.
    z = pair_logits(4, 5, scale=8.0, seed=2).requires_grad_(True)
    huber_penalty(z, 0.7, 6.0).sum().backward()
    torch.testing.assert_close(huber_gradient(z, 0.7, 6.0), z.grad)
    # Slope 0 (the default): penalty and gradient vanish.
    assert torch.equal(huber_gradient(z, 0.0), torch.zeros_like(z))
    assert torch.equal(huber_penalty(z.detach(), 0.0), torch.zeros_like(z))


@pytest.mark.parametrize("tuple_size", [2, 3])
def test_logits_gradient_matches_autograd_of_the_objective(tuple_size):
    n, k = 10, 8
    objective = ShannonHamming(
        k,
        hamming_weight=0.8,
        shannon_weight=0.3,
        tuple_size=tuple_size,
        huber_slope=0.5,
        huber_knee=4.0,
    )
    z = pair_logits(n, k, scale=4.0, seed=tuple_size)
    assert (z.abs() > 4.0).any() and (z.abs() < 4.0).any()  # both Huber branches used
    leaf = z.clone().requires_grad_(True)
    loss = (
        0.8 * hamming_loss(leaf)
        - 0.3 * entropy_of_tuples(leaf.reshape(2 * n, k), tuple_size)
        + huber_penalty(leaf, 0.5, 4.0).sum() / (2 * n)
    )
    loss.backward()
    grad, stats = objective.logits_gradient(z, step=0, rng=RNG)
    assert grad.shape == z.shape and grad.dtype == z.dtype
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-10, atol=1e-13)

    assert stats["loss"] == pytest.approx(loss.item(), rel=1e-12)
    entropy_bits = entropy_of_tuples(z.reshape(2 * n, k), tuple_size).item() / math.log(2)
    assert stats["entropy"] == pytest.approx(entropy_bits, rel=1e-12)
    assert stats["loss_hamming"] == pytest.approx(hamming_loss(z).item(), rel=1e-12)
    assert stats["saturation"] == pytest.approx((z.abs() > 9.0).double().mean().item())
    assert all(type(value) is float for value in stats.values())
    # Each norm is the norm of its weighted term alone.
    alone = {
        "grad_norm_hamming": ShannonHamming(k, 0.8, 0.0, tuple_size),
        "grad_norm_shannon": ShannonHamming(k, 0.0, 0.3, tuple_size),
        "grad_norm_huber": ShannonHamming(k, 0.0, 0.0, tuple_size, huber_slope=0.5, huber_knee=4.0),
    }
    for key, term in alone.items():
        norm = term.logits_gradient(z, step=0, rng=RNG)[0].norm().item()
        assert stats[key] == pytest.approx(norm, rel=1e-12)


def test_huber_term_is_averaged_over_the_instances_by_hand():
    # One pair (n = 1, 2 instances) of one bit, Hamming and Shannon terms off, slope 0.9,
    # knee 9: logit 3 lies inside the knee (d/dx c x^2 = m x / K = 0.9 * 3 / 9 = 0.3),
    # logit -12 outside (m sign(x) = -0.9); averaged over the 2n = 2 instances: 0.15, -0.45.
    objective = ShannonHamming(2, hamming_weight=0.0, shannon_weight=0.0, tuple_size=2, huber_slope=0.9)
    z = torch.tensor([[[3.0, 0.0], [-12.0, 0.0]]], dtype=torch.float64)
    grad, stats = objective.logits_gradient(z, step=0, rng=RNG)
    torch.testing.assert_close(grad, torch.tensor([[[0.15, 0.0], [-0.45, 0.0]]], dtype=torch.float64))
    # penalty: c = m / 2K = 0.05; 0.05 * 9 = 0.45 inside; 0.9 * 12 + (0.05 * 81 - 0.9 * 9) = 6.75
    # outside; (0.45 + 6.75) / 2 instances = 3.6.
    assert stats["loss"] == pytest.approx(3.6)


def test_shuffled_bits_relabel_the_cover_at_every_step():
    n, k = 6, 8
    objective = ShannonHamming(k, tuple_size=4, cover_size=3, shuffle_bits=True, tuple_seed=1)
    z = pair_logits(n, k, seed=3)
    for step in (0, 1):
        rng = np.random.default_rng(step)
        relabel = torch.from_numpy(np.random.default_rng(step).permutation(k))
        family = relabel[tuple_family(k, 4, 3, 1)]
        assert torch.equal(objective.step_tuples(np.random.default_rng(step)), family)
        leaf = z.clone().requires_grad_(True)
        loss = hamming_loss(leaf) - 0.01 * entropy_of_tuples(leaf.reshape(2 * n, k), 4, family)
        loss.backward()
        grad, _ = objective.logits_gradient(z, step=step, rng=rng)
        torch.testing.assert_close(grad, leaf.grad, rtol=1e-10, atol=1e-13)
    # Two steps, two permutations: two different families.
    first, second = (objective.step_tuples(np.random.default_rng(s)) for s in (0, 1))
    assert not torch.equal(torch.unique(first.sort(1).values, dim=0), torch.unique(second.sort(1).values, dim=0))
    # Without shuffling, or over all tuples, the family is the same at every step.
    fixed = ShannonHamming(k, tuple_size=4, cover_size=3, tuple_seed=1)
    assert fixed.step_tuples(np.random.default_rng(0)) is fixed.tuple_family
    assert ShannonHamming(k, shuffle_bits=True).step_tuples(np.random.default_rng(0)) is None


def test_known_stats_at_zero_logits():
    n, k = 4, 6
    grad, stats = ShannonHamming(k, tuple_size=3).logits_gradient(torch.zeros(n, 2, k), step=0, rng=RNG)
    # Uniform bits: no Shannon or Hamming pull (d/dz of -log P(equal) is 0 at z1 = z2).
    assert torch.equal(grad, torch.zeros(n, 2, k))
    assert stats["entropy"] == pytest.approx(math.comb(k, 3) * 3, rel=1e-6)  # bits
    assert stats["loss_hamming"] == pytest.approx(k * math.log(2), rel=1e-6)
    assert stats["saturation"] == 0.0
    assert stats["grad_norm_huber"] == 0.0


def test_pseudo_smooth_objective_composes_its_terms():
    n, k = 12, 7
    z = pair_logits(n, k, seed=5).float()
    objective = ShannonHamming(k, shannon_weight=0.05, gradient="pseudo-smooth", prior=2.0)
    grad, stats = objective.logits_gradient(z, step=0, rng=RNG)
    d_hamming, _ = hamming_gradient(z)
    d_shannon, _ = shannon_gradient(z.reshape(2 * n, k), 3, "pseudo-smooth", 2.0)
    torch.testing.assert_close(grad, d_hamming + 0.05 * d_shannon.reshape(n, 2, k))
    assert grad.dtype == torch.float32
    # The bare training-loop contract: backward of each slice with its gradient.
    weights = torch.randn(k, k, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    inputs = torch.randn(n, 2, k, generator=torch.Generator().manual_seed(1))
    logits = inputs @ weights
    grad, _ = objective.logits_gradient(logits.detach(), step=0, rng=RNG)
    logits[: n // 2].backward(grad[: n // 2])
    (inputs[n // 2 :] @ weights).backward(grad[n // 2 :])
    expected = torch.einsum("npi,npj->ij", inputs, grad)
    torch.testing.assert_close(weights.grad, expected)


@pytest.mark.parametrize("cover", [1, 2])
def test_tuple_cover_objective_matches_autograd(cover):
    n, k = 10, 9
    objective = ShannonHamming(k, shannon_weight=0.3, cover_size=cover, tuple_seed=5)
    family = tuple_family(k, 3, cover, 5)
    assert torch.equal(objective.tuple_family, family)
    z = pair_logits(n, k, seed=8)
    leaf = z.clone().requires_grad_(True)
    loss = hamming_loss(leaf) - 0.3 * entropy_of_tuples(leaf.reshape(2 * n, k), 3, family)
    loss.backward()
    grad, stats = objective.logits_gradient(z, step=0, rng=RNG)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-10, atol=1e-13)
    assert stats["loss"] == pytest.approx(loss.item(), rel=1e-12)
    # Zero logits: every distinct tuple of the family is uniform, entropy = F * 3 bits.
    _, uniform = objective.logits_gradient(torch.zeros(n, 2, k), step=0, rng=RNG)
    assert uniform["entropy"] == pytest.approx(len(torch.unique(family, dim=0)) * 3, rel=1e-6)


def test_module_interface_and_defaults():
    objective = ShannonHamming(64)
    assert isinstance(objective, torch.nn.Module) and objective.data == "positive_pairs"
    assert list(objective.parameters()) == [] and objective.state_dict() == {}
    assert objective.tuple_family is None
    signature = inspect.signature(ShannonHamming).parameters
    assert ShannonHamming.DEFAULTS == {name: p.default for name, p in signature.items() if name != "nbits"}
    assert "shannon_weight=0.01" in repr(objective) and "cover_size=None" in repr(objective)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cover_size": 4}, "cover_size"),
        ({"cover_size": 0}, "cover_size"),
        ({"tuple_seed": -1}, "tuple_seed"),
        ({"tuple_size": 7}, "tuple_size"),
        ({"gradient": "smooth"}, "gradient"),
        ({"gradient": "pseudo-smooth", "prior": 0.0}, "prior"),
        ({"tuple_size": 1}, "tuple_size"),
        ({"shannon_weight": -1.0}, "shannon_weight"),
        ({"huber_slope": -1.0}, "slope"),
        ({"huber_knee": 0.0}, "knee"),
    ],
)
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShannonHamming(6, **kwargs)


def test_bad_logits_are_rejected():
    with pytest.raises(ValueError, match="n pairs, 2, k bits"):
        ShannonHamming(6).logits_gradient(torch.zeros(8, 6), step=0, rng=RNG)
    with pytest.raises(ValueError, match="nbits = 6"):
        ShannonHamming(6).logits_gradient(torch.zeros(8, 2, 7), step=0, rng=RNG)
    with pytest.raises(ValueError, match="n pairs, 2, k bits"):
        hamming_loss(torch.zeros(4, 3, 6))
