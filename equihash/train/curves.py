"""Training curves (PNG) from eval_log.parquet: the docs/method.md section 6.6 figures against the step."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from equihash.io import atomic_path  # noqa: E402

PANELS = [
    ("recall at radius r", ["recall_r0", "recall_r1", "recall_r2"]),
    ("precision at radius r", ["precision_r0", "precision_r1", "precision_r2"]),
    ("worst entropy of s bits (ideal s)", ["worst_entropy_1", "worst_entropy_2", "worst_entropy_3", "worst_entropy_4"]),
    ("median Hamming distance", ["median_positive_distance", "median_negative_distance"]),
]


def plot_training_curves(eval_log, out_png, title: str = "") -> None:
    """Four panels, train (dashed) and valid (solid) splits."""
    log = pd.read_parquet(eval_log)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for ax, (name, columns) in zip(axes, PANELS):
        for i, column in enumerate(columns):
            for split, style in (("train", "--"), ("valid", "-")):
                part = log[log["split"] == split]
                ax.plot(part["step"], part[column], style, color=f"C{i}",
                        label=f"{column} ({split})" if split == "valid" else None)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=7, title="solid: valid, dashed: train", title_fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title or str(eval_log), fontsize=10)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
