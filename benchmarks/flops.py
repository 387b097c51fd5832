"""The distance to the machine's limit: the arithmetic of a network's passes, counted by
torch (``torch.utils.flop_counter``: convolutions and matrix products, a multiply-add
counted as 2), against the rate of a large matrix product in the same precision.

Imported by benchmarks/train_step.py and benchmarks/encode.py, with their timer.
"""

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


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


def peaks() -> dict[str, float]:
    """The matmul peak of each precision (``fp32``, ``bf16``: equihash.nn.precision), GFLOP/s."""
    return {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}


def peak_line(peak: dict[str, float]) -> str:
    """One line: the float32 and bfloat16 matmul peaks of this machine."""
    return (f"machine peak (4096 x 4096 matmul, {torch.get_num_threads()} threads): {peak['fp32']:,.0f} GFLOP/s "
            f"float32, {peak['bf16']:,.0f} GFLOP/s bfloat16")
