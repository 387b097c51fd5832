"""Networks mapping mosaic instances to k logits (docs/method.md section 5)."""

from equihash.nn.mnist import MnistMosaicCNN
from equihash.nn.resnet import MnistResNet, Uint8ResNet

NETWORKS = {"MnistMosaic": MnistMosaicCNN, "OpenImagesMosaic": Uint8ResNet}


def network_for_task(task: str, nbits: int, **options):
    """The thesis network of a task, with ``nbits`` output logits.

    ``options`` go to the network's constructor, e.g. ``depth=34`` for ``Uint8ResNet``.
    """
    try:
        network = NETWORKS[task]
    except KeyError:
        raise ValueError(f"no network for task '{task}'; known: {', '.join(sorted(NETWORKS))}") from None
    return network(nbits, **options)


__all__ = ["NETWORKS", "MnistMosaicCNN", "MnistResNet", "Uint8ResNet", "network_for_task"]
