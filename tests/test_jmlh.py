"""Tests of the JMLH objective (docs/method.md section 6.3): stochastic binarisation with a
straight-through gradient, a joint linear classifier and the KL to Bernoulli(1/2)."""

import copy
import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from equihash.train.jmlh import JMLH, kl_to_fair_coin


class FixedUniform:
    """Stands in for the step's numpy Generator: ``random(shape)`` returns given eps."""

    def __init__(self, eps):
        self.eps = np.asarray(eps, dtype=np.float64)

    def random(self, shape):
        assert tuple(shape) == self.eps.shape
        return self.eps.copy()


def hand_objective():
    """k = 2 bits, C = 3 classes, W = [[1, 0], [0, 1], [0, 0]], no bias, float64."""
    objective = JMLH(2, num_classes=3, kl_weight=0.1).double()
    with torch.no_grad():
        objective.classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        objective.classifier.bias.zero_()
    return objective


def reference(objective, z, eps, classes):
    """The JMLH loss in autograd with the straight-through estimator written as
    ``b = p + (step(p - eps) - p).detach()``: ``(d loss/dz, classifier grads, loss)``."""
    clone = copy.deepcopy(objective)
    clone.zero_grad(set_to_none=True)
    leaf = z.clone().requires_grad_(True)
    p = torch.sigmoid(leaf)
    hard = (p > torch.from_numpy(eps).to(z.dtype)).to(z.dtype)
    codes = p + (hard - p).detach()
    nll = F.cross_entropy(clone.classifier(codes.to(clone.classifier.weight.dtype)), classes)
    loss = nll + clone.kl_weight * kl_to_fair_coin(leaf).sum(dim=1).mean()
    loss.backward()
    return leaf.grad, [q.grad for q in clone.parameters()], loss.item()


def test_kl_known_values():
    # p = 3/4: 3/4 ln(3/2) + 1/4 ln(1/2) = 3/4 ln 3 - ln 2; p = 1/2: 0; p -> 1: ln 2.
    z = torch.tensor([math.log(3), -math.log(3), 0.0, 60.0, -1e4], dtype=torch.float64)
    expected = [0.75 * math.log(3) - math.log(2)] * 2 + [0.0, math.log(2), math.log(2)]
    np.testing.assert_allclose(kl_to_fair_coin(z).numpy(), expected, rtol=1e-13, atol=1e-16)
    # dKL/dz = z sigmoid'(z) (dKL/dp = logit p).
    leaf = z[:3].clone().requires_grad_(True)
    kl_to_fair_coin(leaf).sum().backward()
    s = torch.sigmoid(z[:3])
    torch.testing.assert_close(leaf.grad, z[:3] * s * (1 - s), rtol=1e-12, atol=1e-16)


