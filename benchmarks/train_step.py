"""Training-step time of every objective at the thesis NoisyMnist size.

k = 64 bits, 8 batches x 256 rows per step (pairs: 4096 instances; JMLH: 2048), all
C(64, 3) = 41664 bit triples for the Shannon term, MnistMosaicCNN, objective parameters
from config/config.yaml. For each objective: the network's own forward and backward
passes for the step's data (no objective), the whole step in the training loop (forward,
objective, backward, clipping, Adam, while a background thread makes the next step's data)
and their ratio (target <= 1.3), and the network's
arithmetic rate in GFLOP/s (its counted FLOPs over the network time and over the whole
step) and as a share of the machine's matmul peak in the same precision
(benchmarks/flops.py), for each ``--precision``; plus the Shannon
gradient alone (target < 1 s) and the thesis' recomputed forward pass. The thesis code
takes about 35 s per ShannonHamming step and 8 s per HashNet step on the same machine.

    python benchmarks/train_step.py [--steps 3] [--batches 8] [--batch-size 256] [--objectives ...]
        [--precision fp32 bf16]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from equihash.data.mosaic import MnistMosaic
from equihash.nn.precision import PRECISIONS
from equihash.train.loop import OBJECTIVES, Trainer
from equihash.train.shannon import shannon_gradient
from flops import median_seconds, native_precisions, pass_flops, peak_line, peaks

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


def trainer_for(model, args, **changes):
    params = yaml.safe_load(CONFIG.read_text())["tasks"]["MnistMosaic"]["models"][model]
    params = {**params, "batch_size": args.batch_size, "batches_per_step": args.batches, "device": "cpu",
              "steps": 10**6, "eval_every": 10**6, "checkpoint_every": 10**6, **changes}
    bank = np.random.default_rng(0).integers(0, 256, size=(1000, 28, 28), dtype=np.uint8)
    mosaic = MnistMosaic(bank, noise_sigma=0.2)
    return Trainer(task="MnistMosaic", model=model, train_mosaic=mosaic, valid_mosaic=mosaic, nbits=64,
                   task_params={"noise_sigma": 0.2}, params=params, checkpoint_dir="/nonexistent")


def network_passes(trainer, batches):
    trainer.net.zero_grad(set_to_none=True)
    for batch in batches:
        with trainer.autocast:
            out = trainer.net(batch).float()
        out.backward(torch.ones_like(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="measured repetitions (median reported)")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    parser.add_argument("--precision", nargs="+", default=native_precisions(), choices=PRECISIONS,
                        help="default: those this CPU runs natively (bf16 needs bfloat16 units)")
    args = parser.parse_args()

    z = torch.randn(2 * args.batches * args.batch_size, 64)
    shannon_gradient(z)
    shannon = median_seconds(lambda: shannon_gradient(z), args.steps)

    print(f"training step, k=64, {args.batches} x {args.batch_size} rows, {torch.get_num_threads()} threads; "
          f"seconds (median of {args.steps})")
    peak = peaks(args.precision)
    print(peak_line(peak))
    print("| objective | precision | instances | data generation | network forward + backward | whole step | ratio "
          "| network GFLOP/s | share of peak | whole step GFLOP/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [(model, {}) for model in args.objectives]
    if "ShannonHamming" in args.objectives:
        rows.append(("ShannonHamming", {"recompute_forward": True}))
    for (model, changes), precision in ((row, precision) for row in rows for precision in args.precision):
        trainer = trainer_for(model, args, precision=precision, **changes)
        instances, _ = trainer.step_data(0)
        batches = instances.split(args.batch_size)
        flops = sum(pass_flops(trainer.net, batch, backward=True) for batch in batches)  # precision-free
        network = median_seconds(lambda: network_passes(trainer, batches), args.steps)
        generation = median_seconds(lambda: trainer.step_data(0), args.steps)
        trainer.train_step()
        start = time.perf_counter()  # the training loop's steps: the next step's data made meanwhile
        trainer.run(stop_after=args.steps)
        step = (time.perf_counter() - start) / args.steps
        name = model + (" (recompute_forward, the thesis' two passes)" if changes else "")
        n = instances.shape[0] * (instances.shape[1] if instances.dim() == 4 else 1)
        rate = flops / network / 1e9
        print(f"| {name} | {precision} | {n} | {generation:.3f} | {network:.3f} | {step:.3f} | {step / network:.2f} "
              f"| {rate:,.0f} | {rate / peak[precision]:.0%} | {flops / step / 1e9:,.0f} |")
    print(f"\nShannon gradient alone ({z.shape[0]} instances, C(64,3) = 41664 triples): {shannon:.3f} s")


if __name__ == "__main__":
    main()
