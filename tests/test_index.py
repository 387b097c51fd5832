"""Inverted index (docs/method.md section 8): brute-force equivalence, layout invariants, persistence."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from equihash.index import InvertedIndex, build_index, code_keys, read_database_codes, read_index, write_index
from equihash.index import build as build_module
from equihash.index.format import index_header
from equihash.index.inverted import keys_to_codes
from equihash.io import InputError, codes_array, fingerprint_schema, write_table

MASK64 = (1 << 64) - 1
ARRAYS = ("keys", "offsets", "positions", "directory")


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


def splitmix64_key(code: bytes) -> int:
    """Reference of the documented key, in Python integers."""
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


def assert_same_index(a: InvertedIndex, b: InvertedIndex):
    assert index_header(a) == index_header(b)
    for name, array in a.arrays().items():
        assert np.array_equal(np.asarray(array), np.asarray(b.arrays()[name])), name


# ----------------------------------------------------------------------------- lookups
@pytest.mark.parametrize("nbytes", [1, 2, 3, 8, 9, 16])
@pytest.mark.parametrize("n", [0, 1, 2, 500, 5000])
def test_lookup_matches_brute_force(nbytes, n):
    rng = np.random.default_rng(1000 * nbytes + n)
    database = random_database(rng, n, nbytes)
    index = build_index(database)
    truth = brute_force(database)
    queries = query_codes(rng, database, nbytes)
    offsets, positions = index.lookup(queries)
    assert offsets.dtype == np.int64 and offsets.shape == (len(queries) + 1,)
    assert offsets[0] == 0 and offsets[-1] == len(positions) and positions.dtype == np.uint32
    for j, code in enumerate(queries):
        expected = truth.get(code.tobytes(), [])
        assert positions[offsets[j]:offsets[j + 1]].tolist() == expected
        if j % 50 == 0:
            assert index.lookup_one(code).tolist() == expected
            assert index.lookup_one(code.tobytes()).tolist() == expected
    assert index.size == n and len(index) == n and index.database_size == n
    assert index.n_unique == len(truth)
    assert index.nbytes == nbytes


def test_large_batches_split_across_threads_answer_alike():
    rng = np.random.default_rng(2)
    database = random_database(rng, 30_000, 8)
    index = build_index(database)
    queries = np.concatenate([query_codes(rng, database, 8, 40_000)])  # 120000 >= MIN_PARALLEL
    one = index.lookup(queries, threads=1)
    for threads in (2, 3, 7):
        many = index.lookup(queries, threads=threads)
        assert np.array_equal(one[0], many[0]) and np.array_equal(one[1], many[1])
    truth = brute_force(database)
    expected = sum(len(truth.get(code.tobytes(), [])) for code in queries)
    assert one[0][-1] == expected


@pytest.mark.parametrize("nbytes", [1, 8, 16])
def test_layout_invariants(nbytes):
    rng = np.random.default_rng(nbytes)
    database = random_database(rng, 3000, nbytes)
    index = build_index(database)
    keys, offsets, positions, directory = index.keys, index.offsets, index.positions, index.directory
    assert keys.dtype == np.uint64 and positions.dtype == np.uint32
    assert offsets.dtype == np.uint32 and directory.dtype == np.uint32
    fingerprints = index.fingerprints
    assert (index.stored_fingerprints is None) == (nbytes <= 8)
    # keys: the documented key of each distinct fingerprint, increasing (ties by code bytes)
    assert keys.tolist() == [splitmix64_key(code.tobytes()) for code in fingerprints]
    order = sorted(range(len(keys)), key=lambda u: (int(keys[u]), fingerprints[u].tobytes()))
    assert order == list(range(len(keys)))
    assert len({code.tobytes() for code in fingerprints}) == len(keys) == len(brute_force(database))
    # CSR: the posting lists partition 0..N-1, increasing inside each list, codes match
    assert offsets[0] == 0 and offsets[-1] == len(database) and np.all(np.diff(offsets.astype(np.int64)) > 0)
    assert np.array_equal(np.sort(positions), np.arange(len(database)))
    for u in range(len(keys)):
        group = positions[offsets[u]:offsets[u + 1]]
        assert np.all(np.diff(group.astype(np.int64)) > 0)
        assert np.all(database[group] == fingerprints[u])
    # directory: 2**b + 1 entries, b the largest with 4 * 2**b <= U; entry t = first key of bucket >= t
    b = index.directory_bits
    assert len(directory) == 2**b + 1 and 4 * 2**b <= len(keys) < 8 * 2**b
    buckets = keys >> np.uint64(64 - b) if b else np.zeros(len(keys), np.uint64)
    assert directory.tolist() == np.searchsorted(buckets, np.arange(2**b + 1)).tolist()


@pytest.mark.parametrize("nbytes", [1, 3, 8])
def test_short_keys_are_invertible(nbytes):
    rng = np.random.default_rng(40 + nbytes)
    codes = rng.integers(0, 256, size=(1000, nbytes), dtype=np.uint8)
    keys = code_keys(codes)
    assert keys.tolist() == [splitmix64_key(code.tobytes()) for code in codes]
    assert np.array_equal(keys_to_codes(keys, nbytes), codes)
    if nbytes == 1:  # a bijection: 256 distinct codes, 256 distinct keys
        assert len(np.unique(code_keys(np.arange(256, dtype=np.uint8)[:, None]))) == 256


def test_equal_keys_of_distinct_long_codes_are_told_apart():
    """B > 8: keys are hashes; codes sharing a key (a collision, forced here) become
    separate posting lists ordered by code bytes, and lookups compare the bytes."""
    a = np.arange(16, dtype=np.uint8)
    b = a.copy()
    b[0] = 0  # b < a in byte order (a[0] = 0 too: make them differ later)
    a[3], b[3] = 9, 2
    codes = np.stack([a, b, a, b, b, a])
    key = np.uint64(splitmix64_key(a.tobytes()))
    keys = np.full(len(codes), key, dtype=np.uint64)  # b pretends to hash like a
    values = np.arange(len(codes), dtype=np.uint32)
    out_keys, offsets, positions, fingerprints = build_module._posting_lists(keys, values, 1, 16, codes=codes)
    assert out_keys.tolist() == [int(key), int(key)]
    assert offsets.tolist() == [0, 3, 6]
    assert positions.tolist() == [1, 3, 4, 0, 2, 5]
    assert np.array_equal(fingerprints, np.stack([b, a]))
    index = InvertedIndex(out_keys, offsets, positions, build_module._directory(out_keys, 0, np.uint32),
                          fingerprints, nbytes=16)
    assert index.lookup_one(a).tolist() == [0, 2, 5]  # the scan passes b's entry of equal key
    assert index.lookup(a[None, :])[1].tolist() == [0, 2, 5]


def test_known_answer_by_hand():
    database = np.array([[3], [1], [3], [2], [1], [3]], dtype=np.uint8)
    index = build_index(database)
    assert sorted(index.fingerprints.ravel().tolist()) == [1, 2, 3]
    lists = {int(code[0]): index.positions[index.offsets[u]:index.offsets[u + 1]].tolist()
             for u, code in enumerate(index.fingerprints)}
    assert lists == {1: [1, 4], 2: [3], 3: [0, 2, 5]}
    assert index.directory.tolist() == [0, 3] and index.directory_bits == 0
    offsets, positions = index.lookup(np.array([[3], [0], [1], [3], [2]], dtype=np.uint8))
    assert offsets.tolist() == [0, 3, 3, 5, 8, 9]
    assert positions.tolist() == [0, 2, 5, 1, 4, 0, 2, 5, 3]
    assert index.lookup_one(b"\x01").tolist() == [1, 4]
    assert index.lookup_one(np.array([9], dtype=np.uint8)).tolist() == []


def test_empty_and_single_code():
    empty = build_index(np.zeros((0, 8), dtype=np.uint8))
    assert (empty.size, empty.n_unique, empty.directory.tolist()) == (0, 0, [0, 0])
    offsets, positions = empty.lookup(np.zeros((3, 8), dtype=np.uint8))
    assert offsets.tolist() == [0, 0, 0, 0] and len(positions) == 0
    assert empty.lookup_one(bytes(8)).tolist() == []
    single = build_index(np.full((1, 2), 0xAB, dtype=np.uint8))
    assert single.lookup_one(b"\xab\xab").tolist() == [0]
    assert single.lookup_one(b"\xab\xaa").tolist() == []
    offsets, positions = single.lookup(np.zeros((0, 2), dtype=np.uint8))
    assert offsets.tolist() == [0] and len(positions) == 0


def test_one_code_repeated_everywhere():
    """A degenerate network (every instance on one fingerprint): one posting list of N."""
    database = np.full((70_000, 8), 0x5A, dtype=np.uint8)
    database[::1000] = 0  # a second code, interleaved
    index = build_index(database)
    assert index.n_unique == 2
    assert index.lookup_one(database[1]).tolist() == [i for i in range(70_000) if i % 1000]
    assert index.lookup_one(database[0]).tolist() == list(range(0, 70_000, 1000))
    # a batch whose postings overflow the first pass's output (2 per query): gathered after
    offsets, positions = index.lookup(database[[1, 0, 2]])
    assert offsets.tolist() == [0, 69_930, 70_000, 139_930]
    assert positions[:69_930].tolist() == positions[70_000:].tolist() == [i for i in range(70_000) if i % 1000]
    assert positions[69_930:70_000].tolist() == list(range(0, 70_000, 1000))


def test_build_is_deterministic_whatever_the_threads(tmp_path):
    rng = np.random.default_rng(3)
    database = random_database(rng, 100_000, 8)
    first = build_index(database, threads=1)
    for threads in (2, 5):
        assert_same_index(first, build_index(database.copy(), threads=threads))
    write_index(first, tmp_path / "a")
    write_index(build_index(database, threads=4), tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["directory.bin", "header.json", "keys.bin", "offsets.bin", "positions.bin"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_prefix_index_holds_exactly_its_share():
    rng = np.random.default_rng(13)
    database = random_database(rng, 4000, 8)
    whole = build_index(database)
    keys = code_keys(database)
    for prefix in range(8):
        part = build_index(database, prefix_bits=3, prefix=prefix)
        mine = (keys >> np.uint64(61)) == prefix
        assert np.array_equal(np.sort(part.positions), np.flatnonzero(mine))
        assert part.size == mine.sum() and part.database_size == 4000
        queries = query_codes(rng, database, 8)
        got, full = part.lookup(queries), whole.lookup(queries)
        routed = (code_keys(queries) >> np.uint64(61)) == prefix
        for j in range(len(queries)):
            expected = full[1][full[0][j]:full[0][j + 1]].tolist() if routed[j] else []
            assert got[1][got[0][j]:got[0][j + 1]].tolist() == expected
    with pytest.raises(InputError, match=r"prefix: expected an integer in \[0, 2\*\*3\), got 8"):
        build_index(database, prefix_bits=3, prefix=8)


def test_wrong_code_width_raises():
    index = build_index(np.zeros((4, 8), dtype=np.uint8))
    with pytest.raises(InputError, match=r"expected fingerprints of 8 bytes \(64 bits\), got 4 bytes \(32 bits\)"):
        index.lookup(np.zeros((2, 4), dtype=np.uint8))
    with pytest.raises(InputError, match="expected fingerprints of 8 bytes"):
        index.lookup_one(b"\x00\x00")
    with pytest.raises(InputError, match="dtype uint8"):
        index.lookup(np.zeros((2, 8), dtype=np.int64))
    with pytest.raises(InputError, match=r"shape \(n, B\)"):
        build_index(np.zeros(8, dtype=np.uint8))


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("nbytes", [1, 8, 16])
@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(tmp_path, nbytes, mmap):
    rng = np.random.default_rng(11 * nbytes)
    database = random_database(rng, 2000, nbytes)
    index = build_index(database)
    write_index(index, tmp_path / "index")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no temporary left
    loaded = read_index(tmp_path / "index", mmap=mmap)
    assert all(isinstance(array, np.memmap) == mmap for array in loaded.arrays().values())
    header = json.loads((tmp_path / "index" / "header.json").read_text())
    u, b = index.n_unique, index.directory_bits
    arrays = {"keys": {"file": "keys.bin", "dtype": "<u8", "shape": [u]},
              "offsets": {"file": "offsets.bin", "dtype": "<u4", "shape": [u + 1]},
              "positions": {"file": "positions.bin", "dtype": "<u4", "shape": [2000]},
              "directory": {"file": "directory.bin", "dtype": "<u4", "shape": [2**b + 1]}}
    if nbytes > 8:
        arrays["fingerprints"] = {"file": "fingerprints.bin", "dtype": "|u1", "shape": [u, nbytes]}
    for spec in arrays.values():  # the CRC-32 of each file's bytes
        spec["crc32"] = zlib.crc32((tmp_path / "index" / spec["file"]).read_bytes())
    assert header == {
        "format": "equihash-inverted-index", "version": 3, "nbytes": nbytes, "size": 2000,
        "database_size": 2000, "n_unique": u, "key": "splitmix64-le64-words", "directory_bits": b,
        "prefix_bits": 0, "prefix": 0, "index_dtype": "uint32", "arrays": arrays,
    }
    for name, spec in arrays.items():  # raw little-endian arrays, exactly as documented
        raw = np.fromfile(tmp_path / "index" / spec["file"], dtype=spec["dtype"]).reshape(spec["shape"])
        assert np.array_equal(raw, index.arrays()[name])
    assert_same_index(index, loaded)
    queries = query_codes(rng, database, nbytes)
    expected, got = index.lookup(queries), loaded.lookup(queries)
    assert np.array_equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert loaded.memory_usage == sum((tmp_path / "index" / spec["file"]).stat().st_size for spec in arrays.values())


def test_save_load_empty(tmp_path):
    write_index(build_index(np.zeros((0, 2), dtype=np.uint8)), tmp_path / "empty")
    loaded = read_index(tmp_path / "empty")
    assert loaded.size == 0 and loaded.lookup_one(b"\x00\x00").tolist() == []


@pytest.mark.parametrize("name", ["keys", "offsets", "positions", "directory", "fingerprints"])
def test_truncated_or_padded_array_raises(tmp_path, name):
    nbytes = 16 if name == "fingerprints" else 8
    database = random_database(np.random.default_rng(5), 1000, nbytes)
    write_index(build_index(database), tmp_path / "index")
    path = tmp_path / "index" / f"{name}.bin"
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size - 3)
    for mmap in (True, False):
        with pytest.raises(InputError, match=rf"{name}\.bin: truncated index array '{name}': {size - 3} bytes, "
                                             rf"expected .*shape .*{size} bytes"):
            read_index(tmp_path / "index", mmap=mmap)
    with open(path, "r+b") as handle:
        handle.truncate(size + 8)
    with pytest.raises(InputError, match=rf"{name}\.bin: too long index array"):
        read_index(tmp_path / "index")


def test_missing_or_bad_header_raises(tmp_path):
    write_index(build_index(np.arange(24, dtype=np.uint8).reshape(3, 8)), tmp_path / "index")
    header_path = tmp_path / "index" / "header.json"
    header = json.loads(header_path.read_text())
    cases = [
        (dict(header, version=2), r"field 'version' is 2, expected 3 \(rebuild"),  # no checksums
        (dict(header, arrays={**header["arrays"], "keys": {**header["arrays"]["keys"], "crc32": -1}}),
         r"field 'arrays.keys.crc32' is -1, expected the CRC-32 of 'keys.bin'"),
        (dict(header, arrays={**header["arrays"], "keys": {k: v for k, v in header["arrays"]["keys"].items()
                                                           if k != "crc32"}}),
         r"field 'arrays.keys.crc32' is None"),
        (dict(header, format="faiss"), r"field 'format' is 'faiss'"),
        (dict(header, n_unique=4), r"expected n_unique <= size <= database_size"),
        (dict(header, directory_bits=3), r"field 'directory_bits' is 3, expected 0 for n_unique = 3"),
        (dict(header, nbytes=16), r"field 'arrays' is .*expected"),
        (dict(header, index_dtype="int8"), r"field 'index_dtype' is 'int8'"),
        (dict(header, size=-1), r"field 'size' is -1, expected a non-negative integer"),
    ]
    for bad, message in cases:
        header_path.write_text(json.dumps(bad))
        with pytest.raises(InputError, match=r"header\.json: " + message):
            read_index(tmp_path / "index")
    # a header that agrees with itself but not with the files: the files are named
    arrays = {name: dict(spec) for name, spec in header["arrays"].items()}
    arrays["positions"]["shape"] = [4]
    header_path.write_text(json.dumps(dict(header, size=4, database_size=4, arrays=arrays)))
    with pytest.raises(InputError, match=r"positions\.bin: truncated index array 'positions': 12 bytes, "
                                         r"expected uint32 array of shape \(4,\), 16 bytes"):
        read_index(tmp_path / "index")
    header_path.write_text("{not json")
    with pytest.raises(InputError, match=r"header\.json: not valid JSON"):
        read_index(tmp_path / "index")
    header_path.unlink()
    with pytest.raises(InputError, match=r"header\.json: index header not found"):
        read_index(tmp_path / "index")
    with pytest.raises(InputError, match=r"header\.json"):
        read_index(tmp_path / "nowhere")


def test_inconsistent_offsets_raise(tmp_path):
    write_index(build_index(np.arange(24, dtype=np.uint8).reshape(3, 8)), tmp_path / "index")
    np.array([0, 1, 2, 2], dtype="<u4").tofile(tmp_path / "index" / "offsets.bin")
    with pytest.raises(InputError, match=r"offsets\.bin: damaged index array 'offsets': its CRC-32 is"):
        read_index(tmp_path / "index")
    with pytest.raises(InputError, match=r"offsets\.bin: 'offsets' must run from 0 to 3, got 0 \.\. 2"):
        read_index(tmp_path / "index", verify=False)


def flip_byte(path, at: int, mask: int) -> None:
    """XOR byte ``at`` of a file with ``mask`` (the size is kept)."""
    data = bytearray(path.read_bytes())
    data[at] ^= mask
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["keys", "offsets", "positions", "directory", "fingerprints"])
@pytest.mark.parametrize("where", ["first", "middle", "last", "random"])
def test_any_flipped_byte_is_named_at_load(tmp_path, name, where):
    """One changed byte anywhere in any array file: load refuses the index, naming the file."""
    nbytes = 16 if name == "fingerprints" else 8
    rng = np.random.default_rng([3, ARRAYS.index(name) if name in ARRAYS else 4])
    database = random_database(rng, 1500, nbytes)
    write_index(build_index(database), tmp_path / "index")
    path = tmp_path / "index" / f"{name}.bin"
    size = path.stat().st_size
    at = {"first": 0, "middle": size // 2, "last": size - 1, "random": int(rng.integers(0, size))}[where]
    for mask in (0x01, 0x80, int(rng.integers(1, 256))):
        flip_byte(path, at, mask)
        for mmap in (True, False):
            with pytest.raises(InputError, match=rf"{name}\.bin: damaged index array '{name}': its CRC-32 is "
                                                 r"[0-9a-f]{8}, header\.json records [0-9a-f]{8}"):
                read_index(tmp_path / "index", mmap=mmap)
        flip_byte(path, at, mask)  # restored: it loads and answers again
        assert read_index(tmp_path / "index").lookup_one(database[7]).tolist() == \
            np.flatnonzero((database == database[7]).all(axis=1)).tolist()


UNVERIFIED_LOOKUPS = """
import sys
from pathlib import Path
import numpy as np
from equihash.index import build_index, read_index, write_index
from equihash.io import InputError

