"""The run summary (results/summary.csv, summary.md) and ablation tables of variant runs."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from equihash.evaluate.metrics import metrics_document
from equihash.io import InputError
from equihash.report.ablation import (ablation_statistics, ablation_table, configured_ablations,
                                      final_evaluation, variant_parameters)
from equihash.report.runs import Run, configured_runs, metrics_path
from equihash.report.summary import (flatten_metrics, histogram_summary, read_metrics, summarize, summarize_runs,
                                     summary_markdown)


def metrics_doc(model="ShannonHamming", variant="main", database="default", recall=0.5, nbits=8,
                lookups=(1, 4, 16), provenance=True):
    """A metrics.json assembled by the evaluation's own function; figures derived from ``recall``."""
    entries = [{"lookups": L, "recall": min(1.0, recall * (1 + i / 4)), "perfect_retrieval_rate": recall / 2,
                "true_positive_rate": 0.75, "false_positive_rate": 0.0625 * (i + 1)} for i, L in enumerate(lookups)]
    positive = [5, 2, 1] + [0] * (nbits - 2)
    negative = [0] * (nbits - 3) + [1, 3, 4, 0]
    doc = metrics_document(
        task="MnistMosaic", model=model, variant=variant, database=database, nbits=nbits,
        database_size=1000, internal_collisions=7,
        equidict={"recall": entries[0]["recall"], "average_jaccard_index": recall / 3,
                  "perfect_retrieval_rate": entries[0]["perfect_retrieval_rate"],
                  "complete_retrieval_rate": recall / 4, "sound_retrieval_rate": 0.875},
        equiset={"true_positive_rate": 0.75, "false_positive_rate": 0.0625},
        binary={"r_at": [0.625, 0.875, 1.0, 1.0], "f_at": [0.0, 0.0, 0.0, 0.125],
                "positive_histogram": positive, "negative_histogram": negative},
        multiprobe=entries)
    if provenance:
        doc["provenance"] = {"equihash_version": "0.1.0", "git_commit": None, "config_sha256": "ab" * 32,
                             "nb_shards": 4}
    return doc


