"""Malformed inputs through the real entry points: the ``equihash`` command (main()) or a
Snakemake dry-run of the workflow. Each case exits non-zero with a message naming the
file or config key and what was expected, and leaves no output behind (no file, no
temporary, no partial state). One case per input; the artifacts they corrupt come from
one valid tiny chain built by the CLI.
"""

from __future__ import annotations

import ast
import json
import pathlib
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from equihash.cli import main
from equihash.io import codes_array, fingerprint_schema, labels_array, write_table
from equihash.tasks import build_network
from equihash.train.loop import save_model

REPO = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((REPO / "tests" / "tiny.yaml").read_text())
NBITS = 16


class Planted:
    """Unpickling it creates ``marker``: a load that runs pickled code would leave the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


pytestmark = pytest.mark.usefixtures("restore_process_state")


def cli(*argv) -> int:
    """``equihash ARGV``: the exit status, 2 for bad input whether argparse or the library refused it."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exit_:
        return exit_.code


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    """A valid tiny chain: bank, labels, 16-bit model, two shards, merged database, queries, index."""
    d = tmp_path_factory.mktemp("valid")
    torch.manual_seed(0)
    save_model(build_network("MnistMosaic", NBITS).eval(),
               {"task": "MnistMosaic", "nbits": NBITS, "noise_sigma": 0.2}, d / "model.pt")
    assert cli("prepare", d / "bank.hdf5", "--splits", "train=60,valid=20,test=20") == 0
    assert cli("labels", d / "labels", "--bank", d / "bank.hdf5", "--size", 300, "--positive-queries", 8,
               "--negative-queries", 8, "--negative-pairs", 8) == 0
    for i in range(2):
        assert cli("encode", d / "shards" / f"{i}-of-2.parquet", "--model", d / "model.pt", "--bank",
                   d / "bank.hdf5", "--labels", d / "labels" / "database.parquet", "--shard", i,
                   "--nb-shards", 2, "--threads", 1) == 0
    fingerprints = d / "fingerprints"
    assert cli("merge", fingerprints / "database.parquet", d / "shards" / "0-of-2.parquet",
               d / "shards" / "1-of-2.parquet", "--nbits", NBITS) == 0
    assert cli("encode-queries", fingerprints, "--model", d / "model.pt", "--bank", d / "bank.hdf5",
               "--labels-dir", d / "labels", "--threads", 1) == 0
    assert cli("index", d / "index", "--database", fingerprints / "database.parquet") == 0
    return d


# --------------------------------------------------------------------------- building bad inputs
def bank_file(path: Path, x=None, *, dataset="x", splits=None) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset(dataset, data=np.zeros((40, 28, 28), np.uint8) if x is None else x)
        f.attrs["splits"] = json.dumps(splits or {"train": [0, 20], "valid": [20, 30], "test": [30, 40]})
    return path


