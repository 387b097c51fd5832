"""Tests of equihash.train.evaluation: the evaluation-during-training figures (docs/method.md section 6.6)."""

from collections import Counter
from itertools import combinations

import numpy as np
import pytest

from equihash.codes import hamming_distances
from equihash.train.evaluation import (
    EVAL_LOG_COLUMNS,
    FIGURE_COLUMNS,
    subset_families,
    subset_family,
    training_figures,
    worst_entropy,
)

H_QUARTER = 0.8112781244591328  # entropy in bits of a Bernoulli(1/4): 2 - (3/4) log2 3


def codes_of(*values):
    """One-byte codes from integers."""
    return np.array(values, dtype=np.uint8)[:, None]


def brute_force_worst_entropy(codes, family):
    """Per subset: count the sub-code tuples with a Counter, entropy with math on floats."""
    bits = np.unpackbits(codes, axis=1)
    worst = np.inf
    for subset in family:
        counts = Counter(map(tuple, bits[:, subset].tolist()))
        p = np.array(list(counts.values()), dtype=float) / len(codes)
        worst = min(worst, float(-(p * np.log2(p)).sum()))
    return worst


# --------------------------------------------------------------------------- subset families
def test_subset_family_singletons():
    assert np.array_equal(subset_family(8, 1, 3), np.arange(8)[:, None])
    assert np.array_equal(subset_family(64, 1, 0), np.arange(64)[:, None])


@pytest.mark.parametrize("k", [8, 64])
@pytest.mark.parametrize("s", [2, 3, 4])
def test_subset_family_covers_every_pair(k, s):
    family = subset_family(k, s, seed=11)
    assert family.ndim == 2 and family.shape[1] == s
    assert family.dtype.kind == "i"
    assert family.min() >= 0 and family.max() < k
    assert np.all(np.diff(family, axis=1) > 0)  # sorted, distinct bits in a row
    covered = {pair for row in family.tolist() for pair in combinations(row, 2)}
    assert covered == set(combinations(range(k), 2))
    # The thesis' family: row r is the r-th pair of bits (lexicographic) completed at random,
    # C(k, 2) rows for every s (2016 at k = 64, as in the thesis code).
    assert len(family) == k * (k - 1) // 2
    for row, pair in zip(family.tolist(), combinations(range(k), 2)):
        assert set(pair) <= set(row)


def test_subset_family_is_deterministic_per_seed():
    a = subset_family(64, 3, seed=5)
    assert np.array_equal(a, subset_family(64, 3, seed=5))
    assert not np.array_equal(a, subset_family(64, 3, seed=6))
    families = subset_families(64, seed=5)
    assert sorted(families) == [1, 2, 3, 4]
    assert np.array_equal(families[3], a)


def test_subset_family_rejects_bad_sizes():
    with pytest.raises(ValueError, match="size <= k"):
        subset_family(3, 4, 0)
    with pytest.raises(ValueError, match="1 <= cover"):
        subset_family(8, 0, 0)


# --------------------------------------------------------------------------- worst entropy
@pytest.mark.parametrize("s", [1, 2, 3, 4])
def test_worst_entropy_is_s_on_all_codes(s):
    all_8bit = np.arange(256, dtype=np.uint8)[:, None]
    assert worst_entropy(all_8bit, subset_family(8, s, 1)) == pytest.approx(s, abs=1e-12)
    all_16bit = np.arange(1 << 16, dtype=">u2").view(np.uint8).reshape(-1, 2)
    assert worst_entropy(all_16bit, subset_family(16, s, 1)) == pytest.approx(s, abs=1e-12)


def test_worst_entropy_constant_bit_is_zero():
    codes = np.arange(256, dtype=np.uint8)[:, None] | 0x10  # bit 3 always 1
    assert worst_entropy(codes, subset_family(8, 1, 0)) == 0.0
    # a constant bit in a pair leaves the other bit's entropy: 1
    assert worst_entropy(codes, subset_family(8, 2, 0)) == pytest.approx(1.0, abs=1e-12)
    assert worst_entropy(codes, np.array([[3]])) == 0.0
    assert worst_entropy(codes, np.array([[2]])) == pytest.approx(1.0, abs=1e-12)


