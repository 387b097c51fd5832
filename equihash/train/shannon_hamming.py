"""The ShannonHamming objective (docs/method.md section 6.1), as a gradient with respect to the logits.

One optimiser step sees the logits ``z`` of shape ``(n, 2, k)`` of all its batches: n
positive pairs (two noisy instances of one label), k bits. The objective is

    hamming_weight * hamming_loss(z)                    (Hamming term, minimised)
  - shannon_weight * sum_T H_T(z.reshape(2n, k))        (Shannon term, maximised)
  + 1/(2n) * sum over all logits of huber_penalty(z)    (Huber penalty, off by default)

and :meth:`ShannonHamming.logits_gradient` returns its gradient with respect to ``z``.
The tuples T are all ``tuple_size``-subsets of the bits, or a random family covering
every ``cover_size``-subset of the bits (see :func:`equihash.train.shannon.tuple_family`),
whose bits may be relabelled by a fresh random permutation at every step (``shuffle_bits``).
:class:`PairShannonObjective` holds everything but the pair term, which it shares with
the HashNetShannon ablation (:mod:`equihash.train.hashnet_shannon`).
The training loop computes ``z`` for every batch of the step without gradient, calls
``logits_gradient`` once, then re-runs each batch with gradient and back-propagates its
slice with ``logits.backward(grad[slice])``: the Shannon entropy is thereby estimated
over all 2n instances of the step, not per batch.
"""

from __future__ import annotations

import abc
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from equihash.train.shannon import GRADIENTS, shannon_gradient, tuple_family
from equihash.train import keyword_defaults


def check_pair_logits(z: Tensor, nbits: int | None = None) -> None:
    """Raise ValueError unless ``z`` is a floating-point ``(n >= 1 pairs, 2, k bits)``
    tensor, with ``k == nbits`` when ``nbits`` is given."""
    if not isinstance(z, Tensor) or z.dim() != 3 or z.shape[1] != 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"logits z: expected a tensor (n pairs, 2, k bits), got {shape}")
    if not z.is_floating_point():
        raise ValueError(f"logits z: expected a floating-point tensor, got {z.dtype}")
    if z.shape[0] < 1:
        raise ValueError("logits z: expected at least one pair, got 0")
    if nbits is not None and z.shape[2] != nbits:
        raise ValueError(f"logits z: expected k = nbits = {nbits} bits, got {z.shape[2]}")


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
    check_pair_logits(z)
    return -_log_bit_equal_terms(z)[2].sum(dim=-1).mean()


def hamming_gradient(z: Tensor) -> tuple[Tensor, Tensor]:
    """``(d hamming_loss / dz, hamming_loss)`` in closed form, without autograd.

    With ``w1 = P(both 1) / P(equal)`` and ``w0 = P(both 0) / P(equal)`` (softmax weights,
    computed in log space), ``d log P(equal) / dz1 = w1 sigmoid(-z1) - w0 sigmoid(z1)``
    and symmetrically for z2; the loss is ``-1/n`` times their sum.
    """
    check_pair_logits(z)
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


