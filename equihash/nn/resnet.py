"""ResNet equihash networks (docs/method.md section 5), written here without torchvision.

``Uint8ResNet(k, depth)`` is the standard ImageNet ResNet-18/34/50 layout (He et al. 2016)
whose 1000-class classifier is replaced by the equihash head ``Linear(512 * expansion, k,
bias=False) + BatchNorm1d(k)``: the k logits whose signs are the k bits of the fingerprint.
``MnistResNet(k, depth)`` is the same network with a 1-channel 7x7 stride-1 first
convolution for the grayscale NoisyMnist mosaics.

Layout: stem = 7x7 convolution (64 channels), BatchNorm, ReLU, 3x3 stride-2 max pool; four
stages of 64, 128, 256, 512 planes with strides 1, 2, 2, 2; global average pool; head. A
block's shortcut is the identity unless the block changes the shape, then it is a 1x1
convolution (with the block's stride) followed by BatchNorm. The Bottleneck (ResNet-50)
puts its stride on the 3x3 convolution, not on the first 1x1 convolution: the "ResNet
v1.5" placement used by torchvision and most reimplementations (the 2015 paper put it on
the 1x1 convolution). Convolutions carry no bias (BatchNorm follows each one).

Initialisation is the usual one: Kaiming-normal convolutions (fan-out, ReLU gain), every
BatchNorm with weight 1 and bias 0, PyTorch's default Linear initialisation. The last
BatchNorm of each residual branch is *not* zero-initialised (torchvision's default,
``zero_init_residual=False``), so at initialisation each block is not the identity and the
logits depend on the whole network from the first training step.

Both networks accept any leading shape, ``(..., 3, H, W)`` uint8 resp. ``(..., H, W)`` float,
and return ``(..., k)``: a training batch of positive pairs ``(n, 2, 3, H, W)`` goes
through as ``2n`` images. They work in channels_last memory format (the training loop
converts the module; the input is converted in ``forward``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from equihash.nn.precision import in_float32


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (stride on the first) plus the shortcut; ResNet-18 and -34."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(in_channels, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride: ResNet v1.5), 1x1 expand by 4; ResNet-50."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(in_channels, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """A block's shortcut: identity when the shape is kept, else 1x1 convolution + BatchNorm."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


# depth -> (block, blocks per stage), the layouts of the ResNet paper's table 1.
LAYOUTS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}
STAGE_PLANES = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)


class EquihashResNet(nn.Module):
    """ResNet trunk + equihash head on 4-D float batches ``(n, C, H, W)`` -> ``(n, k)`` logits.

    ``in_channels`` and ``stem_stride`` describe the first convolution (7x7, padding 3);
    the subclasses map their own input shapes and dtypes onto this.
    """

    def __init__(self, nbits: int, depth: int, *, in_channels: int, stem_stride: int):
        super().__init__()
        if depth not in LAYOUTS:
            raise ValueError(f"ResNet depth must be one of {sorted(LAYOUTS)}, got {depth}")
        if nbits < 1:
            raise ValueError(f"nbits must be a positive number of fingerprint bits, got {nbits}")
        block, counts = LAYOUTS[depth]
        self.nbits, self.depth = nbits, depth
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, stride=stem_stride, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, channels = [], 64
        for planes, stride, count in zip(STAGE_PLANES, STAGE_STRIDES, counts):
            blocks = []
            for i in range(count):
                blocks.append(block(channels, planes, stride if i == 0 else 1))
                channels = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Linear(channels, nbits, bias=False), nn.BatchNorm1d(nbits))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) float images -> (n, k) logits; the head in float32 under any autocast
        (equihash.nn.precision)."""
        x = self.pool(self.stages(self.stem(x)))
        return in_float32(self.head, torch.flatten(x, 1))


class Uint8ResNet(EquihashResNet):
    """(..., 3, H, W) uint8 RGB -> (..., k) logits; the OpenImagesMosaic network (docs/method.md sections 2.2, 5).

    Pixels are rescaled to [-1, 1] by (x - 127.5) / 127.5 inside ``forward``, so mosaics
    travel as uint8 (a quarter of the float32 bytes) up to the network.
    """

    def __init__(self, nbits: int, depth: int = 18):
        super().__init__(nbits, depth, in_channels=3, stem_stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.dim() < 3 or x.shape[-3] != 3:
            raise ValueError(f"Uint8ResNet expects uint8 images of shape (..., 3, H, W), "
                             f"got {x.dtype} {tuple(x.shape)}")
        lead = x.shape[:-3]
        x = x.reshape(math.prod(lead), *x.shape[-3:])
        x = x.to(self.stem[0].weight.dtype, memory_format=torch.channels_last).sub_(127.5).div_(127.5)
        return self.logits(x).reshape(*lead, self.nbits)


class MnistResNet(EquihashResNet):
    """(..., H, W) float grayscale -> (..., k) logits; a ResNet for the NoisyMnist mosaics.

    The first convolution has one input channel and stride 1 (the 56x56 mosaics are small);
    the input is used as it is (the mosaics are already floats of order 1).
    """

    def __init__(self, nbits: int, depth: int = 18):
        super().__init__(nbits, depth, in_channels=1, stem_stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point() or x.dim() < 2:
            raise ValueError(f"MnistResNet expects float images of shape (..., H, W), "
                             f"got {x.dtype} {tuple(x.shape)}")
        lead = x.shape[:-2]
        x = x.reshape(math.prod(lead), 1, *x.shape[-2:])
        x = x.to(self.stem[0].weight.dtype, memory_format=torch.channels_last)
        return self.logits(x).reshape(*lead, self.nbits)
