"""HTML for the report: a run's metrics tables, and a self-contained report of many runs.

:func:`write_metrics_page` writes the page the Snakemake report shows for one run (an HTML
result is displayed in a frame). :func:`build_report` writes one HTML file, PNG figures
embedded as base64, from whatever metrics exist under a results directory: the summary of
the runs, each run's tables, Hamming-distance histograms, multi-probing curve and training
curves, and the ablation figures of variant tables. Runs asked for without a metrics.json
are listed at the top of the report with their expected path, logged, and raised as
:class:`~equihash.report.runs.MissingRunsError` once the report of the others is written.
This is ``equihash report``; it needs neither Snakemake nor its metadata.
"""

from __future__ import annotations

import base64
import html
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from equihash.io import atomic_path
from equihash.progress import logger
from equihash.report.ablation import ablation_statistics, ablation_table
from equihash.report.plots import ablation_figure, hamming_histogram_figure, multiprobe_figure, png_bytes
from equihash.report.runs import (Ablation, MissingRunsError, Run, eval_log_path, metrics_path, split_by_presence,
                                  training_curves_path)
from equihash.report.summary import format_cell, read_metrics, summarize, summary_tables
from equihash.train.curves import plot_training_curves

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.4em 1.2em 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding-bottom: 2px; }
.tables { display: flex; flex-wrap: wrap; align-items: flex-start; }
.missing { border: 2px solid #c0392b; background: #fdecea; padding: 0.3em 1em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0; }
section { border-top: 1px solid #bbb; margin-top: 1.5em; }
.wide { overflow-x: auto; }
"""


# --------------------------------------------------------------------------- tables of one run
def html_table(caption: str, header: list[str], rows: list[list], numeric: list[bool] | None = None) -> str:
    """An HTML table; cells are escaped, ``numeric`` columns right-aligned."""
    numeric = numeric or [False] * len(header)
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=n" if right else ""}>{html.escape(str(cell))}</td>'
                         for cell, right in zip(row, numeric)) + "</tr>"
        for row in rows)
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def metrics_tables(doc: dict) -> str:
    """The figures of one metrics.json as HTML tables: database, equidict, equiset, binary
    r@d / f@d, prioritised multi-probing per number of lookups, and provenance."""

    def figures(section: str) -> list[list[str]]:
        return [[key.replace("_", " "), format_cell(key, value)] for key, value in doc[section].items()]

    binary = doc["binary"]
    probe_keys = [k for k in doc["multiprobe"][0] if k != "lookups"]
    parts = [
        html_table("database", ["figure", "value"],
                   [["database size N", str(doc["database_size"])], ["fingerprint bits k", str(doc["nbits"])],
                    ["internal collisions", str(doc["internal_collisions"])]], [False, True]),
        html_table("equidict (exact lookup)", ["figure", "value"], figures("equidict"), [False, True]),
        html_table("equiset", ["figure", "value"], figures("equiset"), [False, True]),
        html_table("binary (triplet pairs)", ["d", "r@d", "f@d"],
                   [[str(d), f"{r:.4f}", f"{f:.4f}"] for d, (r, f) in enumerate(zip(binary["r_at"], binary["f_at"]))],
                   [True] * 3),
        html_table("prioritised multi-probing", ["lookups L", *[k.replace("_", " ") for k in probe_keys]],
                   [[str(e["lookups"]), *[f"{e[k]:.4f}" for k in probe_keys]] for e in doc["multiprobe"]],
                   [True] * (1 + len(probe_keys))),
    ]
    if isinstance(doc.get("provenance"), dict):
        parts.append(html_table("provenance", ["field", "value"],
                                [[k, "" if v is None else str(v)] for k, v in doc["provenance"].items()]))
    return '<div class="tables">' + "".join(parts) + "</div>"


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def write_metrics_page(metrics_json, out_html) -> None:
    """The metrics tables of one run as a standalone HTML page (the Snakemake report's table)."""
    doc = read_metrics(metrics_json)
    title = f"{doc['task']} / {doc['model']} / {doc['variant']} / {doc['database']}"
    with atomic_path(out_html) as tmp:
        tmp.write_text(page(title, f"<h2>{html.escape(title)}</h2>\n" + metrics_tables(doc)))


def summary_html(table) -> str:
    """The run summary (``equihash.report.summary.summary_tables``) as HTML tables."""
    return "\n".join(f'<div class="wide">{html_table(caption, header, rows, numeric)}</div>'
                     for caption, header, rows, numeric in summary_tables(table))


def write_summary_page(table, out_html) -> None:
    """The run summary as a standalone HTML page (the Snakemake report shows it; a CSV
    result would only be offered for download)."""
    with atomic_path(out_html) as tmp:
        tmp.write_text(page("Run summary", f"<h2>Run summary: {len(table)} run(s)</h2>\n" + summary_html(table)))


# --------------------------------------------------------------------------- the standalone report
@dataclass
class ReportContents:
    """What :func:`build_report` wrote: the file, the runs and ablations in it, the missing runs."""

    path: Path
    runs: list = field(default_factory=list)
    ablations: list = field(default_factory=list)
    missing: list = field(default_factory=list)


def image(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def training_curves_image(results, run: Run) -> str:
    """The run's training_curves.png; else curves drawn from its eval_log.parquet; else a note."""
    alt = f"training curves: {run.task}/{run.model}/{run.variant}"
    png, log = training_curves_path(results, run), eval_log_path(results, run)
    if png.is_file():
        return image(png.read_bytes(), alt)
    if log.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "curves.png"
            plot_training_curves(log, out, title=f"{run.task} / {run.model} / {run.variant}")
            return image(out.read_bytes(), alt)
    return f"<p>No training curves: neither {html.escape(str(png))} nor {html.escape(str(log))} exists.</p>"


def run_section(results, run: Run) -> str:
    doc = read_metrics(metrics_path(results, run))
    anchor = html.escape(run.name.replace("/", "-"))
    return (f'<section id="{anchor}"><h2>{html.escape(run.name)}</h2>\n'
            + metrics_tables(doc) + "\n"
            + image(png_bytes(hamming_histogram_figure(doc)), f"Hamming-distance histograms: {run.name}") + "\n"
            + image(png_bytes(multiprobe_figure(doc)), f"multi-probing curve: {run.name}") + "\n"
            + training_curves_image(results, run) + "</section>")


def ablation_section(results, ablation: Ablation, present: list[Run]) -> str:
    """Figure and per-setting equidict recall of the table's runs that have metrics; the
    training figures join them when every one of those runs has its eval_log.parquet."""
    variants = list(dict.fromkeys(run.variant for run in present))
    logs = {v: eval_log_path(results, Run(ablation.task, ablation.model, v, ablation.databases[0])) for v in variants}
    table = ablation_table([metrics_path(results, run) for run in present], ablation.parameters,
                           logs if all(p.is_file() for p in logs.values()) else None)
    name = f"{ablation.task}/{ablation.model}/{ablation.table}"
    figure = ablation_figure(table, title=f"ablation {name}")
    stats = ablation_statistics(table, "equidict.recall")
    rows = [[r["database"], r["setting"], f"{r['mean']:.4f}", format_cell("std", r["std"]), str(r["n"])]
            for r in stats.to_dict("records")]
    return (f'<section id="ablation-{html.escape(name.replace("/", "-"))}"><h2>Ablation {html.escape(name)}</h2>\n'
            + image(png_bytes(figure), f"ablation: {name}") + "\n"
            + html_table("equidict recall over seeds", ["database", "setting", "mean", "std", "seeds"], rows,
                         [False, False, True, True, True]) + "</section>")


def build_report(out_path, runs, results, *, ablations=(), title: str = "equihash report",
                 allow_missing: bool = False) -> ReportContents:
    """Write a self-contained HTML report of ``runs`` (and ``ablations``) found under ``results``.

    Runs without a metrics.json are named (task/model/variant/database and the expected
    path) at the top of the report and in the log. When some are missing the report of the
    others is still written, then :class:`MissingRunsError` is raised unless
    ``allow_missing``; when none has metrics nothing is written and it is raised always."""
    runs = [Run(*run) for run in runs]
    present, missing = split_by_presence(runs, results)
    ablation_parts, included = [], []
    for ablation in ablations:
        found, lost = split_by_presence(ablation.runs, results)
        missing += lost
        if found:
            included.append(ablation)
            ablation_parts.append((ablation, found))
    for run, path in missing:
        logger.warning("report: run %s has no metrics (expected %s)", run.name, path)
    if not present and not ablation_parts:
        raise MissingRunsError(missing)

    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{len(present)} run(s) and {len(ablation_parts)} ablation table(s) from "
            f"<code>{html.escape(str(results))}</code>.</p>"]
    if missing:
        items = "".join(f"<li><b>{html.escape(run.name)}</b>: no metrics, expected "
                        f"<code>{html.escape(str(path))}</code></li>" for run, path in missing)
        body.append(f'<div class="missing"><p>{len(missing)} run(s) asked for have no metrics and are '
                    f"not in this report:</p><ul>{items}</ul></div>")
    if present:
        headline, every = summary_tables(summarize([metrics_path(results, run) for run in present]))
        body.append(f'<div class="wide">{html_table("summary: " + headline[0].lower(), *headline[1:])}</div>')
        body.append(f'<details><summary>every figure of every run</summary><div class="wide">'
                    f"{html_table(*every)}</div></details>")
        body += [run_section(results, run) for run in present]
    body += [ablation_section(results, ablation, found) for ablation, found in ablation_parts]
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        tmp.write_text(page(title, "\n".join(body)))
    logger.info("report: %s with %d run(s), %d ablation(s); %d missing", out_path, len(present),
                len(ablation_parts), len(missing))
    contents = ReportContents(out_path, present, included, missing)
    if missing and not allow_missing:
        raise MissingRunsError(missing, out_path)
    return contents
