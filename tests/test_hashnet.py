"""Tests of the HashNet objective (docs/method.md section 6.2): beta schedule, loss and logits gradient."""

import inspect
import math

import numpy as np
import pytest
import torch

from equihash.train.hashnet import BetaSchedule, HashNet, hashnet_gradient, hashnet_loss

RNG = np.random.default_rng(0)  # unused by HashNet, part of the objective interface
A = math.atanh(0.5)  # tanh(A) = 1/2, 1 - tanh(A)**2 = 3/4


def mixed_pairs(n, k, scale=1.5, seed=0):
    """Logits (n, 2, k) and similarities: first half positive, second half negative."""
    generator = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n, 2, k, generator=generator, dtype=torch.float64)
    similar = torch.cat([torch.ones(n - n // 2), torch.zeros(n // 2)]).double()
    return z, similar


def test_beta_schedule_known_values():
    beta = BetaSchedule()  # init 1, gamma 0.0005, power 0.5, step size 200
    # A staircase: floor(step / 200) * 200 steps count.
    assert beta(0) == 1.0 and beta(199) == 1.0
    assert beta(200) == pytest.approx(math.sqrt(1.1), rel=1e-15)  # 1 + 0.0005 * 200
    assert beta(1399) == pytest.approx(math.sqrt(1.6), rel=1e-15)  # 1200 steps count
    assert beta(100_000) == pytest.approx(math.sqrt(51.0), rel=1e-15)  # thesis budget
    assert BetaSchedule(2.0, 0.01, 1.0, 10)(25) == pytest.approx(2.0 * 1.2, rel=1e-15)
    with pytest.raises(ValueError, match="step"):
        beta(-1)


def test_loss_and_gradient_by_hand():
    # k = 2, beta = 1 (step 0), alpha = 0.15.
    # Pair 0, s = 1: tanh codes (1/2, 1/2) and (1/2, -1/2): dot = 0, loss = softplus(0) = ln 2;
    #   d loss / d dot = alpha (sigmoid(0) - 1) / n = 0.15 * (-1/2) / 2 = -0.0375;
    #   d dot / dz1 = (1 - tanh^2(z1)) tanh(z2) = 3/4 * (1/2, -1/2), d dot / dz2 = 3/4 * (1/2, 1/2).
    # Pair 1, s = 0: codes (1/2, 1/2) twice: dot = 1/2, loss = softplus(0.075);
    #   d loss / d dot = 0.15 sigmoid(0.075) / 2; every d dot / dz = 3/4 * 1/2.
    z = torch.tensor([[[A, A], [A, -A]], [[A, A], [A, A]]], dtype=torch.float64)
    similar = torch.tensor([1.0, 0.0], dtype=torch.float64)
    loss = (math.log(2) + math.log1p(math.exp(0.075))) / 2
    d0 = -0.0375 * 0.375
    d1 = 0.15 / (1 + math.exp(-0.075)) / 2 * 0.375
    expected = torch.tensor([[[d0, -d0], [d0, d0]], [[d1, d1], [d1, d1]]], dtype=torch.float64)

    grad, value = hashnet_gradient(z, similar, 0.15, 1.0)
    torch.testing.assert_close(grad, expected, rtol=1e-14, atol=1e-16)
    assert value.item() == pytest.approx(loss, rel=1e-14)
    assert hashnet_loss(z, similar, 0.15, 1.0).item() == pytest.approx(loss, rel=1e-14)

    grad, stats = HashNet(2).logits_gradient(z, step=0, rng=RNG, similar=similar)
    torch.testing.assert_close(grad, expected, rtol=1e-14, atol=1e-16)
    assert stats == pytest.approx({"loss": loss, "beta": 1.0, "dot_positive": 0.0, "dot_negative": 0.5}, rel=1e-14)
    assert all(type(value) is float for value in stats.values())


@pytest.mark.parametrize("step", [0, 200, 5000])
def test_gradient_matches_autograd(step):
    n, k = 10, 12
    objective = HashNet(k, alpha=0.2, beta_init=0.7, beta_gamma=0.001, beta_power=0.8, beta_step_size=100)
    z, similar = mixed_pairs(n, k, seed=step)
    beta = 0.7 * (1 + 0.001 * (step // 100) * 100) ** 0.8
    leaf = z.clone().requires_grad_(True)
    loss = hashnet_loss(leaf, similar, 0.2, beta)
    loss.backward()
    grad, stats = objective.logits_gradient(z, step=step, rng=RNG, similar=similar)
    assert grad.shape == z.shape and grad.dtype == z.dtype
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-12, atol=1e-15)
    assert stats["loss"] == pytest.approx(loss.item(), rel=1e-14)
    assert stats["beta"] == pytest.approx(beta, rel=1e-15)


def test_saturated_logits_are_safe_and_the_loss_ranks_pairs():
    k = 8
    # beta z of 1e4: the relaxed codes are the signs, the gradient vanishes, nothing is NaN.
    z = 1e4 * torch.tensor([1.0, -1.0]).repeat(4)[None, None].expand(2, 2, k).clone()
    z[1, 1] *= -1  # pair 1: opposite codes, dot = -k
    similar = torch.tensor([1.0, 0.0])
    grad, value = hashnet_gradient(z, similar, 0.15, 1.0)
    assert torch.isfinite(grad).all() and torch.equal(grad, torch.zeros_like(z))
    # Pair 0: equal codes, s = 1: softplus(1.2) - 1.2; pair 1: dot = -8, s = 0: softplus(-1.2).
    expected = (math.log1p(math.exp(-1.2)) + math.log1p(math.exp(-1.2))) / 2
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # Swapping the similarities of well-separated pairs can only raise the loss.
    assert hashnet_gradient(z, similar.flip(0), 0.15, 1.0)[1].item() > value.item()


def test_float32_agrees_with_float64_and_reruns_are_identical():
    z, similar = mixed_pairs(64, 16, seed=3)
    objective = HashNet(16)
    grad64, _ = objective.logits_gradient(z, step=400, rng=RNG, similar=similar)
    grad32, _ = objective.logits_gradient(z.float(), step=400, rng=RNG, similar=similar.float())
    again, _ = objective.logits_gradient(z.float(), step=400, rng=RNG, similar=similar.float())
    assert grad32.dtype == torch.float32 and torch.equal(grad32, again)
    torch.testing.assert_close(grad32.double(), grad64, rtol=1e-5, atol=1e-8)


def test_module_interface_and_defaults():
    objective = HashNet(64)
    assert isinstance(objective, torch.nn.Module) and objective.data == "mixed_pairs"
    assert list(objective.parameters()) == [] and objective.state_dict() == {}
    signature = inspect.signature(HashNet).parameters
    assert HashNet.DEFAULTS == {name: p.default for name, p in signature.items() if name != "nbits"}
    assert HashNet.DEFAULTS == {"alpha": 0.15, "beta_init": 1.0, "beta_gamma": 0.0005,
                                "beta_power": 0.5, "beta_step_size": 200}
    assert HashNet(64, **HashNet.DEFAULTS).beta == BetaSchedule(1.0, 0.0005, 0.5, 200)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": 0.0}, "alpha"),
        ({"beta_init": 0.0}, "beta_init"),
        ({"beta_gamma": -1.0}, "beta_gamma"),
        ({"beta_power": float("nan")}, "beta_power"),
        ({"beta_step_size": 0}, "beta_step_size"),
    ],
)
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HashNet(8, **kwargs)


def test_bad_inputs_are_rejected():
    objective = HashNet(6)
    z, similar = mixed_pairs(4, 6)
    with pytest.raises(ValueError, match="n pairs, 2, k bits"):
        objective.logits_gradient(z.reshape(8, 6), step=0, rng=RNG, similar=similar)
    with pytest.raises(ValueError, match="nbits = 6"):
        objective.logits_gradient(z[..., :5], step=0, rng=RNG, similar=similar)
    with pytest.raises(ValueError, match="similar"):
        objective.logits_gradient(z, step=0, rng=RNG, similar=similar[:3])
    with pytest.raises(ValueError, match="similar"):
        objective.logits_gradient(z, step=0, rng=RNG, similar=2 * similar)
    with pytest.raises(ValueError, match="similar"):
        objective.logits_gradient(z, step=0, rng=RNG, similar=None)
