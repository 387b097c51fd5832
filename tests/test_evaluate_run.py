"""evaluate_run on hand-made fingerprint files: every metrics.json figure known in advance.

k = 8 bits (one byte). Database of 6 positions:
    position  0     1     2     3     4     5
    code      0x00  0x00  0x01  0xF0  0xF0  0xF0
    label     L1    L1    L2    L3    L3    L4
Internal collisions: code 0xF0 holds (3,4) same label, (3,5), (4,5) different -> 2.
Positive queries (ground truth from the labels file):
    q0: label L1, G = {0,1}, code 0x00 -> R = {0,1}      (perfect)
    q1: label L3, G = {3,4}, code 0xF0 -> R = {3,4,5}    (complete, not sound)
    q2: label L2, G = {2},   code 0x03 -> R = {}         (sound, not complete)
recall = (2+2+0)/(2+2+1) = 0.8; Jaccard = (1 + 2/3 + 0)/3; perfect 1/3; complete 2/3;
sound 2/3; true-positive rate 2/3.
Negative queries: n0 code 0x00 (hit), n1 code 0x0F (miss): false-positive rate 1/2.
Multi-probing with 2 lookups flips the bit of smallest |logit|:
    q0 flips bit 0 -> 0x80 (absent); q1 flips bit 4 -> 0xF8 (absent);
    q2 flips bit 6 -> 0x01 = position 2: R = {2}, perfect.
    n0 flips bit 0 -> 0x80 (absent, still a hit); n1 flips bit 3 -> 0x1F (absent).
-> recall 1.0, perfect 2/3, true-positive rate 1, false-positive rate 1/2.
"""

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import equihash
from equihash.config import config_sha256
from equihash.evaluate.run import evaluate_run, git_commit, git_dirty, run_provenance
from equihash.index import build_index, read_database_codes, write_index
from equihash.io import InputError, codes_array, labels_array, logits_array, write_table

L1, L2, L3, L4 = [0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 0, 3], [0, 0, 0, 4]


def logits_for(code: int, weak_bit: int, weak: float) -> np.ndarray:
    bits = np.unpackbits(np.array([code], dtype=np.uint8))
    z = np.where(bits == 1, 5.0, -5.0).astype(np.float32)
    z[weak_bit] = np.sign(z[weak_bit]) * weak
    return z


# query specs (code, weak bit, |z| of the weak bit), as the docstring's queries
POSITIVE = [(0x00, 0, 0.2), (0xF0, 4, 0.3), (0x03, 6, 0.1)]
NEGATIVE = [(0x00, 0, 0.2), (0x0F, 3, 0.1)]
NAMES = {"task": "MnistMosaic", "model": "ShannonHamming", "variant": "main", "database": "default"}


def query_file(path, specs, ids=None) -> None:
    logits = np.stack([logits_for(*spec) for spec in specs])
    ids = np.arange(len(specs)) if ids is None else np.array(ids)
    table = pa.table({"id": pa.array(ids.astype(np.uint64)),
                      "code": codes_array(np.packbits(logits > 0, axis=1)), "logits": logits_array(logits)})
    write_table(table, path)


def write_run(tmp_path) -> dict:
    """The files of the docstring's run; the keyword arguments of evaluate_run."""
    db_codes = np.array([[0x00], [0x00], [0x01], [0xF0], [0xF0], [0xF0]], dtype=np.uint8)
    write_table(pa.table({"labels": labels_array(np.array([L1, L1, L2, L3, L3, L4]))}), tmp_path / "db_labels.parquet")
    write_table(pa.table({"labels": labels_array(np.array([L1, L3, L2])),
                          "ground_truth": pa.array([[0, 1], [3, 4], [2]], type=pa.list_(pa.uint64()))}),
                tmp_path / "pos_labels.parquet")
    ids = pa.array(np.arange(6, dtype=np.uint64))
    write_table(pa.table({"id": ids, "code": codes_array(db_codes)}), tmp_path / "database.parquet")
    write_index(build_index(read_database_codes(tmp_path / "database.parquet")), tmp_path / "index")
    query_file(tmp_path / "pos.parquet", POSITIVE)
    query_file(tmp_path / "neg.parquet", NEGATIVE)
    # triplets: positive distances 0, 1; negative distances 8, 2
    trip = {"anchor": [[0x00], [0xF0]], "positive": [[0x00], [0xF1]], "negative": [[0xFF], [0xC0]]}
    write_table(pa.table({k: codes_array(np.array(v, dtype=np.uint8)) for k, v in trip.items()}),
                tmp_path / "trip.parquet")
    return dict(index_dir=tmp_path / "index", database_labels=tmp_path / "db_labels.parquet",
                positive_labels=tmp_path / "pos_labels.parquet", database=tmp_path / "database.parquet",
                positive_queries=tmp_path / "pos.parquet", negative_queries=tmp_path / "neg.parquet",
                triplets=tmp_path / "trip.parquet", lookups=[1, 2], names=NAMES, out_path=tmp_path / "metrics.json")


