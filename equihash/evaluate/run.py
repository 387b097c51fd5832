"""Evaluate one (task, model, variant, database): the index and fingerprints -> metrics.json."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow as pa

import equihash
from equihash.config import config_sha256
from equihash.evaluate.metrics import (binary_metrics, equidict, equiset, internal_collisions,
                                       metrics_document, multiprobe_entry)
from equihash.index import InvertedIndex
from equihash.io import code_type, read_columns, read_ground_truth, read_labels, write_json
from equihash.progress import Progress, logger


def evaluate_run(*, index_dir, database_labels, positive_labels, database, positive_queries,
                 negative_queries, triplets, lookups, names: dict, out_path,
                 provenance: dict | None = None) -> dict:
    """Compute every figure of THESIS.md 9 and the multi-probe list; write metrics.json atomically.

    ``provenance`` (a :func:`run_provenance` dict) becomes the document's last key; without
    it the code version is recorded and the config hash and shard count are null.
    """
    index = InvertedIndex.load(index_dir)
    kind = code_type(index.nbytes)
    nbits = 8 * index.nbytes
    logits_kind = pa.list_(pa.float32(), nbits)

    # One bar over the stages; each stage's duration is logged as it ends.
    stages = 4 + len(lookups[1:])
    with Progress(stages, "evaluate " + "/".join(str(value) for value in names.values()), unit="stage") as bar:
        with bar.stage("internal collisions"):
            codes = read_columns(database, {"code": kind})["code"]
            collisions = internal_collisions(codes, read_labels(database_labels))
            del codes
        logger.info("internal collisions: %d among %d positions", collisions, index.size)

        with bar.stage("exact lookups"):
            ground_truth = read_ground_truth(positive_labels)
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


def run_provenance(*, run_config: dict | None = None, nb_shards: int | None = None) -> dict:
    """Where a metrics.json comes from: the equihash version, the git commit of the code
    when it runs from a checkout (else None), the sha256 of the run's configuration and the
    number of database encode shards (None when unknown). Figures do not depend on the
    shard count; it is recorded to reproduce the job layout."""
    return {
        "equihash_version": equihash.__version__,
        "git_commit": git_commit(Path(equihash.__file__).resolve().parents[1]),
        "config_sha256": None if run_config is None else config_sha256(run_config),
        "nb_shards": None if nb_shards is None else int(nb_shards),
    }
