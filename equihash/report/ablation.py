"""Ablation tables (docs/method.md section 6.5): the runs of one variant table against the varied parameter.

A variant table ``config/variants/<task>/<model>/<table>.tsv`` names runs that override keys
of a model block; its ``seed`` column is a repetition, every other column a parameter of the
ablation. The ablation table is the run summary of its rows with one ``param.<key>`` column
per table column (and the last validation figures of training, ``training.valid.*``, when
the evaluation logs are given); :func:`ablation_statistics` gives a metric's mean and sample
standard deviation over the rows that differ only by seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from equihash.config import read_variant_table
from equihash.io import InputError, atomic_path
from equihash.report.runs import Ablation
from equihash.report.summary import flatten_metrics, read_metrics

SEED = "param.seed"
# The metrics an ablation figure shows, one panel each, when the table has them.
ABLATION_METRICS = ("equidict.recall", "equidict.perfect_retrieval_rate", "equiset.false_positive_rate",
                    "training.valid.recall_r0")


def dotted_get(block: dict, key: str):
    node = block
    for part in key.split("."):
        node = node[part]
    return node


def variant_parameters(table_path, resolved_rows: dict[str, dict] | None = None) -> dict[str, dict]:
    """variant -> {dotted key: value} for every column of a variant table, in column order.

    With ``resolved_rows`` (variant -> resolved model block, as ``equihash.config.load_variants``
    returns) an empty cell takes the model's default value; without, it is None."""
    rows = read_variant_table(table_path)
    keys = list(dict.fromkeys(key for overrides in rows.values() for key in overrides))
    out = {}
    for variant, overrides in rows.items():
        if resolved_rows is None:
            out[variant] = {key: overrides.get(key) for key in keys}
            continue
        if variant not in resolved_rows:
            raise InputError(f"{table_path}: variant '{variant}' has no resolved model block")
        out[variant] = {key: dotted_get(resolved_rows[variant], key) for key in keys}
    return out


def configured_ablations(config: dict, variant_tables: dict) -> list[Ablation]:
    """The ablation of every variant table: ``variant_tables`` is what
    ``equihash.config.load_variants(config["variants"], ...)`` returns, (task, model) ->
    {table: {variant: resolved model block}}; each table is read again from
    ``<config variants>/<task>/<model>/<table>.tsv`` for its columns."""
    root = Path(config["variants"])
    return [Ablation(task, model, table, variant_parameters(root / task / model / f"{table}.tsv", rows),
                     tuple(config["tasks"][task]["databases"]))
            for (task, model), tables in variant_tables.items() for table, rows in tables.items()]


def final_evaluation(eval_log, split: str = "valid") -> dict:
    """The last evaluation of one split in an eval_log.parquet (docs/method.md section 6.6), as
    ``training.<split>.<column>`` figures (its step included)."""
    path = Path(eval_log)
    if not path.is_file():
        raise InputError(f"{path}: evaluation log not found")
    log = pd.read_parquet(path)
    for column in ("step", "split"):
        if column not in log.columns:
            raise InputError(f"{path}: missing column '{column}'")
    part = log[log["split"] == split]
    if part.empty:
        raise InputError(f"{path}: no evaluation of split '{split}'")
    last = int(np.argmax(part["step"].to_numpy()))
    return {f"training.{split}.{column}": part[column].to_numpy()[last].item() for column in part.columns
            if column != "split" and pd.api.types.is_numeric_dtype(part[column])}


def ablation_table(metrics_paths, parameters: dict[str, dict], eval_logs: dict | None = None) -> pd.DataFrame:
    """One row per metrics.json of a variant table's runs: the run's names, its
    ``param.<key>`` values (``parameters``: :func:`variant_parameters`), every metrics
    figure and, when ``eval_logs`` (variant -> eval_log.parquet) is given, the last
    validation figures of its training."""
    rows = []
    for path in metrics_paths:
        doc = read_metrics(path)
        variant = doc["variant"]
        if variant not in parameters:
            raise InputError(f"{path}: variant '{variant}' is not a row of the variant table "
                             f"(rows: {', '.join(parameters)})")
        flat = flatten_metrics(doc)
        names = {key: flat.pop(key) for key in ("task", "model", "variant", "database")}
        params = {f"param.{key}": value for key, value in parameters[variant].items()}
        training = final_evaluation(eval_logs[variant]) if eval_logs else {}
        rows.append({**names, **params, **training, **flat})
    return pd.DataFrame(rows)


def parameter_columns(table: pd.DataFrame) -> list[str]:
    """The varied parameters of an ablation table: its ``param.`` columns but the seed."""
    return [c for c in table.columns if c.startswith("param.") and c != SEED]


def setting_label(values: dict) -> str:
    """The x label of one setting: the value alone for one parameter, else ``leaf=value`` pairs."""
    if len(values) == 1:
        return str(next(iter(values.values())))
    return ", ".join(f"{key.removeprefix('param.').rsplit('.', 1)[-1]}={value}" for key, value in values.items())


def is_numeric_parameter(table: pd.DataFrame) -> bool:
    """One varied parameter whose values are all numbers (not booleans): plotted on a number line."""
    params = parameter_columns(table)
    if len(params) != 1:
        return False
    values = table[params[0]]
    return bool(pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values))


def ablation_statistics(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, sample standard deviation (ddof 1; NaN for a single seed) and count of ``metric``
    over the rows of each (database, setting) that differ only by seed.

    Settings keep the table's row order, or ascend for a single numeric parameter. Columns:
    database, the ``param.`` columns, ``setting`` (label), ``mean``, ``std``, ``n``."""
    if metric not in table.columns:
        raise InputError(f"ablation table: no column '{metric}' (columns: {', '.join(table.columns)})")
    params = parameter_columns(table)
    keys = ["database", *params]
    stats = (table.groupby(keys, sort=False, dropna=False)[metric]
             .agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index())
    if is_numeric_parameter(table):
        stats = stats.sort_values([params[0], "database"], kind="stable").reset_index(drop=True)
    stats.insert(len(keys), "setting", [setting_label({p: row[p] for p in params}) if params else "all"
                                        for _, row in stats.iterrows()])
    return stats


def write_ablation_table(table: pd.DataFrame, csv_path) -> None:
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
