"""The distance to the machine's limit: the arithmetic of a network's passes, counted by
torch (``torch.utils.flop_counter``: convolutions and matrix products, a multiply-add
counted as 2), against the rate of a large matrix product in the same precision.

Imported by benchmarks/train_step.py and benchmarks/encode.py, with their timer.
"""

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from equihash.nn.precision import PRECISIONS, native_bf16


def median_seconds(run, repeats: int) -> float:
    """The median wall time of ``repeats`` calls of ``run`` (this machine's timings drift by up to 20%)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pass_flops(net, x, *, backward: bool) -> int:
    """FLOPs of one forward pass of ``net`` on ``x``, with its backward pass when ``backward``."""
    with FlopCounterMode(display=False) as counter:
        if backward:
            out = net(x)
            out.backward(torch.ones_like(out))
        else:
            with torch.inference_mode():
                net(x)
    return counter.get_total_flops()


def matmul_peak_gflops(dtype=torch.float32, n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of the fastest of ``repeats`` (n, n) @ (n, n) products in ``dtype`` on the
    current torch threads: the peak a network's passes can be measured against."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=generator).to(dtype) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def native_precisions() -> list[str]:
    """The precisions this machine's CPU runs natively (bf16 needs bfloat16 units): the
    benchmarks' default ``--precision``."""
    return [p for p in PRECISIONS if p == "fp32" or native_bf16("cpu")]


def peaks(precisions) -> dict[str, float]:
    """The matmul peak of each of ``precisions`` (``fp32``, ``bf16``), GFLOP/s. Emulated
    bfloat16 runs at about 1 GFLOP/s, so there it is measured on 1024 x 1024 products (a
    4096 product would take minutes)."""
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    return {p: matmul_peak_gflops(dtypes[p], n=4096 if p in native_precisions() else 1024) for p in precisions}


def peak_line(peak: dict[str, float]) -> str:
    """One line: the matmul peak of each measured precision on this machine."""
    rates = ", ".join(f"{rate:,.0f} GFLOP/s {precision}" + ("" if precision in native_precisions() else " (emulated)")
                      for precision, rate in peak.items())
    return f"machine peak (large square matmul, {torch.get_num_threads()} threads): {rates}"
