"""Inverted index (THESIS.md 8): brute-force equivalence, layout invariants, persistence."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from equihash.index import InvertedIndex
from equihash.index import _core
from equihash.io import InputError, codes_array, fingerprint_schema, write_table

import pyarrow as pa

MASK64 = (1 << 64) - 1


# ----------------------------------------------------------------------------- helpers
def random_database(rng, n, nbytes):
    """N codes with many exact duplicates (~1/3 distinct) and near-misses (one bit apart)."""
    n_distinct = max(1, n // 3)
    pool = rng.integers(0, 256, size=(n_distinct, nbytes), dtype=np.uint8)
    # half of the pool are one-bit neighbours of other pool codes
    half = n_distinct // 2
    if half:
        bits = rng.integers(0, 8 * nbytes, size=half)
        pool[half:2 * half] = pool[:half]
        pool[np.arange(half, 2 * half), bits // 8] ^= (0x80 >> (bits % 8)).astype(np.uint8)
    return pool[rng.integers(0, n_distinct, size=n)]


def query_codes(rng, database, nbytes, n_queries=300):
    """Present codes, their one-bit neighbours and uniform random codes."""
    parts = [rng.integers(0, 256, size=(n_queries, nbytes), dtype=np.uint8)]
    if len(database):
        present = database[rng.integers(0, len(database), size=n_queries)]
        near = present.copy()
        bits = rng.integers(0, 8 * nbytes, size=n_queries)
        near[np.arange(n_queries), bits // 8] ^= (0x80 >> (bits % 8)).astype(np.uint8)
        parts += [present, near]
    return np.concatenate(parts)


def brute_force(database):
    table = defaultdict(list)
    for position, code in enumerate(database):
        table[code.tobytes()].append(position)
    return table


def splitmix64_hash(code: bytes) -> int:
    """Reference of the documented table hash, in Python integers."""
    def mix(x):
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) & MASK64
        x ^= x >> 27
        x = (x * 0x94D049BB133111EB) & MASK64
        return x ^ (x >> 31)

    h = 0x9E3779B97F4A7C15
    for start in range(0, len(code), 8):
        h = mix(h ^ int.from_bytes(code[start:start + 8], "little"))
    return h


# ----------------------------------------------------------------------------- lookups
@pytest.mark.parametrize("nbytes", [1, 2, 8, 16])
@pytest.mark.parametrize("n", [0, 1, 2, 500, 5000])
def test_lookup_matches_brute_force(nbytes, n):
    rng = np.random.default_rng(1000 * nbytes + n)
    database = random_database(rng, n, nbytes)
    index = InvertedIndex.build(database)
    truth = brute_force(database)
    queries = query_codes(rng, database, nbytes)
    offsets, positions = index.lookup(queries)
    assert offsets.dtype == np.int64 and offsets.shape == (len(queries) + 1,)
    assert offsets[0] == 0 and offsets[-1] == len(positions)
    for j, code in enumerate(queries):
        got = positions[offsets[j]:offsets[j + 1]].tolist()
        assert got == truth.get(code.tobytes(), [])
    assert index.size == n and len(index) == n
    assert index.n_unique == len(truth)
    assert index.nbytes == nbytes


@pytest.mark.parametrize("nbytes", [1, 2, 8, 16])
def test_layout_invariants(nbytes):
    rng = np.random.default_rng(nbytes)
    database = random_database(rng, 3000, nbytes)
    index = InvertedIndex.build(database)
    keys, offsets, positions, slots = index.keys, index.offsets, index.positions, index.slots
    assert positions.dtype == np.uint32 and slots.dtype == np.int32 and offsets.dtype == np.int64
    # keys: distinct, in increasing lexicographic byte order
    as_bytes = [key.tobytes() for key in keys]
    assert as_bytes == sorted(set(as_bytes))
    # CSR: the posting lists partition 0..N-1, increasing inside each list, codes match
    assert offsets[0] == 0 and offsets[-1] == len(database) and np.all(np.diff(offsets) > 0)
    assert np.array_equal(np.sort(positions), np.arange(len(database)))
    for u in range(len(keys)):
        group = positions[offsets[u]:offsets[u + 1]]
        assert np.all(np.diff(group.astype(np.int64)) > 0)
        assert np.all(database[group] == keys[u])
    # hash table: power of two >= 2U, each key exactly once, found along its probe chain
    capacity = len(slots)
    assert capacity & (capacity - 1) == 0 and capacity >= 2 * len(keys) > capacity // 2
    assert np.array_equal(np.sort(slots[slots >= 0]), np.arange(len(keys)))
    hashes = _core.code_hashes(keys)
    for u in range(0, len(keys), 37):
        s = int(hashes[u]) & (capacity - 1)
        while slots[s] != u:
            assert slots[s] >= 0, "empty slot before the key on its probe chain"
            s = (s + 1) & (capacity - 1)


@pytest.mark.parametrize("nbytes", [1, 3, 8, 16])
def test_hash_and_slots_follow_documented_format(nbytes):
    rng = np.random.default_rng(7 + nbytes)
    database = rng.integers(0, 256, size=(200, nbytes), dtype=np.uint8)
    index = InvertedIndex.build(database)
    reference = [splitmix64_hash(key.tobytes()) for key in index.keys]
    assert _core.code_hashes(index.keys).tolist() == reference
    # re-insert the keys in order with linear probing, in Python
    capacity = index.capacity
    slots = [-1] * capacity
    for u, h in enumerate(reference):
        s = h & (capacity - 1)
        while slots[s] >= 0:
            s = (s + 1) & (capacity - 1)
        slots[s] = u
    assert index.slots.tolist() == slots


def test_known_answer_by_hand():
    database = np.array([[3], [1], [3], [2], [1], [3]], dtype=np.uint8)
    index = InvertedIndex.build(database)
    assert index.keys.ravel().tolist() == [1, 2, 3]
    assert index.offsets.tolist() == [0, 2, 3, 6]
    assert index.positions.tolist() == [1, 4, 3, 0, 2, 5]
    assert index.capacity == 8
    offsets, positions = index.lookup(np.array([[3], [0], [1], [3], [2]], dtype=np.uint8))
    assert offsets.tolist() == [0, 3, 3, 5, 8, 9]
    assert positions.tolist() == [0, 2, 5, 1, 4, 0, 2, 5, 3]
    assert index.lookup_one(b"\x01").tolist() == [1, 4]
    assert index.lookup_one(np.array([9], dtype=np.uint8)).tolist() == []


def test_empty_and_single_code():
    empty = InvertedIndex.build(np.zeros((0, 8), dtype=np.uint8))
    assert (empty.size, empty.n_unique, empty.capacity) == (0, 0, 1)
    offsets, positions = empty.lookup(np.zeros((3, 8), dtype=np.uint8))
    assert offsets.tolist() == [0, 0, 0, 0] and len(positions) == 0
    single = InvertedIndex.build(np.full((1, 2), 0xAB, dtype=np.uint8))
    assert single.lookup_one(b"\xab\xab").tolist() == [0]
    assert single.lookup_one(b"\xab\xaa").tolist() == []
    offsets, positions = single.lookup(np.zeros((0, 2), dtype=np.uint8))
    assert offsets.tolist() == [0] and len(positions) == 0


def test_build_is_deterministic(tmp_path):
    rng = np.random.default_rng(3)
    database = random_database(rng, 2000, 8)
    first, second = InvertedIndex.build(database), InvertedIndex.build(database.copy())
    for name in ("keys", "offsets", "positions", "slots"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    first.save(tmp_path / "a")
    second.save(tmp_path / "b")
    for name in ("header.json", "keys.npy", "offsets.npy", "positions.npy", "slots.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_wrong_code_width_raises():
    index = InvertedIndex.build(np.zeros((4, 8), dtype=np.uint8))
    with pytest.raises(InputError, match=r"expected fingerprints of 8 bytes \(64 bits\), got 4 bytes \(32 bits\)"):
        index.lookup(np.zeros((2, 4), dtype=np.uint8))
    with pytest.raises(InputError, match="expected fingerprints of 8 bytes"):
        index.lookup_one(b"\x00\x00")
    with pytest.raises(InputError, match="dtype uint8"):
        index.lookup(np.zeros((2, 8), dtype=np.int64))
    with pytest.raises(InputError, match=r"shape \(n, B\)"):
        InvertedIndex.build(np.zeros(8, dtype=np.uint8))


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("nbytes", [1, 8, 16])
@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(tmp_path, nbytes, mmap):
    rng = np.random.default_rng(11 * nbytes)
    database = random_database(rng, 2000, nbytes)
    index = InvertedIndex.build(database)
    index.save(tmp_path / "index")
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["index"]  # no temporary left
    loaded = InvertedIndex.load(tmp_path / "index", mmap=mmap)
    assert all(isinstance(getattr(loaded, name), np.memmap) == mmap
               for name in ("keys", "offsets", "positions", "slots"))
    header = json.loads((tmp_path / "index" / "header.json").read_text())
    assert header == {
        "format": "equihash-inverted-index", "version": 1, "nbytes": nbytes, "size": 2000,
        "n_unique": index.n_unique, "capacity": index.capacity, "hash": "splitmix64-le64-words",
        "dtypes": {"keys": "uint8", "offsets": "int64", "positions": "uint32", "slots": "int32"},
    }
    queries = query_codes(rng, database, nbytes)
    expected, got = index.lookup(queries), loaded.lookup(queries)
    assert np.array_equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert (loaded.size, loaded.n_unique, loaded.nbytes) == (index.size, index.n_unique, nbytes)


def test_save_load_empty(tmp_path):
    InvertedIndex.build(np.zeros((0, 2), dtype=np.uint8)).save(tmp_path / "empty")
    loaded = InvertedIndex.load(tmp_path / "empty")
    assert loaded.size == 0 and loaded.lookup_one(b"\x00\x00").tolist() == []


@pytest.mark.parametrize("name", ["keys", "offsets", "positions", "slots"])
def test_truncated_array_raises(tmp_path, name):
    database = random_database(np.random.default_rng(5), 1000, 8)
    InvertedIndex.build(database).save(tmp_path / "index")
    path = tmp_path / "index" / f"{name}.npy"
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 3)
    for mmap in (True, False):
        with pytest.raises(InputError, match=rf"{name}\.npy: truncated .*expected .*shape"):
            InvertedIndex.load(tmp_path / "index", mmap=mmap)


def test_missing_or_bad_header_raises(tmp_path):
    InvertedIndex.build(np.zeros((3, 8), dtype=np.uint8)).save(tmp_path / "index")
    header_path = tmp_path / "index" / "header.json"
    header = json.loads(header_path.read_text())
    header_path.write_text(json.dumps(dict(header, version=99)))
    with pytest.raises(InputError, match=r"header\.json: field 'version' is 99, expected 1"):
        InvertedIndex.load(tmp_path / "index")
    header_path.write_text(json.dumps(dict(header, size=4)))  # offsets/positions disagree
    with pytest.raises(InputError, match=r"positions\.npy: index array 'positions' is uint32 of shape \(3,\)"):
        InvertedIndex.load(tmp_path / "index")
    header_path.write_text("{not json")
    with pytest.raises(InputError, match=r"header\.json: not valid JSON"):
        InvertedIndex.load(tmp_path / "index")
    header_path.unlink()
    with pytest.raises(InputError, match=r"header\.json: index header not found"):
        InvertedIndex.load(tmp_path / "index")
    with pytest.raises(InputError, match=r"header\.json"):
        InvertedIndex.load(tmp_path / "nowhere")


def test_missing_array_raises(tmp_path):
    InvertedIndex.build(np.zeros((3, 8), dtype=np.uint8)).save(tmp_path / "index")
    (tmp_path / "index" / "slots.npy").unlink()
    with pytest.raises(InputError, match=r"slots\.npy: index array 'slots' not found"):
        InvertedIndex.load(tmp_path / "index")


# ----------------------------------------------------------------------------- parquet input
def test_from_parquet(tmp_path):
    database = random_database(np.random.default_rng(9), 700, 8)
    table = pa.Table.from_arrays(
        [pa.array(np.arange(700, dtype=np.uint64)), codes_array(database)], schema=fingerprint_schema(8)
    )
    write_table(table, tmp_path / "database.parquet", row_group_size=256)
    index = InvertedIndex.from_parquet(tmp_path / "database.parquet")
    reference = InvertedIndex.build(database)
    for name in ("keys", "offsets", "positions", "slots"):
        assert np.array_equal(getattr(index, name), getattr(reference, name))

    shuffled = table.set_column(0, "id", pa.array(np.arange(700, dtype=np.uint64)[::-1]))
    write_table(shuffled, tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"bad\.parquet: column 'id' must be the database positions"):
        InvertedIndex.from_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"missing\.parquet: file not found"):
        InvertedIndex.from_parquet(tmp_path / "missing.parquet")


def test_wide_dtypes_give_identical_answers(tmp_path):
    """The uint64 positions / int64 slots layout (N >= 2**32 or U >= 2**31) answers alike."""
    rng = np.random.default_rng(21)
    database = random_database(rng, 3000, 8)
    narrow = InvertedIndex.build(database)
    wide = InvertedIndex(narrow.keys, narrow.offsets, narrow.positions.astype(np.uint64),
                         narrow.slots.astype(np.int64))
    wide.save(tmp_path / "wide")
    wide = InvertedIndex.load(tmp_path / "wide")
    assert wide.positions.dtype == np.uint64 and wide.slots.dtype == np.int64
    queries = query_codes(rng, database, 8)
    for a, b in zip(narrow.lookup(queries), wide.lookup(queries)):
        assert np.array_equal(a, b)
    logits = rng.standard_normal((100, 64)).astype(np.float32)
    logits[:50] = (np.unpackbits(database[:50], axis=1) * 2.0 - 1.0) * np.abs(logits[:50])
    for a, b in zip(narrow.multiprobe(logits, 8), wide.multiprobe(logits, 8)):
        assert np.array_equal(a, b)
