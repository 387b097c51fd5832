"""Evaluation: the metrics of docs/method.md section 9 (equidict, equiset, binary, multi-probing)."""

from equihash.evaluate.metrics import (
    CSR,
    RADII,
    binary_metrics,
    equidict,
    equiset,
    internal_collisions,
    metrics_document,
    multiprobe_entry,
)

__all__ = [
    "CSR",
    "RADII",
    "binary_metrics",
    "equidict",
    "equiset",
    "internal_collisions",
    "metrics_document",
    "multiprobe_entry",
]
