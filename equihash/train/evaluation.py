"""Evaluation during training (docs/method.md section 6.6), computed from fingerprints.

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

import itertools
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


def eval_log_table(rows: list[dict]):
    """The rows of an evaluation log as the ``eval_log.parquet`` table (docs/artifacts.md):
    :data:`EVAL_LOG_COLUMNS` first, then any other figures of the rows (the objective's), in
    the order they first appear; ``split`` is an Arrow ``string`` whatever pandas' own
    string type."""
    import pandas as pd
    import pyarrow as pa

    if not rows:  # a model that was not trained here (pretrained:) has no evaluations
        return pa.table({c: pa.array([], type={"step": pa.int64(), "split": pa.string()}.get(c, pa.float64()))
                         for c in EVAL_LOG_COLUMNS})
    frame = pd.DataFrame(rows)
    columns = [c for c in EVAL_LOG_COLUMNS if c in frame] + [c for c in frame if c not in EVAL_LOG_COLUMNS]
    table = pa.Table.from_pandas(frame[columns], preserve_index=False)
    return table.set_column(table.schema.get_field_index("split"), "split", table["split"].cast(pa.string()))

# Bound on the number of (instance, subset) sub-code values held at once by
# worst_entropy (int64 each: 4M values = 32 MiB).
_MAX_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------- subset families
def covering_family(k: int, size: int, cover: int, seed: int, stream: str) -> np.ndarray:
    """One ``size``-subset of the k bits per ``cover``-subset: the thesis' random cover.

    Every ``cover``-subset of the bits, in lexicographic order, is completed to ``size``
    bits with ``size - cover`` distinct other bits drawn at random, so that every
    ``cover``-subset lies in at least one subset of the family. Returns a
    ``(C(k, cover), size)`` int64 array, bit indices sorted within a row (two rows may
    coincide). ``cover == size`` gives every ``size``-subset exactly once.

    The family depends only on (k, size, cover, seed, stream): its randomness is the keyed
    stream ``KeyedRandom(seed, "train", f"{stream}_{size}")``, item 0.
    """
    k, size, cover = int(k), int(size), int(cover)
    if not 1 <= cover <= size <= k:
        raise ValueError(f"covering family: need 1 <= cover <= size <= k, got k={k}, size={size}, cover={cover}")
    base = np.array(list(itertools.combinations(range(k), cover)), dtype=np.int64).reshape(-1, cover)
    if cover == size:
        return base
    rng = KeyedRandom(seed, "train", f"{stream}_{size}").at(0)
    keys = rng.random((base.shape[0], k))
    keys[np.arange(base.shape[0])[:, None], base] = np.inf  # never draw a bit of the cover subset
    extra = np.argpartition(keys, size - cover - 1, axis=1)[:, : size - cover]
    family = np.concatenate([base, extra], axis=1)
    family.sort(axis=1)
    return family


def subset_family(k: int, s: int, seed: int, stream: str = "subset_family") -> np.ndarray:
    """The fixed random family of s-subsets of the k bits that the worst entropy of
    training-time evaluation is the minimum over (docs/method.md section 6.6).

    - s = 1: the k singletons ``[[0], [1], ..., [k-1]]`` (F = k);
    - s >= 2: one subset per pair of bits, the pair completed with s - 2 random other bits
      (:func:`covering_family` with cover 2): F = C(k, 2) = 2016 at k = 64 for every
      s >= 2, as in the thesis code, so that worst entropies compare with its curves.

    Returns an (F, s) int64 array; it depends only on (k, s, seed, stream).
    """
    return covering_family(k, s, min(int(s), 2), seed, stream)


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
    """The fingerprint figures of one evaluation (one split) of docs/method.md section 6.6.

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