root, nbytes = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(nbytes)
codes = rng.integers(0, 256, size=(40, nbytes), dtype=np.uint8)[rng.integers(0, 40, size=120)]  # repeated codes
write_index(build_index(codes), root / "index")
queries = np.concatenate([codes, rng.integers(0, 256, size=(20, nbytes), dtype=np.uint8)])
logits = (np.unpackbits(codes[:20], axis=1) * 2.0 - 1.0).astype(np.float32)
logits *= rng.uniform(0.1, 1.0, logits.shape).astype(np.float32)
outcomes = {"refused": 0, "answered": 0}
for path in sorted((root / "index").glob("*.bin")):
    original = path.read_bytes()
    for at, mask in enumerate(rng.integers(1, 256, size=len(original))):
        damaged = bytearray(original)
        damaged[at] ^= int(mask)
        path.write_bytes(bytes(damaged))
        try:
            index = read_index(root / "index", verify=False, threads=1)
            answers = [index.lookup(queries), index.multiprobe(logits, 4)]
            answers += [(None, index.lookup_one(code)) for code in queries[::10]]
        except InputError as exc:
            assert str(exc).startswith(str(root / "index")), exc
            outcomes["refused"] += 1
            continue
        for _, positions in answers:
            assert positions.size == 0 or int(positions.max()) < len(codes), (path.name, at, mask)
        outcomes["answered"] += 1
    path.write_bytes(original)
