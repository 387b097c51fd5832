"""The report's figures (matplotlib, Agg): Hamming-distance histograms of triplet pairs,
the prioritised multi-probing curve (docs/method.md sections 9 and 10) and ablation plots (docs/method.md section 6.5).

Each ``*_figure`` function returns a :class:`matplotlib.figure.Figure` built without pyplot
(no global state), whose artists hold exactly the plotted numbers; :func:`png_bytes`
renders it to PNG bytes that depend only on the figure (no software or date metadata),
so rerunning a rule rewrites identical files.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from equihash.io import atomic_path  # noqa: E402
from equihash.report.ablation import (ABLATION_METRICS, ablation_statistics, is_numeric_parameter,  # noqa: E402
                                      parameter_columns)

# The multi-probing curve: figure of each multiprobe entry -> legend label.
MULTIPROBE_CURVES = {"recall": "equidict recall", "perfect_retrieval_rate": "perfect-retrieval rate",
                     "false_positive_rate": "equiset false-positive rate"}
DPI = 100


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG, without the Software and date metadata that would vary by installation."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def save_png(fig: Figure, path) -> None:
    """Write :func:`png_bytes` of the figure atomically."""
    data = png_bytes(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def run_title(doc: dict) -> str:
    return f"{doc['task']} / {doc['model']} / {doc['variant']} / {doc['database']}"


def hamming_histogram_figure(doc: dict) -> Figure:
    """Counts of triplet positive pairs (anchor, positive) and negative pairs (anchor,
    negative) at each Hamming distance 0..k, side by side: the two bar containers of the
    axes hold the metrics.json histograms. The legend gives r@d and f@d for d = 0..3."""
    binary = doc["binary"]
    positive = np.asarray(binary["positive_histogram"], dtype=np.int64)
    negative = np.asarray(binary["negative_histogram"], dtype=np.int64)
    distances = np.arange(len(positive))
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    r_at = " ".join(f"{v:.3f}" for v in binary["r_at"])
    f_at = " ".join(f"{v:.3f}" for v in binary["f_at"])
    ax.bar(distances - 0.2, positive, width=0.4, color="C2", label=f"positive pairs (r@0..3: {r_at})")
    ax.bar(distances + 0.2, negative, width=0.4, color="C3", label=f"negative pairs (f@0..3: {f_at})")
    ax.set_xlim(-0.8, len(positive) - 0.2)
    ax.set_xlabel(f"Hamming distance between fingerprints (k = {doc['nbits']} bits)")
    ax.set_ylabel("triplet pairs")
    ax.set_title(f"Hamming distances of triplet pairs: {run_title(doc)}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def multiprobe_figure(doc: dict) -> Figure:
    """Prioritised multi-probing: recall, perfect-retrieval rate and false-positive rate
    against the number of lookups L (log x), one line each, one point per multiprobe entry."""
    entries = doc["multiprobe"]
    lookups = np.array([e["lookups"] for e in entries])
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for i, (key, label) in enumerate(MULTIPROBE_CURVES.items()):
        ax.plot(lookups, [e[key] for e in entries], marker="o", color=f"C{i}", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lookups, [str(v) for v in lookups])
    ax.minorticks_off()
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("lookups per query L (log scale)")
    ax.set_ylabel("rate")
    ax.set_title(f"Multi-probing: {run_title(doc)}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def ablation_figure(table: pd.DataFrame, metrics=ABLATION_METRICS, title: str = "") -> Figure:
    """One panel per metric of ``metrics`` that the ablation table has (two per row): the metric's mean
    against the varied parameter, error bars one sample standard deviation over seeds, one
    series per database. A single numeric parameter is a number line (log when its values
    span a factor 10 or more); other settings are categories in table order."""
    metrics = [m for m in metrics if m in table.columns]
    params = parameter_columns(table)
    numeric = is_numeric_parameter(table)
    columns = min(len(metrics), 2) or 1
    rows = max(-(-len(metrics) // columns), 1)
    fig = Figure(figsize=(5.0 * columns, 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics):
        stats = ablation_statistics(table, metric)
        settings = list(dict.fromkeys(stats["setting"]))
        for i, (database, part) in enumerate(stats.groupby("database", sort=False)):
            x = part[params[0]].to_numpy(float) if numeric else [settings.index(s) for s in part["setting"]]
            ax.errorbar(x, part["mean"], yerr=part["std"].fillna(0.0).to_numpy(), marker="o", capsize=3,
                        color=f"C{i}", label=f"{database} (n = {'/'.join(map(str, sorted(set(part['n']))))})")
        if numeric:
            values = stats[params[0]].to_numpy(float)
            if values.min() > 0 and values.max() / values.min() >= 10:
                ax.set_xscale("log")
            ticks = np.unique(values)
            ax.set_xticks(ticks, [f"{v:g}" for v in ticks], rotation=45)
            ax.minorticks_off()
        else:
            ax.set_xticks(range(len(settings)), settings, rotation=30 if max(map(len, settings)) > 8 else 0,
                          ha="right" if max(map(len, settings)) > 8 else "center")
        ax.set_xlabel(", ".join(p.removeprefix("param.") for p in params) or "setting")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} (mean ± std over seeds)", fontsize=9)
        ax.legend(fontsize=7, title="database (seeds)", title_fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return fig
