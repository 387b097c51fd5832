"""The comparison table of metrics.json files and the training-curve plot."""

import json

import pandas as pd
import pytest

from equihash.evaluate.compare import write_comparison
from equihash.io import InputError
from equihash.train.curves import plot_training_curves


def metrics(model, recall):
    return {
        "task": "MnistMosaic", "model": model, "variant": "main", "database": "default", "nbits": 64,
        "database_size": 100, "internal_collisions": 3,
        "equidict": {"recall": recall, "average_jaccard_index": recall, "perfect_retrieval_rate": recall,
                     "complete_retrieval_rate": recall, "sound_retrieval_rate": 1.0},
        "equiset": {"true_positive_rate": recall, "false_positive_rate": 0.01},
        "binary": {"r_at": [0.1, 0.2, 0.3, 0.4], "f_at": [0.0, 0.0, 0.0, 0.01],
                   "positive_histogram": [1] * 65, "negative_histogram": [1] * 65},
        "multiprobe": [{"lookups": 1, "recall": recall, "perfect_retrieval_rate": recall,
                        "true_positive_rate": recall, "false_positive_rate": 0.01},
                       {"lookups": 16, "recall": 0.9, "perfect_retrieval_rate": 0.8,
                        "true_positive_rate": 0.9, "false_positive_rate": 0.05}],
    }


def test_comparison_puts_models_side_by_side(tmp_path):
    paths = []
    for model, recall in (("ShannonHamming", 0.5), ("HashNet", 0.25)):
        path = tmp_path / model / "metrics.json"
        path.parent.mkdir()
        path.write_text(json.dumps(metrics(model, recall)))
        paths.append(path)
    table = write_comparison(paths, tmp_path / "c.csv", tmp_path / "c.md")
    assert list(table["model"]) == ["ShannonHamming", "HashNet"]
    assert list(table["recall"]) == [0.5, 0.25] and list(table["recall@L16"]) == [0.9, 0.9]
    assert table["r@3"].tolist() == [0.4, 0.4] and table["f@3"].tolist() == [0.01, 0.01]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "c.csv"), table)
    markdown = (tmp_path / "c.md").read_text().splitlines()
    assert markdown[0] == "| figure | ShannonHamming | HashNet |"
    assert "| recall | 0.5000 | 0.2500 |" in markdown


def test_unreadable_metrics_are_named(tmp_path):
    (tmp_path / "metrics.json").write_text("{")
    with pytest.raises(InputError, match="metrics.json: not a readable metrics.json"):
        write_comparison([tmp_path / "metrics.json"], tmp_path / "c.csv", tmp_path / "c.md")
    assert not (tmp_path / "c.csv").exists()


def test_training_curves_png(tmp_path):
    rows = []
    for step in (10, 20):
        for split in ("train", "valid"):
            rows.append({"step": step, "split": split, **{f"recall_r{r}": 0.1 * r for r in range(3)},
                         **{f"precision_r{r}": 1.0 for r in range(3)},
                         **{f"worst_entropy_{s}": s - 0.1 for s in range(1, 5)},
                         "median_positive_distance": 1.0, "median_negative_distance": 32.0})
    pd.DataFrame(rows).to_parquet(tmp_path / "eval_log.parquet")
    plot_training_curves(tmp_path / "eval_log.parquet", tmp_path / "curves.png")
    data = (tmp_path / "curves.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
