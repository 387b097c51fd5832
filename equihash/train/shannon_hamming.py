"""The ShannonHamming objective (THESIS.md 6.1), as a gradient with respect to the logits.

One optimiser step sees the logits ``z`` of shape ``(n, 2, k)`` of all its batches: n
positive pairs (two noisy instances of one label), k bits. The objective is

    hamming_weight * hamming_loss(z)                    (Hamming term, minimised)
  - shannon_weight * sum_T H_T(z.reshape(2n, k))        (Shannon term, maximised)
  + 1/n * sum over all logits of huber_penalty(z)       (Huber penalty, off by default)

and :meth:`ShannonHamming.logits_gradient` returns its gradient with respect to ``z``.
The training loop computes ``z`` for every batch of the step without gradient, calls
``logits_gradient`` once, then re-runs each batch with gradient and back-propagates its
slice with ``logits.backward(grad[slice])``: the Shannon entropy is thereby estimated
over all 2n instances of the step, not per batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from equihash.train.shannon import GRADIENTS, shannon_gradient


def _check_pair_logits(z: Tensor) -> None:
    if not isinstance(z, Tensor) or z.dim() != 3 or z.shape[1] != 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"logits z: expected a tensor (n pairs, 2, k bits), got {shape}")
    if not z.is_floating_point():
        raise ValueError(f"logits z: expected a floating-point tensor, got {z.dtype}")
    if z.shape[0] < 1:
        raise ValueError("logits z: expected at least one pair, got 0")


def _log_bit_equal_terms(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(log P(both 1), log P(both 0), log P(equal))`` per pair and bit, each ``(n, k)``."""
    z1, z2 = z[:, 0], z[:, 1]
    both_one = F.logsigmoid(z1) + F.logsigmoid(z2)
    both_zero = F.logsigmoid(-z1) + F.logsigmoid(-z2)
    return both_one, both_zero, torch.logaddexp(both_one, both_zero)


def hamming_loss(z: Tensor) -> Tensor:
    """The Hamming term: mean over pairs of ``sum over bits of -log P(bit equal)``.

    For the logits z1, z2 of one bit of the two instances of a positive pair,
    ``log P(equal) = logsumexp(logsig(z1) + logsig(z2), logsig(-z1) + logsig(-z2))``:
    the log probability that both bits are 1 or both are 0 when each bit is 1 with
    probability sigmoid(logit). Differentiable; ``z`` is ``(n, 2, k)``.
    """
    _check_pair_logits(z)
    return -_log_bit_equal_terms(z)[2].sum(dim=-1).mean()


def hamming_gradient(z: Tensor) -> tuple[Tensor, Tensor]:
    """``(d hamming_loss / dz, hamming_loss)`` in closed form, without autograd.

    With ``w1 = P(both 1) / P(equal)`` and ``w0 = P(both 0) / P(equal)`` (softmax weights,
    computed in log space), ``d log P(equal) / dz1 = w1 sigmoid(-z1) - w0 sigmoid(z1)``
    and symmetrically for z2; the loss is ``-1/n`` times their sum.
    """
    _check_pair_logits(z)
    z = z.detach()
    both_one, both_zero, log_equal = _log_bit_equal_terms(z)
    w_one = torch.exp(both_one - log_equal).unsqueeze(1)  # (n, 1, k)
    w_zero = torch.exp(both_zero - log_equal).unsqueeze(1)
    d_log_equal = w_one * torch.sigmoid(-z) - w_zero * torch.sigmoid(z)  # (n, 2, k)
    n = z.shape[0]
    return -d_log_equal / n, -log_equal.sum(dim=-1).mean()


def _check_huber(slope: float, knee: float) -> None:
    if not slope >= 0:
        raise ValueError(f"huber slope: expected a maximum slope >= 0, got {slope}")
    if not knee > 0:
        raise ValueError(f"huber knee: expected a branching point K > 0, got {knee}")


def huber_penalty(z: Tensor, slope: float, knee: float = 9.0) -> Tensor:
    """Elementwise Huber penalty on the logits: ``c x**2`` for ``|x| < K``, else
    ``m |x| + b``, with maximum slope ``m``, branching point ``K``, ``c = m / (2K)`` and
    ``b = c K**2 - m K``: continuous and continuously differentiable at ``|x| = K``."""
    _check_huber(slope, knee)
    c = slope / (2 * knee)
    b = c * knee**2 - slope * knee
    absolute = z.abs()
    return torch.where(absolute < knee, c * z * z, slope * absolute + b)


