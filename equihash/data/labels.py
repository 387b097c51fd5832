"""Labels of a procedural database and of its queries (docs/method.md section 4).

A *label* is the tuple of ``m`` image ids a mosaic is built from; two instances are
equivalent (ground-truth duplicates) iff their labels are equal. This module writes
the four labels artifacts of equihash/io.py for one database:

``database.parquet``
    ``labels`` fixed_size_list<uint32>[m], one row per database position, in order.
    Labels are drawn uniformly from all ``B**m`` tuples (an id may repeat in a tuple).
``positive_queries.parquet``
    ``labels`` and ``ground_truth`` list<uint64>: the sorted positions of every
    database item with that label.
``negative_queries.parquet``
    ``labels``: uniform labels that occur nowhere in the database.
``negative_pairs.parquet``
    ``anchor`` and ``negative``: pairs of distinct uniform labels (each gives a
    triplet anchor / another instance of the anchor's label / negative).

Keyed randomness. Every draw comes from :class:`~equihash.data.keyed.KeyedRandom`:
database chunk ``c`` (``CHUNK_ROWS`` rows) is drawn from stream ``database_labels``
item ``c``, and the query streams are consumed in fixed batches of ``DRAW_BATCH``
draws, batch ``b`` being item ``b`` of its stream. The outcome therefore depends only
on (seed, split, bank size, m, sizes), never on how many draws a run happened to
make ahead of time, nor on the machine.

Bounded memory. Positive queries use rejection sampling against the database, and
negative queries need "absent from the database", so both are resolved by streaming
the database, never by holding it: the query candidates are drawn first, the labels
of the positive candidates are read from the chunks that hold them (pass 1), then
one pass generates each chunk, appends it as a row group to ``database.parquet`` and
matches its labels against the sorted candidate keys (pass 2). Memory is
O(CHUNK_ROWS * m + candidates + ground truth), so the same code serves N = 1e9.
Should the candidates drawn up front be too few (an unlucky database), more are
drawn and the database is scanned again; the result is the same either way. A
request whose rejection sampling would need more than ``MAX_CANDIDATES`` draws (say
a bank of 4 tuples and a database of 1e7, where one draw in 2.5e6 is kept) is
refused with an InputError.

Labels are compared as one uint64 *label key* each, the mixed-radix number
``id_0 * B**(m-1) + id_1 * B**(m-2) + ... + id_(m-1)`` (see :func:`encode_labels`),
which requires ``B**m < 2**64``.
"""

from __future__ import annotations

import contextlib
import math
import operator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from equihash.data.keyed import KeyedRandom
from equihash.io import (InputError, atomic_path, labels_array, labels_schema, negative_pairs_schema,
                         positive_labels_schema, write_table)
from equihash.progress import Progress

CHUNK_ROWS = 1 << 20
"""Database labels are generated in chunks of this many rows (one Parquet row group each)."""

DRAW_BATCH = 1 << 16
"""Query and pair draws are made in keyed batches of this many draws."""

MAX_CANDIDATES = 1 << 24
"""Most query candidates held at once; rejection sampling needing more is refused."""

STREAM_DATABASE = "database_labels"
STREAM_POSITIVE = "positive_queries"
STREAM_NEGATIVE = "negative_queries"
STREAM_PAIRS = "negative_pairs"

LABEL_FILES = ("database", "positive_queries", "negative_queries", "negative_pairs")

_FIBONACCI = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the key pre-filter hash


# --------------------------------------------------------------------------- label keys
def encode_labels(labels: np.ndarray, bank_size: int) -> np.ndarray:
    """(n, m) ids -> (n,) uint64 label keys ``id_0 * B**(m-1) + ... + id_(m-1)``.

    Equal labels have equal keys, so set operations on labels become set operations
    on integers. The caller guarantees ``bank_size**m < 2**64``.
    """
    labels = np.asarray(labels)
    keys = labels[:, 0].astype(np.uint64)
    radix = np.uint64(bank_size)
    for column in range(1, labels.shape[1]):
        keys *= radix
        keys += labels[:, column].astype(np.uint64, copy=False)
    return keys


