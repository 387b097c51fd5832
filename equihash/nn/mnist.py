"""``MnistMosaicCNN`` (docs/method.md section 5): the NoisyMnist mosaic network."""

from __future__ import annotations

import torch
from torch import nn

from equihash.nn.precision import in_float32


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)``; without gradients, two elementwise maxima (row pairs, then column pairs).

    The values are the same bit for bit. On the CPU ``max_pool2d`` also writes the int64
    index of every maximum, even in inference mode: without them the bfloat16 pass of 256
    NoisyMnist mosaics runs at 12,100 instead of 10,800 mosaics/s on 2 cores. With
    gradients the indices serve the backward pass, so it stays ``max_pool2d``.
    """

    def __init__(self):
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            return super().forward(x)
        height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2  # an odd last row or column is dropped
        rows = torch.maximum(x[..., 0:height:2, :width], x[..., 1:height:2, :width])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])


class MnistMosaicCNN(nn.Module):
    """(..., 56, 56) float images -> (..., k) logits; bit b of the fingerprint is logit_b > 0.

    ``head`` runs in float32 under any autocast (equihash.nn.precision)."""

    def __init__(self, nbits: int = 64):
        super().__init__()
        self.nbits = nbits
        self.features = nn.Sequential(
            nn.Conv2d(1, 24, 5),
            MaxPool2x2(),
            nn.ReLU(),
            nn.BatchNorm2d(24),
            nn.Conv2d(24, 32, 3),
            MaxPool2x2(),
            nn.ReLU(),
            nn.BatchNorm2d(32),
            nn.Conv2d(32, 48, 3, padding=1),
            MaxPool2x2(),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(48 * 6 * 6, 512),
            nn.ReLU(),
            nn.Linear(512, nbits),
            nn.BatchNorm1d(nbits),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-2]
        x = x.reshape(-1, 1, *x.shape[-2:])
        return in_float32(self.head, self.features(x)).reshape(*lead, self.nbits)
