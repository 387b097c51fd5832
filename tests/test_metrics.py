"""Tests of equihash.evaluate.metrics: hand-computed answers and brute-force equivalence."""

import itertools
import json
from fractions import Fraction

import numpy as np
import pytest

from equihash.evaluate import (
    CSR,
    binary_metrics,
    equidict,
    equiset,
    internal_collisions,
    metrics_document,
    multiprobe_entry,
)
from equihash.codes import hamming_distances
from equihash.evaluate.metrics import _members_of
from equihash.io import InputError


# --------------------------------------------------------------------------- brute force
def brute_internal_collisions(codes, labels):
    """O(N^2): every unordered pair with equal fingerprint bytes and different labels."""
    rows = [bytes(c) for c in codes]
    labs = [tuple(int(v) for v in row) for row in labels]
    return sum(1 for i, j in itertools.combinations(range(len(rows)), 2)
               if rows[i] == rows[j] and labs[i] != labs[j])


def brute_equidict(retrieved_lists, truth_lists):
    q = len(retrieved_lists)
    common = total = 0
    jaccard = perfect = complete = sound = 0.0
    for r, g in zip(retrieved_lists, truth_lists):
        r, g = set(r), set(g)
        common += len(r & g)
        total += len(g)
        jaccard += len(r & g) / len(r | g) if (r | g) else 1.0
        perfect += r == g
        complete += g <= r
        sound += r <= g
    return {"recall": common / total, "average_jaccard_index": jaccard / q,
            "perfect_retrieval_rate": perfect / q, "complete_retrieval_rate": complete / q,
            "sound_retrieval_rate": sound / q}


def brute_hamming(a, b):
    return np.unpackbits(a ^ b, axis=1).sum(axis=1)


def random_lists(rng, q, universe, max_size):
    return [sorted(rng.choice(universe, size=rng.integers(0, max_size + 1), replace=False)
                   .tolist()) for _ in range(q)]


# --------------------------------------------------------------------------- internal collisions
# Six positions, fingerprints a a a b b c, labels x x y z w z.
# Fingerprint groups: a (3) -> C(3,2) = 3 pairs, b (2) -> 1, c (1) -> 0: 4 pairs.
# (fingerprint, label) groups: (a,x) of 2 -> 1 pair, all others singletons: 1 pair.
# Internal collisions = 4 - 1 = 3: (0,2), (1,2) in a and (3,4) in b.
HAND_CODE_ROWS = [0, 0, 0, 1, 1, 2]
HAND_LABELS = np.array([[7, 7], [7, 7], [7, 8], [9, 1], [9, 2], [9, 1]], dtype=np.uint32)


@pytest.mark.parametrize("nbytes", [1, 3, 8, 16])
def test_internal_collisions_hand_example(nbytes):
    patterns = np.random.default_rng(1).integers(0, 256, size=(3, nbytes), dtype=np.uint8)
    patterns[:, -1] = [10, 20, 30]  # the three fingerprints differ only in the last byte
    codes = patterns[HAND_CODE_ROWS]
    assert internal_collisions(codes, HAND_LABELS) == 3


def test_internal_collisions_degenerate():
    assert internal_collisions(np.zeros((0, 8), np.uint8), np.zeros((0, 4), np.uint32)) == 0
    assert internal_collisions(np.zeros((1, 8), np.uint8), np.zeros((1, 4), np.uint32)) == 0
    # All ten fingerprints equal, all labels distinct: every one of C(10,2) = 45 pairs.
    assert internal_collisions(np.zeros((10, 8), np.uint8),
                               np.arange(20, dtype=np.uint32).reshape(10, 2)) == 45
    # All equal fingerprints and labels: duplicates of one class, no collision.
    assert internal_collisions(np.zeros((10, 8), np.uint8), np.ones((10, 2), np.uint32)) == 0


@pytest.mark.parametrize("nbytes, contiguous", [(1, True), (3, True), (8, True), (8, False),
                                                (16, True)])
def test_internal_collisions_matches_brute_force(nbytes, contiguous):
    rng = np.random.default_rng(nbytes)
    n = 300
    # Few distinct fingerprints and few distinct labels: many collisions and many duplicates.
    palette = rng.integers(0, 256, size=(6, nbytes), dtype=np.uint8)
    codes = palette[rng.integers(0, 6, size=n)]
    if not contiguous:
        codes = np.asfortranarray(codes)
    labels = rng.integers(0, 3, size=(n, 2)).astype(np.uint32)
    expected = brute_internal_collisions(codes, labels)
    assert expected > 0
    assert internal_collisions(codes, labels) == expected


@pytest.mark.parametrize("dtype, low, high", [(np.uint32, 2**32 - 4, 2**32), (np.int64, -2, 2),
                                              (np.uint16, 0, 3)])
