"""Bounded-memory index build from the merged Parquet database (InvertedIndex.build_parquet)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from equihash.index import build_index, build_index_from_parquet, code_keys
from equihash.index import build as build_module
from equihash.index.format import index_header
from equihash.io import InputError, codes_array, fingerprint_schema, write_table

from test_index import assert_same_index, brute_force, query_codes, random_database


def write_database(path, codes, row_group_size=1000):
    table = pa.table([pa.array(np.arange(len(codes), dtype=np.uint64)), codes_array(codes)],
                     schema=fingerprint_schema(codes.shape[1]))
    write_table(table, path, row_group_size=row_group_size)
    return path


@pytest.mark.parametrize("nbytes", [2, 8, 16])
@pytest.mark.parametrize("budget", [1 << 30, 30_000])
def test_bounded_build_equals_the_in_memory_build(tmp_path, nbytes, budget):
    """Chunked (a 30 kB budget cuts ~4000 records into several key-range chunks) or not,
    read in batches that straddle row groups: the same arrays, byte for byte."""
    rng = np.random.default_rng(nbytes)
    database = random_database(rng, 4000, nbytes)
    path = write_database(tmp_path / "database.parquet", database, row_group_size=700)
    built = build_index_from_parquet(path, tmp_path / "index", memory_budget=budget, batch_rows=900)
    assert all(isinstance(array, np.memmap) for array in built.arrays().values())
    assert_same_index(built, build_index(database))
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == sorted(
        ["header.json", "keys.bin", "offsets.bin", "positions.bin", "directory.bin"]
        + (["fingerprints.bin"] if nbytes > 8 else []))  # no spill file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["database.parquet", "index"]
    truth = brute_force(database)
    queries = query_codes(rng, database, nbytes)
    offsets, positions = built.lookup(queries)
    for j, code in enumerate(queries):
        assert positions[offsets[j]:offsets[j + 1]].tolist() == truth.get(code.tobytes(), [])


def test_chunk_count_follows_the_budget(tmp_path):
    """28 bytes per record (uint32 positions) while a chunk is sorted: 4000 records need
    112 kB, so a 30 kB budget makes 4 chunks; a prefix partition holds a quarter."""
    def chunks(n_rows, budget, prefix_bits=0, nbytes=8):
        return build_module._SpillPlan(None, nbytes, n_rows, prefix_bits, 0, 1000, budget).n_chunks

    assert chunks(4000, 30_000) == 4 and chunks(4000, 28_000) == 4 and chunks(4000, 27_999) == 8
    assert chunks(4000, 112_000) == 1 and chunks(4000, 1 << 30) == 1 and chunks(4000, 30_000, prefix_bits=2) == 1
    assert chunks(4000, 30_000, nbytes=16) == 16  # 68 bytes: plus 2 * 16 + 8 for the codes
    assert chunks(10**12, 1) == 2**build_module.MAX_CHUNK_BITS
    # the records of one fingerprint are never split; the result is still exact
    database = np.repeat(random_database(np.random.default_rng(0), 30, 8), 100, axis=0)
    path = write_database(tmp_path / "database.parquet", database)
    built = build_index_from_parquet(path, tmp_path / "index", memory_budget=500, batch_rows=512)
    assert_same_index(built, build_index(database))


@pytest.mark.parametrize("nbytes", [8, 16])
def test_prefix_build_keeps_only_its_share(tmp_path, nbytes):
    rng = np.random.default_rng(17)
    database = random_database(rng, 3000, nbytes)
    path = write_database(tmp_path / "database.parquet", database)
    part = build_index_from_parquet(path, tmp_path / "part", prefix_bits=2, prefix=3, memory_budget=20_000)
    assert_same_index(part, build_index(database, prefix_bits=2, prefix=3))
    assert np.array_equal(np.sort(part.positions), np.flatnonzero((code_keys(database) >> np.uint64(62)) == 3))
    assert index_header(part)["database_size"] == 3000 and part.size < 3000


def test_empty_database(tmp_path):
    path = write_database(tmp_path / "database.parquet", np.zeros((0, 8), dtype=np.uint8))
    built = build_index_from_parquet(path, tmp_path / "index")
    assert built.size == 0 and built.lookup_one(bytes(8)).tolist() == []


def test_bad_database_raises_and_leaves_nothing(tmp_path):
    database = random_database(np.random.default_rng(1), 500, 8)
    table = pa.table([pa.array(np.arange(500, dtype=np.uint64)), codes_array(database)],
                     schema=fingerprint_schema(8))
    gap = table.set_column(0, "id", pa.array(np.r_[0:300, 301:501].astype(np.uint64)))
    write_table(gap, tmp_path / "gap.parquet", row_group_size=200)
    with pytest.raises(InputError, match=r"gap\.parquet: column 'id' must be the database positions 0\.\.N-1 "
                                         r"in order \(rows from 200 hold ids 200\.\.400\)"):
        build_index_from_parquet(tmp_path / "gap.parquet", tmp_path / "index", batch_rows=200)
    write_table(table.drop(["code"]), tmp_path / "nocode.parquet")
    with pytest.raises(InputError, match=r"nocode\.parquet: missing column 'code' \(expected fixed_size_binary"):
        build_index_from_parquet(tmp_path / "nocode.parquet", tmp_path / "index")
    write_table(table.set_column(1, "code", pa.array([b"x" * 8] * 500, type=pa.binary())),
                tmp_path / "varbinary.parquet")
    with pytest.raises(InputError, match=r"varbinary\.parquet: column 'code' has type binary, "
                                         r"expected fixed_size_binary\[B\]"):
        build_index_from_parquet(tmp_path / "varbinary.parquet", tmp_path / "index")
    assert not (tmp_path / "index").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gap.parquet", "nocode.parquet", "varbinary.parquet"]