print(outcomes["refused"], outcomes["answered"])
"""


@pytest.mark.parametrize("nbytes", [8, 16])
def test_unverified_damaged_index_never_crashes(tmp_path, nbytes):
    """Loaded without its checksums, an index with any one byte of any array changed
    (every byte, a random mask each) never reads outside an array: each lookup either raises
    InputError naming a file of the index or returns positions below the database size.
    (In a child process: an out-of-bounds read would kill it, not the test run.)"""
    result = subprocess.run([sys.executable, "-c", UNVERIFIED_LOOKUPS, str(tmp_path), str(nbytes)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    refused, answered = map(int, result.stdout.split())
    assert refused > 0 and answered > 0  # both kinds of damage occur: ranges broken, values changed


def test_missing_array_raises(tmp_path):
    write_index(build_index(np.zeros((3, 8), dtype=np.uint8)), tmp_path / "index")
    (tmp_path / "index" / "directory.bin").unlink()
    with pytest.raises(InputError, match=r"directory\.bin: index array 'directory' not found"):
        read_index(tmp_path / "index")


def test_wide_dtypes_give_identical_answers(tmp_path):
    """The uint64 layout (databases of 2**32 positions or more) answers alike."""
    rng = np.random.default_rng(21)
    database = random_database(rng, 3000, 8)
    narrow = build_index(database)
    wide = InvertedIndex(narrow.keys, narrow.offsets.astype(np.uint64), narrow.positions.astype(np.uint64),
                         narrow.directory.astype(np.uint64), nbytes=8)
    write_index(wide, tmp_path / "wide")
    wide = read_index(tmp_path / "wide")
    assert wide.positions.dtype == np.uint64 and index_header(wide)["index_dtype"] == "uint64"
    queries = query_codes(rng, database, 8)
    for a, b in zip(narrow.lookup(queries), wide.lookup(queries)):
        assert np.array_equal(a, b)
    logits = rng.standard_normal((100, 64)).astype(np.float32)
    logits[:50] = (np.unpackbits(database[:50], axis=1) * 2.0 - 1.0) * np.abs(logits[:50])
    for a, b in zip(narrow.multiprobe(logits, 8), wide.multiprobe(logits, 8)):
        assert np.array_equal(a, b)


# ----------------------------------------------------------------------------- parquet input
def test_from_parquet(tmp_path):
    database = random_database(np.random.default_rng(9), 700, 8)
    table = pa.Table.from_arrays(
        [pa.array(np.arange(700, dtype=np.uint64)), codes_array(database)], schema=fingerprint_schema(8)
    )
    write_table(table, tmp_path / "database.parquet", row_group_size=256)
    assert_same_index(build_index(read_database_codes(tmp_path / "database.parquet")), build_index(database))

    shuffled = table.set_column(0, "id", pa.array(np.arange(700, dtype=np.uint64)[::-1]))
    write_table(shuffled, tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"bad\.parquet: column 'id' must be the database positions"):
        build_index(read_database_codes(tmp_path / "bad.parquet"))
    with pytest.raises(InputError, match=r"missing\.parquet: file not found"):
        build_index(read_database_codes(tmp_path / "missing.parquet"))
