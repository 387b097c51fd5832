"""Encoding speed. MnistMosaic target: at least 2,300 mosaics/s on 2 CPU cores (thesis code: 1,140/s).

Prints mosaics per second for generation alone (labels -> keyed noisy mosaics) and for
generation + forward pass of the task's network (inference mode, channels-last), for
several batch sizes, on ``--n`` database instances. Weights, bank images and (for
OpenImagesMosaic) Perlin fields are random: speed does not depend on them.

    python benchmarks/encode.py [--n 20000] [--batch-sizes 64 128 256 512 1024]
    python benchmarks/encode.py --task OpenImagesMosaic --n 512 --batch-sizes 64 256
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from equihash.data.keyed import KeyedRandom
from equihash.data.tasks import make_mosaic
from equihash.encode import Encoder
from equihash.nn import network_for_task
from equihash.train.loop import save_model

TASKS = {  # task -> (bank image shape, model config besides task and nbits)
    "MnistMosaic": ((28, 28), {"noise_sigma": 0.2}),
    "OpenImagesMosaic": ((180, 180, 3), {"network": {"depth": 18}}),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="MnistMosaic")
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    generator = np.random.default_rng(0)
    image_shape, model_config = TASKS[args.task]
    bank = generator.integers(0, 256, size=(1000, *image_shape), dtype=np.uint8)
    perlin = tuple(generator.integers(-127, 128, size=(64, 180, 270), dtype=np.int8) for _ in range(2))
    mosaic = make_mosaic(args.task, bank, perlin=perlin, **{k: v for k, v in model_config.items() if k != "network"})
    labels = generator.integers(0, len(bank), size=(args.n, mosaic.cells), dtype=np.uint32)
    ids = np.arange(args.n)
    rng = KeyedRandom(0, "test", "database")

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.pt"
        torch.manual_seed(0)
        net = network_for_task(args.task, 64, **model_config.get("network", {})).eval()
        save_model(net, {"task": args.task, "nbits": 64, **model_config}, model)
        print(f"{args.n} {args.task} instances, {type(net).__name__} k=64, {args.threads} threads")
        print("| batch size | generation (mosaics/s) | generation + forward (mosaics/s) |")
        print("|---:|---:|---:|")
        for bs in args.batch_sizes:
            start = time.perf_counter()
            for lo in range(0, args.n, bs):
                mosaic.noisy(labels[lo:lo + bs], rng, ids[lo:lo + bs])
            generation = args.n / (time.perf_counter() - start)
            encoder = Encoder(model, bank, perlin=perlin if args.task == "OpenImagesMosaic" else None, batch_size=bs)
            encoder.logits(labels[:bs], rng, ids[:bs])  # warm-up
            start = time.perf_counter()
            encoder.logits(labels, rng, ids)
            encoding = args.n / (time.perf_counter() - start)
            print(f"| {bs} | {generation:,.0f} | {encoding:,.0f} |")


if __name__ == "__main__":
    main()