def decode_labels(keys: np.ndarray, bank_size: int, m: int) -> np.ndarray:
    """Inverse of :func:`encode_labels`: (n,) uint64 keys -> (n, m) uint32 ids."""
    rest = np.array(keys, dtype=np.uint64, copy=True)
    labels = np.empty((len(rest), m), dtype=np.uint32)
    radix = np.uint64(bank_size)
    for column in range(m - 1, -1, -1):
        labels[:, column] = rest % radix
        rest //= radix
    return labels


# --------------------------------------------------------------------------- validation
def _integer(caller: str, name: str, value, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool):
        raise InputError(f"{caller}: argument '{name}' must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise InputError(f"{caller}: argument '{name}' must be an integer, got {value!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InputError(f"{caller}: argument '{name}' must be {bound}, got {value}")
    return value


def _check_bank(caller: str, bank_size, m, seed, split) -> tuple[int, int, int, str, int]:
    """Validate the label space; return (bank_size, m, seed, split, number of tuples)."""
    bank_size = _integer(caller, "bank_size", bank_size, 1, 1 << 32)
    m = _integer(caller, "m", m, 1)
    seed = _integer(caller, "seed", seed, 0, (1 << 64) - 1)
    if not isinstance(split, str) or not split:
        raise InputError(f"{caller}: argument 'split' must be a non-empty string, got {split!r}")
    tuples = bank_size**m
    if tuples >= 1 << 64:
        raise InputError(
            f"{caller}: arguments 'bank_size' and 'm' give bank_size**m = {bank_size}**{m} "
            f"labels; expected fewer than 2**64 so that a label key fits in uint64"
        )
    return bank_size, m, seed, split, tuples


# --------------------------------------------------------------------------- database labels
def _database_chunk(stream: KeyedRandom, bank_size: int, m: int, chunk: int) -> np.ndarray:
    """All CHUNK_ROWS labels of chunk ``chunk``: i.i.d. uniform ids, hence uniform tuples."""
    return stream.at(chunk).integers(0, bank_size, size=(CHUNK_ROWS, m), dtype=np.uint32)


def database_labels(bank_size: int, m: int, seed: int, split: str, start: int, stop: int) -> np.ndarray:
    """Labels of database positions ``[start, stop)`` as a (stop - start, m) uint32 array.

    Random access into the procedural database: label ``i`` depends only on
    (seed, split, bank_size, m, i), not on the database size or on how it is sliced.
    Each touched chunk of ``CHUNK_ROWS`` rows is generated in full.
    """
    caller = "database_labels"
    bank_size, m, seed, split, _ = _check_bank(caller, bank_size, m, seed, split)
    start = _integer(caller, "start", start, 0)
    stop = _integer(caller, "stop", stop, start)
    stream = KeyedRandom(seed, split, STREAM_DATABASE)
    out = np.empty((stop - start, m), dtype=np.uint32)
    for chunk in range(start // CHUNK_ROWS, -(-stop // CHUNK_ROWS)):
        base = chunk * CHUNK_ROWS
        lo, hi = max(start, base), min(stop, base + CHUNK_ROWS)
        out[lo - start:hi - start] = _database_chunk(stream, bank_size, m, chunk)[lo - base:hi - base]
    return out


# --------------------------------------------------------------------------- sorted-set helpers
# numpy's unique / isin / setdiff1d pick a hash-based path for large uint64 arrays that is
# far slower than sorting here, so set operations are done on sorted arrays directly.
def _group_starts(ordered: np.ndarray) -> np.ndarray:
    """Indices where a new value begins in a sorted array."""
    if len(ordered) == 0:
        return np.empty(0, dtype=np.intp)
    return np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))


def _unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values."""
    ordered = np.sort(values)
    return ordered[_group_starts(ordered)]


def _locate(sorted_set: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``searchsorted`` of ``values`` in ``sorted_set``, searching in sorted order (cache friendly)."""
    order = np.argsort(values)
    found = np.empty(len(values), dtype=np.intp)
    found[order] = np.searchsorted(sorted_set, values[order])
    return found


def _contains(sorted_set: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Membership of ``values`` in the sorted array ``sorted_set``."""
    if len(sorted_set) == 0:
        return np.zeros(len(values), dtype=bool)
    return sorted_set[np.minimum(_locate(sorted_set, values), len(sorted_set) - 1)] == values


# --------------------------------------------------------------------------- streaming the database
def _labels_at(stream, bank_size, m, positions, progress=None) -> np.ndarray:
    """Label keys of arbitrary database positions, generating only the chunks that hold them."""
    order = np.argsort(positions)
    ordered = positions[order]
    chunk_of = ordered // np.uint64(CHUNK_ROWS)
    bounds = np.append(_group_starts(chunk_of), len(ordered))
    keys = np.empty(len(positions), dtype=np.uint64)
    for number in range(len(bounds) - 1):
        lo, hi = bounds[number], bounds[number + 1]
        chunk = int(chunk_of[lo])
        rows = (ordered[lo:hi] - np.uint64(chunk * CHUNK_ROWS)).astype(np.intp)
        keys[order[lo:hi]] = encode_labels(_database_chunk(stream, bank_size, m, chunk)[rows], bank_size)
        if progress is not None:
            progress("positive query labels", number + 1, len(bounds) - 1)
    return keys


class _KeyMatcher:
    """Finds which label keys of a database chunk belong to a sorted set of target keys.

    A binary search per database row is slow (cache misses on a large target array),
    so a bitmap of hashed targets (about 32 bits per target) first rejects nearly
    every non-target; only the few survivors are sorted and binary-searched.
    """

    def __init__(self, targets: np.ndarray):
        self.targets = targets
        bits = max(10, min(32, int(np.ceil(np.log2(max(len(targets), 1)))) + 5))
        self.shift = np.uint64(64 - bits)
        slot = self._hash(targets)
        self.bitmap = np.zeros(1 << (bits - 3), dtype=np.uint8)
        np.bitwise_or.at(self.bitmap, slot >> np.uint64(3), np.left_shift(1, slot & np.uint64(7)).astype(np.uint8))

    def _hash(self, keys):
        return (keys * _FIBONACCI) >> self.shift

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (rows of ``keys`` that are targets, index of each in ``targets``)."""
        slot = self._hash(keys)
        maybe = (self.bitmap[slot >> np.uint64(3)] >> (slot & np.uint64(7)).astype(np.uint8)) & 1
        rows = np.flatnonzero(maybe)
        found = np.minimum(_locate(self.targets, keys[rows]), len(self.targets) - 1)
        hit = self.targets[found] == keys[rows]
        return rows[hit], found[hit]


def _scan_database(stream, bank_size, m, n_database, targets, collect, *, writer=None, progress=None):
    """One pass over the database, chunk by chunk, in position order.

    Returns ``occurs`` (which ``targets`` occur at least once) and the (key, position)
    of every occurrence of a target flagged in ``collect``, positions ascending per key.
    With ``writer``, each chunk is also appended to it as one row group.
    """
    matcher = _KeyMatcher(targets) if len(targets) else None
    occurs = np.zeros(len(targets), dtype=bool)
    match_keys, match_positions = [], []
    n_chunks = -(-n_database // CHUNK_ROWS)
    for chunk in range(n_chunks):
        start = chunk * CHUNK_ROWS
        labels = _database_chunk(stream, bank_size, m, chunk)[: min(CHUNK_ROWS, n_database - start)]
        if writer is not None:
            writer.write_table(pa.table({"labels": labels_array(labels)}), row_group_size=CHUNK_ROWS)
        if matcher is not None:
            keys = encode_labels(labels, bank_size)
            rows, found = matcher.find(keys)
            occurs[found] = True
            rows = rows[collect[found]]  # ascending: find() returns rows in row order
            match_keys.append(keys[rows])
            match_positions.append(rows.astype(np.uint64) + np.uint64(start))
        if progress is not None:
            progress("database" if writer is not None else "database rescan", chunk + 1, n_chunks)
    empty = np.empty(0, dtype=np.uint64)
    return occurs, np.concatenate([empty, *match_keys]), np.concatenate([empty, *match_positions])


# --------------------------------------------------------------------------- rejection sampling
def _expected_rates(n_database: int, tuples: int) -> tuple[float, float]:
    """Expected acceptance of a positive draw (distinct labels / N) and of a negative draw
    (share of the B**m labels absent from N uniform draws)."""
    if n_database == 0:
        return 0.0, 1.0
    log_absent = n_database * math.log1p(-1.0 / tuples) if tuples > 1 else -math.inf
    distinct = tuples * -math.expm1(log_absent)
    return min(1.0, distinct / n_database), math.exp(log_absent)


def _draws_needed(name, requested, deficit, rate, already) -> int:
    """Draws (whole batches) expected to give ``deficit`` more acceptances at ``rate``.

    A margin of 6 standard deviations makes a second scan of the database rare.
    """
    if deficit <= 0:
        return 0
    wanted = (deficit + 6 * math.sqrt(deficit) + 16) / rate if rate > 0 else math.inf
    if already + wanted > MAX_CANDIDATES:
        raise InputError(
            f"write_labels: argument '{name}' = {requested}: {deficit} more queries need about "
            f"{wanted:.3g} candidate draws at acceptance rate {rate:.3g}; more than "
            f"{MAX_CANDIDATES} candidates cannot be held (use a larger bank or a smaller database)"
        )
    return -(-int(math.ceil(wanted)) // DRAW_BATCH) * DRAW_BATCH


class _CandidateStream:
    """Keyed draws in fixed batches: batch ``b`` is item ``b`` of the stream."""

    def __init__(self, seed, split, stream, draw_batch):
        self.random = KeyedRandom(seed, split, stream)
        self.draw_batch = draw_batch  # Generator -> DRAW_BATCH uint64 draws
        self.next_batch = 0

    def draw(self, count: int) -> np.ndarray:
        """The next ``count`` draws (a multiple of DRAW_BATCH)."""
        batches = [np.empty(0, dtype=np.uint64)]
        for _ in range(count // DRAW_BATCH):
            batches.append(self.draw_batch(self.random.at(self.next_batch)))
            self.next_batch += 1
        return np.concatenate(batches)


class _QuerySampler:
    """Positive and negative queries by rejection sampling against the streamed database.

    Candidates are kept in draw order. A positive candidate (a database position) is
    accepted iff it is the first occurrence of its label; a negative candidate (a label)
    iff its label never occurs. Both are decided by database scans: ``targets()`` lists
    the label keys a scan must look for, ``record()`` stores what the scan found, and
    ``resolve()`` accepts candidates or asks for more draws (then another scan).
    """

    def __init__(self, seed, split, bank_size, m, n_database, n_positive, n_negative, database):
        self.bank_size, self.m, self.database = bank_size, m, database
        self.n_positive, self.n_negative = n_positive, n_negative
        self.positive_stream = _CandidateStream(
            seed, split, STREAM_POSITIVE,
            lambda rng: rng.integers(0, max(n_database, 1), size=DRAW_BATCH, dtype=np.uint64),
        )
        self.negative_stream = _CandidateStream(
            seed, split, STREAM_NEGATIVE,
            lambda rng: encode_labels(rng.integers(0, bank_size, size=(DRAW_BATCH, m), dtype=np.uint32), bank_size),
        )
        positive_rate, negative_rate = _expected_rates(n_database, bank_size**m)
        self.positive_draws = _draws_needed("n_positive", n_positive, n_positive, positive_rate, 0)
        self.negative_draws = _draws_needed("n_negative", n_negative, n_negative, negative_rate, 0)
        empty = np.empty(0, dtype=np.uint64)
        # Positive candidates: position and label key, in draw order. ``collected_keys``
        # (sorted) are the keys whose occurrences ``match_keys``/``match_positions`` all hold.
        self.positive_positions = self.positive_keys = empty
        self.collected_keys = self.match_keys = self.match_positions = empty
        # Negative candidates: label keys in draw order; sorted checked keys and whether they occur.
        self.negative_keys = self.checked_keys = empty
        self.checked_occurs = np.empty(0, dtype=bool)
        self.accepted_positive = self.accepted_negative = np.empty(0, dtype=np.intp)

    def targets(self, progress=None) -> tuple[np.ndarray, np.ndarray]:
        """Draw the planned candidates; return the sorted keys to scan for and which to collect."""
        positions = self.positive_stream.draw(self.positive_draws)
        keys = _labels_at(self.database, self.bank_size, self.m, positions, progress)
        negative = self.negative_stream.draw(self.negative_draws)
        self.positive_positions = np.concatenate([self.positive_positions, positions])
        self.positive_keys = np.concatenate([self.positive_keys, keys])
        self.negative_keys = np.concatenate([self.negative_keys, negative])
        collect = _unique(keys)
        collect = collect[~_contains(self.collected_keys, collect)]  # those are already complete
        check = _unique(negative)
        check = check[~_contains(self.checked_keys, check)]
        self.collected_keys = np.sort(np.concatenate([self.collected_keys, collect]))
        self._check = check
        targets = _unique(np.concatenate([collect, check]))
        return targets, _contains(collect, targets)

    def record(self, targets, occurs, match_keys, match_positions) -> None:
        """Store the result of a scan for ``targets``."""
        self.match_keys = np.concatenate([self.match_keys, match_keys])
        self.match_positions = np.concatenate([self.match_positions, match_positions])
        checked = _contains(self._check, targets)
        keys = np.concatenate([self.checked_keys, targets[checked]])
        order = np.argsort(keys)
        self.checked_keys = keys[order]
        self.checked_occurs = np.concatenate([self.checked_occurs, occurs[checked]])[order]

    def resolve(self) -> bool:
        """Accept candidates; True when both kinds are complete, else plan more draws."""
        groups = self._groups()
        first = groups[3][groups[1][groups[4]]]  # first position of each candidate's label
        self.accepted_positive = np.flatnonzero(first == self.positive_positions)
        occurs = self.checked_occurs[_locate(self.checked_keys, self.negative_keys)]
        self.accepted_negative = np.flatnonzero(~occurs)
        positive_deficit = self.n_positive - len(self.accepted_positive)
        negative_deficit = self.n_negative - len(self.accepted_negative)
        # Too few candidates (an unlucky database): draw more at the observed rate, scan again.
        drawn_positive, drawn_negative = len(self.positive_keys), len(self.negative_keys)
        self.positive_draws = _draws_needed(
            "n_positive", self.n_positive, positive_deficit,
            (len(self.accepted_positive) or 0.5) / max(drawn_positive, 1), drawn_positive)
        self.negative_draws = _draws_needed(
            "n_negative", self.n_negative, negative_deficit,
            (len(self.accepted_negative) or 0.5) / max(drawn_negative, 1), drawn_negative)
        return positive_deficit <= 0 and negative_deficit <= 0

    def _groups(self):
        """Occurrences grouped by label: (keys, group starts, group ends, positions, group of
        each positive candidate). Positions are ascending within a group: each label was
        collected by a single scan, which records occurrences in position order."""
        order = np.argsort(self.match_keys, kind="stable")
        keys, positions = self.match_keys[order], self.match_positions[order]
        starts = _group_starts(keys)
        ends = np.append(starts[1:], len(keys))
        keys = keys[starts]
        return keys, starts, ends, positions, _locate(keys, self.positive_keys)

    def positive_table(self) -> pa.Table:
        """The first ``n_positive`` accepted positives: labels and sorted ground truth."""
        accepted = self.accepted_positive[: self.n_positive]
        _, starts, ends, positions, group = self._groups()
        group = group[accepted]
        return pa.Table.from_arrays([
            labels_array(decode_labels(self.positive_keys[accepted], self.bank_size, self.m)),
            _ground_truth_array(starts[group], ends[group], positions),
        ], schema=positive_labels_schema(self.m))

    def negative_table(self) -> pa.Table:
        accepted = self.accepted_negative[: self.n_negative]
        return pa.table({"labels": labels_array(decode_labels(self.negative_keys[accepted], self.bank_size, self.m))})

    def draws_used(self) -> tuple[int, int]:
        """Candidate draws consumed up to the last kept query of each kind."""
        return (
            int(self.accepted_positive[self.n_positive - 1]) + 1 if self.n_positive else 0,
            int(self.accepted_negative[self.n_negative - 1]) + 1 if self.n_negative else 0,
        )


def _ground_truth_array(starts, ends, positions) -> pa.ListArray:
    """list<uint64> whose row q holds ``positions[starts[q]:ends[q]]``."""
    lengths = ends - starts
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise InputError(
            f"write_labels: argument 'n_positive': the ground truth holds {offsets[-1]} positions, "
            f"more than a list<uint64> column can hold (2**31 - 1)"
        )
    gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(positions[gather]))


def _negative_pairs(seed, split, bank_size, m, n_pairs) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` (anchor, negative) label pairs, uniform over all tuples, anchor != negative."""
    random = KeyedRandom(seed, split, STREAM_PAIRS)
    anchors = np.empty((n_pairs, m), dtype=np.uint32)
    negatives = np.empty((n_pairs, m), dtype=np.uint32)
    kept, batch = 0, 0
    while kept < n_pairs:
        ids = random.at(batch).integers(0, bank_size, size=(2, DRAW_BATCH, m), dtype=np.uint32)
        distinct = np.flatnonzero((ids[0] != ids[1]).any(axis=1))[: n_pairs - kept]
        anchors[kept:kept + len(distinct)] = ids[0][distinct]
        negatives[kept:kept + len(distinct)] = ids[1][distinct]
        kept += len(distinct)
        batch += 1
    return anchors, negatives


# --------------------------------------------------------------------------- progress
class _PassBars:
    """The default ``progress`` of :func:`write_labels`: one :class:`~equihash.progress.Progress`
    bar per pass over the database, ``labels <split> <stage>`` counting chunks of
    ``CHUNK_ROWS`` rows (a bar on a terminal; periodic lines and a final line in the log).

    A pass ends when its last chunk is reported; a report of a different stage, or one
    that does not follow the previous count (the next rescan), starts a new bar.
    """

    def __init__(self, split: str):
        self.split = split
        self.stage, self.bar = None, None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.bar is None or stage != self.stage or done <= self.bar.done:
            self.close()
            self.stage, self.bar = stage, Progress(total, f"labels {self.split} {stage}", unit="chunk")
        self.bar.update(done - self.bar.done)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# --------------------------------------------------------------------------- the stage
def write_labels(
    out_dir,
    *,
    bank_size: int,
    m: int,
    n_database: int,
    n_positive: int,
    n_negative: int,
    n_pairs: int,
    seed: int,
    split: str,
    progress=None,
) -> dict:
    """Write the labels of one database and its queries into ``out_dir`` (docs/method.md section 4).

    Semantics, with T = bank_size**m label tuples:

    - database: ``n_database`` labels uniform over the T tuples (:func:`database_labels`).
    - positive queries: draw a database position uniformly (stream ``positive_queries``)
      and keep it only if it is the smallest position holding its label, until
      ``n_positive`` are kept, so every distinct database label is equally likely.
      Draws are with replacement: the same label may be queried more than once.
      ``ground_truth`` = every position with that label, sorted.
    - negative queries: uniform labels (stream ``negative_queries``) kept only if they
      occur nowhere in the database; with replacement as well.
    - negative pairs: uniform (anchor, negative) tuples with anchor != negative
      (stream ``negative_pairs``); they do not depend on the database.

    Every file is written under a temporary name and all four are renamed only when
    everything succeeded; on any error none of them is left behind. Bad arguments
    raise :class:`~equihash.io.InputError` naming the argument, before anything is written.

    ``progress`` is called as ``progress(stage, done, total)`` after every chunk of each
    pass over the database; ``stage`` is ``"positive query labels"`` (pass 1, only the
    chunks that hold positive candidates), ``"database"`` (pass 2, writing) or
    ``"database rescan"`` (rare extra passes). By default each pass gets a progress bar
    ``labels <split> <stage>`` (``equihash.progress.Progress``), so the log holds one
    final line per pass.

    Returns the row counts of the four files, the number of ground-truth positions and
    the candidate draws consumed by the two rejection samplers.
    """
    caller = "write_labels"
    bank_size, m, seed, split, tuples = _check_bank(caller, bank_size, m, seed, split)
    n_database = _integer(caller, "n_database", n_database, 0, (1 << 63) - 1)
    n_positive = _integer(caller, "n_positive", n_positive, 0)
    n_negative = _integer(caller, "n_negative", n_negative, 0)
    n_pairs = _integer(caller, "n_pairs", n_pairs, 0)
    if n_positive > 0 and n_database == 0:
        raise InputError(f"{caller}: argument 'n_positive' = {n_positive} needs n_database >= 1, got 0")
    if n_negative > 0 and tuples <= n_database:
        raise InputError(
            f"{caller}: argument 'n_negative' = {n_negative} needs a label absent from the database, "
            f"so bank_size**m ({tuples}) must exceed n_database ({n_database})"
        )
    if n_pairs > 0 and tuples < 2:
        raise InputError(
            f"{caller}: argument 'n_pairs' = {n_pairs} needs two distinct labels, "
            f"so bank_size**m must be >= 2, got {tuples}"
        )
    database = KeyedRandom(seed, split, STREAM_DATABASE)
    sampler = _QuerySampler(seed, split, bank_size, m, n_database, n_positive, n_negative, database)

    out_dir = Path(out_dir)
    with contextlib.ExitStack() as stack:
        if progress is None:
            progress = _PassBars(split)
            stack.callback(progress.close)  # a pass cut short by an error still logs where it stopped
        tmp = {name: stack.enter_context(atomic_path(out_dir / f"{name}.parquet")) for name in LABEL_FILES}
        # Pass 1 (labels of the positive candidates), then pass 2: write the database and match it.
        targets, collect = sampler.targets(progress)
        with pq.ParquetWriter(tmp["database"], labels_schema(m), compression="zstd") as writer:
            found = _scan_database(database, bank_size, m, n_database, targets, collect,
                                   writer=writer, progress=progress)
        sampler.record(targets, *found)
        del targets, collect, found
        while not sampler.resolve():
            targets, collect = sampler.targets(progress)
            found = _scan_database(database, bank_size, m, n_database, targets, collect, progress=progress)
            sampler.record(targets, *found)
            del targets, collect, found

        positives, negatives = sampler.positive_table(), sampler.negative_table()
        positive_draws, negative_draws = sampler.draws_used()
        del sampler  # the candidates are no longer needed while writing
        ground_truth_positions = len(positives["ground_truth"].chunk(0).values)
        write_table(positives, tmp["positive_queries"])
        write_table(negatives, tmp["negative_queries"])
        del positives, negatives
        anchor, negative = _negative_pairs(seed, split, bank_size, m, n_pairs)
        write_table(pa.Table.from_arrays([labels_array(anchor), labels_array(negative)],
                                         schema=negative_pairs_schema(m)), tmp["negative_pairs"])
    return {
        "database": n_database,
        "positive_queries": n_positive,
        "negative_queries": n_negative,
        "negative_pairs": n_pairs,
        "ground_truth_positions": ground_truth_positions,
        "positive_draws": positive_draws,
        "negative_draws": negative_draws,
    }