def test_known_answers(tmp_path):
    doc = evaluate_run(**write_run(tmp_path))
    assert json.loads((tmp_path / "metrics.json").read_text()) == doc
    assert list(doc)[-1] == "provenance" and doc["provenance"] == run_provenance()
    assert doc["database_size"] == 6 and doc["nbits"] == 8 and doc["internal_collisions"] == 2
    assert doc["equidict"] == pytest.approx({"recall": 0.8, "average_jaccard_index": (1 + 2 / 3) / 3,
                                             "perfect_retrieval_rate": 1 / 3, "complete_retrieval_rate": 2 / 3,
                                             "sound_retrieval_rate": 2 / 3})
    assert doc["equiset"] == pytest.approx({"true_positive_rate": 2 / 3, "false_positive_rate": 0.5})
    assert doc["multiprobe"][1] == pytest.approx({"lookups": 2, "recall": 1.0, "perfect_retrieval_rate": 2 / 3,
                                                  "true_positive_rate": 1.0, "false_positive_rate": 0.5})
    assert doc["binary"]["r_at"] == [0.5, 1.0, 1.0, 1.0] and doc["binary"]["f_at"] == [0.0, 0.0, 0.5, 0.5]
    assert doc["binary"]["positive_histogram"] == [1, 1] + [0] * 7
    assert doc["binary"]["negative_histogram"] == [0, 0, 1, 0, 0, 0, 0, 0, 1]


def another_size_index(t):
    write_index(build_index(np.zeros((5, 1), dtype=np.uint8)), t / "small-index")
    return {"index_dir": t / "small-index"}


def partition_index(t):
    codes = np.array([[0x00], [0x00], [0x01], [0xF0], [0xF0], [0xF0]], dtype=np.uint8)
    write_index(build_index(codes, prefix_bits=1, prefix=1), t / "part-index")
    return {"index_dir": t / "part-index"}


def short_database_labels(t):
    write_table(pa.table({"labels": labels_array(np.array([L1, L1, L2, L3, L3]))}), t / "short.parquet")
    return {"database_labels": t / "short.parquet"}


def ground_truth(t, lists):
    write_table(pa.table({"labels": labels_array(np.array([L1, L3, L2][:len(lists)])),
                          "ground_truth": pa.array(lists, type=pa.list_(pa.uint64()))}), t / "gt.parquet")
    return {"positive_labels": t / "gt.parquet"}


def queries(t, name, specs, ids):
    query_file(t / name, specs, ids)
    return {"positive_queries" if name.startswith("p") else "negative_queries": t / name}


def negative_labels(t, rows):
    write_table(pa.table({"labels": labels_array(np.array([L1] * rows))}), t / "neg_labels.parquet")
    return {"negative_labels": t / "neg_labels.parquet"}


