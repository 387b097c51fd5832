"""Tests of the HashNetShannon ablation (docs/method.md section 6.4): HashNet's positive-pair loss plus
the Shannon term of ShannonHamming."""

import inspect
import math

import numpy as np
import pytest
import torch

from equihash.train.hashnet import hashnet_gradient, hashnet_loss
from equihash.train.hashnet_shannon import HashNetShannon
from equihash.train.shannon import entropy_of_tuples, shannon_gradient, tuple_family
from equihash.train.shannon_hamming import huber_penalty

RNG = np.random.default_rng(0)  # unused by HashNetShannon, part of the objective interface
A = math.atanh(0.5)  # tanh(A) = 1/2, 1 - tanh(A)**2 = 3/4


def pair_logits(n, k, scale=2.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, 2, k, generator=generator, dtype=torch.float64)


def test_hashnet_term_by_hand():
    # One positive pair, k = 2, beta = 1, alpha = 0.05 (the ablation's), Shannon term off.
    # tanh codes (1/2, 1/2) and (1/2, -1/2): dot = 0, loss = softplus(0) - 0 = ln 2;
    # d loss / d dot = 0.05 (sigmoid(0) - 1) = -0.025; d dot / dz1 = 3/4 (1/2, -1/2),
    # d dot / dz2 = 3/4 (1/2, 1/2).
    z = torch.tensor([[[A, A], [A, -A]]], dtype=torch.float64)
    d = -0.025 * 0.375
    expected = torch.tensor([[[d, -d], [d, d]]], dtype=torch.float64)
    grad, stats = HashNetShannon(2, shannon_weight=0.0, tuple_size=2).logits_gradient(z, step=0, rng=RNG)
    torch.testing.assert_close(grad, expected, rtol=1e-14, atol=1e-17)
    assert stats["loss_hashnet"] == pytest.approx(math.log(2), rel=1e-14)
    assert stats["loss"] == pytest.approx(math.log(2), rel=1e-14)
    assert stats["beta"] == 1.0
    assert stats["grad_norm_hashnet"] == pytest.approx(0.375 * 0.025 * 2, rel=1e-14)
    # At step 400 beta = sqrt(1 + 0.0005 * 400) = sqrt(1.2) scales the relaxation.
    assert HashNetShannon(2, tuple_size=2).logits_gradient(z, step=400, rng=RNG)[1]["beta"] == pytest.approx(math.sqrt(1.2))


def test_known_stats_at_zero_logits():
    n, k = 4, 6
    grad, stats = HashNetShannon(k).logits_gradient(torch.zeros(n, 2, k), step=0, rng=RNG)
    # tanh(0) = 0: dot = 0 and d dot / dz = 0; uniform bits: no Shannon pull.
    assert torch.equal(grad, torch.zeros(n, 2, k))
    # loss = ln 2 (HashNet, s = 1, dot = 0) - 0.0001 * C(6, 3) * 3 ln 2 (uniform tuples).
    assert stats["loss_hashnet"] == pytest.approx(math.log(2), rel=1e-6)
    assert stats["entropy"] == pytest.approx(math.comb(k, 3) * 3, rel=1e-6)  # bits
    assert stats["loss"] == pytest.approx(math.log(2) * (1 - 0.0001 * 60), rel=1e-6)


@pytest.mark.parametrize("cover", [None, 2, 1])
def test_logits_gradient_matches_autograd_of_the_objective(cover):
    n, k, step = 12, 9, 600
    objective = HashNetShannon(k, alpha=0.1, shannon_weight=0.2, cover_size=cover, tuple_seed=4,
                               huber_slope=0.5, huber_knee=3.0)
    beta = math.sqrt(1 + 0.0005 * 600)
    family = tuple_family(k, 3, cover, 4)
    z = pair_logits(n, k, scale=3.0, seed=7)
    leaf = z.clone().requires_grad_(True)
    loss = (
        hashnet_loss(leaf, torch.ones(n, dtype=torch.float64), 0.1, beta)
        - 0.2 * entropy_of_tuples(leaf.reshape(2 * n, k), 3, family)
        + huber_penalty(leaf, 0.5, 3.0).sum() / (2 * n)
    )
    loss.backward()
    grad, stats = objective.logits_gradient(z, step=step, rng=RNG)
    assert grad.shape == z.shape and grad.dtype == z.dtype
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-10, atol=1e-13)
    assert stats["loss"] == pytest.approx(loss.item(), rel=1e-12)
    entropy = entropy_of_tuples(z.reshape(2 * n, k), 3, family).item()
    assert stats["entropy"] == pytest.approx(entropy / math.log(2), rel=1e-12)
    assert stats["beta"] == pytest.approx(beta, rel=1e-15)
    assert all(type(value) is float for value in stats.values())


def test_composes_hashnet_and_shannon_gradients_in_float32():
    n, k = 16, 10
    z = pair_logits(n, k, seed=3).float()
    objective = HashNetShannon(k, gradient="pseudo-smooth", prior=0.5, shannon_weight=0.01)
    grad, stats = objective.logits_gradient(z, step=0, rng=RNG)
    d_hashnet, loss = hashnet_gradient(z, torch.ones(n), 0.05, 1.0)
    d_shannon, _ = shannon_gradient(z.reshape(2 * n, k), 3, "pseudo-smooth", 0.5)
    assert grad.dtype == torch.float32
    torch.testing.assert_close(grad, d_hashnet + 0.01 * d_shannon.reshape(n, 2, k))
    assert stats["loss_hashnet"] == pytest.approx(loss.item(), rel=1e-6)
    assert stats["grad_norm_shannon"] == pytest.approx((0.01 * d_shannon).norm().item(), rel=1e-5)
    again, _ = objective.logits_gradient(z, step=0, rng=RNG)
    assert torch.equal(grad, again)


def test_module_interface_and_defaults():
    objective = HashNetShannon(64)
    assert isinstance(objective, torch.nn.Module) and objective.data == "positive_pairs"
    assert list(objective.parameters()) == [] and objective.state_dict() == {}
    signature = inspect.signature(HashNetShannon).parameters
    assert HashNetShannon.DEFAULTS == {name: p.default for name, p in signature.items() if name != "nbits"}
    assert (HashNetShannon.DEFAULTS["alpha"], HashNetShannon.DEFAULTS["shannon_weight"]) == (0.05, 0.0001)
    cover = HashNetShannon(64, cover_size=2, tuple_seed=2)
    assert torch.equal(cover.tuple_family, tuple_family(64, 3, 2, 2))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"alpha": 0.0}, "alpha"), ({"beta_step_size": 0}, "beta_step_size"), ({"cover_size": 4}, "cover_size"),
     ({"shannon_weight": -1.0}, "shannon_weight"), ({"tuple_size": 9}, "tuple_size")],
)
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HashNetShannon(8, **kwargs)
