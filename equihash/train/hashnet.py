"""The HashNet baseline objective (docs/method.md section 6.2), as a gradient with respect to the logits.

One optimiser step sees the logits ``z`` of shape ``(n, 2, k)`` of *mixed pairs*: the
first half of the rows are positive pairs (two noisy instances of one label, similarity
``s = 1``), the second half negative pairs (instances of two distinct labels, ``s = 0``).
HashNet relaxes the sign of each logit by ``tanh(beta z)`` and scores a pair by the
inner product of the relaxed codes::

    dot  = sum over bits of tanh(beta z1) tanh(beta z2)        (in [-k, k])
    loss = mean over pairs of softplus(alpha dot) - s alpha dot

the negative log-likelihood of ``s`` under ``P(s = 1) = sigmoid(alpha dot)``. The
continuation parameter ``beta`` grows with the optimiser step (:class:`BetaSchedule`), so
that ``tanh(beta z)`` approaches ``sign(z)`` as training proceeds.

The gradient is in closed form: with ``g = alpha (sigmoid(alpha dot) - s) / n`` per pair,
``d loss / dz1 = g beta (1 - tanh(beta z1)**2) tanh(beta z2)`` and symmetrically for z2.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from equihash.train.shannon_hamming import check_pair_logits
from equihash.train import keyword_defaults


@dataclasses.dataclass(frozen=True)
class BetaSchedule:
    """HashNet's continuation schedule:
    ``beta(step) = init * (1 + gamma * floor(step / step_size) * step_size) ** power``,
    a staircase that rises every ``step_size`` steps (thesis: 1, 0.0005, 0.5, 200)."""

    init: float = 1.0
    gamma: float = 0.0005
    power: float = 0.5
    step_size: int = 200

    def __post_init__(self):
        if not self.init > 0:
            raise ValueError(f"beta_init: expected a positive beta, got {self.init}")
        if not self.gamma >= 0:
            raise ValueError(f"beta_gamma: expected a rate >= 0, got {self.gamma}")
        if not math.isfinite(self.power):
            raise ValueError(f"beta_power: expected a finite exponent, got {self.power}")
        if not int(self.step_size) == self.step_size or self.step_size < 1:
            raise ValueError(f"beta_step_size: expected an integer >= 1, got {self.step_size}")

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step: expected an optimiser step >= 0, got {step}")
        stairs = (int(step) // int(self.step_size)) * int(self.step_size)
        return self.init * (1.0 + self.gamma * stairs) ** self.power


def _check_similar(similar, n: int) -> Tensor:
    if not isinstance(similar, Tensor) or similar.shape != (n,) or not similar.is_floating_point():
        shape = tuple(similar.shape) if isinstance(similar, Tensor) else type(similar).__name__
        raise ValueError(f"similar: expected a float tensor ({n},) of pair similarities, got {shape}")
    if not ((similar >= 0) & (similar <= 1)).all():
        raise ValueError("similar: expected similarities in [0, 1] (1 positive pair, 0 negative pair)")
    return similar


def relaxed_dot(z: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """``(tanh(beta z), dot)``: the relaxed codes ``(n, 2, k)`` and the inner product
    ``(n,)`` of each pair's two relaxed codes."""
    relaxed = torch.tanh(beta * z)
    return relaxed, (relaxed[:, 0] * relaxed[:, 1]).sum(dim=-1)


def hashnet_loss(z: Tensor, similar: Tensor, alpha: float, beta: float) -> Tensor:
    """HashNet's pair loss ``mean(softplus(alpha dot) - s alpha dot)`` written out directly,
    differentiable by autograd (the reference of :func:`hashnet_gradient`). ``z`` is
    ``(n, 2, k)``, ``similar`` the ``(n,)`` similarities ``s``."""
    check_pair_logits(z)
    similar = _check_similar(similar, z.shape[0]).to(z.dtype)
    dot = relaxed_dot(z, beta)[1]
    return (F.softplus(alpha * dot) - similar * alpha * dot).mean()


