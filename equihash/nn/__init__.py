"""Networks mapping mosaic instances to k logits (THESIS.md 5)."""

from equihash.nn.mnist import MnistMosaicCNN

NETWORKS = {"MnistMosaic": MnistMosaicCNN}


def network_for_task(task: str, nbits: int):
    """The thesis network of a task, with ``nbits`` output logits."""
    try:
        return NETWORKS[task](nbits)
    except KeyError:
        raise ValueError(f"no network for task '{task}'; known: {', '.join(sorted(NETWORKS))}") from None
