"""Encoding speed. MnistMosaic target: at least 10,000 mosaics/s on 2 CPU cores (thesis code: 1,140/s).

Prints mosaics per second for generation alone (labels -> keyed noisy mosaics) and for
the encoder (``Encoder.logits``: generation and the forward pass of the task's network,
inference mode, channels-last, in lanes of forward batches), for several batch sizes and
each ``--precision``, on ``--n`` database instances (the median of ``--repeats`` passes),
and the forward pass's arithmetic rate in GFLOP/s at that speed and as a share of the
machine's matmul peak in the same precision (benchmarks/flops.py). Weights, bank images
and (for a task whose noise reads the Perlin file) Perlin fields are random: speed does
not depend on them; the noise and network settings are the task's in config/config.yaml.

    python benchmarks/encode.py [--n 20000] [--batch-sizes 64 128 256 512 1024] [--precision fp32 bf16]
    python benchmarks/encode.py --task OpenImagesMosaic --n 512 --batch-sizes 64 256
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from equihash.config import default_config
from equihash.data.keyed import KeyedRandom
from equihash.encode import Encoder
from equihash.nn.precision import PRECISIONS
from equihash.tasks import build_network, get_task, make_mosaic, task_names
from equihash.train.loop import save_model
from flops import median_seconds, native_precisions, pass_flops, peak_line, peaks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=task_names(), default="MnistMosaic")
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--precision", nargs="+", default=native_precisions(), choices=PRECISIONS,
                        help="default: those this CPU runs natively (bf16 needs bfloat16 units)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per row; the median is printed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    generator = np.random.default_rng(0)
    record, block = get_task(args.task), default_config()["tasks"][args.task]
    noise = {key: block[key] for key in record.noise}
    model_config = {**noise, **({"network": block["network"]} if "network" in block else {})}
    channels = getattr(record.mosaic, "channels", 1)
    bank = generator.integers(0, 256, size=(1000, *record.mosaic.tile, *([channels] if channels > 1 else [])),
                              dtype=np.uint8)
    perlin = (tuple(generator.integers(-127, 128, size=(64, *record.mosaic.shape), dtype=np.int8) for _ in range(2))
              if record.perlin else None)
    mosaic = make_mosaic(args.task, bank, perlin=perlin, **noise)
    labels = generator.integers(0, len(bank), size=(args.n, mosaic.cells), dtype=np.uint32)
    ids = np.arange(args.n)
    rng = KeyedRandom(0, "test", "database")

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.pt"
        torch.manual_seed(0)
        net = build_network(args.task, 64, **model_config.get("network", {})).eval()
        save_model(net, {"task": args.task, "nbits": 64, **model_config}, model)
        example = torch.from_numpy(mosaic.noisy(labels[:64], rng, ids[:64]))
        flops_per_mosaic = pass_flops(net.to(memory_format=torch.channels_last), example, backward=False) / 64
        print(f"{args.n} {args.task} instances, {type(net).__name__} k=64, {args.threads} threads, "
              f"{flops_per_mosaic / 1e6:.1f} MFLOP per forward pass of one mosaic")
        peak = peaks(args.precision)
        print(peak_line(peak))
        print("| batch size | generation (mosaics/s) | precision | encoder (mosaics/s) | network GFLOP/s at that rate "
              "| share of peak |")
        print("|---:|---:|---|---:|---:|---:|")
        for bs in args.batch_sizes:
            generation = args.n / median_seconds(
                lambda: [mosaic.noisy(labels[lo:lo + bs], rng, ids[lo:lo + bs]) for lo in range(0, args.n, bs)],
                args.repeats)
            for precision in args.precision:
                encoder = Encoder(model, bank, perlin=perlin, batch_size=bs, precision=precision)
                encoder.logits(labels[:bs], rng, ids[:bs])  # warm-up
                encoding = args.n / median_seconds(lambda: encoder.logits(labels, rng, ids), args.repeats)
                rate = encoding * flops_per_mosaic / 1e9
                print(f"| {bs} | {generation:,.0f} | {precision} | {encoding:,.0f} | {rate:,.1f} "
                      f"| {rate / peak[precision]:.1%} |")


if __name__ == "__main__":
    main()
