"""The metrics of docs/method.md section 9, vectorised.

Everything here works on numpy arrays and never loops in Python over database rows or
queries, so the same code evaluates a toy run and the thesis scale (N = 1e9 database
positions, 1e6 queries).

Conventions
-----------
* A *fingerprint* (code) is a row of a ``(n, B)`` uint8 array, k = 8B bits packed most
  significant bit first (numpy ``packbits`` order).
* Retrieval results and ground truths are *CSR* pairs ``(offsets, positions)``: ``offsets``
  is an integer array of length q + 1 with ``offsets[0] == 0``, and the list of query j is
  ``positions[offsets[j]:offsets[j + 1]]``, sorted increasing without duplicates. Any
  2-sequence works; :class:`CSR` is a named tuple for convenience. This module never
  imports the index: the caller passes what the index returned.
* Empty denominators: a rate over zero queries (or a recall with ``sum |G| == 0``) is
  reported as ``0.0``, never NaN, so metrics.json stays strict JSON. The one exception is
  the per-query Jaccard index of a query with ``R`` and ``G`` both empty, which is 1 by
  the thesis definition (their average over zero queries is again ``0.0``).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from equihash.codes import check_codes, hamming_distances
from equihash.io import InputError

#: Hamming radii d of r@d and f@d (docs/method.md section 9, binary metrics).
RADII = (0, 1, 2, 3)

_EQUIDICT_KEYS = (
    "recall",
    "average_jaccard_index",
    "perfect_retrieval_rate",
    "complete_retrieval_rate",
    "sound_retrieval_rate",
)
_EQUISET_KEYS = ("true_positive_rate", "false_positive_rate")
_MULTIPROBE_KEYS = ("lookups", "recall", "perfect_retrieval_rate", "true_positive_rate",
                    "false_positive_rate")


class CSR(NamedTuple):
    """Per-query lists of database positions: list j is ``positions[offsets[j]:offsets[j+1]]``."""

    offsets: np.ndarray
    positions: np.ndarray

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]]) -> "CSR":
        """Build a CSR from a sequence of per-query position lists (used by tests and tools)."""
        sizes = np.fromiter((len(items) for items in lists), dtype=np.int64, count=len(lists))
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        positions = (np.concatenate([np.asarray(items, dtype=np.int64) for items in lists])
                     if offsets[-1] else np.zeros(0, dtype=np.int64))
        return cls(offsets, positions)


# --------------------------------------------------------------------------- validation
def _ratio(numerator, denominator) -> float:
    """``numerator / denominator`` as a plain float, 0.0 when the denominator is 0."""
    return float(numerator) / float(denominator) if denominator else 0.0


def _check_offsets(offsets, name: str, size: int | None = None) -> np.ndarray:
    """Validate CSR offsets (length q + 1, starting at 0, non-decreasing) as int64."""
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or offsets.size == 0 or not np.issubdtype(offsets.dtype, np.integer):
        raise InputError(f"{name}: offsets must be a 1-D integer array of length q + 1 "
                         f"(got shape {offsets.shape}, dtype {offsets.dtype})")
    offsets = offsets.astype(np.int64, copy=False)
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise InputError(f"{name}: offsets must start at 0 and be non-decreasing")
    if size is not None and offsets[-1] != size:
        raise InputError(f"{name}: offsets[-1] = {int(offsets[-1])} but there are {size} positions")
    return offsets


def _check_csr(csr, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate a CSR pair; positions become int64 and must be sorted and unique per query."""
    try:
        offsets, positions = csr
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a pair (offsets, positions)") from None
    positions = np.asarray(positions)
    if positions.ndim != 1 or not (np.issubdtype(positions.dtype, np.integer) or positions.size == 0):
        raise InputError(f"{name}: positions must be a 1-D integer array "
                         f"(got shape {positions.shape}, dtype {positions.dtype})")
    offsets = _check_offsets(offsets, name, positions.size)
    if positions.size:
        if positions.dtype == np.uint64 and positions.max() > np.iinfo(np.int64).max:
            raise InputError(f"{name}: positions must be below 2**63")
        positions = positions.astype(np.int64, copy=False)
        if positions.min() < 0:
            raise InputError(f"{name}: positions must be non-negative database positions")
        # Within a query each step must increase; a drop is allowed only where a new list starts.
        starts_list = np.zeros(positions.size, dtype=bool)
        starts_list[offsets[:-1][offsets[:-1] < positions.size]] = True
        if np.any((np.diff(positions) <= 0) & ~starts_list[1:]):
            raise InputError(f"{name}: the positions of each query must be sorted increasing "
                             "without duplicates")
    else:
        positions = np.zeros(0, dtype=np.int64)
    return offsets, positions