def test_worst_entropy_skewed_bit():
    # bits 1..7 enumerate all 128 patterns four times; bit 0 (0x80) is 1 in the first copy
    low = np.tile(np.arange(128, dtype=np.uint8), 4)
    low[:128] |= 0x80
    codes = low[:, None]
    assert np.mean(np.unpackbits(codes, axis=1)[:, 0]) == 0.25
    assert worst_entropy(codes, subset_family(8, 1, 0)) == pytest.approx(H_QUARTER, abs=1e-12)
    # pair (0, j): probabilities 1/8, 1/8, 3/8, 3/8 -> 1 + H(1/4); pairs without bit 0: 2
    assert worst_entropy(codes, subset_family(8, 2, 0)) == pytest.approx(1 + H_QUARTER, abs=1e-12)
    assert worst_entropy(codes, np.array([[1, 2]])) == pytest.approx(2.0, abs=1e-12)
    # a redundant pair: bit 1 copies bit 2 -> any subset holding both loses one bit
    twin = (low & 0xBF) | ((low & 0x20) << 1)
    assert worst_entropy(twin[:, None], np.array([[1, 2]])) == pytest.approx(1.0, abs=1e-12)


def test_worst_entropy_matches_brute_force_and_chunking():
    rng = np.random.default_rng(2)
    # biased, correlated bits over 16 bits so the subsets' entropies differ
    codes = (rng.random((3000, 16)) < np.linspace(0.05, 0.5, 16)).astype(np.uint8)
    codes[:, 7] = codes[:, 3] ^ (rng.random(3000) < 0.1)
    packed = np.packbits(codes, axis=1)
    for s in (1, 2, 3, 4):
        family = subset_family(16, s, 4)
        fast = worst_entropy(packed, family)
        assert fast == pytest.approx(brute_force_worst_entropy(packed, family), abs=1e-12)
        # chunked over subsets (one subset per chunk, then 7) -> bit-identical
        assert worst_entropy(packed, family, max_chunk_elements=1) == fast
        assert worst_entropy(packed, family, max_chunk_elements=7 * 3000) == fast


def test_worst_entropy_rejects_bad_input():
    codes = codes_of(1, 2, 3)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        worst_entropy(codes, np.array([[0, 8]]))
    with pytest.raises(ValueError, match="uint8"):
        worst_entropy(codes.astype(np.int64), np.array([[0]]))


# --------------------------------------------------------------------------- training figures
@pytest.fixture(scope="module")
def families8():
    return subset_families(8, seed=0)


def test_training_figures_known_answer(families8):
    anchor = codes_of(0x00, 0x00, 0xF0, 0x0F)
    # positive distances 0, 1, 1, 3
    positive = anchor ^ codes_of(0x00, 0x01, 0x80, 0x07)
    # negative distances 1, 2, 4, 8
    negative = anchor ^ codes_of(0x80, 0x03, 0x0F, 0xFF)
    assert hamming_distances(anchor, positive).tolist() == [0, 1, 1, 3]
    assert hamming_distances(anchor, negative).tolist() == [1, 2, 4, 8]
    figures = training_figures(anchor, positive, negative, families8)
    assert list(figures) == FIGURE_COLUMNS
    assert figures["recall_r0"] == 0.25
    assert figures["recall_r1"] == 0.75
    assert figures["recall_r2"] == 0.75
    assert figures["precision_r0"] == 1.0  # 1 positive, 0 negatives within 0
    assert figures["precision_r1"] == 0.75  # 3 positives, 1 negative within 1
    assert figures["precision_r2"] == 0.6  # 3 positives, 2 negatives within 2
    assert figures["median_positive_distance"] == 1.0  # (1 + 1) / 2
    assert figures["median_negative_distance"] == 3.0  # (2 + 4) / 2
    # anchors {00, F0, 0F} and negatives {80, 03, FF, F0}: 6 distinct codes
    assert figures["unique_codes"] == 6
    assert type(figures["unique_codes"]) is int
    assert all(type(figures[c]) is float for c in FIGURE_COLUMNS if c != "unique_codes")
    # entropies over the 8 anchor + negative codes, checked against the brute force
    both = np.concatenate([anchor, negative])
    for s in (1, 2, 3, 4):
        assert figures[f"worst_entropy_{s}"] == pytest.approx(
            brute_force_worst_entropy(both, families8[s]), abs=1e-12)
    # bits 4 and 5 (0x08, 0x04) are 1 only in 0x0F and 0xFF of the 8 codes: the worst
    # bits, with a share of 1/4 (the others have 3/8 or 1/2)
    assert figures["worst_entropy_1"] == pytest.approx(H_QUARTER, abs=1e-12)