class PairShannonObjective(torch.nn.Module, abc.ABC):
    """An objective on positive pairs: a *pair term* (defined by the subclass) plus the
    Shannon term of docs/method.md section 6.1 plus the Huber penalty, as a logits gradient.

    Args (shared by the subclasses):
        nbits: k, the number of bits (logits per instance).
        shannon_weight: lambda_S, weight of the Shannon term.
        tuple_size: size t of the bit tuples T of the Shannon term.
        cover_size: None (every t-subset of the bits) or c in [1, t]: a random family of
            t-subsets covering every c-subset of the bits (c = t: every t-subset).
        shuffle_bits: relabel the family's bits by a random permutation at every step
            (drawn from the step's keyed generator), so that over the steps every tuple
            is visited; no effect when every t-subset is summed over.
        tuple_seed: seed of the random family (a cover only).
        gradient: ``"normal"`` (exact Shannon gradient) or ``"pseudo-smooth"``.
        prior: pseudo-count of the pseudo-smooth configuration counts.
        huber_slope: maximum slope m of the Huber penalty (0: off).
        huber_knee: branching point K of the Huber penalty (9).
        saturation: a logit counts as saturated when ``|z| > saturation`` (logged).

    The Huber penalty is summed over all 2nk logits and divided by the number of
    instances 2n (the thesis averages it over instances), while the pair terms are sums
    over bits averaged over the n pairs.
    """

    #: The training data this objective consumes: logits (n, 2, k) of positive pairs.
    data = "positive_pairs"
    #: Name of the pair term in the stats keys (``loss_<name>``, ``grad_norm_<name>``).
    pair_term = ""

    def __init__(
        self,
        nbits: int,
        *,
        shannon_weight: float,
        tuple_size: int,
        cover_size: int | None,
        shuffle_bits: bool,
        tuple_seed: int,
        gradient: str,
        prior: float,
        huber_slope: float,
        huber_knee: float,
        saturation: float,
    ):
        super().__init__()
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient: expected one of {GRADIENTS}, got {gradient!r}")
        if gradient == "pseudo-smooth" and not prior > 0:
            raise ValueError(f"prior: expected a positive pseudo-count, got {prior}")
        if not int(nbits) == nbits or nbits < 2:
            raise ValueError(f"nbits: expected an integer >= 2, got {nbits}")
        if not int(tuple_size) == tuple_size or not 2 <= tuple_size <= nbits:
            raise ValueError(f"tuple_size: expected an integer in [2, nbits={nbits}], got {tuple_size}")
        if cover_size is not None and (not int(cover_size) == cover_size or not 1 <= cover_size <= tuple_size):
            raise ValueError(f"cover_size: expected null or an integer in [1, tuple_size={tuple_size}], got {cover_size}")
        if not int(tuple_seed) == tuple_seed or tuple_seed < 0:
            raise ValueError(f"tuple_seed: expected an integer >= 0, got {tuple_seed}")
        if not shannon_weight >= 0:
            raise ValueError(f"shannon_weight: expected a weight >= 0, got {shannon_weight}")
        _check_huber(huber_slope, huber_knee)
        if not saturation >= 0:
            raise ValueError(f"saturation: expected a threshold >= 0, got {saturation}")
        self.nbits = int(nbits)
        self.shannon_weight = float(shannon_weight)
        self.tuple_size = int(tuple_size)
        self.cover_size = None if cover_size is None or cover_size == tuple_size else int(cover_size)
        self.shuffle_bits = bool(shuffle_bits)
        self.tuple_seed = int(tuple_seed)
        self.gradient = gradient
        self.prior = float(prior)
        self.huber_slope = float(huber_slope)
        self.huber_knee = float(huber_knee)
        self.saturation = float(saturation)
        # (F, t) tuple family, or None for all tuples; a buffer so that .to(device) moves it,
        # not persistent because it is a function of the settings.
        family = tuple_family(self.nbits, self.tuple_size, self.cover_size, self.tuple_seed)
        self.register_buffer("tuple_family", family, persistent=False)

    def extra_repr(self) -> str:
        return ", ".join(
            f"{key}={value!r}" for key, value in vars(self).items() if not key.startswith("_") and key != "training"
        )

    def step_tuples(self, rng: np.random.Generator) -> Tensor | None:
        """The tuples of one step: the family, its bits relabelled by ``rng.permutation(k)``
        when ``shuffle_bits`` (None: every tuple, which no relabelling changes)."""
        if self.tuple_family is None or not self.shuffle_bits:
            return self.tuple_family
        relabel = torch.from_numpy(rng.permutation(self.nbits)).to(self.tuple_family.device)
        return relabel[self.tuple_family]

    @abc.abstractmethod
    def _pair_gradient(self, z: Tensor, step: int) -> tuple[Tensor, float, dict[str, float]]:
        """The pair term: ``(weighted gradient (n, 2, k), weighted loss value, stats)``;
        ``stats`` holds at least ``loss_<pair_term>``."""

    def logits_gradient(
        self, z: Tensor, *, step: int, rng: np.random.Generator, similar=None, classes=None
    ) -> tuple[Tensor, dict[str, float]]:
        """Gradient of the objective with respect to the logits ``z`` ``(n, 2, k)`` of all
        batches of one optimiser step (detached; never differentiated through).

        ``step`` is the optimiser step (schedules of the pair term); ``rng`` draws the
        step's permutation of the bits (``shuffle_bits`` only); ``similar`` and ``classes``
        are not used (the data are positive pairs).

        Returns ``(grad, stats)``: ``grad`` has z's shape and dtype; ``stats`` holds plain
        floats: ``loss`` (the objective's value: weighted pair term - shannon_weight *
        entropy in nats + Huber penalty, whose gradient ``grad`` is), the pair term's
        figures (``loss_<pair_term>``: unweighted, nats per pair), ``entropy`` (``sum_T H_T``
        over the tuples, in **bits**; ideal ``F * t`` for F tuples), ``saturation`` (share
        of logits with ``|z| > saturation``) and ``grad_norm_<pair_term>`` /
        ``grad_norm_shannon`` / ``grad_norm_huber`` (Frobenius norms of the three weighted
        terms that are summed into ``grad``).
        """
        check_pair_logits(z, self.nbits)
        z = z.detach()
        n, _, k = z.shape
        term_pair, loss_pair, pair_stats = self._pair_gradient(z, step)
        d_shannon, entropy = shannon_gradient(
            z.reshape(2 * n, k), self.tuple_size, self.gradient, self.prior, tuples=self.step_tuples(rng)
        )
        term_shannon = self.shannon_weight * d_shannon.reshape(n, 2, k)
        term_huber = huber_gradient(z, self.huber_slope, self.huber_knee) / (2 * n)
        grad = term_pair + term_shannon + term_huber
        penalty = float(huber_penalty(z.double(), self.huber_slope, self.huber_knee).sum()) / (2 * n)
        stats = {
            "loss": loss_pair - self.shannon_weight * float(entropy) + penalty,
            **pair_stats,
            "entropy": float(entropy) / math.log(2),
            "saturation": float((z.abs() > self.saturation).float().mean()),
            f"grad_norm_{self.pair_term}": float(torch.linalg.vector_norm(term_pair)),
            "grad_norm_shannon": float(torch.linalg.vector_norm(term_shannon)),
            "grad_norm_huber": float(torch.linalg.vector_norm(term_huber)),
        }
        return grad, stats