def hashnet_gradient(z: Tensor, similar: Tensor, alpha: float, beta: float) -> tuple[Tensor, Tensor]:
    """``(d hashnet_loss / dz, hashnet_loss)`` in closed form (see the module docstring),
    without autograd; ``z`` is detached, the gradient has its shape and dtype."""
    check_pair_logits(z)
    similar = _check_similar(similar, z.shape[0]).to(z.dtype)
    relaxed, dot = relaxed_dot(z.detach(), beta)  # (n, 2, k), (n,)
    loss = (F.softplus(alpha * dot) - similar * alpha * dot).mean()
    d_dot = alpha * (torch.sigmoid(alpha * dot) - similar) / z.shape[0]  # (n,)
    partner = relaxed.flip(1)  # d dot / d tanh(beta z1) = tanh(beta z2), and vice versa
    grad = d_dot[:, None, None] * beta * (1 - relaxed * relaxed) * partner
    return grad, loss


class HashNet(torch.nn.Module):
    """The HashNet objective of docs/method.md section 6.2 on mixed pairs, as a logits gradient.

    Args:
        nbits: k, the number of bits (checked against the logits).
        alpha: scale of the inner product in ``sigmoid(alpha dot)`` (0.15).
        beta_init, beta_gamma, beta_power, beta_step_size: the :class:`BetaSchedule`.
    """

    #: The training data: logits (n, 2, k) of pairs and their (n,) similarities; the loop
    #: makes the first half positive (s = 1) and the second half negative (s = 0).
    data = "mixed_pairs"
    #: The thesis defaults: the config's ``objective`` block of a HashNet model.
    #: (DEFAULTS, set below the class: the constructor's keyword defaults)

    def __init__(
        self,
        nbits: int,
        alpha: float = 0.15,
        beta_init: float = 1.0,
        beta_gamma: float = 0.0005,
        beta_power: float = 0.5,
        beta_step_size: int = 200,
    ):
        super().__init__()
        if not int(nbits) == nbits or nbits < 1:
            raise ValueError(f"nbits: expected an integer >= 1, got {nbits}")
        if not alpha > 0:
            raise ValueError(f"alpha: expected a positive scale, got {alpha}")
        self.nbits = int(nbits)
        self.alpha = float(alpha)
        self.beta = BetaSchedule(float(beta_init), float(beta_gamma), float(beta_power), int(beta_step_size))

    def extra_repr(self) -> str:
        return f"nbits={self.nbits}, alpha={self.alpha}, beta={self.beta}"

    def logits_gradient(
        self, z: Tensor, *, step: int, rng: np.random.Generator, similar: Tensor, classes=None
    ) -> tuple[Tensor, dict[str, float]]:
        """Gradient of the HashNet loss with respect to the logits ``z`` ``(n, 2, k)`` of
        all batches of optimiser step ``step`` (which sets beta), given the pairs'
        similarities ``similar`` ``(n,)``. ``rng`` and ``classes`` are not used.

        Returns ``(grad, stats)``: ``stats`` holds plain floats ``loss`` (the HashNet loss,
        nats per pair), ``beta`` (this step's beta) and ``dot_positive`` /
        ``dot_negative`` (mean relaxed inner product of the pairs with s = 1 / s = 0,
        NaN when there are none; ideal +k / -k).
        """
        check_pair_logits(z, self.nbits)
        beta = self.beta(step)
        grad, loss = hashnet_gradient(z, similar, self.alpha, beta)
        dot = relaxed_dot(z.detach(), beta)[1]
        stats = {
            "loss": float(loss),
            "beta": beta,
            "dot_positive": float(dot[similar == 1].mean()),
            "dot_negative": float(dot[similar == 0].mean()),
        }
        return grad, stats


HashNet.DEFAULTS = keyword_defaults(HashNet.__init__)
