"""Evaluate one (task, model, variant, database): the index and fingerprints -> metrics.json."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import equihash
from equihash.config import config_sha256
from equihash.evaluate.metrics import (binary_metrics, equidict, equiset, internal_collisions,
                                       metrics_document, multiprobe_entry)
from equihash.index import read_index
from equihash.io import (InputError, check_schema, code_type, read_columns, read_ground_truth, read_labels,
                         read_schema, write_json)
from equihash.progress import Progress, logger


def evaluate_run(*, index_dir, database_labels, positive_labels, database, positive_queries,
                 negative_queries, triplets, lookups, names: dict, out_path,
                 provenance: dict | None = None, negative_labels=None) -> dict:
    """Compute every figure of docs/method.md section 9 and the multi-probe list; write metrics.json atomically.

    ``provenance`` (a :func:`run_provenance` dict) becomes the document's last key; without
    it the code version is recorded and the config hash and shard count are null.
    Before any work the inputs are checked to belong together (:func:`check_run_inputs`;
    ``negative_labels``, the labels file of the negative queries, is optional and only
    counted), and InputError names the two files that disagree.
    """
    index = read_index(index_dir)
    kind = code_type(index.nbytes)
    nbits = 8 * index.nbytes
    logits_kind = pa.list_(pa.float32(), nbits)
    ground_truth = check_run_inputs(index, index_dir=index_dir, database=database, database_labels=database_labels,
                                    positive_labels=positive_labels, positive_queries=positive_queries,
                                    negative_queries=negative_queries, negative_labels=negative_labels)

    # One bar over the stages; each stage's duration is logged as it ends.
    stages = 4 + len(lookups[1:])
    with Progress(stages, "evaluate " + "/".join(str(value) for value in names.values()), unit="stage") as bar:
        with bar.stage("internal collisions"):
            codes = read_columns(database, {"code": kind})["code"]
            collisions = internal_collisions(codes, read_labels(database_labels))
            del codes
        logger.info("internal collisions: %d among %d positions", collisions, index.size)

        with bar.stage("exact lookups"):
            positive = read_columns(positive_queries, {"code": kind, "logits": logits_kind})
            negative = read_columns(negative_queries, {"code": kind, "logits": logits_kind})
            retrieved = index.lookup(positive["code"])
            retrieved_negative = index.lookup(negative["code"])

        with bar.stage("equidict and equiset metrics"):
            dictionary = equidict(retrieved, ground_truth)
            membership = equiset(retrieved[0], retrieved_negative[0])
            entries = [multiprobe_entry(1, retrieved, ground_truth, retrieved_negative[0])]

        for L in lookups[1:]:
            with bar.stage(f"multi-probing with {L} lookups"):
                probed = index.multiprobe(positive["logits"], L)
                probed_negative = index.multiprobe(negative["logits"], L)
                entries.append(multiprobe_entry(L, probed, ground_truth, probed_negative[0]))
                del probed, probed_negative
            logger.info("multi-probing with %d lookups: recall %.4f", L, entries[-1]["recall"])

        with bar.stage("binary metrics"):
            trip = read_columns(triplets, {"anchor": kind, "positive": kind, "negative": kind})
            binary = binary_metrics(trip["anchor"], trip["positive"], trip["negative"])

    document = metrics_document(
        **names, nbits=nbits, database_size=index.size, internal_collisions=collisions,
        equidict=dictionary, equiset=membership, binary=binary, multiprobe=entries,
    )
    document["provenance"] = run_provenance() if provenance is None else provenance
    write_json(document, out_path)
    return document


def parquet_rows(path) -> int:
    """The number of rows of a Parquet file (from its footer), or InputError naming it."""
    read_schema(path)
    with pq.ParquetFile(path) as reader:
        return reader.metadata.num_rows


def check_query_ids(path, labels_path, n_labels: int | None) -> None:
    """The ``id`` column of a query file must be the rows 0..n-1 of its labels file in
    order, n = ``n_labels`` (without a labels file: 0..n-1 over the file's own rows)."""
    check_schema(path, {"id": pa.uint64()})
    ids = pq.read_table(path, columns=["id"])["id"].to_numpy()
    if n_labels is not None and len(ids) != n_labels:
        raise InputError(f"{path}: {len(ids)} queries, but {labels_path} has {n_labels} label rows; "
                         "expected one query per row of the labels file")
    wrong = np.flatnonzero(ids != np.arange(len(ids), dtype=np.uint64))
    if wrong.size:
        row = int(wrong[0])
        rows = f"the rows of {labels_path}" if labels_path is not None else "the query rows"
        raise InputError(f"{path}: column 'id' must be 0..{len(ids) - 1} in order, {rows} (row {row} holds id "
                         f"{int(ids[row])}: queries permuted, repeated or from other labels)")


def check_run_inputs(index, *, index_dir, database, database_labels, positive_labels, positive_queries,
                     negative_queries, negative_labels=None):
    """Check that the files of one evaluation belong together; return the ground truth.

    The index holds a whole database (no partition) of N positions, the merged fingerprint
    database has N rows and so has its labels file; the ids of each query file are the
    rows 0..n-1 of its labels file in order (one query per label row), and every
    ground-truth position is below N. Each failure is an InputError naming both files.
    """
    header = Path(index_dir) / "header.json"
    n = index.database_size
    if index.prefix_bits or index.size != n:
        raise InputError(f"{header}: an index of {index.size} of the {n} database positions (prefix of "
                         f"{index.prefix_bits} bits); expected the index of the whole database {database}")
    database_rows = parquet_rows(database)
    if database_rows != n:
        raise InputError(f"{database}: {database_rows} fingerprint rows, but the index {header} holds {n} "
                         "database positions; expected the database the index was built from")
    label_rows = parquet_rows(database_labels)
    if label_rows != n:
        raise InputError(f"{database_labels}: {label_rows} label rows, but {database} has {n} fingerprint rows; "
                         "expected one label row per database position")
    ground_truth = read_ground_truth(positive_labels)
    offsets, positions = ground_truth
    if positions.size and int(positions.max()) >= n:
        query = int(np.searchsorted(offsets, int(np.argmax(positions)), side="right")) - 1
        raise InputError(f"{positive_labels}: column 'ground_truth' row {query} holds position "
                         f"{int(positions.max())}, expected positions below {n}, the rows of {database}")
    check_query_ids(positive_queries, positive_labels, len(offsets) - 1)
    n_negative = None if negative_labels is None else parquet_rows(negative_labels)
    check_query_ids(negative_queries, negative_labels, n_negative)
    return ground_truth


def git_commit(directory) -> str | None:
    """The HEAD commit of the git checkout whose top level is ``directory``; None when
    ``directory`` is not the top of a checkout (an installed package) or git is missing."""
    try:
        out = subprocess.run(["git", "-C", str(directory), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(out) != 2 or Path(out[0]).resolve() != Path(directory).resolve():
        return None
    return out[1]


def git_dirty(directory) -> bool | None:
    """Whether the checkout whose top level is ``directory`` differs from its HEAD commit
    (changed, staged or untracked files that .gitignore does not exclude); None when
    ``directory`` is not the top of a checkout."""
    if git_commit(directory) is None:
        return None
    try:
        out = subprocess.run(["git", "-C", str(directory), "status", "--porcelain"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.strip())


def run_provenance(*, run_config: dict | None = None, nb_shards: int | None = None) -> dict:
    """Where a metrics.json comes from: the equihash version, the git commit of the code
    when it runs from a checkout (else None) and whether that checkout had uncommitted
    changes (``dirty``; None outside a checkout), the sha256 of the run's configuration and
    the number of database encode shards (None when unknown). Figures do not depend on the
    shard count; it is recorded to reproduce the job layout."""
    root = Path(equihash.__file__).resolve().parents[1]
    return {
        "equihash_version": equihash.__version__,
        "git_commit": git_commit(root),
        "dirty": git_dirty(root),
        "config_sha256": None if run_config is None else config_sha256(run_config),
        "nb_shards": None if nb_shards is None else int(nb_shards),
    }