def test_loss_and_gradients_by_hand():
    objective = hand_objective()
    # Row 0: z = (ln 3, -ln 3), p = (3/4, 1/4), eps = (1/2, 1/2) -> b = (1, 0).
    # Row 1: z = (0, 0),        p = (1/2, 1/2), eps = (1/4, 3/4) -> b = (1, 0).
    z = torch.tensor([[math.log(3), -math.log(3)], [0.0, 0.0]], dtype=torch.float64)
    eps = [[0.5, 0.5], [0.25, 0.75]]
    classes = torch.tensor([0, 2])
    e = math.e
    # Scores W b = (1, 0, 0) for both rows; softmax q = (e, 1, 1) / (e + 2).
    # NLL: row 0 -ln(e/(e+2)) = ln(e+2) - 1, row 1 -ln(1/(e+2)); mean ln(e+2) - 1/2.
    nll = math.log(e + 2) - 0.5
    # KL: row 0 two bits of 3/4 ln 3 - ln 2, row 1 zero; mean over the two rows.
    kl = 0.75 * math.log(3) - math.log(2)
    # d NLL / d scores = (q - onehot) / 2; d NLL / db = W^T of it = its first two entries.
    q = np.array([e, 1.0, 1.0]) / (e + 2)
    d_scores = np.stack([q - [1, 0, 0], q - [0, 0, 1]]) / 2
    d_codes = d_scores[:, :2]
    # Straight through: d/dz = sigmoid'(z) (d NLL/db + 0.1 z / 2); sigmoid' = 3/16 and 1/4.
    sigmoid_prime = np.array([[3 / 16, 3 / 16], [0.25, 0.25]])
    expected = sigmoid_prime * (d_codes + 0.1 * z.numpy() / 2)
    # Classifier: dW = sum_j d_scores_j b_j^T, db = sum_j d_scores_j, with b_j = (1, 0).
    codes = np.array([[1.0, 0.0], [1.0, 0.0]])

    grad, stats = objective.logits_gradient(z, step=0, rng=FixedUniform(eps), classes=classes)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-13, atol=1e-17)
    np.testing.assert_allclose(objective.classifier.weight.grad.numpy(), d_scores.T @ codes, rtol=1e-13)
    np.testing.assert_allclose(objective.classifier.bias.grad.numpy(), d_scores.sum(axis=0), rtol=1e-13)
    assert stats == pytest.approx(
        {"loss": nll + 0.1 * kl, "nll": nll, "kl": kl, "accuracy": 0.5}, rel=1e-13
    )  # the argmax, class 0, is right for row 0 only
    assert all(type(value) is float for value in stats.values())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradients_match_the_straight_through_autograd_reference(dtype):
    n, k, classes_count = 40, 12, 7
    torch.manual_seed(0)
    objective = JMLH(k, num_classes=classes_count, kl_weight=0.3)
    if dtype == torch.float64:
        objective = objective.double()
    generator = torch.Generator().manual_seed(1)
    z = (2.0 * torch.randn(n, k, generator=generator, dtype=torch.float64)).to(dtype)
    classes = torch.randint(0, classes_count, (n,), generator=generator)
    eps = np.random.default_rng(5).random((n, k))

    expected_grad, expected_params, expected_loss = reference(objective, z, eps, classes)
    grad, stats = objective.logits_gradient(z, step=3, rng=np.random.default_rng(5), classes=classes)
    tolerance = {"rtol": 1e-12, "atol": 1e-15} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-7}
    assert grad.dtype == dtype and grad.shape == z.shape
    torch.testing.assert_close(grad, expected_grad, **tolerance)
    for parameter, expected in zip(objective.parameters(), expected_params):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
        torch.testing.assert_close(parameter.grad, expected, **tolerance)
    assert stats["loss"] == pytest.approx(expected_loss, rel=1e-12 if dtype == torch.float64 else 1e-6)


def test_eps_comes_from_rng_and_is_deterministic():
    n, k = 64, 16
    torch.manual_seed(0)
    objective = JMLH(k, num_classes=50)
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(n, k, generator=generator)
    classes = torch.randint(0, 50, (n,), generator=generator)
    state = copy.deepcopy(objective.state_dict())

    def run(seed):
        objective.zero_grad(set_to_none=True)
        torch.manual_seed(seed)  # torch's global generator must play no part
        grad, stats = objective.logits_gradient(z, step=0, rng=np.random.default_rng(11), classes=classes)
        return grad, stats, objective.classifier.weight.grad.clone()

    first, again = run(0), run(123)
    assert torch.equal(first[0], again[0]) and first[1] == again[1] and torch.equal(first[2], again[2])
    other = objective.logits_gradient(z, step=0, rng=np.random.default_rng(12), classes=classes)[0]
    assert not torch.equal(other, first[0])
    # The step draws exactly rng.random((n, k)): the rng ends where such a draw leaves it.
    rng, witness = np.random.default_rng(11), np.random.default_rng(11)
    objective.logits_gradient(z, step=0, rng=rng, classes=classes)
    witness.random((n, k))
    assert rng.random() == witness.random()
    # logits_gradient leaves the classifier's parameters unchanged (only .grad accumulates).
    assert all(torch.equal(value, state[key]) for key, value in objective.state_dict().items())