def truncated(source: Path, path: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def copy_tree(source: Path, path: Path) -> Path:
    shutil.copytree(source, path)
    return path


def encode_shard(chain, out, *, model=None, bank=None, labels=None, shard=0, nb_shards=2):
    return ["encode", out, "--model", model or chain / "model.pt", "--bank", bank or chain / "bank.hdf5",
            "--labels", labels or chain / "labels" / "database.parquet", "--shard", shard,
            "--nb-shards", nb_shards, "--threads", 1]


def evaluate(chain, out, *, index=None, fingerprints=None, labels=None):
    return ["evaluate", out / "metrics.json", "--index-dir", index or chain / "index", "--labels-dir",
            labels or chain / "labels", "--fingerprints-dir", fingerprints or chain / "fingerprints", "--lookups", "1,2"]


def train_config(path: Path) -> Path:
    """A full configuration (config/config.yaml with tests/tiny.yaml's sizes) for `equihash train`."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["tasks"]["MnistMosaic"]["models"]["ShannonHamming"].update(
        TINY["tasks"]["MnistMosaic"]["models"]["ShannonHamming"], device="cpu")
    config["tasks"]["MnistMosaic"]["bank"]["splits"] = {"train": 60, "valid": 20, "test": 20}
    path.write_text(yaml.safe_dump(config))
    return path


def fingerprints_with_nan_logits(chain, d: Path) -> Path:
    d = copy_tree(chain / "fingerprints", d)
    table = pq.read_table(d / "positive_queries.parquet")
    logits = np.stack(table["logits"].to_numpy(zero_copy_only=False)).astype(np.float32)
    logits[5, 3] = np.nan
    column = pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), logits.shape[1])
    write_table(table.set_column(table.column_names.index("logits"), "logits", column), d / "positive_queries.parquet")
    return d


def rewritten(source: Path, folder: Path, name: str, change) -> Path:
    """A copy of the artifact folder ``source`` whose ``name`` is ``change(table)``."""
    folder = copy_tree(source, folder)
    write_table(change(pq.read_table(folder / name)), folder / name)
    return folder


def with_ids(table: pa.Table, ids) -> pa.Table:
    return table.set_column(table.column_names.index("id"), "id", pa.array(np.asarray(ids, dtype=np.uint64)))


def with_ground_truth_at(table: pa.Table, row: int, position: int) -> pa.Table:
    lists = table["ground_truth"].to_pylist()
    lists[row] = sorted(set(lists[row]) | {position})
    column = pa.array(lists, type=pa.list_(pa.uint64()))
    return table.set_column(table.column_names.index("ground_truth"), "ground_truth", column)


def half_database_index(chain, d: Path) -> Path:
    """The index of the first half of the chain's database: another database's index."""
    table = pq.read_table(chain / "fingerprints" / "database.parquet")
    write_table(table.slice(0, 150), d / "half.parquet")
    assert cli("index", d / "half-index", "--database", d / "half.parquet") == 0
    return d / "half-index"


def flipped_index(chain, d: Path) -> Path:
    index = copy_tree(chain / "index", d)
    data = bytearray((index / "positions.bin").read_bytes())
    data[len(data) // 2] ^= 0x04
    (index / "positions.bin").write_bytes(bytes(data))
    return index


def wide_index(d: Path) -> Path:
    """An index of 64-bit fingerprints (another model's)."""
    n = 300
    codes = np.random.default_rng(0).integers(0, 256, size=(n, 8), dtype=np.uint8)
    write_table(pa.table([pa.array(np.arange(n, dtype=np.uint64)), codes_array(codes)], schema=fingerprint_schema(8)),
                d / "wide.parquet")
    assert cli("index", d / "wide-index", "--database", d / "wide.parquet") == 0
    return d / "wide-index"


def shard_with_signed_ids(chain, path: Path) -> Path:
    table = pq.read_table(chain / "shards" / "1-of-2.parquet")
    pq.write_table(table.set_column(0, "id", table["id"].cast(pa.int64())), path)
    return path


def labels_file(path: Path, labels: np.ndarray, column="labels") -> Path:
    write_table(pa.table({column: labels_array(labels)}), path)
    return path


def checkpoint_dir(out: Path, content) -> Path:
    (out / "checkpoints").mkdir(parents=True)
    if isinstance(content, bytes):
        (out / "checkpoints" / "last.pt").write_bytes(content)
    else:
        torch.save(content, out / "checkpoints" / "last.pt")
    return out


# Each case: (chain, tmp, out) -> (argv, the texts the error must contain). ``out`` is where
# the command writes; after the failure it must hold nothing but what the case put there.
CLI_CASES = {
    "bank: truncated HDF5": lambda c, t, o: (
        ["labels", o, "--bank", truncated(c / "bank.hdf5", t / "cut.hdf5")], ["cut.hdf5", "HDF5"]),
    "bank: wrong dataset name": lambda c, t, o: (
        encode_shard(c, o / "s.parquet", bank=bank_file(t / "images.hdf5", dataset="images")),
        ["images.hdf5", "missing dataset 'x'"]),
    "bank: wrong dtype": lambda c, t, o: (
        encode_shard(c, o / "s.parquet", bank=bank_file(t / "float.hdf5", np.zeros((40, 28, 28), np.float32))),
        ["float.hdf5", "expected uint8"]),
    "bank: wrong image shape": lambda c, t, o: (
        encode_shard(c, o / "s.parquet", bank=bank_file(t / "wide.hdf5", np.zeros((40, 28, 27), np.uint8))),
        ["wide.hdf5", "expected (n, 28, 28)"]),
    "bank: empty split": lambda c, t, o: (
        ["labels", o, "--bank", bank_file(t / "empty.hdf5", splits={"train": [0, 20], "valid": [20, 40],
                                                                     "test": [40, 40]})],
        ["empty.hdf5", "split 'test' [40, 40) is empty"]),
    "labels: image ids beyond the bank split": lambda c, t, o: (
        encode_shard(c, o / "s.parquet", labels=labels_file(t / "big.parquet", np.full((300, 4), 20, np.uint32))),
        ["big.parquet", "column 'labels' row 0 holds image id 20", "expected ids below 20"]),
    "labels: truncated Parquet": lambda c, t, o: (
        encode_shard(c, o / "s.parquet", labels=truncated(c / "labels" / "database.parquet", t / "cut.parquet")),
        ["cut.parquet", "not a readable Parquet file"]),
    "labels: wrong column name": lambda c, t, o: (
        encode_shard(c, o / "s.parquet", labels=labels_file(t / "named.parquet", np.zeros((9, 4), np.uint32), "label")),
        ["named.parquet", "missing column 'labels'", "expected fixed_size_list<item: uint32>[4]"]),
    "labels: 3 cells for a 4-cell mosaic": lambda c, t, o: (
        encode_shard(c, o / "s.parquet", labels=labels_file(t / "three.parquet", np.zeros((9, 3), np.uint32))),
        ["three.parquet", "column 'labels' has type fixed_size_list<element: uint32>[3], expected", "uint32>[4]"]),
    "shard: wrong schema (signed ids)": lambda c, t, o: (
        ["merge", o / "db.parquet", c / "shards" / "0-of-2.parquet", shard_with_signed_ids(c, t / "1-of-2.parquet"),
         "--nbits", NBITS], ["1-of-2.parquet", "column 'id' has type int64, expected uint64"]),
    "shard: gap in ids": lambda c, t, o: (
        ["merge", o / "db.parquet", c / "shards" / "1-of-2.parquet", c / "shards" / "0-of-2.parquet",
         "--nbits", NBITS], ["1-of-2.parquet", "ids must continue the contiguous range at 0"]),
    "merge: nbits of another model": lambda c, t, o: (
        ["merge", o / "db.parquet", c / "shards" / "0-of-2.parquet", c / "shards" / "1-of-2.parquet", "--nbits", 64],
        ["0-of-2.parquet", "column 'code' has type fixed_size_binary[2], expected fixed_size_binary[8]"]),
    "evaluate: index of 64-bit codes, 16-bit fingerprints": lambda c, t, o: (
        evaluate(c, o, index=wide_index(t)),
        ["database.parquet", "fixed_size_binary[2], expected fixed_size_binary[8]"]),
    "evaluate: NaN logits in a query file": lambda c, t, o: (
        evaluate(c, o, fingerprints=fingerprints_with_nan_logits(c, t / "fp")),
        ["positive_queries.parquet", "column 'logits' row 5 holds NaN", "expected finite values"]),
    "evaluate: one byte of an index array changed": lambda c, t, o: (
        evaluate(c, o, index=flipped_index(c, t / "index")),
        ["index/positions.bin", "damaged index array 'positions'", "CRC-32", "header.json records"]),
    "evaluate: index of another database": lambda c, t, o: (
        evaluate(c, o, index=half_database_index(c, t)),
        ["fingerprints/database.parquet", "300 fingerprint rows", "half-index/header.json", "150 database positions"]),
    "evaluate: labels of another database": lambda c, t, o: (
        evaluate(c, o, labels=rewritten(c / "labels", t / "labels", "database.parquet", lambda x: x.slice(0, 299))),
        ["labels/database.parquet", "299 label rows", "fingerprints/database.parquet", "300 fingerprint rows"]),
    "evaluate: ground truth beyond the database": lambda c, t, o: (
        evaluate(c, o, labels=rewritten(c / "labels", t / "labels", "positive_queries.parquet",
                                        lambda x: with_ground_truth_at(x, 3, 300))),
        ["labels/positive_queries.parquet", "row 3 holds position 300", "expected positions below 300",
         "fingerprints/database.parquet"]),
    "evaluate: positive query ids permuted": lambda c, t, o: (
        evaluate(c, o, fingerprints=rewritten(c / "fingerprints", t / "fp", "positive_queries.parquet",
                                              lambda x: with_ids(x, np.roll(np.arange(8), 1)))),
        ["fp/positive_queries.parquet", "column 'id' must be 0..7 in order", "labels/positive_queries.parquet",
         "row 0 holds id 7"]),
    "evaluate: negative query ids repeated": lambda c, t, o: (
        evaluate(c, o, fingerprints=rewritten(c / "fingerprints", t / "fp", "negative_queries.parquet",
                                              lambda x: with_ids(x, [0, 1, 2, 3, 3, 5, 6, 7]))),
        ["fp/negative_queries.parquet", "labels/negative_queries.parquet", "row 4 holds id 3"]),
    "evaluate: queries of other labels": lambda c, t, o: (
        evaluate(c, o, labels=rewritten(c / "labels", t / "labels", "negative_queries.parquet",
                                        lambda x: x.slice(0, 6))),
        ["fingerprints/negative_queries.parquet", "8 queries", "labels/negative_queries.parquet", "6 label rows"]),
    "evaluate: truncated index array": lambda c, t, o: (
        evaluate(c, o, index=truncate_index(copy_tree(c / "index", t / "index"))), ["index/keys.", "expected"]),
    "train: corrupted checkpoint": lambda c, t, o: (
        ["train", checkpoint_dir(o, b"PK\x03\x04 torn"), "--bank", c / "bank.hdf5", "--config",
         train_config(t / "config.yaml")], ["last.pt", "corrupted checkpoint"]),
    "train: checkpoint with a pickled object": lambda c, t, o: (
        ["train", checkpoint_dir(o, {"format": 1, "step": Planted(t / "ran")}), "--bank", c / "bank.hdf5",
         "--config", train_config(t / "config.yaml")], ["last.pt", "corrupted checkpoint", "Unsupported global"]),
    "model: corrupted file": lambda c, t, o: (
        encode_shard(c, o / "s.parquet", model=truncated(c / "model.pt", t / "model.pt")),
        ["model.pt", "not a valid equihash model file"]),
    "model: file with a pickled object": lambda c, t, o: (
        encode_shard(c, o / "s.parquet", model=planted_model(t)), ["model.pt", "not a valid equihash model file",
                                                                   "Unsupported global"]),
    "shard index out of range": lambda c, t, o: (
        encode_shard(c, o / "s.parquet", shard=2), ["shard index 2 out of range for nb_shards = 2"]),
    "zero shards": lambda c, t, o: (
        encode_shard(c, o / "s.parquet", nb_shards=0), ["shard index 0 out of range for nb_shards = 0"]),
    "negative database size": lambda c, t, o: (
        ["labels", o, "--bank", c / "bank.hdf5", "--size", -5], ["--size", "-5"]),
    "k not a multiple of 8": lambda c, t, o: (
        ["merge", o / "db.parquet", c / "shards" / "0-of-2.parquet", "--nbits", 12], ["--nbits", "12"]),
    "OpenImages bank: no dataset 'images'": lambda c, t, o: (
        ["labels", o, "--task", "OpenImagesMosaic", "--bank", openimages_bank(t / "oi", dataset="x")],
        ["train.hdf5", "no dataset 'images'", "datasets found: ['x']"]),
    "OpenImages bank: wrong dtype": lambda c, t, o: (
        ["labels", o, "--task", "OpenImagesMosaic", "--bank", openimages_bank(t / "oi", dtype=np.float32)],
        ["train.hdf5", "dataset 'images' has dtype float32, expected uint8"]),
    "OpenImages bank: wrong shape": lambda c, t, o: (
        ["labels", o, "--task", "OpenImagesMosaic", "--bank", openimages_bank(t / "oi", shape=(180, 170, 3))],
        ["train.hdf5", "has shape (6, 180, 170, 3), expected (n, 180, 180, 3)"]),
    "photo folder without a readable image": lambda c, t, o: (
        ["prepare", o / "bank", "--task", "OpenImagesMosaic", "--source", "photos", "--path", junk_photos(t)],
        ["photos", "none of the 2 .jpg/.jpeg/.png files is a readable image"]),
    "Perlin file of the wrong shape": lambda c, t, o: (
        ["train", o, "--task", "OpenImagesMosaic", "--bank", openimages_bank(t / "oi"), "--perlin",
         perlin_file(t / "perlin.hdf5", (4, 180, 180)), "--config", train_config(t / "config.yaml")],
        ["perlin.hdf5", "dataset 'resolution1' has shape (4, 180, 180), expected (n, 180, 270)"]),
}


def openimages_bank(folder: Path, *, dataset="images", dtype=np.uint8, shape=(180, 180, 3)) -> Path:
    folder.mkdir()
    for split in ("train", "valid", "test"):
        with h5py.File(folder / f"{split}.hdf5", "w") as f:
            f.create_dataset(dataset, data=np.zeros((6, *shape), dtype))
    return folder


def junk_photos(tmp: Path) -> Path:
    (tmp / "photos").mkdir()
    (tmp / "photos" / "a.jpg").write_bytes(b"not a jpeg")
    (tmp / "photos" / "b.png").write_bytes(b"")
    return tmp / "photos"


def perlin_file(path: Path, shape) -> Path:
    with h5py.File(path, "w") as f:
        for name in ("resolution1", "resolution2"):
            f.create_dataset(name, data=np.zeros(shape, np.int8))
    return path


def truncate_index(index: Path) -> Path:
    keys = next(p for p in sorted(index.iterdir()) if p.stem == "keys")
    truncated(keys, keys)
    return index


def planted_model(tmp: Path) -> Path:
    torch.save({"format": 1, "state_dict": {}, "config": Planted(tmp / "ran")}, tmp / "model.pt")
    return tmp / "model.pt"


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_malformed_input_is_named_and_leaves_nothing(chain, tmp_path, capsys, case):
    out = tmp_path / "out"
    argv, expected = CLI_CASES[case](chain, tmp_path, out)
    placed = sorted(p for p in out.rglob("*")) if out.exists() else []
    capsys.readouterr()
    assert cli(*argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, (text, err)
    left = sorted(p for p in out.rglob("*")) if out.exists() else []
    assert left == placed  # no output, no temporary, no partial state
    assert not (tmp_path / "ran").exists()  # no pickled code ran
    print(f"\n{case}: {err.strip()}")


# --------------------------------------------------------------------------- configurations (Snakemake)
CONFIG_CASES = {
    "config: unknown key": ({"tasks": {"MnistMosaic": {"bogus": 1}}}, ["bogus", "Additional properties"]),
    "config: wrong type": ({"tasks": {"MnistMosaic": {"models": {"ShannonHamming": {"steps": "many"}}}}},
                           ["steps", "'many' is not of type 'integer'"]),
    "config: zero shards": ({"encode": {"nb_shards": 0}}, ["nb_shards", "0 is less than the minimum of 1"]),
    "config: empty split": ({"tasks": {"MnistMosaic": {"bank": {"splits": {"train": 300, "valid": 0, "test": 100}}}}},
                            ["valid", "0 is less than the minimum of 1"]),
    "config: k not a multiple of 8": ({"tasks": {"MnistMosaic": {"nbits": 12}}}, ["nbits", "multiple of 8"]),
}


def merged(base: dict, change: dict) -> dict:
    out = dict(base)
    for key, value in change.items():
        out[key] = merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_malformed_configuration_fails_the_dry_run_naming_the_key(tmp_path, case):
    change, expected = CONFIG_CASES[case]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(merged(TINY, change)))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-s", str(REPO / "Snakefile"), "--directory",
                             str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "1"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    for text in expected:
        assert text in result.stdout + result.stderr, text
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------- untrusted files
def test_no_unsafe_deserialisation_in_the_code():
    """Checkpoints and models load with torch.load(weights_only=True); nothing unpickles user data."""
    sources = [p for folder in ("equihash", "workflow", "benchmarks") for p in (REPO / folder).rglob("*")
               if p.suffix in (".py", ".pyx", ".smk")] + [REPO / "Snakefile"]
    loads = 0
    for path in sources:
        text = path.read_text()
        for forbidden in ("import pickle", "pickle.load", "cloudpickle", "dill", "joblib", "read_pickle",
                          "allow_pickle=True", "yaml.load(", "yaml.unsafe_load", "shelve"):
            assert forbidden not in text, (path, forbidden)
        if path.suffix != ".py":
            assert "torch.load" not in text, path
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                loads += 1
                weights_only = {k.arg: k.value for k in node.keywords}.get("weights_only")
                assert isinstance(weights_only, ast.Constant) and weights_only.value is True, (path, node.lineno)
    assert loads >= 2  # the checkpoint and the model file