def test_internal_collisions_any_label_range(dtype, low, high):
    # Wide cells (4 x 32 bits: two packed words), negative cells, narrow cells.
    rng = np.random.default_rng(5)
    n = 300
    palette = rng.integers(0, 256, size=(4, 8), dtype=np.uint8)
    codes = palette[rng.integers(0, 4, size=n)]
    labels = rng.integers(low, high, size=(n, 4)).astype(dtype)
    assert internal_collisions(codes, labels) == brute_internal_collisions(codes, labels)


def test_members_scan_is_chunk_independent():
    keys = np.array([5, 3, 9, 3, 7, 5, 5, 1, 9, 2, 3], dtype=np.uint64)
    shared = np.array([3, 5, 9], dtype=np.uint64)  # the keys held by >= 2 positions
    # Positions holding 3: 1, 3, 10 (group 0); 5: 0, 5, 6 (group 1); 9: 2, 8 (group 2).
    for chunk, sort_above in itertools.product((1, 2, 4, 100), (0, 100)):
        positions, groups = _members_of(keys, shared, chunk=chunk, sort_above=sort_above)
        assert sorted(zip(positions.tolist(), groups.tolist())) == [
            (0, 1), (1, 0), (2, 2), (3, 0), (5, 1), (6, 1), (8, 2), (10, 0)]


def test_internal_collisions_labels_only_differ_in_one_cell():
    # Labels (1,2,3,4) and (1,2,3,5) are different classes: the pair is a collision.
    codes = np.zeros((2, 8), np.uint8)
    labels = np.array([[1, 2, 3, 4], [1, 2, 3, 5]], np.uint32)
    assert internal_collisions(codes, labels) == 1