def write_run(results, doc) -> Path:
    path = metrics_path(results, Run(doc["task"], doc["model"], doc["variant"], doc["database"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return path


def leaves(node, prefix=""):
    """(dotted path, value) of every scalar of a JSON document, lists by index."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from leaves(value, f"{prefix}[{i}]")
    else:
        yield prefix, node


def test_histogram_summary_known_answer():
    assert histogram_summary([5, 2, 1, 0]) == {"pairs": 8, "distance_mean": (0 * 5 + 1 * 2 + 2 * 1) / 8,
                                               "distance_median": 0}
    assert histogram_summary([1, 1, 1, 1])["distance_median"] == 1  # lower median of 0, 1, 2, 3
    assert histogram_summary([0, 0, 3])["distance_median"] == 2
    empty = histogram_summary([0, 0, 0])
    assert empty["pairs"] == 0 and math.isnan(empty["distance_mean"]) and math.isnan(empty["distance_median"])


def test_every_figure_of_metrics_json_is_a_column_with_its_value():
    doc = metrics_doc()
    row = flatten_metrics(doc)
    expected = {}
    for path, value in leaves(doc):
        if "_histogram" in path:
            continue
        if path.startswith("multiprobe["):
            i, key = int(path[len("multiprobe["):path.index("]")]), path.split(".", 1)[1]
            if key == "lookups":
                continue
            path = f"multiprobe.L{doc['multiprobe'][i]['lookups']}.{key}"
        elif path.startswith("binary."):
            path = path.replace("[", "_").replace("]", "")
        expected[path] = value
    histograms = {f"binary.{kind}_{name}": figure
                  for kind in ("positive", "negative")
                  for name, figure in histogram_summary(doc["binary"][f"{kind}_histogram"]).items()}
    assert row == {**expected, **histograms}
    assert row["binary.r_at_3"] == 1.0 and row["multiprobe.L16.false_positive_rate"] == 0.1875
    assert row["binary.positive_pairs"] == 8 and row["binary.negative_distance_mean"] == (5 * 1 + 6 * 3 + 7 * 4) / 8
    assert row["provenance.config_sha256"] == "ab" * 32 and row["provenance.nb_shards"] == 4


def test_summary_csv_reads_back_equal_one_row_per_run(tmp_path):
    docs = [metrics_doc("ShannonHamming", recall=0.5), metrics_doc("HashNet", recall=0.25),
            metrics_doc("JMLH", database="big", recall=0.125, lookups=(1, 2), provenance=False)]
    paths = [write_run(tmp_path / "results", doc) for doc in docs]
    table = summarize_runs(paths, tmp_path / "summary.csv", tmp_path / "summary.md")
    assert list(table["model"]) == ["ShannonHamming", "HashNet", "JMLH"]
    assert list(table["database"]) == ["default", "default", "big"]
    back = pd.read_csv(tmp_path / "summary.csv")
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    for doc, (_, row) in zip(docs, back.iterrows()):
        assert row["equidict.recall"] == doc["equidict"]["recall"]
        assert row["equiset.false_positive_rate"] == doc["equiset"]["false_positive_rate"]
        assert [row[f"binary.f_at_{d}"] for d in range(4)] == doc["binary"]["f_at"]
        for entry in doc["multiprobe"]:
            assert row[f"multiprobe.L{entry['lookups']}.recall"] == entry["recall"]
    # a figure a run lacks is empty, not invented
    assert math.isnan(back.loc[2, "multiprobe.L16.recall"]) and math.isnan(back.loc[0, "multiprobe.L2.recall"])
    assert math.isnan(back.loc[2, "provenance.nb_shards"]) and back.loc[0, "provenance.nb_shards"] == 4
    # the one-liner of the issue
    assert back.set_index("model")["equidict.recall"].to_dict() == {"ShannonHamming": 0.5, "HashNet": 0.25,
                                                                    "JMLH": 0.125}


def test_summary_markdown_tables_and_bit_identical_rerun(tmp_path):
    paths = [write_run(tmp_path / "results", metrics_doc(m, recall=r)) for m, r in (("A", 0.5), ("B", 0.25))]
    summarize_runs(paths, tmp_path / "s.csv", tmp_path / "s.md")
    first = (tmp_path / "s.csv").read_bytes(), (tmp_path / "s.md").read_bytes()
    summarize_runs(paths, tmp_path / "s.csv", tmp_path / "s.md")
    assert ((tmp_path / "s.csv").read_bytes(), (tmp_path / "s.md").read_bytes()) == first
    text = first[1].decode()
    headline = [line for line in text.splitlines() if line.startswith("| MnistMosaic | A |")]
    assert headline == ["| MnistMosaic | A | main | default | 1000 | 0.5000 | 0.2500 | 0.7500 | 0.0625 | 0.6250 "
                        "| 0.0000 | 0.7500 |"]  # the last: multiprobe.L16.recall = 0.5 * 1.5
    assert "| internal_collisions | 7 | 7 |" in text and "| binary.positive_pairs | 8 | 8 |" in text
    assert "| provenance.git_commit |  |  |" in text
    assert summary_markdown(summarize(paths)) == text


def test_missing_and_malformed_metrics_are_named(tmp_path):
    good = write_run(tmp_path, metrics_doc())
    with pytest.raises(InputError) as error:
        summarize([tmp_path / "a" / "metrics.json", good, tmp_path / "b" / "metrics.json"])
    assert "2 metrics file(s) not found" in str(error.value)
    assert str(tmp_path / "a" / "metrics.json") in str(error.value) and str(tmp_path / "b") in str(error.value)
    doc = metrics_doc()
    del doc["equiset"]
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"bad.json: missing key 'equiset'"):
        read_metrics(tmp_path / "bad.json")
    doc = metrics_doc()
    doc["binary"]["positive_histogram"] = [1, 2]
    (tmp_path / "short.json").write_text(json.dumps(doc))
    expected = r"short.json: 'binary.positive_histogram' has 2 counts, expected nbits \+ 1 = 9"
    with pytest.raises(InputError, match=expected):
        read_metrics(tmp_path / "short.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(InputError, match="junk.json: not a readable metrics.json"):
        read_metrics(tmp_path / "junk.json")


def test_configured_runs_are_what_rule_all_evaluates():
    config = {"run_tasks": ["MnistMosaic"],
              "tasks": {"MnistMosaic": {"run_models": ["ShannonHamming", "HashNet"], "databases": {"default": {},
                                                                                                   "big": {}}},
                        "OpenImagesMosaic": {"run_models": ["ShannonHamming"], "databases": {"default": {}}}}}
    assert configured_runs(config) == [Run("MnistMosaic", "ShannonHamming", "main", "default"),
                                       Run("MnistMosaic", "ShannonHamming", "main", "big"),
                                       Run("MnistMosaic", "HashNet", "main", "default"),
                                       Run("MnistMosaic", "HashNet", "main", "big")]
    with pytest.raises(InputError, match="run_models"):
        configured_runs({"run_tasks": ["Nope"], "tasks": {}})


# --------------------------------------------------------------------------- ablations
def write_eval_log(path, valid_recall_by_step):
    rows = []
    for step, recall in valid_recall_by_step.items():
        rows += [{"step": step, "split": "train", "recall_r0": 0.0, "unique_codes": 1},
                 {"step": step, "split": "valid", "recall_r0": recall, "unique_codes": step}]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)


def test_final_evaluation_is_the_last_validation_row(tmp_path):
    log = tmp_path / "eval_log.parquet"
    write_eval_log(log, {20: 0.5, 10: 0.25, 30: 0.75})
    assert final_evaluation(log) == {"training.valid.step": 30, "training.valid.recall_r0": 0.75,
                                     "training.valid.unique_codes": 30}
    with pytest.raises(InputError, match="no evaluation of split 'test'"):
        final_evaluation(log, "test")


def test_variant_parameters_take_defaults_from_resolved_blocks(tmp_path):
    table = tmp_path / "t.tsv"
    table.write_text("# comment\nvariant\tseed\tobjective.alpha\na_s0\t0\t0.1\ndefault_s1\t1\t\n")
    resolved = {"a_s0": {"seed": 0, "objective": {"alpha": 0.1}},
                "default_s1": {"seed": 1, "objective": {"alpha": 0.15}}}
    assert variant_parameters(table, resolved) == {"a_s0": {"seed": 0, "objective.alpha": 0.1},
                                                   "default_s1": {"seed": 1, "objective.alpha": 0.15}}
    assert variant_parameters(table)["default_s1"] == {"seed": 1, "objective.alpha": None}
    config = {"variants": str(tmp_path.parent), "tasks": {"T": {"databases": {"default": {}, "big": {}}}}}
    (tmp_path.parent / "T" / "M").mkdir(parents=True)
    table.rename(tmp_path.parent / "T" / "M" / "t.tsv")
    [ablation] = configured_ablations(config, {("T", "M"): {"t": resolved}})
    assert (ablation.task, ablation.model, ablation.table, ablation.databases) == ("T", "M", "t", ("default", "big"))
    assert ablation.runs == [Run("T", "M", "a_s0", "default"), Run("T", "M", "a_s0", "big"),
                             Run("T", "M", "default_s1", "default"), Run("T", "M", "default_s1", "big")]


def shannon_ablation(tmp_path):
    """Weights 0.02 (3 seeds), 0.005 (2 seeds) and 0.01 (1 seed), in that table order."""
    recalls = {("w0.02", 0): 0.6, ("w0.02", 1): 0.7, ("w0.02", 2): 0.9, ("w0.005", 0): 0.2, ("w0.005", 1): 0.3,
               ("w0.01", 0): 0.45}
    parameters, paths, logs = {}, [], {}
    for (name, seed), recall in recalls.items():
        variant = f"{name}_s{seed}"
        parameters[variant] = {"seed": seed, "objective.shannon_weight": float(name[1:])}
        paths.append(write_run(tmp_path, metrics_doc(variant=variant, recall=recall)))
        logs[variant] = tmp_path / "models" / variant / "eval_log.parquet"
        write_eval_log(logs[variant], {5: 0.0, 10: recall / 2})
    return paths, parameters, logs


def test_ablation_mean_and_std_over_seeds_by_hand(tmp_path):
    paths, parameters, logs = shannon_ablation(tmp_path)
    table = ablation_table(paths, parameters, logs)
    assert list(table.columns[:7]) == ["task", "model", "variant", "database", "param.seed",
                                       "param.objective.shannon_weight", "training.valid.step"]
    assert table["training.valid.recall_r0"].tolist() == pytest.approx([0.3, 0.35, 0.45, 0.1, 0.15, 0.225])
    stats = ablation_statistics(table, "equidict.recall")
    assert stats["param.objective.shannon_weight"].tolist() == [0.005, 0.01, 0.02]  # ascending numbers
    assert stats["setting"].tolist() == ["0.005", "0.01", "0.02"]
    assert stats["n"].tolist() == [2, 1, 3]
    assert stats["mean"].tolist() == pytest.approx([0.25, 0.45, (0.6 + 0.7 + 0.9) / 3])
    std_02 = math.sqrt(sum((v - 2.2 / 3) ** 2 for v in (0.6, 0.7, 0.9)) / 2)  # sample std, ddof 1
    assert stats["std"].iloc[0] == pytest.approx(math.sqrt(2 * 0.05 ** 2))
    assert math.isnan(stats["std"].iloc[1]) and stats["std"].iloc[2] == pytest.approx(std_02)
    with pytest.raises(InputError, match="no column 'nope'"):
        ablation_statistics(table, "nope")


def test_ablation_of_several_keys_is_categorical_in_table_order(tmp_path):
    parameters, paths = {}, []
    for i, (size, tuples, seed, recall) in enumerate([(3, "all", 0, 0.5), (3, "all", 1, 0.7), (2, "bits", 0, 0.1),
                                                       (4, "pairs", 0, 0.3)]):
        variant = f"v{i}"
        parameters[variant] = {"seed": seed, "objective.tuple_size": size, "objective.tuples": tuples}
        paths.append(write_run(tmp_path, metrics_doc(variant=variant, recall=recall)))
    stats = ablation_statistics(ablation_table(paths, parameters), "equidict.recall")
    assert stats["setting"].tolist() == ["tuple_size=3, tuples=all", "tuple_size=2, tuples=bits",
                                         "tuple_size=4, tuples=pairs"]
    assert stats["mean"].tolist() == pytest.approx([0.6, 0.1, 0.3]) and stats["n"].tolist() == [2, 1, 1]
    assert stats["std"].iloc[0] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_ablation_row_not_in_the_table_is_named(tmp_path):
    path = write_run(tmp_path, metrics_doc(variant="stray"))
    with pytest.raises(InputError, match="variant 'stray' is not a row of the variant table"):
        ablation_table([path], {"a": {"seed": 0}})
