"""Partitioned index by key prefix (docs/scale.md): 4 partitions answer as the single index."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from equihash.index import (PartitionedIndex, build_index, build_partitioned_index, build_partitioned_index_from_parquet,
                            code_keys, read_index, write_index)
from equihash.io import InputError

from test_index import query_codes, random_database
from test_index_parquet import write_database


def probe_logits(rng, database, q):
    """Logits whose sign codes are one low-|z| flip away from database codes, and noise."""
    k = 8 * database.shape[1]
    signs = np.unpackbits(database[rng.integers(0, len(database), q)], axis=1) * 2.0 - 1.0
    logits = (signs * (0.5 + np.abs(rng.standard_normal((q, k))))).astype(np.float32)
    weak = rng.integers(0, k, q)
    logits[np.arange(q), weak] *= -0.05
    logits[q // 2:] = rng.standard_normal((q - q // 2, k))
    return logits


@pytest.mark.parametrize("nbytes", [2, 8, 16])
def test_four_partitions_built_from_parquet_answer_as_the_single_index(tmp_path, nbytes):
    rng = np.random.default_rng(100 + nbytes)
    database = random_database(rng, 6000, nbytes)
    path = write_database(tmp_path / "database.parquet", database, row_group_size=1100)
    single = build_index(database)
    partitioned = build_partitioned_index_from_parquet(path, tmp_path / "partitioned", prefix_bits=2,
                                                 memory_budget=40_000, batch_rows=1300)
    assert len(partitioned.partitions) == 4 and partitioned.prefix_bits == 2
    # the partitions split the positions by key prefix: disjoint, complete, balanced
    keys = code_keys(database)
    for v, part in enumerate(partitioned.partitions):
        assert np.array_equal(np.sort(part.positions), np.flatnonzero((keys >> np.uint64(62)) == v))
        assert abs(part.size - 1500) < 300  # 6000 / 4, binomial spread ~ 34 on distinct codes x repeats
    assert partitioned.size == 6000 and partitioned.n_unique == single.n_unique
    assert partitioned.memory_usage < single.memory_usage + 4 * 64  # four small directories
    queries = query_codes(rng, database, nbytes, 500)
    expected, got = single.lookup(queries), partitioned.lookup(queries)
    assert np.array_equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert np.array_equal(partitioned.route(queries), (code_keys(queries) >> np.uint64(62)).astype(np.intp))
    for code in queries[::97]:
        assert partitioned.lookup_one(code).tolist() == single.lookup_one(code).tolist()
    logits = probe_logits(rng, database, 200)
    for L in (1, 6, 40):
        expected, got = single.multiprobe(logits, L), partitioned.multiprobe(logits, L)
        assert np.array_equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert partitioned.multiprobe_one(logits[3], 6).tolist() == single.multiprobe_one(logits[3], 6).tolist()
    assert expected[0][-1] > 200  # the probes do retrieve


def test_in_memory_partitions_equal_the_parquet_ones_and_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    database = random_database(rng, 2000, 8)
    from_parquet = build_partitioned_index_from_parquet(write_database(tmp_path / "db.parquet", database),
                                                  tmp_path / "a")
    in_memory = build_partitioned_index(database, prefix_bits=2)
    write_index(in_memory, tmp_path / "b")
    for name in ["partitions.json"] + [f"{v}-of-4/{f}" for v in range(4) for f in
                                       ("header.json", "keys.bin", "offsets.bin", "positions.bin", "directory.bin")]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    manifest = json.loads((tmp_path / "a" / "partitions.json").read_text())
    assert manifest == {"format": "equihash-partitioned-index", "version": 2, "prefix_bits": 2, "nbytes": 8,
                        "database_size": 2000, "partitions": ["0-of-4", "1-of-4", "2-of-4", "3-of-4"]}
    loaded = read_index(tmp_path / "b", mmap=False)
    queries = query_codes(rng, database, 8)
    for a, b in zip(from_parquet.lookup(queries, threads=1), loaded.lookup(queries, threads=3)):
        assert np.array_equal(a, b)


def test_damaged_partitioned_index_raises(tmp_path):
    database = random_database(np.random.default_rng(3), 1000, 8)
    write_index(build_partitioned_index(database, prefix_bits=2), tmp_path / "index")
    root = tmp_path / "index"
    with pytest.raises(InputError, match=r"elsewhere/header\.json: index header not found .* partitions\.json for a "
                                         r"partitioned index"):
        read_index(tmp_path / "elsewhere")
    # two partitions swapped: each is a valid index, but for another prefix
    shutil.move(root / "1-of-4", root / "swap")
    shutil.move(root / "2-of-4", root / "1-of-4")
    shutil.move(root / "swap", root / "2-of-4")
    with pytest.raises(InputError, match=r"1-of-4/header\.json: \(prefix_bits, prefix, nbytes, database_size\) = "
                                         r"\(2, 2, 8, 1000\), expected \(2, 1, 8, 1000\)"):
        read_index(root)
    shutil.rmtree(root / "3-of-4")
    with pytest.raises(InputError, match=r"3-of-4/header\.json: index header not found"):
        read_index(root)
    manifest = json.loads((root / "partitions.json").read_text())
    (root / "partitions.json").write_text(json.dumps(dict(manifest, partitions=["0-of-4"])))
    with pytest.raises(InputError, match=r"partitions\.json: field 'partitions' is \['0-of-4'\], expected"):
        read_index(root)
    one = build_index(database, prefix_bits=2, prefix=0)
    with pytest.raises(InputError, match=r"expected 2\*\*p partitions"):
        PartitionedIndex([one, one, one])
    with pytest.raises(InputError, match=r"partition 1: built for prefix 0 of 2 bits, expected prefix 1"):
        PartitionedIndex([one, one, one, one])
    with pytest.raises(InputError, match=r"expected fingerprints of 8 bytes"):
        build_partitioned_index(database).lookup(np.zeros((1, 4), dtype=np.uint8))


@pytest.mark.parametrize("name", ["keys", "offsets", "positions", "directory"])
def test_a_flipped_byte_in_a_partition_is_named(tmp_path, name):
    """Every partition keeps its own checksums: a changed byte in one partition's array
    is refused at load, naming that partition's file; unverified, a lookup never reads
    outside the partition's arrays."""
    database = random_database(np.random.default_rng(4), 1000, 8)
    write_index(build_partitioned_index(database, prefix_bits=2), tmp_path / "index")
    path = tmp_path / "index" / "2-of-4" / f"{name}.bin"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the top byte of the last entry (the key, offset, position or directory end)
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=rf"2-of-4/{name}\.bin: damaged index array '{name}': its CRC-32"):
        read_index(tmp_path / "index")
    try:
        unverified = read_index(tmp_path / "index", verify=False)
        positions = unverified.lookup(database)[1]
    except InputError as exc:  # the damage broke a range or a position
        assert f"2-of-4/{name}.bin" in str(exc)
    else:  # the damage kept every range valid: positions stay below the database size
        assert name == "keys" and int(positions.max()) < 1000