def test_classifier_gradients_accumulate_and_sampled_codes_follow_sigmoid():
    n, k = 4000, 3
    objective = JMLH(k, num_classes=5, kl_weight=0.0)
    with torch.no_grad():
        for parameter in objective.parameters():
            parameter.zero_()
    z = torch.tensor([-1.0, 0.0, 2.0]).expand(n, k).contiguous()
    classes = torch.zeros(n, dtype=torch.int64)
    objective.logits_gradient(z, step=0, rng=np.random.default_rng(1), classes=classes)
    # A zero classifier scores every code alike, so every row has the same d NLL / d scores
    # g = (1/5 - onehot) / n: d bias = n g and dW[:, i] = (rows with b_i = 1) g. Their ratio
    # is the share of sampled ones of bit i, which must be sigmoid(z_i) up to sampling noise.
    share = objective.classifier.weight.grad / objective.classifier.bias.grad[:, None]
    expected = torch.sigmoid(z[0]).expand(5, k)
    torch.testing.assert_close(share, expected, rtol=0.0, atol=0.03)
    assert torch.allclose(share, share[:1].expand(5, k))  # one share per bit, whatever the class
    # Gradients accumulate into .grad across calls (the loop zeroes them once per step).
    once = objective.classifier.weight.grad.clone()
    objective.logits_gradient(z, step=0, rng=np.random.default_rng(1), classes=classes)
    torch.testing.assert_close(objective.classifier.weight.grad, 2 * once)


def test_an_enclosing_autocast_changes_nothing():
    torch.manual_seed(0)
    objective = JMLH(16, num_classes=30)
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(32, 16, generator=generator)
    classes = torch.randint(0, 30, (32,), generator=generator)
    plain = objective.logits_gradient(z, step=0, rng=np.random.default_rng(4), classes=classes)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = objective.logits_gradient(z, step=0, rng=np.random.default_rng(4), classes=classes)
    assert mixed[0].dtype == torch.float32
    assert torch.equal(mixed[0], plain[0]) and mixed[1] == plain[1]


def test_saturated_logits_are_safe():
    torch.manual_seed(0)
    objective = JMLH(6, num_classes=4)
    z = torch.tensor([[80.0, -80.0, 1e4, -1e4, 30.0, -30.0]]).repeat(3, 1)
    grad, stats = objective.logits_gradient(z, step=0, rng=np.random.default_rng(0), classes=torch.tensor([0, 1, 3]))
    assert torch.isfinite(grad).all() and all(math.isfinite(value) for value in stats.values())
    # Certain bits: sigmoid'(80) ~ 2e-35 leaves next to no gradient, sigmoid'(1e4)
    # underflows to 0; KL -> ln 2 per bit.
    assert grad[:, :2].abs().max() < 1e-33 and torch.equal(grad[:, 2:4], torch.zeros(3, 2))
    assert stats["kl"] == pytest.approx(6 * math.log(2), rel=1e-6)


def test_module_interface_and_defaults():
    torch.manual_seed(0)
    objective = JMLH(64)
    assert isinstance(objective, torch.nn.Module) and objective.data == "classes"
    assert objective.classifier.weight.shape == (10000, 64) and objective.classifier.bias.shape == (10000,)
    assert set(objective.state_dict()) == {"classifier.weight", "classifier.bias"}
    signature = inspect.signature(JMLH).parameters
    assert JMLH.DEFAULTS == {name: p.default for name, p in signature.items() if name != "nbits"}
    assert JMLH.DEFAULTS == {"num_classes": 10000, "kl_weight": 0.1}


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_classes": 1}, "num_classes"), ({"num_classes": 2.5}, "num_classes"), ({"kl_weight": -0.1}, "kl_weight")],
)
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        JMLH(8, **kwargs)


def test_bad_inputs_are_rejected():
    objective = JMLH(4, num_classes=3)
    rng = np.random.default_rng(0)
    z = torch.zeros(5, 4)
    good = torch.zeros(5, dtype=torch.int64)
    with pytest.raises(ValueError, match="nbits = 4"):
        objective.logits_gradient(torch.zeros(5, 2, 4), step=0, rng=rng, classes=good)
    with pytest.raises(ValueError, match="nbits = 4"):
        objective.logits_gradient(torch.zeros(5, 3), step=0, rng=rng, classes=good)
    with pytest.raises(ValueError, match="floating-point"):
        objective.logits_gradient(torch.zeros(5, 4, dtype=torch.int64), step=0, rng=rng, classes=good)
    with pytest.raises(ValueError, match="classes"):
        objective.logits_gradient(z, step=0, rng=rng, classes=good[:4])
    with pytest.raises(ValueError, match="classes"):
        objective.logits_gradient(z, step=0, rng=rng, classes=good.int())
    with pytest.raises(ValueError, match=r"\[0, num_classes = 3\)"):
        objective.logits_gradient(z, step=0, rng=rng, classes=good + 3)
    with pytest.raises(ValueError, match="classes"):
        objective.logits_gradient(z, step=0, rng=rng, classes=None)