class ShannonHamming(PairShannonObjective):
    """The ShannonHamming objective of docs/method.md section 6.1, evaluated as a logits gradient: the
    Hamming term (weight ``hamming_weight``, lambda_H = 1.0) as the pair term, plus the
    Shannon term and the Huber penalty of :class:`PairShannonObjective` (whose arguments
    it takes too; ``nbits`` only sizes the tuple family). Stats: ``loss``,
    ``loss_hamming``, ``entropy``, ``saturation``, ``grad_norm_hamming``,
    ``grad_norm_shannon``, ``grad_norm_huber``.
    """

    pair_term = "hamming"
    #: The thesis defaults (NoisyMnist; lambda_S is 0.03 for OpenImages): the config's
    #: ``objective`` block of a ShannonHamming model.
    #: (DEFAULTS, set below the class: the constructor's keyword defaults)

    def __init__(
        self,
        nbits: int,
        hamming_weight: float = 1.0,
        shannon_weight: float = 0.01,
        tuple_size: int = 3,
        cover_size: int | None = None,
        shuffle_bits: bool = False,
        tuple_seed: int = 0,
        gradient: str = "normal",
        prior: float = 1.0,
        huber_slope: float = 0.0,
        huber_knee: float = 9.0,
        saturation: float = 9.0,
    ):
        if not hamming_weight >= 0:
            raise ValueError(f"hamming_weight: expected a weight >= 0, got {hamming_weight}")
        super().__init__(
            nbits,
            shannon_weight=shannon_weight,
            tuple_size=tuple_size,
            cover_size=cover_size,
            shuffle_bits=shuffle_bits,
            tuple_seed=tuple_seed,
            gradient=gradient,
            prior=prior,
            huber_slope=huber_slope,
            huber_knee=huber_knee,
            saturation=saturation,
        )
        self.hamming_weight = float(hamming_weight)

    def _pair_gradient(self, z: Tensor, step: int) -> tuple[Tensor, float, dict[str, float]]:
        d_hamming, loss = hamming_gradient(z)
        loss = float(loss)
        return self.hamming_weight * d_hamming, self.hamming_weight * loss, {"loss_hamming": loss}


ShannonHamming.DEFAULTS = keyword_defaults(ShannonHamming.__init__)
