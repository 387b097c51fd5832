"""The HashNetShannon ablation (docs/method.md section 6.4): ShannonHamming with its Hamming term
replaced by HashNet's loss on positive pairs.

The logits ``z`` ``(n, 2, k)`` are positive pairs only (as for ShannonHamming), so the
HashNet pair loss of :mod:`equihash.train.hashnet` is taken with ``s = 1`` for every pair,
``mean(softplus(alpha dot) - alpha dot)``: it pulls each pair's relaxed codes
``tanh(beta z)`` together, with beta following HashNet's schedule. The Shannon term (over
all tuples or a tuple cover) and the Huber penalty are those of ShannonHamming
(:class:`equihash.train.shannon_hamming.PairShannonObjective`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from equihash.train.hashnet import BetaSchedule, hashnet_gradient
from equihash.train.shannon_hamming import PairShannonObjective
from equihash.train import keyword_defaults


class HashNetShannon(PairShannonObjective):
    """HashNet's positive-pair loss plus the Shannon term, as a logits gradient.

    Args:
        nbits: k, the number of bits.
        alpha: HashNet's inner-product scale (0.05 in this ablation).
        shannon_weight: lambda_S (0.0001 in this ablation).
        beta_init, beta_gamma, beta_power, beta_step_size: HashNet's
            :class:`~equihash.train.hashnet.BetaSchedule` (driven by the optimiser step).
        tuple_size, cover_size, shuffle_bits, tuple_seed, gradient, prior, huber_slope, huber_knee,
        saturation: as for :class:`~equihash.train.shannon_hamming.ShannonHamming`.

    Stats: ``loss``, ``loss_hashnet`` (the HashNet term, nats per pair), ``beta``,
    ``entropy``, ``saturation``, ``grad_norm_hashnet``, ``grad_norm_shannon``,
    ``grad_norm_huber``.
    """

    pair_term = "hashnet"
    #: The thesis defaults of the ablation: the config's ``objective`` block.
    #: (DEFAULTS, set below the class: the constructor's keyword defaults)

    def __init__(
        self,
        nbits: int,
        alpha: float = 0.05,
        shannon_weight: float = 0.0001,
        beta_init: float = 1.0,
        beta_gamma: float = 0.0005,
        beta_power: float = 0.5,
        beta_step_size: int = 200,
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
        if not alpha > 0:
            raise ValueError(f"alpha: expected a positive scale, got {alpha}")
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
        self.alpha = float(alpha)
        self.beta = BetaSchedule(float(beta_init), float(beta_gamma), float(beta_power), int(beta_step_size))

    def _pair_gradient(self, z: Tensor, step: int) -> tuple[Tensor, float, dict[str, float]]:
        beta = self.beta(step)
        positive = torch.ones(z.shape[0], dtype=z.dtype, device=z.device)
        grad, loss = hashnet_gradient(z, positive, self.alpha, beta)
        return grad, float(loss), {"loss_hashnet": float(loss), "beta": beta}


HashNetShannon.DEFAULTS = keyword_defaults(HashNetShannon.__init__)
