"""The report's figures, pages and self-contained HTML report; the Snakemake report and both
reports rendered in headless Chromium (skipped without a chromium on PATH)."""

import base64
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_summary import metrics_doc, shannon_ablation, write_run

from equihash.report.ablation import ablation_statistics, ablation_table
from equihash.report.browser import find_browser, render, screenshot_statistics
from equihash.report.html import build_report, write_metrics_page, write_summary_page
from equihash.report.plots import ablation_figure, hamming_histogram_figure, multiprobe_figure, png_bytes, save_png
from equihash.report.runs import Ablation, MissingRunsError, Run, eval_log_path, training_curves_path
from equihash.report.summary import summarize_runs

REPO = Path(__file__).resolve().parents[1]
needs_chromium = pytest.mark.skipif(find_browser() is None, reason="no chromium on PATH (apt-get install chromium)")


def write_full_eval_log(path, steps=(10, 20)):
    """An eval_log.parquet with the columns the training curves plot."""
    rows = [{"step": s, "split": split, **{f"recall_r{r}": 0.1 * r + s / 100 for r in range(3)},
             **{f"precision_r{r}": 0.9 for r in range(3)}, **{f"worst_entropy_{b}": b * 0.9 for b in range(1, 5)},
             "median_positive_distance": 2.0, "median_negative_distance": 4.0, "unique_codes": 60}
            for s in steps for split in ("train", "valid")]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)


def embedded_images(html: str) -> dict[str, bytes]:
    """alt text -> PNG bytes of every base64 image of a page."""
    return {alt: base64.b64decode(data)
            for alt, data in re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)">', html)}


# --------------------------------------------------------------------------- figures
def test_hamming_histogram_bars_are_the_metrics_counts():
    doc = metrics_doc(nbits=16)
    ax = hamming_histogram_figure(doc).axes[0]
    positive, negative = ax.containers
    assert [bar.get_height() for bar in positive] == doc["binary"]["positive_histogram"]
    assert [bar.get_height() for bar in negative] == doc["binary"]["negative_histogram"]
    centres = [bar.get_x() + bar.get_width() / 2 for bar in positive]
    assert centres == pytest.approx(np.arange(17) - 0.2)
    assert "r@0..3: 0.625 0.875 1.000 1.000" in positive.get_label()


def test_multiprobe_curve_points_are_the_multiprobe_entries():
    doc = metrics_doc(lookups=(1, 4, 16, 64))
    ax = multiprobe_figure(doc).axes[0]
    assert ax.get_xscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines()}
    for key, label in (("recall", "equidict recall"), ("perfect_retrieval_rate", "perfect-retrieval rate"),
                       ("false_positive_rate", "equiset false-positive rate")):
        assert list(lines[label].get_xdata()) == [1, 4, 16, 64]
        assert list(lines[label].get_ydata()) == [e[key] for e in doc["multiprobe"]]


def test_ablation_figure_points_and_error_bars_are_mean_and_std_over_seeds(tmp_path):
    paths, parameters, logs = shannon_ablation(tmp_path)
    table = ablation_table(paths, parameters, logs)
    fig = ablation_figure(table)
    assert [ax.get_ylabel() for ax in fig.axes] == ["equidict.recall", "equidict.perfect_retrieval_rate",
                                                    "equiset.false_positive_rate", "training.valid.recall_r0"]
    for ax in fig.axes:
        stats = ablation_statistics(table, ax.get_ylabel())
        [container] = ax.containers
        line, _, (bars,) = container.lines
        assert list(line.get_xdata()) == [0.005, 0.01, 0.02]
        assert list(line.get_ydata()) == pytest.approx(stats["mean"].tolist())
        spans = np.array([(low[1], high[1]) for low, high in bars.get_segments()])
        std = stats["std"].fillna(0.0)  # one seed: no error bar
        np.testing.assert_allclose(spans, np.stack([stats["mean"] - std, stats["mean"] + std], axis=1), rtol=1e-6)
        assert ax.get_xscale() == "linear"  # 0.005 .. 0.02 spans less than a factor 10


