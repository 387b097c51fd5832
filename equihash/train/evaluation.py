"""Evaluation during training (THESIS.md 6.6), computed from fingerprints.

Every ``eval_freq`` steps the training loop encodes a fixed, seeded set of triplets
(anchor, positive, negative) on the train and valid splits: the anchor and the positive
are two noisy instances of one label (a *positive pair*), the anchor and the negative are
instances of two different labels (a *negative pair*). :func:`training_figures` turns the
three (n, B) uint8 fingerprint arrays into one row of ``eval_log.parquet``:

- ``recall_r{r}`` for r = 0, 1, 2: share of positive pairs at Hamming distance <= r
  (r = 0 is the equihash goal: the two fingerprints collide exactly);
- ``precision_r{r}``: positive pairs within r over all pairs (positive and negative)
  within r. The triplets hold as many negative pairs as positive pairs, so this is
  the precision on a balanced pair set. When no pair at all lies within r the
  precision is undefined; it is reported as 0.0;
- ``median_positive_distance`` / ``median_negative_distance``: medians of the Hamming
  distances of the positive and of the negative pairs (a median of an even number of
  values is the mean of the two middle ones, so it may end in .5);
- ``unique_codes``: number of distinct fingerprints among the anchors and the negatives
  together (2n instances of random labels; a collapsed hash has few);
- ``worst_entropy_{s}`` for s = 1..4: the *worst entropy* of the code distribution
  restricted to s bits. For each s-subset of bits of a fixed random *subset family*
  (see :func:`subset_family`) take the empirical distribution of the s-bit sub-codes of
  the anchors and negatives and its entropy in bits; report the minimum over the family.
  The ideal is s (every s-bit pattern equally frequent, as the Shannon term of the
  ShannonHamming objective asks); a constant bit gives 0 at s = 1, a redundant pair of
  bits caps s = 2 at 1. The positives are left out of the entropy and of
  ``unique_codes`` because they repeat the anchors' labels.

Fingerprints are packed most significant bit first (numpy ``packbits`` order): bit 0 is
the 0x80 bit of byte 0. Hamming distance = popcount of the XOR of the packed codes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from equihash.codes import check_codes, hamming_distances
from equihash.data.keyed import KeyedRandom

#: Hamming radii of the recall and precision figures.
RADII = (0, 1, 2)

#: Subset sizes s of the worst-entropy figures.
ENTROPY_SUBSET_SIZES = (1, 2, 3, 4)

#: The figures returned by :func:`training_figures`, in column order.
FIGURE_COLUMNS = (
    [f"recall_r{r}" for r in RADII]
    + [f"precision_r{r}" for r in RADII]
    + ["median_positive_distance", "median_negative_distance", "unique_codes"]
    + [f"worst_entropy_{s}" for s in ENTROPY_SUBSET_SIZES]
)

#: Ordered columns of ``eval_log.parquet`` that come from this module: the step, the
#: split ("train" or "valid"), then the fingerprint figures. The training loop appends
#: its own columns (loss figures) after these.
EVAL_LOG_COLUMNS = ["step", "split"] + FIGURE_COLUMNS

# Bound on the number of (instance, subset) sub-code values held at once by
# worst_entropy (int64 each: 4M values = 32 MiB).
_MAX_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------- subset families
def subset_family(k: int, s: int, seed: int, stream: str = "subset_family") -> np.ndarray:
    """A fixed random family of s-subsets of the k bits that covers every bit or every pair.

    Returns an (F, s) int64 array, one subset per row, bit indices sorted within a row.

    - s = 1: exactly the k singletons ``[[0], [1], ..., [k-1]]`` (F = k).
    - s >= 2: every unordered pair of bits lies in at least one subset (a covering
      design). Built greedily in a random relabelling of the bits: while a pair is
      uncovered, take the first uncovered pair and complete it to s bits, one bit at a
      time, with a bit that covers the most still-uncovered pairs together with the bits
      already chosen (ties broken at random). For k = 64 this gives F = 2016 (s = 2, all
      pairs), about 690 (s = 3) and about 370 (s = 4), near the covering lower bounds.

    The family depends only on (k, s, seed, stream): its randomness is the keyed stream
    ``KeyedRandom(seed, "train", f"{stream}_{s}")``, item 0 (another ``stream`` gives a
    family independent of the evaluation's, e.g. the Shannon term's tuple cover).
    """
    k, s = int(k), int(s)
    if s < 1 or k < s:
        raise ValueError(f"subset_family: need 1 <= s <= k, got k={k}, s={s}")
    if s == 1:
        return np.arange(k, dtype=np.int64)[:, None]

    rng = KeyedRandom(seed, "train", f"{stream}_{s}").at(0)
    relabel = rng.permutation(k)  # greedy position -> bit index
    uncovered = ~np.eye(k, dtype=bool)  # symmetric: uncovered[i, j] for pairs i != j
    first_of_row = np.triu(np.ones((k, k), dtype=bool), 1)  # scan order i < j
    subsets = []
    while True:
        flat = np.flatnonzero(uncovered & first_of_row)
        if flat.size == 0:
            break
        i, j = divmod(int(flat[0]), k)
        members = [i, j]
        while len(members) < s:
            # gain[c] = number of uncovered pairs (m, c) over the current members m
            gain = uncovered[members].sum(axis=0)
            gain[members] = -1
            best = np.flatnonzero(gain == gain.max())
            members.append(int(best[rng.integers(best.size)]))
        idx = np.array(members)
        uncovered[np.ix_(idx, idx)] = False
        subsets.append(members)
    family = relabel[np.array(subsets, dtype=np.int64)]
    family.sort(axis=1)
    return family


def subset_families(k: int, seed: int, sizes=ENTROPY_SUBSET_SIZES) -> dict[int, np.ndarray]:
    """``{s: subset_family(k, s, seed)}`` for each s of ``sizes`` (the argument of
    :func:`training_figures`; build it once per training run)."""
    return {int(s): subset_family(k, s, seed) for s in sizes}


# --------------------------------------------------------------------------- figures
def worst_entropy(codes: np.ndarray, family: np.ndarray, *, max_chunk_elements: int = _MAX_CHUNK_ELEMENTS) -> float:
    """Worst entropy (bits) of the empirical code distribution restricted to s bits.

    ``codes`` is (n, B) uint8 (k = 8B bits, MSB first), ``family`` an (F, s) array of bit
    indices. For each subset f the s-bit sub-code of every code is the integer whose
    binary digits are the code's bits ``family[f]`` in row order; the figure is
    ``min_f H(empirical distribution of sub-codes under f)``, between 0 and s.

    Vectorised: the sub-code values of all (code, subset) cells are computed at once
    (in chunks of subsets of at most ``max_chunk_elements`` cells) and counted with one
    ``bincount`` on ``value + 2**s * subset``.
    """
    codes = check_codes(codes, "worst_entropy codes")
    family = np.asarray(family)
    k = 8 * codes.shape[1]
    if family.ndim != 2 or family.shape[0] == 0 or family.shape[1] == 0 or family.dtype.kind not in "iu":
        raise ValueError(f"worst_entropy family: expected a non-empty (F, s) integer array, got dtype {family.dtype} and shape {family.shape}")
    if family.min() < 0 or family.max() >= k:
        raise ValueError(f"worst_entropy family: bit indices must lie in [0, {k}) for {codes.shape[1]}-byte codes, got range [{family.min()}, {family.max()}]")
    n = codes.shape[0]
    n_subsets, s = family.shape
    if s > 16:
        raise ValueError(f"worst_entropy family: subsets of at most 16 bits, got s = {s}")
    n_values = 1 << s

    # (k, n): one contiguous row per bit, bit 0 = MSB of byte 0
    bit_rows = np.ascontiguousarray(np.unpackbits(codes, axis=1).T)
    chunk = max(1, int(max_chunk_elements) // n)
    entropies = np.empty(n_subsets, dtype=np.float64)
    for start in range(0, n_subsets, chunk):
        sub = family[start:start + chunk]  # (f, s)
        # (f, n) sub-codes in [0, 2**s): the subset's first bit is the most significant,
        # offset by 2**s * (subset position) so one bincount counts every subset at once
        values = np.repeat(np.arange(sub.shape[0], dtype=np.intp)[:, None], n, axis=1)
        for column in range(s):
            values <<= 1
            values |= bit_rows[sub[:, column]]
        counts = np.bincount(values.ravel(), minlength=n_values * sub.shape[0]).reshape(sub.shape[0], n_values)
        # H = -sum p log2 p with p = c / n, i.e. log2 n - sum c log2 c / n (0 log 0 = 0)
        c_log_c = counts * np.log2(np.maximum(counts, 1))
        entropies[start:start + sub.shape[0]] = np.log2(n) - c_log_c.sum(axis=1) / n
    # The formula can round to a hair below 0 for a constant sub-code; clamp to [0, s].
    return float(np.clip(entropies.min(), 0.0, s))


def training_figures(anchor: np.ndarray, positive: np.ndarray, negative: np.ndarray,
                     families: Mapping[int, np.ndarray]) -> dict:
    """The fingerprint figures of one evaluation (one split) of THESIS.md 6.6.

    ``anchor``, ``positive``, ``negative``: (n, B) uint8 packed fingerprints of the n
    evaluation triplets. ``families``: ``{s: (F, s) subset family}`` for s = 1..4
    (:func:`subset_families`). Returns a dict with exactly the keys of
    :data:`FIGURE_COLUMNS`, in that order, as plain Python floats (``unique_codes``: int).
    See the module docstring for the definitions; a precision with no pair within the
    radius is 0.0.
    """
    anchor = check_codes(anchor, "anchor")
    positive = check_codes(positive, "positive")
    negative = check_codes(negative, "negative")
    if not anchor.shape == positive.shape == negative.shape:
        raise ValueError(f"triplet codes: anchor, positive and negative must have one shape, got {anchor.shape}, {positive.shape}, {negative.shape}")
    if sorted(families) != list(ENTROPY_SUBSET_SIZES):
        raise ValueError(f"families: expected subset families for s = {list(ENTROPY_SUBSET_SIZES)}, got keys {sorted(families)}")

    positive_distance = hamming_distances(anchor, positive)
    negative_distance = hamming_distances(anchor, negative)
    n = anchor.shape[0]
    figures: dict = {}
    positives_within = {r: int(np.count_nonzero(positive_distance <= r)) for r in RADII}
    negatives_within = {r: int(np.count_nonzero(negative_distance <= r)) for r in RADII}
    for r in RADII:
        figures[f"recall_r{r}"] = positives_within[r] / n
    for r in RADII:
        within = positives_within[r] + negatives_within[r]
        figures[f"precision_r{r}"] = positives_within[r] / within if within else 0.0
    figures["median_positive_distance"] = float(np.median(positive_distance))
    figures["median_negative_distance"] = float(np.median(negative_distance))

    random_label_codes = np.concatenate([anchor, negative])
    figures["unique_codes"] = int(np.unique(random_label_codes, axis=0).shape[0])
    for s in ENTROPY_SUBSET_SIZES:
        if np.ndim(families[s]) != 2 or np.shape(families[s])[1] != s:
            raise ValueError(f"families[{s}]: expected an (F, {s}) array of bit indices, got shape {np.shape(families[s])}")
        figures[f"worst_entropy_{s}"] = worst_entropy(random_label_codes, families[s])
    return figures