def test_training_figures_precision_zero_when_no_pair_within_radius(families8):
    anchor = codes_of(0x00, 0xFF)
    positive = codes_of(0x07, 0x0F)  # distances 3, 4
    negative = codes_of(0xFF, 0x00)  # distances 8, 8
    figures = training_figures(anchor, positive, negative, families8)
    for r in (0, 1, 2):
        assert figures[f"recall_r{r}"] == 0.0
        assert figures[f"precision_r{r}"] == 0.0
    assert figures["median_positive_distance"] == 3.5
    assert figures["median_negative_distance"] == 8.0
    assert figures["unique_codes"] == 2


def test_training_figures_perfect_and_collapsed_hash(families8):
    anchor = np.arange(256, dtype=np.uint8)[:, None]
    negative = anchor[::-1].copy()
    # a perfect equihash: positives collide exactly, negatives never
    perfect = training_figures(anchor, anchor.copy(), negative, families8)
    assert [perfect[f"recall_r{r}"] for r in (0, 1, 2)] == [1.0, 1.0, 1.0]
    assert [perfect[f"precision_r{r}"] for r in (0, 1, 2)] == [1.0, 1.0, 1.0]
    assert perfect["median_positive_distance"] == 0.0
    assert perfect["unique_codes"] == 256
    assert [perfect[f"worst_entropy_{s}"] for s in (1, 2, 3, 4)] == pytest.approx([1, 2, 3, 4], abs=1e-12)
    # a collapsed hash (one code for everything): precision 1/2 on the balanced pairs
    zeros = np.zeros_like(anchor)
    collapsed = training_figures(zeros, zeros, zeros, families8)
    assert collapsed["recall_r0"] == 1.0 and collapsed["precision_r0"] == 0.5
    assert collapsed["unique_codes"] == 1
    assert [collapsed[f"worst_entropy_{s}"] for s in (1, 2, 3, 4)] == [0.0] * 4


def test_training_figures_match_brute_force_on_random_codes():
    rng = np.random.default_rng(7)
    n, nbytes = 500, 8
    families = subset_families(64, seed=3)
    anchor = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    # positives: flip 0..3 random bits; negatives: a few near the anchor, most random
    flips = np.zeros((n, 64), dtype=np.uint8)
    for i, m in enumerate(rng.integers(0, 4, n)):
        flips[i, rng.choice(64, m, replace=False)] = 1
    positive = anchor ^ np.packbits(flips, axis=1)
    negative = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    negative[:40] = anchor[:40] ^ np.packbits(flips[40:80], axis=1)
    figures = training_figures(anchor, positive, negative, families)

    unpack = lambda c: np.unpackbits(c, axis=1).astype(int)
    d_pos = np.abs(unpack(anchor) - unpack(positive)).sum(1)
    d_neg = np.abs(unpack(anchor) - unpack(negative)).sum(1)
    for r in (0, 1, 2):
        assert figures[f"recall_r{r}"] == np.mean(d_pos <= r)
        tp, fp = np.sum(d_pos <= r), np.sum(d_neg <= r)
        assert figures[f"precision_r{r}"] == pytest.approx(tp / (tp + fp))
    assert figures["median_positive_distance"] == np.median(d_pos)
    assert figures["median_negative_distance"] == np.median(d_neg)
    both = np.concatenate([anchor, negative])
    assert figures["unique_codes"] == len({bytes(row) for row in both})
    for s in (1, 2):
        assert figures[f"worst_entropy_{s}"] == pytest.approx(
            brute_force_worst_entropy(both, families[s]), abs=1e-12)
    # bit-identical rerun
    assert training_figures(anchor, positive, negative, families) == figures


def test_training_figures_rejects_bad_input(families8):
    a = codes_of(1, 2)
    with pytest.raises(ValueError, match="one shape"):
        training_figures(a, a, codes_of(1, 2, 3), families8)
    with pytest.raises(ValueError, match="families"):
        training_figures(a, a, a, {s: families8[s] for s in (1, 2, 3)})
    with pytest.raises(ValueError, match=r"families\[2\]"):
        training_figures(a, a, a, {**families8, 2: families8[3]})
    with pytest.raises(ValueError, match="negative"):
        training_figures(a, a, a.astype(np.uint16), families8)


def test_eval_log_columns():
    assert EVAL_LOG_COLUMNS[:2] == ["step", "split"]
    assert EVAL_LOG_COLUMNS[2:] == FIGURE_COLUMNS
    assert FIGURE_COLUMNS == [
        "recall_r0", "recall_r1", "recall_r2",
        "precision_r0", "precision_r1", "precision_r2",
        "median_positive_distance", "median_negative_distance", "unique_codes",
        "worst_entropy_1", "worst_entropy_2", "worst_entropy_3", "worst_entropy_4",
    ]
    assert len(set(EVAL_LOG_COLUMNS)) == len(EVAL_LOG_COLUMNS)
