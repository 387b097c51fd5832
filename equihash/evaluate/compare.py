"""Side-by-side tables of metrics.json files (the thesis comparison of models)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from equihash.io import InputError, atomic_path

NAMES = ["task", "model", "variant", "database"]
COUNTS = {"nbits", "database_size", "internal_collisions"}


def metrics_row(path) -> dict:
    """One flat row of a metrics.json: names, sizes, every figure; multi-probe columns per L."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable metrics.json ({exc})") from None
    row = {key: doc[key] for key in [*NAMES, "nbits", "database_size", "internal_collisions"]}
    for section in ("equidict", "equiset"):
        row.update(doc[section])
    binary = doc["binary"]
    for d, (r, f) in enumerate(zip(binary["r_at"], binary["f_at"])):
        row[f"r@{d}"], row[f"f@{d}"] = r, f
    for entry in doc["multiprobe"][1:]:
        for key in ("recall", "perfect_retrieval_rate", "false_positive_rate"):
            row[f"{key}@L{entry['lookups']}"] = entry[key]
    return row


def comparison_table(paths) -> pd.DataFrame:
    """Rows = runs (one per metrics.json), in the given order."""
    return pd.DataFrame([metrics_row(p) for p in paths])


def write_comparison(paths, csv_path, markdown_path) -> pd.DataFrame:
    """Write the table as CSV and as a Markdown table with the models as columns."""
    table = comparison_table(paths)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    columns = table.set_index(["model", "variant"]).drop(columns=["task", "database"]).T
    lines = ["| figure | " + " | ".join(f"{m} ({v})" if v != "main" else m for m, v in columns.columns) + " |",
             "|---|" + "---:|" * len(columns.columns)]
    for figure, values in columns.iterrows():
        cells = [str(int(v)) if figure in COUNTS else f"{v:.4f}" for v in values]
        lines.append(f"| {figure} | " + " | ".join(cells) + " |")
    with atomic_path(markdown_path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return table