# (change of the valid run) -> the two files the error must name and what it says
MISMATCHES = {
    "index of another database size": (another_size_index, ["small-index/header.json", "database.parquet",
                                                             "6 fingerprint rows", "holds 5 database positions"]),
    "index of one partition": (partition_index, ["part-index/header.json", "database.parquet",
                                                 "expected the index of the whole database"]),
    "database labels of another size": (short_database_labels, ["short.parquet", "database.parquet",
                                                                "5 label rows", "6 fingerprint rows"]),
    "ground truth at N": (lambda t: ground_truth(t, [[0, 1], [3, 6], [2]]),
                          ["gt.parquet", "database.parquet", "row 1 holds position 6", "expected positions below 6"]),
    "ground truth far beyond N": (lambda t: ground_truth(t, [[0, 1], [3, 4], [2, 2**40]]),
                                  ["gt.parquet", "database.parquet", "row 2 holds position 1099511627776"]),
    "positive query ids permuted": (lambda t: queries(t, "pos2.parquet", POSITIVE, [1, 0, 2]),
                                    ["pos2.parquet", "pos_labels.parquet", "column 'id' must be 0..2 in order",
                                     "row 0 holds id 1"]),
    "positive query ids repeated": (lambda t: queries(t, "pos2.parquet", POSITIVE, [0, 1, 1]),
                                    ["pos2.parquet", "pos_labels.parquet", "row 2 holds id 1"]),
    "fewer positive queries than labels": (lambda t: queries(t, "pos2.parquet", POSITIVE[:2], [0, 1]),
                                           ["pos2.parquet", "pos_labels.parquet", "2 queries", "3 label rows"]),
    "more label rows than queries": (lambda t: ground_truth(t, [[0, 1], [3, 4]]),
                                     ["pos.parquet", "gt.parquet", "3 queries", "2 label rows"]),
    "negative query ids repeated": (lambda t: queries(t, "neg2.parquet", NEGATIVE, [0, 0]),
                                    ["neg2.parquet", "column 'id' must be 0..1 in order", "row 1 holds id 0"]),
    "negative queries of other labels": (lambda t: negative_labels(t, 3),
                                         ["neg.parquet", "neg_labels.parquet", "2 queries", "3 label rows"]),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_files_that_do_not_belong_together_are_refused_naming_both(tmp_path, case):
    run = write_run(tmp_path)
    change, expected = MISMATCHES[case]
    (tmp_path / "other").mkdir()
    run.update(change(tmp_path / "other"))
    with pytest.raises(InputError) as error:
        evaluate_run(**run)
    for text in expected:
        assert text in str(error.value), (text, str(error.value))
    assert not (tmp_path / "metrics.json").exists()
    assert evaluate_run(**write_run(tmp_path))["database_size"] == 6  # the valid run still evaluates


def git(directory, *args) -> str:
    return subprocess.run(["git", "-C", str(directory), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_provenance_names_the_code_version_the_config_hash_and_the_shard_count(tmp_path):
    provenance = run_provenance(run_config={"b": 1, "a": [1, 2]}, nb_shards=3)
    assert list(provenance) == ["equihash_version", "git_commit", "dirty", "config_sha256", "nb_shards"]
    assert provenance["equihash_version"] == equihash.__version__
    assert provenance["config_sha256"] == hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()
    assert provenance["nb_shards"] == 3
    assert config_sha256({"a": [1, 2], "b": 1}) == provenance["config_sha256"]  # key order is irrelevant
    assert config_sha256({"a": [1, 2], "b": 2}) != provenance["config_sha256"]
    package_root = Path(equihash.__file__).resolve().parents[1]
    assert provenance["git_commit"] == git_commit(package_root)

    # a checkout's top level -> its HEAD; a folder inside it or outside any checkout -> None
    checkout = tmp_path / "checkout"
    (checkout / "sub").mkdir(parents=True)
    assert git_commit(checkout) is None
    git(checkout, "init", "-q")
    (checkout / "sub" / "f").write_text("x")
    git(checkout, "add", "sub/f")
    git(checkout, "commit", "-q", "-m", "one")
    assert git_commit(checkout) == git(checkout, "log", "-1", "--format=%H")
    assert len(git_commit(checkout)) == 40
    assert git_commit(checkout / "sub") is None
    # dirty: a changed tracked file or a new untracked one; an ignored file is not
    assert git_dirty(checkout) is False and git_dirty(tmp_path) is None
    (checkout / ".gitignore").write_text("results/\n")
    assert git_dirty(checkout) is True
    git(checkout, "add", ".gitignore")
    git(checkout, "commit", "-q", "-m", "two")
    (checkout / "results").mkdir()
    (checkout / "results" / "x").write_text("y")
    assert git_dirty(checkout) is False
    (checkout / "sub" / "f").write_text("changed")
    assert git_dirty(checkout) is True