# --------------------------------------------------------------------------- equidict
def test_equidict_hand_example():
    # q0: R={1,2}, G={2,3}: |R&G| = 1, |R|G| = 3, neither complete nor sound.
    # q1: R={},    G={}:    Jaccard 1 by convention, perfect, complete and sound.
    # q2: R={5},   G={5,6}: |R&G| = 1, |R|G| = 2, sound only.
    # q3: R={4,9}, G={4,9}: perfect.
    # recall = (1+0+1+2)/(2+0+2+2) = 4/6; Jaccard = (1/3 + 1 + 1/2 + 1)/4 = 17/24;
    # perfect = 2/4 (q1, q3); complete = 2/4 (q1, q3); sound = 3/4 (q1, q2, q3).
    retrieved = CSR.from_lists([[1, 2], [], [5], [4, 9]])
    truth = CSR.from_lists([[2, 3], [], [5, 6], [4, 9]])
    got = equidict(retrieved, truth)
    assert got == pytest.approx({
        "recall": float(Fraction(4, 6)),
        "average_jaccard_index": float(Fraction(17, 24)),
        "perfect_retrieval_rate": 0.5,
        "complete_retrieval_rate": 0.5,
        "sound_retrieval_rate": 0.75,
    }, rel=1e-15)
    assert list(got) == ["recall", "average_jaccard_index", "perfect_retrieval_rate",
                         "complete_retrieval_rate", "sound_retrieval_rate"]
    assert all(type(v) is float for v in got.values())


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("huge_positions", [False, True])
def test_equidict_matches_python_sets(seed, huge_positions):
    rng = np.random.default_rng(seed)
    q = 200
    universe = np.arange(40)  # small universe: heavy overlap between R and G
    truth_lists = random_lists(rng, q, universe, 6)
    truth_lists[0] = [3]  # sum |G| > 0
    retrieved_lists = random_lists(rng, q, universe, 6)
    # Some queries retrieve exactly, a superset, or a subset of their ground truth.
    for j in range(0, q, 7):
        retrieved_lists[j] = list(truth_lists[j])
    for j in range(3, q, 11):
        retrieved_lists[j] = sorted(set(truth_lists[j]) | {39})
    for j in range(5, q, 13):
        retrieved_lists[j] = truth_lists[j][: len(truth_lists[j]) // 2]
    if huge_positions:
        # q * (max position + 1) overflows int64: exercises the lexsort merge.
        shift = 2**62
        truth_lists = [[p + shift for p in g] for g in truth_lists]
        retrieved_lists = [[p + shift for p in r] for r in retrieved_lists]
    expected = brute_equidict(retrieved_lists, truth_lists)
    retrieved = CSR.from_lists(retrieved_lists)
    truth = CSR.from_lists(truth_lists)
    truth = CSR(truth.offsets, truth.positions.astype(np.uint64))  # as read from Parquet
    got = equidict(retrieved, truth)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == equidict(retrieved, truth)  # bit-identical rerun


def test_equidict_edge_cases():
    empty = CSR(np.zeros(1, np.int64), np.zeros(0, np.int64))
    assert equidict(empty, empty) == dict.fromkeys(
        ["recall", "average_jaccard_index", "perfect_retrieval_rate",
         "complete_retrieval_rate", "sound_retrieval_rate"], 0.0)
    # Nothing retrieved (e.g. an empty database) for two queries with truth {0} and {}:
    # recall 0/1, Jaccard (0 + 1)/2, perfect 1/2, complete 1/2, sound 2/2.
    got = equidict(CSR.from_lists([[], []]), CSR.from_lists([[0], []]))
    assert got == {"recall": 0.0, "average_jaccard_index": 0.5, "perfect_retrieval_rate": 0.5,
                   "complete_retrieval_rate": 0.5, "sound_retrieval_rate": 1.0}


def test_equidict_rejects_bad_csr():
    good = CSR.from_lists([[1, 2], [3]])
    with pytest.raises(InputError, match="sorted"):
        equidict(CSR(good.offsets, np.array([2, 1, 3])), good)
    with pytest.raises(InputError, match="sorted"):
        equidict(CSR(good.offsets, np.array([1, 1, 3])), good)
    with pytest.raises(InputError, match="queries"):
        equidict(good, CSR.from_lists([[1]]))
    with pytest.raises(InputError, match="offsets"):
        equidict(CSR(np.array([0, 2, 4]), good.positions), good)
    # A drop at a list boundary is legal: [5] then [1].
    assert equidict(CSR.from_lists([[5], [1]]), CSR.from_lists([[5], [1]]))["recall"] == 1.0


# --------------------------------------------------------------------------- equiset
def test_equiset_hand_example():
    # Positive sizes 2, 0, 1, 3 -> 3 of 4 non-empty; negative sizes 0, 0, 4, 0, 0 -> 1 of 5.
    positive = np.array([0, 2, 2, 3, 6])
    negative = np.array([0, 0, 0, 4, 4, 4])
    assert equiset(positive, negative) == {"true_positive_rate": 0.75,
                                           "false_positive_rate": 0.2}
    assert equiset(np.zeros(1, np.int64), np.zeros(1, np.int64)) == {
        "true_positive_rate": 0.0, "false_positive_rate": 0.0}


# --------------------------------------------------------------------------- binary
def test_hamming_known_answers():
    a = np.array([[0x00, 0xFF], [0x80, 0x01], [0xAA, 0x55]], np.uint8)
    b = np.array([[0x0F, 0xFF], [0x80, 0x01], [0x55, 0xAA]], np.uint8)
    # 0x00^0x0F has 4 bits; identical rows 0; 0xAA^0x55 = 0xFF twice = 16.
    assert hamming_distances(a, b).tolist() == [4, 0, 16]


@pytest.mark.parametrize("nbytes", [1, 5, 8, 16])
def test_hamming_matches_unpackbits(nbytes):
    rng = np.random.default_rng(nbytes)
    a = rng.integers(0, 256, size=(500, nbytes), dtype=np.uint8)
    b = rng.integers(0, 256, size=(500, nbytes), dtype=np.uint8)
    b[::3] = a[::3]
    expected = brute_hamming(a, b)
    assert np.array_equal(hamming_distances(a, b), expected)
    assert np.array_equal(hamming_distances(np.asfortranarray(a), np.asfortranarray(b)), expected)


def test_binary_metrics_hand_example():
    # k = 8. Anchors 0x00; positives at distances 0, 0, 1, 5; negatives at 2, 8, 3, 4.
    anchor = np.zeros((4, 1), np.uint8)
    positive = np.array([[0x00], [0x00], [0x01], [0x1F]], np.uint8)
    negative = np.array([[0x03], [0xFF], [0x07], [0x0F]], np.uint8)
    got = binary_metrics(anchor, positive, negative)
    assert list(got) == ["r_at", "f_at", "positive_histogram", "negative_histogram"]
    # r@0 = 2/4, r@1 = 3/4, r@2 = r@3 = 3/4; f@0 = f@1 = 0, f@2 = 1/4, f@3 = 2/4.
    assert got["r_at"] == [0.5, 0.75, 0.75, 0.75]
    assert got["f_at"] == [0.0, 0.0, 0.25, 0.5]
    assert got["positive_histogram"] == [2, 1, 0, 0, 0, 1, 0, 0, 0]
    assert got["negative_histogram"] == [0, 0, 1, 1, 1, 0, 0, 0, 1]
    assert all(type(c) is int for c in got["positive_histogram"] + got["negative_histogram"])


def test_binary_metrics_invariants():
    rng = np.random.default_rng(7)
    n, nbytes = 1000, 8
    anchor = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    flips = np.packbits(rng.random((n, 8 * nbytes)) < 0.02, axis=1)
    positive = anchor ^ flips
    negative = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    got = binary_metrics(anchor, positive, negative)
    for histogram in ("positive_histogram", "negative_histogram"):
        assert len(got[histogram]) == 65 and sum(got[histogram]) == n
    for rate in ("r_at", "f_at"):
        assert all(x <= y for x, y in zip(got[rate], got[rate][1:]))
    distances = brute_hamming(anchor, positive)
    assert got["r_at"] == [float(np.mean(distances <= d)) for d in range(4)]
    assert got["positive_histogram"] == np.bincount(distances, minlength=65).tolist()
    assert binary_metrics(anchor, positive, negative) == got
    empty = np.zeros((0, 2), np.uint8)
    assert binary_metrics(empty, empty, empty) == {
        "r_at": [0.0] * 4, "f_at": [0.0] * 4,
        "positive_histogram": [0] * 17, "negative_histogram": [0] * 17}


# --------------------------------------------------------------------------- metrics.json
def _document(multiprobe):
    retrieved = CSR.from_lists([[1, 2], [], [5], [4, 9]])
    truth = CSR.from_lists([[2, 3], [], [5, 6], [4, 9]])
    negative = np.array([0, 0, 1])
    anchor = np.zeros((4, 1), np.uint8)
    return metrics_document(
        task="MnistMosaic", model="ShannonHamming", variant="main", database="default",
        nbits=np.int64(8), database_size=np.int64(10), internal_collisions=np.int64(3),
        equidict=equidict(retrieved, truth), equiset=equiset(retrieved.offsets, negative),
        binary=binary_metrics(anchor, anchor, anchor ^ np.uint8(1)),
        multiprobe=[multiprobe(1, retrieved, truth, negative),
                    multiprobe(2, CSR.from_lists([[1, 2, 3], [], [5, 6], [4, 9]]), truth,
                               np.array([0, 1, 2]))])


def test_multiprobe_entry_hand_example():
    # Two lookups retrieve q0: {1,2,3} (G {2,3}), q2: {5,6}: recall (2+0+2+2)/6 = 1,
    # perfect q1 q2 q3 = 3/4; non-empty positives 3/4; both negatives non-empty: 1.
    truth = CSR.from_lists([[2, 3], [], [5, 6], [4, 9]])
    entry = multiprobe_entry(2, CSR.from_lists([[1, 2, 3], [], [5, 6], [4, 9]]), truth,
                             np.array([0, 1, 2]))
    assert entry == {"lookups": 2, "recall": 1.0, "perfect_retrieval_rate": 0.75,
                     "true_positive_rate": 0.75, "false_positive_rate": 1.0}
    with pytest.raises(InputError, match="lookups"):
        multiprobe_entry(0, truth, truth, np.array([0]))


def test_metrics_document_layout():
    document = _document(multiprobe_entry)
    # Key order and nesting of the equihash/io.py metrics.json example.
    assert list(document) == ["task", "model", "variant", "database", "nbits", "database_size",
                              "internal_collisions", "equidict", "equiset", "binary",
                              "multiprobe"]
    assert list(document["equidict"]) == ["recall", "average_jaccard_index",
                                          "perfect_retrieval_rate", "complete_retrieval_rate",
                                          "sound_retrieval_rate"]
    assert list(document["equiset"]) == ["true_positive_rate", "false_positive_rate"]
    assert list(document["binary"]) == ["r_at", "f_at", "positive_histogram",
                                        "negative_histogram"]
    assert [list(e) for e in document["multiprobe"]] == [
        ["lookups", "recall", "perfect_retrieval_rate", "true_positive_rate",
         "false_positive_rate"]] * 2
    assert type(document["nbits"]) is int and type(document["internal_collisions"]) is int
    assert document["equiset"] == {"true_positive_rate": 0.75, "false_positive_rate": 0.5}
    assert document["multiprobe"][0]["recall"] == document["equidict"]["recall"]
    # Plain Python values: JSON round trip is lossless.
    assert json.loads(json.dumps(document, allow_nan=False)) == document


def test_metrics_document_checks():
    def first_not_plain(lookups, *args):
        return multiprobe_entry(lookups + 4 if lookups == 1 else lookups, *args)

    with pytest.raises(InputError, match="lookups"):
        _document(first_not_plain)

    def inconsistent(lookups, retrieved, truth, negative):
        entry = multiprobe_entry(lookups, retrieved, truth, negative)
        return {**entry, "recall": 0.125}

    with pytest.raises(InputError, match="recall"):
        _document(inconsistent)
