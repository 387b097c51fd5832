"""A run evaluated partition by partition (index.partitions) gives the whole index's metrics.json, byte for byte."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from equihash.evaluate.run import (combine_partition_files, evaluate_partition_files, evaluate_run,
                                   read_partition_counts)
from equihash.index import build_index, build_partitioned_index, write_index
from equihash.index.format import partition_names
from equihash.io import InputError, codes_array, labels_array, logits_array, write_table

NAMES = {"task": "MnistMosaic", "model": "ShannonHamming", "variant": "main", "database": "default"}
PROVENANCE = {"equihash_version": "test", "git_commit": None, "dirty": None, "config_sha256": None, "nb_shards": 1}
LOOKUPS = [1, 3, 9]


def noisy(rng, codes: np.ndarray, flip: float) -> np.ndarray:
    """``codes`` with each bit flipped with probability ``flip``."""
    bits = np.unpackbits(codes, axis=1)
    return np.packbits(bits ^ (rng.random(bits.shape) < flip), axis=1)


def query_table(rng, codes: np.ndarray) -> pa.Table:
    bits = np.unpackbits(codes, axis=1)
    logits = (np.where(bits == 1, 1.0, -1.0) * rng.uniform(0.05, 3.0, bits.shape)).astype(np.float32)
    return pa.table({"id": pa.array(np.arange(len(codes), dtype=np.uint64)), "code": codes_array(codes),
                     "logits": logits_array(logits)})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """5000 positions of 800 labels with 16-bit codes: each label has a code, each position
    a noisy copy of it, so fingerprints collide within and across labels."""
    t = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(11)
    label_codes = rng.integers(0, 256, (800, 2), dtype=np.uint8)
    label_codes[:40, 0] = 0  # crowd a corner of the code space: collisions across labels
    of = rng.integers(0, 800, 5000)
    database = noisy(rng, label_codes[of], 0.04)
    labels = np.stack([np.zeros_like(of), of], axis=1).astype(np.uint32)
    write_table(pa.table({"id": pa.array(np.arange(5000, dtype=np.uint64)), "code": codes_array(database)}),
                t / "database.parquet", row_group_size=700)
    write_table(pa.table({"labels": labels_array(labels)}), t / "db_labels.parquet", row_group_size=900)
    present = np.unique(of)[:300]
    truth = [np.flatnonzero(of == label).astype(np.uint64) for label in present]
    write_table(pa.table({"labels": labels_array(labels[[int(g[0]) for g in truth]]),
                          "ground_truth": pa.array(truth, type=pa.list_(pa.uint64()))}), t / "pos_labels.parquet")
    write_table(query_table(rng, noisy(rng, label_codes[present], 0.05)), t / "pos.parquet")
    write_table(query_table(rng, rng.integers(0, 256, (200, 2), dtype=np.uint8)), t / "neg.parquet")
    write_table(pa.table({"labels": labels_array(np.stack([np.ones(200), np.arange(200)], 1).astype(np.uint32))}),
                t / "neg_labels.parquet")
    anchors = rng.integers(0, 256, (100, 2), dtype=np.uint8)
    write_table(pa.table({"anchor": codes_array(anchors), "positive": codes_array(noisy(rng, anchors, 0.05)),
                          "negative": codes_array(rng.integers(0, 256, (100, 2), dtype=np.uint8))}), t / "trip.parquet")
    write_index(build_index(database), t / "whole")
    for bits in (2, 4):
        write_index(build_partitioned_index(database, prefix_bits=bits), t / f"p{bits}")
    return t


def files(t, index_dir, out):
    return dict(index_dir=t / index_dir, database_labels=t / "db_labels.parquet", positive_labels=t / "pos_labels.parquet",
                negative_labels=t / "neg_labels.parquet", database=t / "database.parquet",
                positive_queries=t / "pos.parquet", negative_queries=t / "neg.parquet", out_path=t / out)


def test_partitioned_indexes_give_the_whole_index_metrics_byte_for_byte(run):
    whole = evaluate_run(**files(run, "whole", "whole.json"), triplets=run / "trip.parquet", lookups=LOOKUPS,
                         names=NAMES, provenance=PROVENANCE)
    assert whole["internal_collisions"] > 0 and 0 < whole["equidict"]["recall"] < 1
    recalls = [entry["recall"] for entry in whole["multiprobe"]]
    assert recalls == sorted(recalls) and recalls[-1] > recalls[0]
    for bits in (2, 4):
        evaluate_run(**files(run, f"p{bits}", f"p{bits}.json"), triplets=run / "trip.parquet", lookups=LOOKUPS,
                     names=NAMES, provenance=PROVENANCE)
        assert (run / f"p{bits}.json").read_bytes() == (run / "whole.json").read_bytes()


def test_one_job_per_partition_then_a_combine_give_the_same_bytes(run):
    evaluate_run(**files(run, "whole", "whole.json"), triplets=run / "trip.parquet", lookups=LOOKUPS, names=NAMES,
                 provenance=PROVENANCE)
    parts = []
    for name in partition_names(2):
        kwargs = files(run, f"p2/{name}", f"counts-{name}.parquet")
        counts = evaluate_partition_files(**kwargs, lookups=LOOKUPS)
        assert counts.partitions == 4 and counts.positive_retrieved.shape == (3, 300)
        parts.append(kwargs["out_path"])
    assert sum(read_partition_counts(p).size for p in parts) == 5000
    combine_partition_files(partitions=parts[::-1], positive_labels=run / "pos_labels.parquet",
                            triplets=run / "trip.parquet", names=NAMES, out_path=run / "combined.json",
                            provenance=PROVENANCE)
    assert (run / "combined.json").read_bytes() == (run / "whole.json").read_bytes()

    def combine(paths):
        combine_partition_files(partitions=paths, positive_labels=run / "pos_labels.parquet",
                                triplets=run / "trip.parquet", names=NAMES, out_path=run / "bad.json")

    with pytest.raises(InputError, match=r"got partitions \[0, 1, 3\] of 4, expected each of 0\.\.3 once"):
        combine([parts[0], parts[1], parts[3]])
    with pytest.raises(InputError, match=r"got partitions \[0, 1, 1, 3\] of 4"):
        combine([parts[0], parts[1], parts[1], parts[3]])
    table = pq.read_table(parts[2])
    write_table(table.replace_schema_metadata({}), run / "no-metadata.parquet")
    with pytest.raises(InputError, match="no-metadata.parquet: schema metadata 'equihash' must hold the integers"):
        combine([parts[0], parts[1], run / "no-metadata.parquet", parts[3]])
    assert not (run / "bad.json").exists()


def test_a_partitioned_index_is_not_one_partition(run):
    with pytest.raises(InputError, match="a partitioned index; expected one partition of it"):
        evaluate_partition_files(**files(run, "p2", "x.parquet"), lookups=LOOKUPS)


@pytest.mark.parametrize("nbytes", [2, 8, 16])
def test_posting_collisions_equal_the_definition_at_any_budget(tmp_path, monkeypatch, nbytes):
    """The internal collisions from an index's posting lists, the labels gathered in rounds
    of a memory budget, equal sum C(g, 2) over fingerprints minus sum C(g, 2) over
    (fingerprint, label) pairs, for a whole index and for every partition of one."""
    from collections import Counter

    import equihash.evaluate.run as run_module
    from equihash.evaluate.run import MEMBER_BYTES, posting_collisions

    rng = np.random.default_rng(nbytes)
    n = 6000
    pool = rng.integers(0, 256, (700, nbytes), dtype=np.uint8)  # few distinct codes: most positions collide
    codes = pool[rng.integers(0, 700, n)]
    labels = rng.integers(0, 900, (n, 2)).astype(np.uint32)
    labels[:, 1] = labels[:, 0] % 3
    write_table(pa.table({"labels": labels_array(labels)}), tmp_path / "labels.parquet", row_group_size=500)

    def pairs(counter):
        return sum(g * (g - 1) // 2 for g in counter.values())
    rows = [bytes(code) for code in codes]
    expected = pairs(Counter(rows)) - pairs(Counter(zip(rows, map(bytes, labels))))
    assert expected > 1000

    passes = []
    gather = run_module.gather_label_rows
    monkeypatch.setattr(run_module, "gather_label_rows", lambda *a, **k: passes.append(1) or gather(*a, **k))
    whole = build_index(codes)
    assert posting_collisions(whole, tmp_path / "labels.parquet", memory_budget=1 << 30) == expected
    assert len(passes) == 1
    passes.clear()
    assert posting_collisions(whole, tmp_path / "labels.parquet", memory_budget=300 * MEMBER_BYTES) == expected
    assert len(passes) > 8  # rounds of about 300 of the ~6000 members
    for budget in (1 << 30, 100 * MEMBER_BYTES):
        parts = build_partitioned_index(codes, prefix_bits=2).partitions
        assert sum(posting_collisions(part, tmp_path / "labels.parquet", memory_budget=budget)
                   for part in parts) == expected


def test_gather_label_rows_reads_any_positions_from_several_row_groups(tmp_path):
    from equihash.io import gather_label_rows, read_labels

    labels = np.arange(3000, dtype=np.uint32).reshape(1000, 3)
    path = tmp_path / "labels.parquet"
    write_table(pa.table({"labels": labels_array(labels)}), path, row_group_size=64)
    positions = np.random.default_rng(0).integers(0, 1000, 700)  # unsorted, repeated
    assert np.array_equal(gather_label_rows(path, positions, batch_rows=10), read_labels(path)[positions])
    assert gather_label_rows(path, []).shape == (0, 3)
    with pytest.raises(InputError, match="labels.parquet: rows up to 1000 requested, the file has 1000 rows"):
        gather_label_rows(path, [5, 1000])
