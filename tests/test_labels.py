"""Tests of the labels stage (docs/method.md section 4): brute force against the streaming path."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from equihash.data import labels as L
from equihash.data.keyed import KeyedRandom
from equihash.io import InputError


def run(tmp_path, **overrides):
    args = dict(bank_size=6, m=3, n_database=200, n_positive=150, n_negative=120, n_pairs=90,
                seed=5, split="test")
    args.update(overrides)
    counts = L.write_labels(tmp_path, **args)
    tables = {name: pq.read_table(tmp_path / f"{name}.parquet") for name in L.LABEL_FILES}
    return args, counts, tables


def as_labels(column) -> np.ndarray:
    column = column.combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), column.type.list_size)


def positions_by_label(database: np.ndarray) -> dict[tuple, list[int]]:
    index = defaultdict(list)
    for position, label in enumerate(map(tuple, database.tolist())):
        index[label].append(position)
    return index


def replay_positive(args, database, n):
    """The positive-query semantics, one draw at a time: (labels, number of draws)."""
    index = positions_by_label(database)
    random = KeyedRandom(args["seed"], args["split"], "positive_queries")
    kept, draws, batch = [], 0, 0
    while len(kept) < n:
        for position in random.at(batch).integers(0, len(database), size=L.DRAW_BATCH, dtype=np.uint64):
            draws += 1
            label = tuple(database[position].tolist())
            if index[label][0] == position:
                kept.append(label)
                if len(kept) == n:
                    return kept, draws
        batch += 1
    return kept, draws


def replay_negative(args, database, n):
    present = set(map(tuple, database.tolist()))
    random = KeyedRandom(args["seed"], args["split"], "negative_queries")
    kept, draws, batch = [], 0, 0
    while len(kept) < n:
        ids = random.at(batch).integers(0, args["bank_size"], size=(L.DRAW_BATCH, args["m"]), dtype=np.uint32)
        for label in map(tuple, ids.tolist()):
            draws += 1
            if label not in present:
                kept.append(label)
                if len(kept) == n:
                    return kept, draws
        batch += 1
    return kept, draws


# --------------------------------------------------------------------------- label keys
def test_label_keys_are_mixed_radix():
    labels = np.array([[1, 2, 3], [9, 9, 9], [0, 0, 0]], dtype=np.uint32)
    keys = L.encode_labels(labels, 10)
    assert keys.dtype == np.uint64
    assert keys.tolist() == [123, 999, 0]
    assert L.encode_labels(np.array([[1, 0, 1]]), 2).tolist() == [5]
    np.testing.assert_array_equal(L.decode_labels(keys, 10, 3), labels)
    big = np.array([[2**16 - 1] * 3, [1, 0, 0]], dtype=np.uint32)  # B**m = 2**48
    np.testing.assert_array_equal(L.decode_labels(L.encode_labels(big, 2**16), 2**16, 3), big)
    assert L.encode_labels(big, 2**16).tolist() == [2**48 - 1, 2**32]


# --------------------------------------------------------------------------- database
def test_schemas_match_the_artifact_contract(tmp_path):
    args, counts, tables = run(tmp_path)
    m = args["m"]
    labels = pa.list_(pa.uint32(), m)
    assert tables["database"].schema.equals(pa.schema([("labels", labels)]))
    assert tables["positive_queries"].schema.equals(
        pa.schema([("labels", labels), ("ground_truth", pa.list_(pa.uint64()))]))
    assert tables["negative_queries"].schema.equals(pa.schema([("labels", labels)]))
    assert tables["negative_pairs"].schema.equals(pa.schema([("anchor", labels), ("negative", labels)]))
    assert [tables[name].num_rows for name in L.LABEL_FILES] == [200, 150, 120, 90]
    assert counts["database"] == 200 and counts["negative_pairs"] == 90
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.parquet" for n in L.LABEL_FILES)


def test_database_labels_random_access(tmp_path):
    args, _, tables = run(tmp_path, n_database=3000, n_positive=10, n_negative=0, n_pairs=0, bank_size=7)
    key = (7, 3, 5, "test")
    database = as_labels(tables["database"]["labels"])
    np.testing.assert_array_equal(database, L.database_labels(*key, 0, 3000))
    pieces = [L.database_labels(*key, lo, hi) for lo, hi in [(0, 1), (1, 999), (999, 2500), (2500, 3000)]]
    np.testing.assert_array_equal(np.concatenate(pieces), database)
    assert L.database_labels(*key, 17, 17).shape == (0, 3)
    # A label depends on its position only, not on the database size or the slice bounds,
    # also across a chunk boundary.
    edge = L.CHUNK_ROWS
    across = L.database_labels(*key, edge - 4, edge + 4)
    np.testing.assert_array_equal(across[:4], L.database_labels(*key, edge - 4, edge))
    np.testing.assert_array_equal(across[4:], L.database_labels(*key, edge, edge + 4))
    assert not np.array_equal(across[:4], across[4:])
    # Other seeds, splits and m give other databases.
    assert not np.array_equal(L.database_labels(7, 3, 6, "test", 0, 50), database[:50])
    assert not np.array_equal(L.database_labels(7, 3, 5, "valid", 0, 50), database[:50])


def test_database_is_uniform_over_tuples():
    database = L.database_labels(3, 2, 0, "test", 0, 9000)
    assert database.dtype == np.uint32 and database.max() == 2
    counts = np.bincount(L.encode_labels(database, 3).astype(np.int64), minlength=9)
    assert len(counts) == 9 and counts.min() > 850 and counts.max() < 1150  # 1000 +- 5 sigma


# --------------------------------------------------------------------------- queries vs brute force
@pytest.mark.parametrize(
    "sizes",
    [
        dict(bank_size=6, m=3, n_database=200, n_positive=150, n_negative=120),  # 216 tuples
        dict(bank_size=2, m=2, n_database=500, n_positive=60, n_negative=0),  # duplicates everywhere
        dict(bank_size=50, m=2, n_database=2000, n_positive=300, n_negative=200),  # mostly unique
    ],
)
def test_queries_match_brute_force(tmp_path, sizes):
    args, counts, tables = run(tmp_path, **sizes)
    database = as_labels(tables["database"]["labels"])
    index = positions_by_label(database)

    queries = as_labels(tables["positive_queries"]["labels"])
    truth = tables["positive_queries"]["ground_truth"].to_pylist()
    assert queries.dtype == np.uint32 and queries.max() < args["bank_size"]
    for label, positions in zip(map(tuple, queries.tolist()), truth):
        assert positions == index[label]  # every position with the label, sorted
    assert counts["ground_truth_positions"] == sum(map(len, truth))
    # Same labels, in the same order, as the draw-one-position-at-a-time semantics.
    expected, draws = replay_positive(args, database, args["n_positive"])
    assert list(map(tuple, queries.tolist())) == expected
    assert counts["positive_draws"] == draws

    negatives = as_labels(tables["negative_queries"]["labels"])
    assert not set(map(tuple, negatives.tolist())) & set(index)
    expected, draws = replay_negative(args, database, args["n_negative"])
    assert list(map(tuple, negatives.tolist())) == expected
    assert counts["negative_draws"] == draws


def test_tiny_bank_duplicates(tmp_path):
    args, counts, tables = run(tmp_path, bank_size=2, m=2, n_database=40, n_positive=400,
                               n_negative=0, n_pairs=300)
    database = as_labels(tables["database"]["labels"])
    index = positions_by_label(database)
    assert len(index) == 4
    queries = list(map(tuple, as_labels(tables["positive_queries"]["labels"]).tolist()))
    # With replacement: all 4 labels are queried, each many times, always with its full truth.
    assert sorted(set(queries)) == sorted(index)
    truth = tables["positive_queries"]["ground_truth"].to_pylist()
    assert all(t == index[q] for q, t in zip(queries, truth))
    assert sum(map(len, truth)) == counts["ground_truth_positions"]
    anchors = as_labels(tables["negative_pairs"]["anchor"])
    negatives = as_labels(tables["negative_pairs"]["negative"])
    assert (anchors != negatives).any(axis=1).all()
    assert anchors.max() <= 1 and negatives.max() <= 1


def test_single_label_bank_known_answer(tmp_path):
    _, counts, tables = run(tmp_path, bank_size=1, m=3, n_database=10, n_positive=3, n_negative=0, n_pairs=0)
    assert tables["database"]["labels"].to_pylist() == [[0, 0, 0]] * 10
    assert tables["positive_queries"].to_pydict() == {
        "labels": [[0, 0, 0]] * 3, "ground_truth": [list(range(10))] * 3}
    assert counts["ground_truth_positions"] == 30
    # Only a draw of position 0 is the first occurrence of the label.
    random = KeyedRandom(5, "test", "positive_queries")
    draws = random.at(0).integers(0, 10, size=L.DRAW_BATCH, dtype=np.uint64)
    assert counts["positive_draws"] == np.flatnonzero(draws == 0)[2] + 1


def test_negative_pairs(tmp_path):
    args, _, tables = run(tmp_path, bank_size=5, m=2, n_pairs=5000, n_positive=0, n_negative=0)
    anchors = as_labels(tables["negative_pairs"]["anchor"])
    negatives = as_labels(tables["negative_pairs"]["negative"])
    assert anchors.shape == negatives.shape == (5000, 2)
    assert (anchors != negatives).any(axis=1).all()
    assert anchors.max() == negatives.max() == 4
    # The pairs are the first distinct pairs of the keyed stream, in order.
    ids = KeyedRandom(5, "test", "negative_pairs").at(0).integers(0, 5, size=(2, L.DRAW_BATCH, 2), dtype=np.uint32)
    keep = (ids[0] != ids[1]).any(axis=1)
    np.testing.assert_array_equal(anchors, ids[0][keep][:5000])
    np.testing.assert_array_equal(negatives, ids[1][keep][:5000])
    # Pairs do not depend on the database.
    _, _, other = run(tmp_path / "other", bank_size=5, m=2, n_pairs=5000, n_positive=0, n_negative=0,
                      n_database=7)
    assert other["negative_pairs"].equals(tables["negative_pairs"])


# --------------------------------------------------------------------------- determinism
def file_bytes(directory):
    return {name: (directory / f"{name}.parquet").read_bytes() for name in L.LABEL_FILES}


def test_rerun_is_byte_identical(tmp_path):
    run(tmp_path / "a")
    run(tmp_path / "b")
    run(tmp_path / "a")  # overwriting existing files
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    run(tmp_path / "c", seed=6)
    assert file_bytes(tmp_path / "c") != file_bytes(tmp_path / "a")


def test_too_few_candidates_rescan_gives_the_same_files(tmp_path, monkeypatch):
    sizes = dict(bank_size=60, m=3, n_database=80000, n_positive=58000, n_negative=50000, n_pairs=10)
    stages = []
    run(tmp_path / "planned", progress=lambda stage, done, total: stages.append(stage), **sizes)
    assert "database rescan" not in stages
    # Pretend every draw is accepted: the first candidates fall short and the stage must
    # draw more and scan the database again, reaching exactly the same result.
    monkeypatch.setattr(L, "_expected_rates", lambda n, tuples: (1.0, 1.0))
    stages.clear()
    run(tmp_path / "rescanned", progress=lambda stage, done, total: stages.append(stage), **sizes)
    assert stages.count("database") == 1 and "database rescan" in stages
    assert file_bytes(tmp_path / "planned") == file_bytes(tmp_path / "rescanned")


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "overrides, argument",
    [
        (dict(bank_size=0), "bank_size"),
        (dict(bank_size=2.5), "bank_size"),
        (dict(m=0), "m"),
        (dict(m=True), "m"),
        (dict(n_database=-1), "n_database"),
        (dict(n_positive=-2), "n_positive"),
        (dict(n_negative=-1), "n_negative"),
        (dict(n_pairs=-1), "n_pairs"),
        (dict(seed=-1), "seed"),
        (dict(split=""), "split"),
        (dict(bank_size=2**16, m=4), "bank_size"),  # 2**64 labels: keys overflow uint64
        (dict(bank_size=3, m=2, n_database=9, n_negative=1), "n_negative"),  # no label can be absent
        (dict(n_database=0, n_positive=1, n_negative=0), "n_positive"),
        (dict(bank_size=1, n_pairs=1, n_negative=0), "n_pairs"),
        (dict(bank_size=2, m=2, n_database=10**6, n_positive=10**6, n_negative=0), "n_positive"),
    ],
)
def test_bad_arguments_raise_and_write_nothing(tmp_path, overrides, argument):
    out = tmp_path / "labels"
    with pytest.raises(InputError, match=f"'{argument}'"):
        run(out, **overrides)
    assert not out.exists() or not any(out.iterdir())


def test_database_labels_bad_arguments():
    with pytest.raises(InputError, match="'stop'"):
        L.database_labels(10, 2, 0, "test", 5, 4)
    with pytest.raises(InputError, match="'start'"):
        L.database_labels(10, 2, 0, "test", -1, 4)
    with pytest.raises(InputError, match="'m'"):
        L.database_labels(10, 0, 0, "test", 0, 4)


def test_failure_leaves_no_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(L, "_negative_pairs", broken)  # after the database is written
    with pytest.raises(RuntimeError, match="disk full"):
        run(tmp_path)
    assert list(tmp_path.iterdir()) == []
