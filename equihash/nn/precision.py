"""The arithmetic precision of the network's passes: ``fp32`` or ``bf16``.

A model block's ``precision`` is the precision it trains in (and evaluates in during
training); ``encode.precision`` is the one the encoder runs in. ``bf16`` runs the network
under ``torch.autocast`` with bfloat16: the convolutions and matrix products of the trunk
take bfloat16 operands and accumulate in float32, while the equihash head (the layers
after the trunk, whose output signs are the bits) runs in float32 (:func:`in_float32`): with
the head in bfloat16 too, 200 steps at the thesis settings learned measurably slower
(docs/replication.md). On a CPU
with bfloat16 units (AVX512-BF16 or AMX-BF16) oneDNN runs those products on them; on
another CPU torch emulates bfloat16, which is slower than float32, and a warning says so.
On CUDA it uses the tensor cores.

The two precisions round differently, so a fingerprint is a function of the precision:
bf16 fingerprints are another artifact than fp32 ones (the encoder's identity records the
precision, and merging shards of different precisions fails).

``encode.precision`` may also be ``auto`` (its default): bf16 where the device runs
bfloat16 natively, fp32 elsewhere (:func:`resolve_precision`), as emulated bfloat16 is
about ten times slower than float32 (docs/replication.md, fp32 against bf16).
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from typing import TYPE_CHECKING

from equihash.io import InputError
from equihash.nn.cpu import cpu_flags
from equihash.progress import logger

if TYPE_CHECKING:
    import torch

# torch is imported by the functions that use it: resolve_precision on a CPU runs without
# it, so that the workflow's definition (the Snakefile resolves encode.precision) loads
# without torch.

PRECISIONS = ("fp32", "bf16")
AUTO = "auto"  # encoding only: bf16 where the device runs it natively, else fp32
BF16_UNITS = ("avx512_bf16", "amx_bf16")  # CPU features that run bfloat16 products natively


def check_precision(precision: str, where: str, choices: tuple[str, ...] = PRECISIONS) -> str:
    """``precision`` if it is one of ``choices``; InputError naming ``where`` otherwise."""
    if precision not in choices:
        raise InputError(f"{where}: precision {precision!r}; expected one of {', '.join(choices)}")
    return precision


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` (``cpu``, ``cuda``, ``auto`` or a torch device) runs bfloat16 natively,
    as far as this machine can tell: a CPU with :data:`BF16_UNITS`, or a CUDA GPU of compute
    capability 8.0 or later (Ampere on) that torch sees here. ``auto``: CUDA where torch sees
    a GPU, else the CPU."""
    kind = str(device).split(":")[0]  # a torch device's text is its type, then :index
    if kind == "cpu":
        return any(feature in cpu_flags() for feature in BF16_UNITS)
    import torch

    if kind == "auto":
        return native_bf16("cuda" if torch.cuda.is_available() else "cpu")
    return kind == "cuda" and torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(precision: str, device: str | torch.device, where: str) -> str:
    """``precision``, ``auto`` resolved for ``device``: bf16 where :func:`native_bf16`, else fp32."""
    if precision == AUTO:
        return "bf16" if native_bf16(device) else "fp32"
    return check_precision(precision, where, (AUTO, *PRECISIONS))


@functools.cache
def _warn_emulated() -> None:
    logger.warning("precision bf16 on a CPU without bfloat16 units (%s): torch emulates it, about ten times "
                   "more slowly than fp32", " or ".join(BF16_UNITS))


def in_float32(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` in float32 whatever the enclosing autocast: the networks' equihash heads."""
    import torch

    with torch.autocast(x.device.type, enabled=False):
        return module(x.float())


def precision_context(precision: str, device: torch.device):
    """The context the network's passes run in on ``device`` at ``precision``."""
    check_precision(precision, "precision")
    if precision == "fp32":
        return nullcontext()
    if device.type == "cpu" and not native_bf16(device):
        _warn_emulated()
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16)
