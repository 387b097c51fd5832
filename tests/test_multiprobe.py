"""Prioritised multi-probing (docs/method.md section 10): heap enumeration against brute force."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from equihash.index import build_index, probe_codes
from equihash.io import InputError


def brute_force_probes(z, L, n_ranks=None):
    """Every flip set of the n_ranks smallest-|z| bits sorted by the documented order
    (cost as a float64 sum in increasing rank order, ties by the rank mask); the first L
    codes and costs."""
    k = len(z)
    n_ranks = k if n_ranks is None else n_ranks
    magnitude = np.abs(z.astype(np.float32))
    rank_bits = np.argsort(magnitude, kind="stable")
    sorted_abs = magnitude[rank_bits].astype(np.float64)
    masks = np.arange(2**n_ranks, dtype=np.int64)
    costs = np.zeros(len(masks))
    for r in range(n_ranks):
        costs = costs + np.where((masks >> r) & 1, sorted_abs[r], 0.0)
    order = np.lexsort((masks, costs))[:L]
    bits = np.zeros((L, k), dtype=bool)
    for r in range(n_ranks):
        bits[:, rank_bits[r]] = (masks[order] >> r) & 1
    codes = np.packbits((z > 0)[None, :] ^ bits, axis=1)
    return codes, costs[order]


@pytest.mark.parametrize("k", [8, 16])
def test_probe_codes_match_brute_force(k):
    rng = np.random.default_rng(k)
    logits = (rng.standard_normal((6, k)) * 3).astype(np.float32)
    L = 2**k if k == 8 else 3000
    codes, costs = probe_codes(logits, L, return_costs=True)
    assert codes.shape == (6, L, k // 8) and codes.dtype == np.uint8
    for j in range(len(logits)):
        expected_codes, expected_costs = brute_force_probes(logits[j], L)
        assert np.array_equal(costs[j], expected_costs)  # exact, not approximate
        assert np.array_equal(codes[j], expected_codes)


def test_ties_follow_documented_order():
    """Integer-valued logits (and zeros) make many exact cost ties; the order is still
    (cost, rank mask) with ranks from a stable argsort of |z|."""
    rng = np.random.default_rng(0)
    logits = rng.integers(-3, 4, size=(5, 16)).astype(np.float32)
    codes, costs = probe_codes(logits, 2**16, return_costs=True)
    for j in range(len(logits)):
        expected_codes, expected_costs = brute_force_probes(logits[j], 2**16)
        assert np.array_equal(costs[j], expected_costs)
        assert np.array_equal(codes[j], expected_codes)


def test_known_answer_by_hand():
    # |z| ranks: bit 7 (0.1) < bit 0 (0.2) < bit 3 (0.4) < others (>= 1)
    z = np.array([0.2, -1, 1, -0.4, 2, -2, 3, 0.1], dtype=np.float32)
    codes, costs = probe_codes(z, 6, return_costs=True)
    top = 0b10101011  # bits 0, 2, 4, 6, 7 positive
    expected = [top, top ^ 0x01, top ^ 0x80, top ^ 0x81, top ^ 0x10, top ^ 0x11]
    assert codes[0, :, 0].tolist() == expected
    f = np.float32
    assert costs[0].tolist() == [0.0, float(f(0.1)), float(f(0.2)), float(f(0.1)) + float(f(0.2)),
                                 float(f(0.4)), float(f(0.1)) + float(f(0.4))]


@pytest.mark.parametrize("k", [8, 16])
def test_all_codes_exactly_once(k):
    logits = np.random.default_rng(k + 1).standard_normal((3, k)).astype(np.float32)
    codes, costs = probe_codes(logits, 2**k, return_costs=True)
    as_int = np.unpackbits(codes, axis=2).reshape(3, 2**k, k) @ (1 << np.arange(k)[::-1])
    for j in range(3):
        assert np.array_equal(np.sort(as_int[j]), np.arange(2**k))
        assert np.all(np.diff(costs[j]) >= 0)
        assert codes[j, 0].tolist() == np.packbits(logits[j] > 0).tolist()
    # the most expensive code flips every bit: cost = sum |z| in rank order
    assert np.array_equal(codes[:, -1], ~codes[:, 0])


def test_long_fingerprints_use_the_256_lowest_ranks():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((3, 128)).astype(np.float32)
    codes, costs = probe_codes(logits, 65, return_costs=True)
    for j in range(3):
        # brute force over the 12 lowest ranks covers the first 20 flip sets
        expected_codes, expected_costs = brute_force_probes(logits[j], 20, n_ranks=12)
        assert np.array_equal(codes[j, :20], expected_codes)
        assert np.array_equal(costs[j, :20], expected_costs)
        assert len({row.tobytes() for row in codes[j]}) == 65
    longest = rng.standard_normal((1, 264)).astype(np.float32)
    assert len({row.tobytes() for row in probe_codes(longest, 257)[0]}) == 257
    with pytest.raises(InputError, match=r"L: expected 1 <= L <= 257 for k = 264"):
        probe_codes(longest, 258)


def test_256_bit_codes_flip_up_to_rank_254_in_256_probes():
    # |z| nearly equal: every single flip costs less than any pair, so the 256 probes are the
    # sign code and the 255 single flips in rank order, up to rank 254 (a PDQ code, L = 256)
    rng = np.random.default_rng(5)
    magnitude = (1.0 + np.arange(256) * 1e-4).astype(np.float32)
    order = rng.permutation(256)  # bit order[r] has rank r
    logits = np.empty((1, 256), dtype=np.float32)
    logits[0, order] = magnitude * rng.choice([-1.0, 1.0], 256).astype(np.float32)
    codes, costs = probe_codes(logits, 256, return_costs=True)
    top = np.packbits(logits[0] > 0)
    assert np.array_equal(codes[0, 0], top)
    for rank in range(255):
        flipped = np.unpackbits(codes[0, rank + 1] ^ top)
        assert np.flatnonzero(flipped).tolist() == [order[rank]], rank
        assert costs[0, rank + 1] == np.float64(magnitude[rank])


def test_batch_independence_and_rerun():
    logits = np.random.default_rng(6).standard_normal((40, 64)).astype(np.float32)
    batch = probe_codes(logits, 100)
    assert np.array_equal(batch, probe_codes(logits, 100))
    for j in (0, 17, 39):
        assert np.array_equal(batch[j], probe_codes(logits[j], 100)[0])
    assert np.array_equal(batch[:, :10], probe_codes(logits, 10))  # prefix property


def test_invalid_arguments():
    logits = np.zeros((2, 8), dtype=np.float32)
    with pytest.raises(InputError, match=r"L: expected 1 <= L <= 256 for k = 8 bits, got 0"):
        probe_codes(logits, 0)
    with pytest.raises(InputError, match="got 257"):
        probe_codes(logits, 257)
    with pytest.raises(InputError, match="multiple of 8"):
        probe_codes(np.zeros((2, 7), dtype=np.float32), 1)
    with pytest.raises(InputError, match="finite"):
        probe_codes(np.full((1, 8), np.nan, dtype=np.float32), 1)
    index = build_index(np.zeros((3, 2), dtype=np.uint8))
    with pytest.raises(InputError, match=r"expected k = 16 bits for this index, got k = 8"):
        index.multiprobe(logits, 2)


# ----------------------------------------------------------------------------- retrieval
def database_near(rng, top_codes, n_random, nbytes):
    """Codes a few low-|z| flips away from the queries' sign codes, repeated, plus noise."""
    near = np.repeat(top_codes, 4, axis=0)
    bits = rng.integers(0, 8 * nbytes, size=(len(near), 2))
    for column in range(2):
        near[np.arange(len(near)), bits[:, column] // 8] ^= (0x80 >> (bits[:, column] % 8)).astype(np.uint8)
    noise = rng.integers(0, 256, size=(n_random, nbytes), dtype=np.uint8)
    database = np.concatenate([near, top_codes, noise])
    return database[rng.permutation(len(database))]


@pytest.mark.parametrize("nbytes", [2, 8])
@pytest.mark.parametrize("L", [1, 5, 40])
def test_multiprobe_equals_union_of_brute_force_lookups(nbytes, L):
    rng = np.random.default_rng(10 * nbytes + L)
    k = 8 * nbytes
    logits = (rng.standard_normal((50, k)) * 2).astype(np.float32)
    # few large logits so that cheap flips concentrate on a few bits
    logits[:, : k // 2] *= 4
    database = database_near(rng, np.packbits(logits > 0, axis=1), 300, nbytes)
    index = build_index(database)
    table = defaultdict(list)
    for position, code in enumerate(database):
        table[code.tobytes()].append(position)

    offsets, positions = index.multiprobe(logits, L)
    assert offsets.shape == (51,) and offsets[-1] == len(positions)
    total = 0
    for j in range(len(logits)):
        codes = probe_codes(logits[j], L)[0]
        expected = sorted(p for code in codes for p in table.get(code.tobytes(), []))
        got = positions[offsets[j]:offsets[j + 1]].tolist()
        assert got == expected
        assert index.multiprobe_one(logits[j], L).tolist() == expected
        total += len(expected)
    assert total > 50  # the database was built so that probes hit


def test_single_probe_equals_plain_lookup():
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((200, 64)).astype(np.float32)
    database = database_near(rng, np.packbits(logits > 0, axis=1), 100, 8)
    index = build_index(database)
    multi = index.multiprobe(logits, 1)
    plain = index.lookup(np.packbits(logits > 0, axis=1))
    assert np.array_equal(multi[0], plain[0]) and np.array_equal(multi[1], plain[1])
    assert len(plain[1]) >= 200  # every sign code is in the database


def test_probing_every_code_retrieves_everything():
    rng = np.random.default_rng(12)
    database = rng.integers(0, 256, size=(500, 1), dtype=np.uint8)
    index = build_index(database)
    offsets, positions = index.multiprobe(rng.standard_normal((3, 8)).astype(np.float32), 256)
    for j in range(3):
        assert positions[offsets[j]:offsets[j + 1]].tolist() == list(range(500))


# ----------------------------------------------------------------------------- batching
def test_lowest_ranks_follow_the_stable_argsort():
    """Only the L - 1 smallest |z| can be flipped by the first L probes; they are selected
    by partition over (float bits, bit index) keys, in stable-argsort order, ties included."""
    from equihash.index.multiprobe import _lowest_ranks

    rng = np.random.default_rng(5)
    magnitude = np.abs(rng.integers(-3, 4, size=(50, 64)).astype(np.float32))
    magnitude[:10] = np.abs(rng.standard_normal((10, 64))).astype(np.float32)
    stable = np.argsort(magnitude, axis=1, kind="stable")
    for n_ranks in (1, 5, 63, 64):
        rank_bits, sorted_abs = _lowest_ranks(magnitude, n_ranks)
        assert np.array_equal(rank_bits, stable[:, :n_ranks])
        assert np.array_equal(sorted_abs, np.take_along_axis(magnitude, stable[:, :n_ranks], axis=1))
    # enumerating with only L - 1 ranks gives the codes of the full enumeration
    logits = rng.standard_normal((20, 16)).astype(np.float32) * 2
    for L in (2, 3, 17):
        codes, costs = probe_codes(logits, L, return_costs=True)
        for j in range(len(logits)):
            expected_codes, expected_costs = brute_force_probes(logits[j], L)
            assert np.array_equal(codes[j], expected_codes) and np.array_equal(costs[j], expected_costs)


def test_blocks_and_threads_do_not_change_the_answer(monkeypatch):
    from equihash.index import multiprobe

    rng = np.random.default_rng(9)
    logits = (rng.standard_normal((300, 16)) * 2).astype(np.float32)
    database = database_near(rng, np.packbits(logits > 0, axis=1), 2000, 2)
    index = build_index(database)
    whole = index.multiprobe(logits, 12, threads=1)
    monkeypatch.setattr(multiprobe, "PROBES_PER_BLOCK", 100)  # blocks of 8 queries
    for threads in (1, 4):
        blocked = index.multiprobe(logits, 12, threads=threads)
        assert np.array_equal(whole[0], blocked[0]) and np.array_equal(whole[1], blocked[1])
    assert whole[0][-1] > 300
    empty = index.multiprobe(np.zeros((0, 16), dtype=np.float32), 12)
    assert empty[0].tolist() == [0] and len(empty[1]) == 0
