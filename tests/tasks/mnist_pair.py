"""A task defined outside the package, as a user would: 1 x 2 MNIST mosaics.

Two 28x28 digits side by side (label length m = 2) with the Gaussian noise of MnistMosaic,
kept in an MNIST bank file, with a small network of its own. The configuration key
``task_modules`` names this file; ``tasks.MnistPair`` then takes a block of the shape of
``$defs/MnistMosaic`` in config/schema.yaml.
"""

import torch
from torch import nn

from equihash.data.mosaic import MnistMosaic
from equihash.tasks import MNIST_BANK, Task, register


class PairMosaic(MnistMosaic):
    cells = 2
    grid = (1, 2)
    shape = (28, 56)


class PairNet(nn.Module):
    """(..., 28, 56) float images -> (..., k) logits."""

    def __init__(self, nbits: int):
        super().__init__()
        self.nbits = nbits
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(32, nbits), nn.BatchNorm1d(nbits),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-2]
        return self.body(x.reshape(-1, 1, *x.shape[-2:])).reshape(*lead, self.nbits)


register(Task("MnistPair", PairMosaic, PairNet, MNIST_BANK, noise=("noise_sigma",), schema="MnistMosaic"))
