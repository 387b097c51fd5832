"""Encoding speed (issue: at least 2,300 mosaics/s on 2 CPU cores; thesis code: 1,140/s).

Prints mosaics per second for generation alone (labels -> keyed noisy 56x56 mosaics) and
for generation + forward pass of MnistMosaicCNN (inference mode, channels-last), for
several batch sizes, on ``--n`` database instances. The weights are random: speed does
not depend on them.

    python benchmarks/encode.py [--n 20000] [--batch-sizes 64 128 256 512 1024]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from equihash.data.keyed import KeyedRandom
from equihash.data.mosaic import MnistMosaic
from equihash.encode import Encoder
from equihash.nn import MnistMosaicCNN
from equihash.train.loop import save_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bank = np.random.default_rng(0).integers(0, 256, size=(1000, 28, 28), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, len(bank), size=(args.n, 4), dtype=np.uint32)
    ids = np.arange(args.n)
    rng = KeyedRandom(0, "test", "database")
    mosaic = MnistMosaic(bank)

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.pt"
        torch.manual_seed(0)
        save_model(MnistMosaicCNN(64).eval(), {"task": "MnistMosaic", "nbits": 64, "noise_sigma": 0.2}, model)
        print(f"{args.n} MnistMosaic instances, MnistMosaicCNN k=64, {args.threads} threads")
        print("| batch size | generation (mosaics/s) | generation + forward (mosaics/s) |")
        print("|---:|---:|---:|")
        for bs in args.batch_sizes:
            start = time.perf_counter()
            for lo in range(0, args.n, bs):
                mosaic.noisy(labels[lo:lo + bs], rng, ids[lo:lo + bs])
            generation = args.n / (time.perf_counter() - start)
            encoder = Encoder(model, bank, batch_size=bs)
            encoder.logits(labels[:bs], rng, ids[:bs])  # warm-up
            start = time.perf_counter()
            encoder.logits(labels, rng, ids)
            encoding = args.n / (time.perf_counter() - start)
            print(f"| {bs} | {generation:,.0f} | {encoding:,.0f} |")


if __name__ == "__main__":
    main()
