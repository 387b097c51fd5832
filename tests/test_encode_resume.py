"""Resumable shard encoding (equihash.encode): an interrupted shard reuses its saved parts,
encodes only the rest and ends byte-identical to an uninterrupted one; a partial state of
another model, bank, labels or shard is never mixed in. Real SIGKILLs: tests/faults/."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from equihash.data.labels import write_labels
from equihash.encode import Encoder, encode_database_shard, partial_dir
from equihash.io import InputError, labels_array, read_labels, write_table
from equihash.nn.mnist import MnistMosaicCNN
from equihash.train.loop import save_model

BANK = np.random.default_rng(1).integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
N, PART = 700, 64  # 11 parts: 10 of 64 rows and one of 60


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_model(MnistMosaicCNN(16), {"task": "MnistMosaic", "nbits": 16, "noise_sigma": 0.2},
                   root / f"model{seed}.pt")
    write_labels(root / "labels", bank_size=len(BANK), m=4, n_database=N, n_positive=0, n_negative=0,
                 n_pairs=0, seed=0, split="test")
    return root


class Interrupt(Exception):
    """Stands for a kill between two parts (the real SIGKILL is in tests/faults/)."""


def encode(files, out, *, model="model0.pt", bank=BANK, labels="labels/database.parquet", seed=0,
           part_rows=PART, batch_size=256, fail_after=None):
    """Encode the single shard of the database; return the rows the network encoded.

    ``fail_after``: raise Interrupt when the network is asked for part number ``fail_after``.
    """
    encoder = Encoder(files / model, bank, batch_size=batch_size)
    encoded, forward = [], encoder.logits

    def counting(labels, *args):
        if fail_after is not None and len(encoded) == fail_after:
            raise Interrupt
        encoded.append(len(labels))
        return forward(labels, *args)

    encoder.logits = counting
    encode_database_shard(encoder, files / labels, seed=seed, split="test", shard=0, nb_shards=1,
                          out_path=out, part_rows=part_rows)
    return sum(encoded)


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def reference(files):
    """The shard encoded in one go with the default part size."""
    out = files / "reference.parquet"
    encoder = Encoder(files / "model0.pt", BANK)
    encode_database_shard(encoder, files / "labels" / "database.parquet", seed=0, split="test", shard=0,
                          nb_shards=1, out_path=out)
    return out.read_bytes()


@pytest.mark.parametrize("part_rows", [64, 128, 1 << 20])
def test_part_size_does_not_change_the_shard_bytes(files, reference, tmp_path, part_rows):
    assert encode(files, tmp_path / "s.parquet", part_rows=part_rows) == N
    assert (tmp_path / "s.parquet").read_bytes() == reference
    assert leftovers(tmp_path) == []  # the partial directory is removed once the shard is written


@pytest.mark.parametrize("done", [1, 4, 10])
def test_interrupted_shard_encodes_only_the_missing_parts(files, reference, tmp_path, done):
    out = tmp_path / "s.parquet"
    with pytest.raises(Interrupt):
        encode(files, out, fail_after=done)
    assert not out.exists()
    assert leftovers(tmp_path) == [".s.parquet.partial"]
    saved = sorted(p.name for p in partial_dir(out).iterdir())
    assert saved == [f"part-{j:06d}.npz" for j in range(done)] + ["spec.json"]
    assert encode(files, out) == N - PART * done
    assert out.read_bytes() == reference
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("change", [
    {"model": "model1.pt"},
    {"bank": BANK[::-1].copy()},
    {"seed": 5},
    {"batch_size": 128},
    {"part_rows": 128},
])
def test_partial_state_of_another_model_bank_or_shard_is_discarded(files, tmp_path, change):
    out = tmp_path / "s.parquet"
    with pytest.raises(Interrupt):
        encode(files, out, fail_after=3)
    assert encode(files, out, **change) == N  # nothing reused
    clean = tmp_path / "clean.parquet"
    encode(files, clean, **change)
    assert out.read_bytes() == clean.read_bytes()
    assert leftovers(tmp_path) == []


def test_parts_of_changed_labels_are_encoded_again(files, tmp_path):
    out = tmp_path / "s.parquet"
    changed = read_labels(files / "labels" / "database.parquet").copy()
    changed[70] = (changed[70] + 1) % len(BANK)  # row 70 lies in part 1
    write_table(pa.table({"labels": labels_array(changed)}), tmp_path / "changed.parquet")
    with pytest.raises(Interrupt):
        encode(files, out, fail_after=4)
    assert encode(files, out, labels=tmp_path / "changed.parquet") == N - 3 * PART  # parts 0, 2, 3 reused
    clean = tmp_path / "clean.parquet"
    encode(files, clean, labels=tmp_path / "changed.parquet")
    assert out.read_bytes() == clean.read_bytes()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong shape", "no spec"])
def test_damaged_partial_state_is_encoded_again(files, reference, tmp_path, damage):
    out = tmp_path / "s.parquet"
    with pytest.raises(Interrupt):
        encode(files, out, fail_after=4)
    part = partial_dir(out) / "part-000002.npz"
    if damage == "truncate":
        part.write_bytes(part.read_bytes()[:100])
    elif damage == "garbage":
        part.write_bytes(b"\x93NUMPY not really")
    elif damage == "wrong shape":
        with open(part, "wb") as f:
            np.savez(f, codes=np.zeros((PART, 3), np.uint8), labels_sha256=np.zeros(32, np.uint8))
    else:
        (partial_dir(out) / "spec.json").unlink()
    expected = N if damage == "no spec" else N - 3 * PART
    assert encode(files, out) == expected
    assert out.read_bytes() == reference


@pytest.mark.parametrize("part_rows", [0, 100, 1 << 21])
def test_part_size_must_divide_the_row_group(files, tmp_path, part_rows):
    with pytest.raises(InputError, match=f"part_rows: expected a power of two up to {1 << 20}, got {part_rows}"):
        encode(files, tmp_path / "s.parquet", part_rows=part_rows)
    assert list(tmp_path.iterdir()) == []


def test_labels_beyond_the_bank_split_are_named_and_leave_nothing(files, tmp_path):
    out = tmp_path / "s.parquet"
    with pytest.raises(Interrupt):
        encode(files, out, fail_after=2)
    labels = np.zeros((N, 4), np.uint32)
    labels[500, 2] = len(BANK)
    bad = tmp_path / "bad.parquet"
    write_table(pa.table({"labels": labels_array(labels)}), bad)
    with pytest.raises(InputError, match=r"bad.parquet: column 'labels' row 500 holds image id 30; expected ids "
                                         r"below 30"):
        encode(files, out, labels=bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]
