"""The run summary: every figure of every metrics.json (docs/method.md sections 9 and 10) in one flat table.

One row per run (task, model, variant, database); one column per figure, named by its
path in metrics.json (``equidict.recall``, ``equiset.false_positive_rate``,
``binary.r_at_0``, ``multiprobe.L16.recall``, ``provenance.git_commit``), so a user
compares runs in one line::

    pd.read_csv("results/summary.csv").set_index(["model", "variant"])["equidict.recall"]
    duckdb.sql("select model, \"equidict.recall\" from 'results/summary.csv'")

The Hamming-distance histograms (k+1 counts each) are summarised by their number of
pairs, mean and median distance (``binary.positive_pairs``, ``binary.positive_distance_mean``,
``binary.positive_distance_median``, the same for ``negative``); the report plots them whole.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from equihash.io import InputError, atomic_path

NAMES = ["task", "model", "variant", "database"]
REQUIRED = {
    "task": str, "model": str, "variant": str, "database": str, "nbits": int,
    "database_size": int, "internal_collisions": int, "equidict": dict, "equiset": dict,
    "binary": dict, "multiprobe": list,
}
BINARY_LISTS = ("r_at", "f_at", "positive_histogram", "negative_histogram")
# The figures of the Markdown summary's first table, beside the names.
HEADLINE = ["database_size", "equidict.recall", "equidict.perfect_retrieval_rate",
            "equiset.true_positive_rate", "equiset.false_positive_rate", "binary.r_at_0", "binary.f_at_0"]


def read_metrics(path) -> dict:
    """A metrics.json (equihash/io.py), checked for the keys the summary and report read.

    InputError names the file and the missing or malformed key."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: metrics file not found")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable metrics.json ({exc})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    for key, kind in REQUIRED.items():
        if key not in doc:
            raise InputError(f"{path}: missing key '{key}'")
        if not isinstance(doc[key], kind) or (kind is int and isinstance(doc[key], bool)):
            raise InputError(f"{path}: key '{key}' must be {kind.__name__}, got {type(doc[key]).__name__}")
    for key in BINARY_LISTS:
        if not isinstance(doc["binary"].get(key), list):
            raise InputError(f"{path}: missing list 'binary.{key}'")
    for key in ("positive_histogram", "negative_histogram"):
        if len(doc["binary"][key]) != doc["nbits"] + 1:
            raise InputError(f"{path}: 'binary.{key}' has {len(doc['binary'][key])} counts, "
                             f"expected nbits + 1 = {doc['nbits'] + 1}")
    if not doc["multiprobe"] or not all(isinstance(e, dict) and "lookups" in e for e in doc["multiprobe"]):
        raise InputError(f"{path}: 'multiprobe' must be a non-empty list of objects with 'lookups'")
    return doc


def histogram_summary(counts) -> dict:
    """Pairs, mean and (lower) median distance of a Hamming-distance histogram (count per d = 0..k).
    Mean and median are NaN for an empty histogram."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return {"pairs": 0, "distance_mean": math.nan, "distance_median": math.nan}
    distances = np.arange(len(counts))
    median = int(np.searchsorted(np.cumsum(counts), (total + 1) // 2))
    return {"pairs": total, "distance_mean": float(distances @ counts) / total, "distance_median": median}


def flatten_metrics(doc: dict) -> dict:
    """One flat row of a metrics document: nested keys joined by '.', lists of figures
    indexed (``binary.r_at_0``), the multi-probe list keyed by its number of lookups
    (``multiprobe.L16.recall``), histograms summarised (:func:`histogram_summary`)."""
    row: dict = {}

    def walk(key: str, value) -> None:
        if isinstance(value, dict):
            for child, item in value.items():
                walk(f"{key}.{child}" if key else child, item)
        elif isinstance(value, list) and key.endswith("_histogram"):
            stem = key[: -len("_histogram")]
            for name, figure in histogram_summary(value).items():
                row[f"{stem}_{name}"] = figure
        elif isinstance(value, list) and value and all(isinstance(e, dict) and "lookups" in e for e in value):
            for entry in value:
                walk(f"{key}.L{entry['lookups']}", {k: v for k, v in entry.items() if k != "lookups"})
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(f"{key}_{i}", item)
        else:
            row[key] = value

    walk("", doc)
    return row


def summarize(metrics_paths) -> pd.DataFrame:
    """The summary table of some metrics.json files, one row each in the given order.

    Every missing file is named in one InputError (before any is read)."""
    paths = [Path(p) for p in metrics_paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} metrics file(s) not found: " + ", ".join(missing))
    return pd.DataFrame([flatten_metrics(read_metrics(p)) for p in paths])


def is_count(column: str) -> bool:
    """Integer figures: sizes, collision and pair counts, medians of integer distances, shards."""
    return (column in ("nbits", "database_size", "internal_collisions", "provenance.nb_shards")
            or column.endswith(("_pairs", "_distance_median")))


def format_cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_, str)):
        return str(value)
    if is_count(column):
        return str(int(value))
    return f"{float(value):.4f}"


def markdown_table(header: list[str], rows: list[list[str]], numeric: list[bool]) -> list[str]:
    """A GitHub Markdown table; numeric columns right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if right else "---" for right in numeric) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines


def summary_tables(table: pd.DataFrame) -> list[tuple[str, list[str], list[list[str]], list[bool]]]:
    """The summary as two tables of formatted cells, (caption, header, rows, numeric columns):
    the headline figures with one row per run (the largest multi-probe recall beside them),
    then every figure with one column per run."""
    probes = [c for c in table.columns if c.startswith("multiprobe.L") and c.endswith(".recall")]
    widest = max(probes, key=lambda c: int(c.split(".")[1][1:])) if probes else None
    headline = [c for c in HEADLINE if c in table.columns] + ([widest] if widest else [])
    records = table.to_dict("records")
    figures = [c for c in table.columns if c not in NAMES]
    return [
        ("Headline figures", NAMES + headline,
         [[str(r[n]) for n in NAMES] + [format_cell(c, r[c]) for c in headline] for r in records],
         [False] * len(NAMES) + [True] * len(headline)),
        ("Every figure", ["figure"] + ["/".join(str(r[n]) for n in NAMES) for r in records],
         [[c] + [format_cell(c, r[c]) for r in records] for c in figures],
         [False] + [True] * len(records)),
    ]


def summary_markdown(table: pd.DataFrame) -> str:
    """The :func:`summary_tables` as Markdown."""
    lines = ["# Run summary", "",
             f"{len(table)} run(s); every figure of each metrics.json is a column of summary.csv."]
    for caption, header, rows, numeric in summary_tables(table):
        lines += ["", f"## {caption}", ""] + markdown_table(header, rows, numeric)
    return "\n".join(lines) + "\n"


def write_summary(table: pd.DataFrame, csv_path, markdown_path) -> None:
    """Write the summary as CSV (one row per run, read back equal by ``pd.read_csv``) and as
    Markdown (:func:`summary_markdown`), each atomically."""
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(summary_markdown(table))


def summarize_runs(metrics_paths, csv_path, markdown_path) -> pd.DataFrame:
    """The summary rule: :func:`summarize` then :func:`write_summary`."""
    table = summarize(metrics_paths)
    write_summary(table, csv_path, markdown_path)
    return table