def test_png_bytes_are_deterministic_and_carry_no_software_metadata(tmp_path):
    doc = metrics_doc()
    first = png_bytes(hamming_histogram_figure(doc))
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    assert png_bytes(hamming_histogram_figure(doc)) == first
    assert b"Software" not in first and b"matplotlib" not in first
    save_png(multiprobe_figure(doc), tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes() == png_bytes(multiprobe_figure(doc))
    assert not list(tmp_path.glob(".*.tmp"))


def test_metrics_page_holds_every_figure(tmp_path):
    path = write_run(tmp_path, metrics_doc(recall=0.5))
    write_metrics_page(path, tmp_path / "metrics.html")
    text = (tmp_path / "metrics.html").read_text()
    assert "<h2>MnistMosaic / ShannonHamming / main / default</h2>" in text
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", text)
    assert cells[:6] == ["database size N", "1000", "fingerprint bits k", "8", "internal collisions", "7"]
    assert ["recall", "0.5000", "average jaccard index", "0.1667"] == cells[6:10]
    assert ["16", "0.7500", "0.2500", "0.7500", "0.1875"] in [cells[i:i + 5] for i in range(len(cells))]
    assert ["config_sha256", "ab" * 32] in [cells[i:i + 2] for i in range(len(cells))]


# --------------------------------------------------------------------------- the self-contained report
def results_tree(root: Path):
    """Two runs with metrics (one with training_curves.png, one with only its eval log) and a variant table."""
    results = root / "results"
    shannon, hashnet = Run("MnistMosaic", "ShannonHamming", "main", "default"), Run("MnistMosaic", "HashNet", "main",
                                                                                    "default")
    write_run(results, metrics_doc("ShannonHamming", recall=0.5))
    write_run(results, metrics_doc("HashNet", recall=0.25))
    write_full_eval_log(eval_log_path(results, shannon))
    training_curves_path(results, shannon).write_bytes(png_bytes(multiprobe_figure(metrics_doc())))  # any PNG
    write_full_eval_log(eval_log_path(results, hashnet))
    return results, [shannon, hashnet]


def test_report_names_missing_runs_and_reports_the_others(tmp_path):
    results, runs = results_tree(tmp_path)
    missing = [Run("MnistMosaic", "JMLH", "main", "default"), Run("OpenImagesMosaic", "ShannonHamming", "main", "big")]
    out = tmp_path / "report.html"
    with pytest.raises(MissingRunsError) as error:
        build_report(out, [runs[0], missing[0], runs[1], missing[1]], results)
    message = str(error.value)
    for run in missing:
        expected = results / "metrics" / run.task / run.model / run.variant / run.database / "metrics.json"
        assert f"{run.name}: expected {expected}" in message
    assert error.value.report_path == out and [run for run, _ in error.value.missing] == missing
    assert f"report written to {out}" in message
    html = out.read_text()
    assert "MnistMosaic/JMLH/main/default</b>: no metrics" in html and "2 run(s) asked for have no metrics" in html
    images = embedded_images(html)
    assert sorted(images) == sorted(
        [f"{kind}: MnistMosaic/{model}/main/default" for kind in ("Hamming-distance histograms", "multi-probing curve")
         for model in ("ShannonHamming", "HashNet")]
        + ["training curves: MnistMosaic/ShannonHamming/main", "training curves: MnistMosaic/HashNet/main"])
    # the embedded figures are those of the metrics: byte for byte
    doc = metrics_doc("HashNet", recall=0.25)
    assert images["Hamming-distance histograms: MnistMosaic/HashNet/main/default"] == png_bytes(
        hamming_histogram_figure(doc))
    assert images["training curves: MnistMosaic/ShannonHamming/main"] == training_curves_path(
        results, runs[0]).read_bytes()
    assert images["training curves: MnistMosaic/HashNet/main"][:4] == b"\x89PNG"  # drawn from its eval log
    # the summary table at the top holds the figures of both runs
    rows = re.findall(r"<tr><td>MnistMosaic</td><td>(\w+)</td><td>main</td><td>default</td><td class=n>1000</td>"
                      r"<td class=n>([\d.]+)</td>", html)  # database size, equidict recall
    assert rows == [("ShannonHamming", "0.5000"), ("HashNet", "0.2500")]
    # asked again with allow_missing: the same bytes, the missing runs returned
    contents = build_report(out, [runs[0], missing[0], runs[1], missing[1]], results, allow_missing=True)
    assert out.read_text() == html and contents.runs == runs and [r for r, _ in contents.missing] == missing


def test_report_without_any_metrics_writes_nothing(tmp_path):
    with pytest.raises(MissingRunsError, match="no report written: none of the 1 runs") as error:
        build_report(tmp_path / "r.html", [Run("MnistMosaic", "JMLH", "main", "default")], tmp_path / "results")
    assert "MnistMosaic/JMLH/main/default: expected" in str(error.value)
    assert not (tmp_path / "r.html").exists()


def test_report_ablation_section_names_its_missing_rows(tmp_path):
    paths, parameters, logs = shannon_ablation(tmp_path / "results")
    ablation = Ablation("MnistMosaic", "ShannonHamming", "weight", {**parameters, "w0.06_s0": {
        "seed": 0, "objective.shannon_weight": 0.06}})
    contents = build_report(tmp_path / "r.html", [], tmp_path / "results", ablations=[ablation], allow_missing=True)
    assert [run.variant for run, _ in contents.missing] == ["w0.06_s0"]
    html = (tmp_path / "r.html").read_text()
    assert list(embedded_images(html)) == ["ablation: MnistMosaic/ShannonHamming/weight"]
    cells = re.findall(r"<tr><td>default</td><td>([\d.]+)</td><td class=n>([\d.]+)</td><td class=n>([\d.]*)</td>"
                       r"<td class=n>(\d+)</td></tr>", html)
    assert cells == [("0.005", "0.2500", "0.0707", "2"), ("0.01", "0.4500", "", "1"), ("0.02", "0.7333", "0.1528", "3")]


# --------------------------------------------------------------------------- looked at in a browser
@needs_chromium
def test_rendered_report_shows_its_plots(tmp_path):
    results, runs = results_tree(tmp_path)
    build_report(tmp_path / "report.html", runs, results)
    rendering = render(tmp_path / "report.html", tmp_path / "report.png", window=(1300, 2400))
    stats = screenshot_statistics(rendering.screenshot)
    assert (stats["width"], stats["height"]) == (1300, 2400)
    assert stats["colours"] > 100 and stats["foreground_share"] > 0.05
    assert sorted(embedded_images(rendering.dom)) == sorted(embedded_images((tmp_path / "report.html").read_text()))
    (tmp_path / "blank.html").write_text("<html><body></body></html>")
    blank = screenshot_statistics(render(tmp_path / "blank.html", tmp_path / "blank.png").screenshot)
    assert blank["colours"] == 1 and blank["foreground_share"] == 0.0


@pytest.fixture(scope="module")
def snakemake_report(tmp_path_factory):
    """snakemake --report over report_run and summary outputs written here by the same library
    calls as their rules (no job runs; Snakemake only warns that their metadata is missing)."""
    workdir = tmp_path_factory.mktemp("snakemake_report")
    results, _ = results_tree(workdir)
    out = results / "report" / "MnistMosaic" / "ShannonHamming" / "main" / "default"
    doc = metrics_doc("ShannonHamming", recall=0.5)
    metrics = results / "metrics" / "MnistMosaic" / "ShannonHamming" / "main" / "default" / "metrics.json"
    write_metrics_page(metrics, out / "metrics.html")
    save_png(hamming_histogram_figure(doc), out / "hamming_histograms.png")
    save_png(multiprobe_figure(doc), out / "multiprobe.png")
    write_summary_page(summarize_runs([metrics], results / "summary.csv", results / "summary.md"),
                       results / "report" / "summary.html")
    targets = [str(out.relative_to(workdir) / name) for name in ("metrics.html", "hamming_histograms.png",
                                                                 "multiprobe.png")]
    (workdir / "config.yaml").write_text(yaml.safe_dump({"run_tasks": ["MnistMosaic"]}))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                             str(workdir), "--configfile", str(workdir / "config.yaml"), "--report", "report.html",
                             *targets, "results/report/summary.html"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir / "report.html", out


def test_snakemake_report_holds_every_marked_result(snakemake_report):
    report, _ = snakemake_report
    html = report.read_text()
    assert "Learning deep equihash functions" in html  # workflow/report/workflow.rst
    for name in ("metrics.html", "hamming_histograms.png", "multiprobe.png"):
        assert f'"results/report/MnistMosaic/ShannonHamming/main/default/{name}"' in html
    assert '"results/models/MnistMosaic/ShannonHamming/main/training_curves.png"' in html
    assert '"results/summary.csv"' in html and '"results/report/summary.html"' in html
    assert "Hamming distances between the fingerprints of triplet pairs" in html  # a caption, wildcards filled
    assert '"MnistMosaic": {"ShannonHamming / main": [' in html  # category = task, subcategory = model / variant


@needs_chromium
def test_snakemake_report_shows_the_histograms_in_chromium(snakemake_report, tmp_path):
    report, out = snakemake_report
    rendering = render(report, tmp_path / "histograms.png", show="hamming_histograms.png")
    shown = re.findall(r'<img src="data:image/png;[^"]*base64,([^"]+)"', rendering.dom)
    assert [base64.b64decode(data) for data in shown] == [(out / "hamming_histograms.png").read_bytes()]
    stats = screenshot_statistics(rendering.screenshot)
    assert stats["colours"] > 100 and stats["foreground_share"] > 0.1