def huber_gradient(z: Tensor, slope: float, knee: float = 9.0) -> Tensor:
    """Elementwise derivative of :func:`huber_penalty`: ``m x / K`` inside the knee,
    ``m sign(x)`` outside (zeros when the slope is 0, the default: penalty off)."""
    _check_huber(slope, knee)
    z = z.detach()
    if slope == 0:
        return torch.zeros_like(z)
    return torch.where(z.abs() < knee, (slope / knee) * z, slope * torch.sign(z))


class ShannonHamming:
    """The ShannonHamming objective of THESIS.md 6.1, evaluated as a logits gradient.

    Args:
        hamming_weight: lambda_H, weight of the Hamming term (1.0).
        shannon_weight: lambda_S, weight of the Shannon term (0.01 MNIST, 0.03 OpenImages).
        tuple_size: size of the bit tuples T of the Shannon term (3: all 3-subsets).
        gradient: ``"normal"`` (exact Shannon gradient) or ``"pseudo-smooth"``.
        prior: pseudo-count of the pseudo-smooth configuration counts.
        huber_slope: maximum slope m of the Huber penalty (0: off).
        huber_knee: branching point K of the Huber penalty (9).
        saturation: a logit counts as saturated when ``|z| > saturation`` (logged).

    The Huber penalty is summed over all 2nk logits and divided by the number of pairs n,
    like the Hamming term, which is a sum over bits averaged over pairs.
    """

    def __init__(
        self,
        hamming_weight: float = 1.0,
        shannon_weight: float = 0.01,
        tuple_size: int = 3,
        gradient: str = "normal",
        prior: float = 1.0,
        huber_slope: float = 0.0,
        huber_knee: float = 9.0,
        saturation: float = 9.0,
    ):
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient: expected one of {GRADIENTS}, got {gradient!r}")
        if gradient == "pseudo-smooth" and not prior > 0:
            raise ValueError(f"prior: expected a positive pseudo-count, got {prior}")
        if not int(tuple_size) == tuple_size or tuple_size < 2:
            raise ValueError(f"tuple_size: expected an integer >= 2, got {tuple_size}")
        for name, value in (("hamming_weight", hamming_weight), ("shannon_weight", shannon_weight)):
            if not value >= 0:
                raise ValueError(f"{name}: expected a weight >= 0, got {value}")
        _check_huber(huber_slope, huber_knee)
        if not saturation >= 0:
            raise ValueError(f"saturation: expected a threshold >= 0, got {saturation}")
        self.hamming_weight = float(hamming_weight)
        self.shannon_weight = float(shannon_weight)
        self.tuple_size = int(tuple_size)
        self.gradient = gradient
        self.prior = float(prior)
        self.huber_slope = float(huber_slope)
        self.huber_knee = float(huber_knee)
        self.saturation = float(saturation)

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"ShannonHamming({fields})"

    def logits_gradient(self, z: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Gradient of the objective with respect to the logits ``z`` ``(n, 2, k)`` of all
        batches of one optimiser step (detached; never differentiated through).

        Returns ``(grad, stats)``: ``grad`` has z's shape and dtype; ``stats`` holds plain
        floats: ``loss_hamming`` (unweighted Hamming term, nats per pair), ``entropy``
        (``sum_T H_T`` over all bit tuples, in **bits**; ideal ``C(k, t) * t``),
        ``saturation`` (share of logits with ``|z| > saturation``) and
        ``grad_norm_hamming`` / ``grad_norm_shannon`` / ``grad_norm_huber`` (Frobenius
        norms of the three weighted terms that are summed into ``grad``).
        """
        _check_pair_logits(z)
        z = z.detach()
        n, _, k = z.shape
        d_hamming, loss = hamming_gradient(z)
        d_shannon, entropy = shannon_gradient(
            z.reshape(2 * n, k), self.tuple_size, self.gradient, self.prior
        )
        term_hamming = self.hamming_weight * d_hamming
        term_shannon = self.shannon_weight * d_shannon.reshape(n, 2, k)
        term_huber = huber_gradient(z, self.huber_slope, self.huber_knee) / n
        grad = term_hamming + term_shannon + term_huber
        stats = {
            "loss_hamming": float(loss),
            "entropy": float(entropy) / math.log(2),
            "saturation": float((z.abs() > self.saturation).float().mean()),
            "grad_norm_hamming": float(torch.linalg.vector_norm(term_hamming)),
            "grad_norm_shannon": float(torch.linalg.vector_norm(term_shannon)),
            "grad_norm_huber": float(torch.linalg.vector_norm(term_huber)),
        }
        return grad, stats