# --------------------------------------------------------------------------- database
def _code_words(codes: np.ndarray) -> np.ndarray:
    """The fingerprints as an (N, W) uint64 array, W = ceil(B / 8), only for equality tests.

    For a C-contiguous array with B a multiple of 8 (k = 64: B = 8) this is a zero-copy
    view; otherwise the bytes are copied once into zero-padded 8-byte words.
    """
    n, nbytes = codes.shape
    if nbytes % 8 == 0 and codes.flags.c_contiguous:
        return codes.view(np.uint64)
    words = np.zeros((n, -(-nbytes // 8) * 8), dtype=np.uint8)
    words[:, :nbytes] = codes
    return words.view(np.uint64)


def _sorted_group_sizes(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Sizes of the runs of equal rows, given the columns of rows already sorted."""
    n = columns[0].size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new_run = np.zeros(n, dtype=bool)
    new_run[0] = True
    for column in columns:
        new_run[1:] |= column[1:] != column[:-1]
    starts = np.flatnonzero(new_run)
    return np.diff(starts, append=n)


def _pairs(sizes: np.ndarray) -> int:
    """Number of unordered pairs inside groups of the given sizes: sum C(g, 2)."""
    sizes = sizes.astype(np.int64, copy=False)
    return int(np.sum(sizes * (sizes - 1) // 2, dtype=np.int64))


def _dense_rank(rows: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense rank of the rows of an (n, m) non-negative integer array: equal rows, equal rank.

    The cells are packed losslessly into as few uint64 words as their bit widths allow (one
    word for the thesis labels: 4 cells of 14 bits, or 2 of 17), the words are sorted, and
    each run of equal words gets the next rank. Returns (int64 ranks, number of ranks).
    """
    n, m = rows.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    if np.issubdtype(rows.dtype, np.signedinteger) and rows.min() < 0:
        rows = rows.astype(np.int64) - int(rows.min())  # shift: equality is all that matters
    words, word, used = [], None, 64
    for j in range(m):
        cell = rows[:, j].astype(np.uint64)
        width = max(int(cell.max()).bit_length(), 1)
        if used + width > 64:
            word, used = np.zeros(n, dtype=np.uint64), 0
            words.append(word)
        word |= cell << np.uint64(used)
        used += width
    order = np.argsort(words[0]) if len(words) == 1 else np.lexsort(words[::-1])
    sorted_words = [w[order] for w in words]
    new_run = np.zeros(n, dtype=bool)
    new_run[0] = True
    for w in sorted_words:
        new_run[1:] |= w[1:] != w[:-1]
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.cumsum(new_run) - 1
    return ranks, int(ranks.max()) + 1


def _shared_fingerprints(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fingerprint keys held by >= 2 positions (sorted, unique) and how many hold each.

    One sorted copy of ``keys`` (8 bytes per position) and a boolean mask are the only
    temporaries of database size.
    """
    ordered = np.sort(keys)
    repeats = ordered[1:][ordered[1:] == ordered[:-1]]  # one entry per extra holder, sorted
    del ordered
    if repeats.size == 0:
        return repeats, np.zeros(0, dtype=np.int64)
    first = np.ones(repeats.size, dtype=bool)
    first[1:] = repeats[1:] != repeats[:-1]
    shared = repeats[first]
    holders = np.diff(np.flatnonzero(first), append=repeats.size) + 1
    return shared, holders


def _members_of(keys: np.ndarray, shared: np.ndarray, *, chunk: int = 1 << 22,
                sort_above: int = 1 << 15) -> tuple[np.ndarray, np.ndarray]:
    """Positions whose key is in the sorted array ``shared``, and the index of that key.

    Scans the database in chunks so that the temporaries stay small. When ``shared`` is
    larger than a cache (``sort_above`` keys), each chunk is argsorted first so that the
    binary searches walk ``shared`` in order instead of missing the cache at every probe
    (measured 5x faster for 5e6 shared keys). The pairs come back in no particular order.
    """
    positions, groups = [], []
    last = shared.size - 1
    for begin in range(0, keys.size, chunk):
        block = keys[begin:begin + chunk]
        local = np.argsort(block) if shared.size > sort_above else None
        needles = block if local is None else block[local]
        slot = np.minimum(np.searchsorted(shared, needles), last)
        hit = np.flatnonzero(shared[slot] == needles)
        positions.append((hit if local is None else local[hit]) + begin)
        groups.append(slot[hit])
    return np.concatenate(positions), np.concatenate(groups).astype(np.int64, copy=False)


def internal_collisions(codes, labels) -> int:
    """Internal collisions of a database (docs/method.md section 9).

    The number of unordered pairs of database positions whose fingerprints are equal but
    whose labels (equivalence classes) differ::

        sum over fingerprint groups C(g, 2) - sum over (fingerprint, label) groups C(g, 2)

    ``codes`` is ``(N, B)`` uint8, ``labels`` is ``(N, m)`` integer. Each fingerprint is
    one uint64 key (a zero-copy view when B = 8; a dense rank of its 8-byte words when
    k > 64). The keys are sorted once to find the fingerprints held by >= 2 positions;
    only those positions (the *members*) then have their labels gathered and densely
    ranked, and one int64 key (fingerprint group, label rank) per member is sorted. For
    B = 8 the extra memory is about 9 bytes per database position plus about 60 bytes per
    member; pair counts are exact for N < 2**32.
    """
    codes = check_codes(codes, "internal_collisions codes")
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    if (labels.ndim != 2 or labels.shape[0] != codes.shape[0]
            or not np.issubdtype(labels.dtype, np.integer)):
        raise InputError(f"internal_collisions labels: expected an (N, m) integer array with "
                         f"N = {codes.shape[0]} (got shape {labels.shape}, dtype {labels.dtype})")
    n = codes.shape[0]
    if n < 2:
        return 0

    words = _code_words(codes)
    keys = words.reshape(n) if words.shape[1] == 1 else _dense_rank(words)[0]
    del words
    shared, holders = _shared_fingerprints(keys)
    code_pairs = _pairs(holders)
    if code_pairs == 0:
        return 0

    members, group_of_member = _members_of(keys, shared)
    label_rank, n_ranks = _dense_rank(labels[members])
    del members
    # One int64 key per member: (fingerprint group, label class); equal keys = same class.
    if shared.size * n_ranks <= np.iinfo(np.int64).max:
        class_keys = group_of_member * n_ranks + label_rank
        class_keys.sort()
        same_label_pairs = _pairs(_sorted_group_sizes([class_keys]))
    else:  # beyond any realistic N: fall back to a two-key lexsort
        by_label = np.lexsort((label_rank, group_of_member))
        same_label_pairs = _pairs(_sorted_group_sizes([group_of_member[by_label],
                                                       label_rank[by_label]]))
    return code_pairs - same_label_pairs


# --------------------------------------------------------------------------- queries
def _intersection_sizes(retrieved, ground_truth) -> np.ndarray:
    """|R_j & G_j| for every query j of two validated CSRs with the same number of queries.

    Every element is tagged with its query id. When ``q * (max position + 1)`` fits in
    int64 the pair becomes one key ``query * span + position``; the ground-truth keys are
    then already sorted (query-major, sorted within a query), so each retrieved key is
    looked up with one ``searchsorted``. Otherwise both lists are merged with a two-column
    lexsort, where equal adjacent (query, position) pairs are the intersection (each list
    is duplicate-free, so an equal pair is one element of R and one of G).
    """
    (r_offsets, r_positions), (g_offsets, g_positions) = retrieved, ground_truth
    q = r_offsets.size - 1
    if r_positions.size == 0 or g_positions.size == 0:
        return np.zeros(q, dtype=np.int64)
    query_ids = np.arange(q, dtype=np.int64)
    r_query = np.repeat(query_ids, np.diff(r_offsets))
    g_query = np.repeat(query_ids, np.diff(g_offsets))
    span = max(int(r_positions.max()), int(g_positions.max())) + 1
    if q * span <= np.iinfo(np.int64).max:
        g_keys = g_query * span + g_positions
        r_keys = r_query * span + r_positions
        slot = np.searchsorted(g_keys, r_keys)
        np.minimum(slot, g_keys.size - 1, out=slot)
        hit = g_keys[slot] == r_keys
        return np.bincount(r_query[hit], minlength=q)
    both_query = np.concatenate([r_query, g_query])
    both_position = np.concatenate([r_positions, g_positions])
    order = np.lexsort((both_position, both_query))
    both_query, both_position = both_query[order], both_position[order]
    equal_next = (both_query[1:] == both_query[:-1]) & (both_position[1:] == both_position[:-1])
    return np.bincount(both_query[1:][equal_next], minlength=q)


def retrieval_counts(retrieved, ground_truth) -> tuple[np.ndarray, np.ndarray]:
    """(|R_j|, |R_j & G_j|) of every query j, int64, from two CSRs over the same queries:
    all that the equidict, equiset and multi-probe figures need of the retrieved sets.

    The counts of an index cut into partitions are the sums of the partitions' counts: a
    database position lies in one partition only, so the R_j of the partitions are disjoint.
    """
    retrieved = _check_csr(retrieved, "retrieved")
    ground_truth = _check_csr(ground_truth, "ground_truth")
    q = retrieved[0].size - 1
    if ground_truth[0].size - 1 != q:
        raise InputError(f"retrieved has {q} queries but ground_truth has {ground_truth[0].size - 1}; "
                         "expected the same queries")
    return np.diff(retrieved[0]).astype(np.int64), _intersection_sizes(retrieved, ground_truth)


def equidict_from_counts(retrieved_sizes, common, truth_sizes) -> dict:
    """Equidict metrics (docs/method.md section 9) of q positive queries from |R_j|,
    |R_j & G_j| and |G_j| (three length-q integer arrays). Returns

    * ``recall`` = sum_j |R_j & G_j| / sum_j |G_j|;
    * ``average_jaccard_index`` = mean_j |R_j & G_j| / |R_j | G_j| (1 when both are empty);
    * ``perfect_retrieval_rate`` = share of queries with R_j == G_j;
    * ``complete_retrieval_rate`` = share with G_j within R_j;
    * ``sound_retrieval_rate`` = share with R_j within G_j.

    Zero queries (or sum |G| = 0 for the recall) give 0.0.
    """
    r_sizes, common, g_sizes = (np.asarray(a, dtype=np.int64) for a in (retrieved_sizes, common, truth_sizes))
    q = r_sizes.size
    if common.size != q or g_sizes.size != q:
        raise InputError(f"equidict: {q} retrieved sizes, {common.size} intersections and {g_sizes.size} "
                         "ground-truth sizes; expected one of each per query")
    union = r_sizes + g_sizes - common
    jaccard = np.divide(common, union, out=np.ones(q, dtype=np.float64), where=union > 0)
    complete = common == g_sizes
    sound = common == r_sizes
    return {
        "recall": _ratio(common.sum(), g_sizes.sum()),
        "average_jaccard_index": float(jaccard.mean()) if q else 0.0,
        "perfect_retrieval_rate": _ratio(np.count_nonzero(complete & sound), q),
        "complete_retrieval_rate": _ratio(np.count_nonzero(complete), q),
        "sound_retrieval_rate": _ratio(np.count_nonzero(sound), q),
    }


def equidict(retrieved, ground_truth) -> dict:
    """Equidict metrics of the positive queries (docs/method.md section 9):
    :func:`equidict_from_counts` of two CSR pairs over the same q queries, R_j the positions
    retrieved for query j (sharing its fingerprint, or the union over multi-probe lookups),
    G_j the positions of its label."""
    ground_truth = _check_csr(ground_truth, "equidict ground_truth")
    r_sizes, common = retrieval_counts(retrieved, ground_truth)
    return equidict_from_counts(r_sizes, common, np.diff(ground_truth[0]))


def equiset_from_sizes(positive_sizes, negative_sizes) -> dict:
    """Equiset metrics (docs/method.md section 9): does a query retrieve anything at all?

    ``true_positive_rate`` = share of positive queries with a non-empty R;
    ``false_positive_rate`` = share of negative queries (labels absent from the database)
    with a non-empty R; from the |R| of each. 0.0 over zero queries.
    """
    positive, negative = np.asarray(positive_sizes), np.asarray(negative_sizes)
    return {
        "true_positive_rate": _ratio(np.count_nonzero(positive), positive.size),
        "false_positive_rate": _ratio(np.count_nonzero(negative), negative.size),
    }


def equiset(retrieved_positive_offsets, retrieved_negative_offsets) -> dict:
    """:func:`equiset_from_sizes` of the CSR offsets of the positive and negative queries."""
    positive = _check_offsets(retrieved_positive_offsets, "equiset retrieved_positive_offsets")
    negative = _check_offsets(retrieved_negative_offsets, "equiset retrieved_negative_offsets")
    return equiset_from_sizes(np.diff(positive), np.diff(negative))


def multiprobe_entry_from_counts(lookups: int, retrieved_sizes, common, truth_sizes, negative_sizes) -> dict:
    """One entry of the metrics.json ``multiprobe`` list (docs/method.md section 10) from the
    counts of the union over the ``lookups`` most likely codes of each query (as
    :func:`equidict_from_counts` and :func:`equiset_from_sizes`). With ``lookups == 1``
    the figures equal the top-level ones."""
    if isinstance(lookups, bool) or not isinstance(lookups, (int, np.integer)) or lookups < 1:
        raise InputError(f"multiprobe_entry lookups: expected a positive integer, got {lookups!r}")
    dictionary = equidict_from_counts(retrieved_sizes, common, truth_sizes)
    sets = equiset_from_sizes(retrieved_sizes, negative_sizes)
    return {
        "lookups": int(lookups),
        "recall": dictionary["recall"],
        "perfect_retrieval_rate": dictionary["perfect_retrieval_rate"],
        "true_positive_rate": sets["true_positive_rate"],
        "false_positive_rate": sets["false_positive_rate"],
    }


def multiprobe_entry(lookups: int, retrieved_positive, ground_truth,
                     retrieved_negative_offsets) -> dict:
    """:func:`multiprobe_entry_from_counts` of the CSR of the union over the ``lookups``
    most likely codes of each positive query and the offsets of the same for the negatives."""
    ground_truth = _check_csr(ground_truth, "multiprobe ground_truth")
    r_sizes, common = retrieval_counts(retrieved_positive, ground_truth)
    negative = _check_offsets(retrieved_negative_offsets, "multiprobe retrieved_negative_offsets")
    return multiprobe_entry_from_counts(lookups, r_sizes, common, np.diff(ground_truth[0]), np.diff(negative))


# --------------------------------------------------------------------------- binary metrics
def binary_metrics(anchor, positive, negative) -> dict:
    """Binary metrics of the triplets (docs/method.md section 9).

    Positive pairs are (anchor, positive): two instances of one label; negative pairs are
    (anchor, negative). Returns ``r_at[d]`` = P(positive distance <= d) and ``f_at[d]`` =
    P(negative distance <= d) for d = 0..3, and the Hamming-distance histograms
    ``positive_histogram`` / ``negative_histogram`` with k + 1 plain-int counts (index =
    distance). Rates over zero triplets are 0.0.
    """
    anchor = check_codes(anchor, "binary_metrics anchor")
    if np.asarray(positive).shape != anchor.shape or np.asarray(negative).shape != anchor.shape:
        raise InputError(f"binary_metrics: anchor, positive and negative must have one shape "
                         f"(got {anchor.shape}, {np.asarray(positive).shape}, "
                         f"{np.asarray(negative).shape})")
    n, nbytes = anchor.shape
    nbits = 8 * nbytes
    result = {}
    for rate, histogram, other in (("r_at", "positive_histogram", positive),
                                   ("f_at", "negative_histogram", negative)):
        counts = np.bincount(hamming_distances(anchor, other), minlength=nbits + 1)
        within = np.cumsum(counts)
        result[rate] = [_ratio(within[min(d, nbits)], n) for d in RADII]
        result[histogram] = [int(c) for c in counts]
    return {key: result[key] for key in ("r_at", "f_at", "positive_histogram",
                                         "negative_histogram")}


# --------------------------------------------------------------------------- metrics.json
def _plain_floats(section: dict, keys: Sequence[str], name: str) -> dict:
    missing = [key for key in keys if key not in section]
    if missing:
        raise InputError(f"metrics_document {name}: missing keys {missing}; expected {list(keys)}")
    return {key: float(section[key]) for key in keys}


def metrics_document(*, task: str, model: str, variant: str, database: str, nbits: int,
                     database_size: int, internal_collisions: int, equidict: dict,
                     equiset: dict, binary: dict, multiprobe: list) -> dict:
    """Assemble metrics.json (equihash/io.py): exact key order and nesting, plain Python values.

    ``equidict``, ``equiset`` and ``binary`` are the dicts returned by the functions of
    the same names; ``multiprobe`` is a list of :func:`multiprobe_entry` dicts whose first
    entry must be the plain lookup (``lookups == 1``) and agree with the top-level figures.
    """
    nbits = int(nbits)
    equidict_section = _plain_floats(equidict, _EQUIDICT_KEYS, "equidict")
    equiset_section = _plain_floats(equiset, _EQUISET_KEYS, "equiset")

    binary_section = {}
    for key in ("r_at", "f_at"):
        values = [float(v) for v in binary.get(key, ())]
        if len(values) != len(RADII):
            raise InputError(f"metrics_document binary.{key}: expected {len(RADII)} values "
                             f"(d = 0..3), got {len(values)}")
        binary_section[key] = values
    for key in ("positive_histogram", "negative_histogram"):
        counts = [int(c) for c in binary.get(key, ())]
        if len(counts) != nbits + 1:
            raise InputError(f"metrics_document binary.{key}: expected nbits + 1 = {nbits + 1} "
                             f"counts, got {len(counts)}")
        binary_section[key] = counts

    if not multiprobe:
        raise InputError("metrics_document multiprobe: expected at least the entry lookups = 1")
    entries = []
    for i, entry in enumerate(multiprobe):
        if "lookups" not in entry:
            raise InputError(f"metrics_document multiprobe[{i}]: missing key 'lookups'")
        values = _plain_floats(entry, _MULTIPROBE_KEYS[1:], f"multiprobe[{i}]")
        entries.append({"lookups": int(entry["lookups"]), **values})
    if entries[0]["lookups"] != 1:
        raise InputError(f"metrics_document multiprobe[0].lookups: expected 1 (the plain "
                         f"lookup), got {entries[0]['lookups']}")
    top_level = {**equidict_section, **equiset_section}
    for key in _MULTIPROBE_KEYS[1:]:
        if not math.isclose(entries[0][key], top_level[key], rel_tol=1e-12, abs_tol=1e-15):
            raise InputError(f"metrics_document multiprobe[0].{key} = {entries[0][key]} but the "
                             f"top-level figure is {top_level[key]}; expected the plain lookup "
                             "to equal it")

    return {
        "task": str(task),
        "model": str(model),
        "variant": str(variant),
        "database": str(database),
        "nbits": nbits,
        "database_size": int(database_size),
        "internal_collisions": int(internal_collisions),
        "equidict": equidict_section,
        "equiset": equiset_section,
        "binary": binary_section,
        "multiprobe": entries,
    }
