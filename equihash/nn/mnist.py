"""``MnistMosaicCNN`` (docs/method.md section 5): the NoisyMnist mosaic network."""

from __future__ import annotations

import torch
from torch import nn

from equihash.nn.precision import in_float32


class MnistMosaicCNN(nn.Module):
    """(..., 56, 56) float images -> (..., k) logits; bit b of the fingerprint is logit_b > 0.

    ``head`` runs in float32 under any autocast (equihash.nn.precision)."""

    def __init__(self, nbits: int = 64):
        super().__init__()
        self.nbits = nbits
        self.features = nn.Sequential(
            nn.Conv2d(1, 24, 5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.BatchNorm2d(24),
            nn.Conv2d(24, 32, 3),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.BatchNorm2d(32),
            nn.Conv2d(32, 48, 3, padding=1),
            nn.MaxPool2d(2),
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
