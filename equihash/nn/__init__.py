"""Networks mapping mosaic instances to k logits (docs/method.md section 5); the task registry
(``equihash.tasks``) names each task's network."""

from equihash.nn.mnist import MnistMosaicCNN
from equihash.nn.resnet import MnistResNet, Uint8ResNet

__all__ = ["MnistMosaicCNN", "MnistResNet", "Uint8ResNet"]
