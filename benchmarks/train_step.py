"""ShannonHamming training-step time at the thesis NoisyMnist settings.

k = 64 bits, all C(64, 3) = 41664 bit triples, 8 batches x 256 positive pairs (4096
instances) per step, MnistMosaicCNN. Prints one table: the Shannon gradient alone, the
network's own forward and backward passes for the step (no objective), and the whole
step (data generation, forward, objective, backward, clipping, Adam), with the ratio
of the whole step to the network's passes. Targets: Shannon gradient < 1 s; ratio <= 1.3.
The thesis code takes about 35 s per ShannonHamming step on the same 2-core machine.

    python benchmarks/train_step.py [--steps 3] [--batches 8] [--batch-size 256]
"""

import argparse
import statistics
import time

import numpy as np
import torch

from equihash.train.loop import Trainer
from equihash.train.shannon import shannon_gradient

PARAMS = {
    "seed": 0, "steps": 10**6, "learning_rate": 1e-3, "clip_value": 10.0, "recompute_forward": False,
    "eval_every": 10**6, "eval_size": 10, "checkpoint_every": 10**6,
    "objective": {"hamming_weight": 1.0, "shannon_weight": 0.01, "tuple_size": 3, "gradient": "normal",
                  "prior": 1.0, "huber_slope": 0.0, "huber_knee": 9.0, "saturation": 9.0},
}


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="measured repetitions (median reported)")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    bank = np.random.default_rng(0).integers(0, 256, size=(1000, 28, 28), dtype=np.uint8)
    params = {**PARAMS, "batch_size": args.batch_size, "batches_per_step": args.batches}
    trainer = Trainer(task="MnistMosaic", model="ShannonHamming", bank_train=bank, bank_valid=bank, nbits=64,
                      noise_sigma=0.2, params=params, checkpoint_dir="/nonexistent")
    recompute = Trainer(task="MnistMosaic", model="ShannonHamming", bank_train=bank, bank_valid=bank, nbits=64,
                        noise_sigma=0.2, params={**params, "recompute_forward": True}, checkpoint_dir="/nonexistent")
    n_instances = 2 * args.batches * args.batch_size

    z = torch.randn(n_instances, 64)
    shannon_gradient(z)
    shannon = timed(lambda: shannon_gradient(z), args.steps)

    batches = trainer.step_instances(0).split(args.batch_size)

    def network_passes():
        trainer.net.zero_grad(set_to_none=True)
        for batch in batches:
            out = trainer.net(batch)
            out.backward(torch.ones_like(out))

    network_passes()
    network = timed(network_passes, args.steps)
    generation = timed(lambda: trainer.step_instances(0), args.steps)
    trainer.train_step()
    step = timed(trainer.train_step, args.steps)
    recompute.train_step()
    step_recompute = timed(recompute.train_step, args.steps)

    print(f"ShannonHamming step, k=64, C(64,3)=41664 triples, {args.batches} x {args.batch_size} pairs "
          f"({n_instances} instances), {torch.get_num_threads()} threads")
    print("| measure | seconds |")
    print("|---|---:|")
    print(f"| Shannon gradient alone | {shannon:.3f} |")
    print(f"| data generation | {generation:.3f} |")
    print(f"| network forward + backward | {network:.3f} |")
    print(f"| whole step (graphs of the first pass kept, the default) | {step:.3f} |")
    print(f"| whole step / network passes | {step / network:.2f} |")
    print(f"| whole step with recompute_forward (the thesis' two forward passes) | {step_recompute:.3f} |")
    print(f"| whole step with recompute_forward / network passes | {step_recompute / network:.2f} |")


if __name__ == "__main__":
    main()
