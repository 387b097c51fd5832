"""The JMLH baseline objective (docs/method.md section 6.3), as a gradient with respect to the logits.

JMLH learns the hash as the stochastic bottleneck of a classifier. The training loop
fixes ``num_classes`` random training labels (the *classes*); one optimiser step sees
one noisy instance per row of class ``classes[j]``, with logits ``z`` ``(n, k)``. Then:

- *stochastic binarisation*: ``b = step(sigmoid(z) - eps)``, ``eps ~ U(0, 1)`` drawn from
  the step's keyed ``rng`` (never torch's global generator), so ``P(b = 1) = sigmoid(z)``;
- a linear classifier ``Linear(k, num_classes)`` on the codes ``b`` in {0, 1} with a
  log-softmax, trained jointly with the network;
- ``loss = NLL + kl_weight * KL``: the mean over the rows of the classifier's negative
  log-likelihood of the class, plus the mean over the rows of
  ``sum over bits of KL(Bernoulli(sigmoid(z)) || Bernoulli(1/2))``, which pushes every bit
  towards an unbiased coin (the prior of JMLH's variational bound).

*Straight-through gradient* (identity backward): the step function is treated as the
identity in the backward pass, ``d NLL / d sigmoid(z) := d NLL / d b``, and this passes on
through the sigmoid: ``d NLL / dz = d NLL / db * sigmoid'(z)``. The KL term is a smooth
function of ``p = sigmoid(z)``: ``KL = p log 2p + (1-p) log 2(1-p)``, ``dKL/dp = z``, so
``dKL/dz = z sigmoid'(z)``. Altogether, for row j and bit i::

    d loss / dz_ji = sigmoid'(z_ji) * (d NLL / db_ji + kl_weight * z_ji / n)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from equihash.train import keyword_defaults
from torch import Tensor


def kl_to_fair_coin(z: Tensor) -> Tensor:
    """``KL(Bernoulli(sigmoid(z)) || Bernoulli(1/2))`` elementwise, in nats:
    ``p logsigmoid(z) + (1-p) logsigmoid(-z) + log 2`` (finite for any logit; ``1 - p``
    is taken as ``sigmoid(-z)``, exact in the tail)."""
    return torch.sigmoid(z) * F.logsigmoid(z) + torch.sigmoid(-z) * F.logsigmoid(-z) + math.log(2)


class JMLH(torch.nn.Module):
    """The JMLH objective of docs/method.md section 6.3 on one instance per row, as a logits gradient.

    Args:
        nbits: k, the number of bits (input size of the classifier).
        num_classes: C, the number of fixed training labels the classifier tells apart
            (10000).
        kl_weight: weight of the KL term (0.1).

    The module owns the classifier ``self.classifier = Linear(nbits, num_classes)``
    (initialised by torch's default, from torch's global generator at construction);
    :meth:`logits_gradient` accumulates its parameter gradients into ``.grad``.
    """

    #: The training data: logits (n, k), one instance per row, and its (n,) class indices.
    data = "classes"
    #: The thesis defaults: the config's ``objective`` block of a JMLH model.
    #: (DEFAULTS, set below the class: the constructor's keyword defaults)

    def __init__(self, nbits: int, num_classes: int = 10000, kl_weight: float = 0.1):
        super().__init__()
        if not int(nbits) == nbits or nbits < 1:
            raise ValueError(f"nbits: expected an integer >= 1, got {nbits}")
        if not int(num_classes) == num_classes or num_classes < 2:
            raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes}")
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight: expected a weight >= 0, got {kl_weight}")
        self.nbits = int(nbits)
        self.num_classes = int(num_classes)
        self.kl_weight = float(kl_weight)
        self.classifier = torch.nn.Linear(self.nbits, self.num_classes)

    def extra_repr(self) -> str:
        return f"nbits={self.nbits}, num_classes={self.num_classes}, kl_weight={self.kl_weight}"

    def _check(self, z: Tensor, classes) -> None:
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.nbits or z.shape[0] < 1:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"logits z: expected a tensor (n >= 1 instances, nbits = {self.nbits}), got {shape}")
        if not z.is_floating_point():
            raise ValueError(f"logits z: expected a floating-point tensor, got {z.dtype}")
        if not isinstance(classes, Tensor) or classes.shape != (z.shape[0],) or classes.dtype != torch.int64:
            shape = tuple(classes.shape) if isinstance(classes, Tensor) else type(classes).__name__
            raise ValueError(f"classes: expected an int64 tensor ({z.shape[0]},) of class indices, got {shape}")
        if not ((classes >= 0) & (classes < self.num_classes)).all():
            raise ValueError(f"classes: expected class indices in [0, num_classes = {self.num_classes})")

    def logits_gradient(
        self, z: Tensor, *, step: int, rng: np.random.Generator, similar=None, classes: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """Gradient of the JMLH loss with respect to the logits ``z`` ``(n, k)`` of all
        batches of one optimiser step, rows of class ``classes`` ``(n,)`` (int64).

        ``rng`` supplies ``eps`` (``rng.random((n, k))``, float64, so a given generator state
        gives bit-identical results); ``step`` and ``similar`` are not used. As a side
        effect the gradient of the NLL with respect to the classifier's parameters is
        *added* to their ``.grad`` (zero them before the step). Computation runs outside
        any autocast, in the classifier's dtype for the NLL.

        Returns ``(grad, stats)``: ``grad`` has z's shape and dtype; ``stats`` holds plain
        floats ``loss`` (NLL + kl_weight * KL), ``nll`` (nats per row), ``kl`` (nats per
        row, summed over bits) and ``accuracy`` (share of rows whose sampled code the
        classifier assigns to their class).
        """
        self._check(z, classes)
        z = z.detach()
        n = z.shape[0]
        work = torch.float64 if z.dtype == torch.float64 else torch.float32
        x = z.to(work)
        p1, p0 = torch.sigmoid(x), torch.sigmoid(-x)
        eps = torch.from_numpy(rng.random((n, self.nbits))).to(device=z.device, dtype=work)
        with torch.enable_grad(), torch.autocast(z.device.type, enabled=False):
            codes = (p1 > eps).to(self.classifier.weight.dtype).requires_grad_(True)
            scores = self.classifier(codes)
            nll = F.cross_entropy(scores, classes)
            nll.backward()  # classifier parameters' .grad, and d NLL / db into codes.grad
        nll = nll.detach()
        kl = kl_to_fair_coin(x).sum(dim=1).mean()
        grad = (p1 * p0) * (codes.grad.to(work) + (self.kl_weight / n) * x)
        accuracy = (scores.detach().argmax(dim=1) == classes).to(work).mean()
        stats = {
            "loss": float(nll) + self.kl_weight * float(kl),
            "nll": float(nll),
            "kl": float(kl),
            "accuracy": float(accuracy),
        }
        return grad.to(z.dtype), stats


JMLH.DEFAULTS = keyword_defaults(JMLH.__init__)
