"""The Snakemake workflow end to end on tests/tiny.yaml, in a temporary directory.

One full run (the session's ``tiny_run``, tests/conftest.py) is followed by dry-runs that show what a changed
configuration reruns, a real rerun with another shard count, and bad configurations.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from equihash.io import fingerprint_encoding
from equihash.nn.precision import resolve_precision

REPO = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((REPO / "tests" / "tiny.yaml").read_text())
RUN = "MnistMosaic/ShannonHamming/main/default"
OI_RUN = "OpenImagesMosaic/ShannonHamming/main/default"


def snakemake(workdir: Path, *args, config=TINY, check=True):
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(path), "--cores", "2", *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def planned_jobs(workdir: Path, config=TINY) -> dict[str, int]:
    """Rule -> job count of a dry-run (its 'Job stats' table)."""
    return planned_jobs_for(workdir, config)


def planned_jobs_for(workdir: Path, config, *targets) -> dict[str, int]:
    out = snakemake(workdir, *targets, "-n", config=config)
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return {}
    stats = text.split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m[1] != "total"}


def with_changes(**paths):
    """A copy of the tiny config with dotted keys replaced."""
    config = json.loads(json.dumps(TINY))
    for dotted, value in paths.items():
        node = config
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """The session's run of tests/tiny.yaml, and the jobs a dry-run plans in an empty folder."""
    return tiny_run.workdir, planned_jobs(tmp_path_factory.mktemp("empty"))


def test_dry_run_shows_the_whole_dag(run):
    _, dry = run
    assert dry == {"all": 1, "prepare_bank": 1, "prepare_split_bank": 1, "perlin": 1, "mosaic_examples": 2,
                   "labels": 2, "train": 2, "plot_training": 2, "encode_shard": 4, "merge_shards": 2,
                   "encode_queries": 2, "index": 2, "join_index": 2, "evaluate_partition": 2, "evaluate": 2, "report_run": 2, "summary": 1}


def test_the_workflow_definition_loads_without_torch_or_matplotlib(tmp_path):
    # Every snakemake call reads the Snakefile, and every cluster job reads it twice: importing
    # torch (about 2 s) and matplotlib there would be paid on each. With both blocked, the dry
    # run of the whole DAG still plans every job.
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    blocked = ("import sys; sys.modules['torch'] = sys.modules['matplotlib'] = None; "
               "from snakemake.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", blocked, "-s", str(REPO / "Snakefile"), "--directory",
                             str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "-n"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(r"^encode_shard\s+4$", result.stdout + result.stderr, re.M)


def test_full_run_writes_every_artifact_and_metrics(run):
    workdir, _ = run
    results = workdir / "results"
    metrics = json.loads((results / "metrics" / RUN / "metrics.json").read_text())
    assert list(metrics) == ["task", "model", "variant", "database", "nbits", "database_size",
                             "internal_collisions", "equidict", "equiset", "binary", "multiprobe", "provenance"]
    assert metrics["provenance"]["nb_shards"] == 2 and len(metrics["provenance"]["config_sha256"]) == 64
    # encode.precision auto (the default) is resolved once, where snakemake runs, and recorded resolved;
    # the database and the queries record it with tiny.yaml's forward batch
    run_config = json.loads((results / "metrics" / RUN / "run_config.json").read_text())
    assert run_config["encode_precision"] == resolve_precision("auto", "cpu", "encode")
    assert run_config["encode_forward_batch"] == TINY["encode"]["forward_batch"] == 16
    for name in ("database", "positive_queries", "negative_queries"):
        assert fingerprint_encoding(results / "fingerprints" / RUN / f"{name}.parquet") == {
            "precision": run_config["encode_precision"], "forward_batch": 16}, name
    assert metrics["database_size"] == 3000 and metrics["nbits"] == 64
    assert [e["lookups"] for e in metrics["multiprobe"]] == [1, 4, 16]
    assert metrics["multiprobe"][0]["recall"] == metrics["equidict"]["recall"]
    recalls = [e["recall"] for e in metrics["multiprobe"]]
    assert recalls == sorted(recalls)  # more lookups never retrieve less
    assert sum(metrics["binary"]["positive_histogram"]) == 64
    shards = sorted((results / "fingerprints" / RUN / "shards").iterdir())
    assert [p.name for p in shards] == ["0-of-2.parquet", "1-of-2.parquet"]
    assert pq.read_metadata(results / "fingerprints" / RUN / "database.parquet").num_rows == 3000
    log = pq.read_table(results / "models" / RUN.rsplit("/", 1)[0] / "eval_log.parquet").to_pandas()
    assert list(log["step"]) == [3, 3, 6, 6] and list(log["split"]) == ["train", "valid"] * 2
    assert (results / "models" / RUN.rsplit("/", 1)[0] / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    for rule in ("prepare_bank", "labels", "train", "plot_training", "encode_shard", "merge_shards",
                 "encode_queries", "index", "join_index", "evaluate_partition", "evaluate", "mosaic_examples", "report_run", "summary"):
        assert any((results / "logs" / rule).rglob("*.log")), rule
    assert (results / "logs" / "perlin.log").is_file()
    assert not list(results.rglob("*.tmp"))


def key_tree(value):
    """The keys of a JSON document at every depth (a list: the tree of its first item)."""
    if isinstance(value, dict):
        return {key: key_tree(item) for key, item in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [key_tree(value[0])]
    return None


def test_every_artifact_of_the_run_is_as_docs_artifacts_md_says(run):
    from test_artifacts import DOC, arrow_type_text, documented_parquet_schemas, documented_type

    results = run[0] / "results"
    cells = {"MnistMosaic": 4, "OpenImagesMosaic": 2}  # m of each task
    templates = {re.compile(re.sub(r"\\{\w+\\}", "[^/]+", re.escape(path)) + r"\Z"): columns
                 for path, columns in documented_parquet_schemas().items()}
    files = sorted(path for path in results.rglob("*.parquet") if "fingerprints" in path.parts
                   or "labels" in path.parts or path.name == "eval_log.parquet")
    assert len(files) == 2 * 11  # per task: 4 labels files, 2 shards, merged, 2 queries, triplets, eval log
    for path in files:
        relative = path.relative_to(results).as_posix()
        columns = [columns for pattern, columns in templates.items() if pattern.match(relative)]
        assert len(columns) == 1, relative
        task = relative.split("/")[1]
        written = [(name, documented_type(kind, m=cells[task], nbytes=8)) for name, kind in columns[0]]
        actual = [(field.name, arrow_type_text(field.type)) for field in pq.read_schema(path)]
        if path.name == "eval_log.parquet":  # the documented columns lead; the objective's own follow
            actual = actual[:len(written)]
        assert actual == written, relative
    example = json.loads(DOC.read_text().split("```json\n")[1].split("```")[0])
    for run_path in (RUN, OI_RUN):
        metrics = json.loads((results / "metrics" / run_path / "metrics.json").read_text())
        assert key_tree(metrics) == key_tree(example), run_path


def test_openimages_task_runs_end_to_end_on_the_embedded_photographs(run):
    workdir, _ = run
    results = workdir / "results"
    from equihash.data.openimages import EMBEDDED_SPLIT_SIZES, openimages_split_sizes, read_perlin

    assert openimages_split_sizes(results / "banks" / "OpenImagesMosaic") == EMBEDDED_SPLIT_SIZES
    resolution1, resolution2 = read_perlin(results / "perlin" / "perlin180x270.hdf5")
    assert resolution1.shape == resolution2.shape == (TINY["perlin"]["fields"], 180, 270)
    metrics = json.loads((results / "metrics" / OI_RUN / "metrics.json").read_text())
    assert (metrics["task"], metrics["database_size"], metrics["nbits"]) == ("OpenImagesMosaic", 60, 64)
    assert sum(metrics["binary"]["negative_histogram"]) == 8
    model = torch.load(results / "models" / OI_RUN.rsplit("/", 1)[0] / "model.pt", weights_only=True)
    assert model["config"]["network"] == {"depth": 18} and "noise_sigma" not in model["config"]
    for task, size in (("MnistMosaic", (8 * 56 + 9 * 4, 2 * 56 + 3 * 4)),
                       ("OpenImagesMosaic", (8 * 180 + 9 * 4, 2 * 270 + 3 * 4))):
        with Image.open(results / "mosaics" / task / "examples.png") as image:
            assert image.size[::-1] == size and image.mode == "RGB"


def deep_merged(base: dict, update: dict) -> dict:
    """``update`` over ``base`` key by key, as Snakemake merges a --configfile over the defaults."""
    out = dict(base)
    for key, value in update.items():
        out[key] = deep_merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def test_a_task_registered_by_a_task_module_runs_end_to_end(tmp_path):
    """A third task defined in test code (tests/tasks/mnist_pair.py: 1 x 2 MNIST mosaics, a
    network of its own): its record is all that the workflow needs to know of it."""
    defaults = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    block = deep_merged(defaults["tasks"]["MnistMosaic"], TINY["tasks"]["MnistMosaic"])
    block["models"] = {"ShannonHamming": block["models"]["ShannonHamming"]}
    config = {**json.loads(json.dumps(TINY)), "task_modules": [str(REPO / "tests" / "tasks" / "mnist_pair.py")],
              "run_tasks": ["MnistPair"], "tasks": {"MnistPair": block}}
    assert planned_jobs(tmp_path, config) == {
        "all": 1, "prepare_bank": 1, "mosaic_examples": 1, "labels": 1, "train": 1, "plot_training": 1,
        "encode_shard": 2, "merge_shards": 1, "encode_queries": 1, "index": 1, "join_index": 1, "evaluate_partition": 1, "evaluate": 1, "report_run": 1,
        "summary": 1}
    snakemake(tmp_path, config=config)
    results, run = tmp_path / "results", "MnistPair/ShannonHamming/main/default"
    metrics = json.loads((results / "metrics" / run / "metrics.json").read_text())
    assert (metrics["task"], metrics["database_size"], metrics["nbits"]) == ("MnistPair", 3000, 64)
    assert [e["lookups"] for e in metrics["multiprobe"]] == [1, 4, 16]
    labels = pq.read_table(results / "labels" / "MnistPair" / "default" / "database.parquet")["labels"]
    assert labels.type.list_size == 2 and labels.to_numpy(zero_copy_only=False)[0].shape == (2,)
    model = torch.load(results / "models" / run.rsplit("/", 1)[0] / "model.pt", weights_only=True)
    assert (model["config"]["task"], model["config"]["noise_sigma"]) == ("MnistPair", 0.2)
    assert any(name.startswith("body.") for name in model["state_dict"])  # the task's own network
    assert (results / "banks" / "MnistPair" / "bank.hdf5").is_file() and not (results / "perlin").exists()
    with Image.open(results / "mosaics" / "MnistPair" / "examples.png") as image:
        assert image.mode == "RGB"
    assert planned_jobs(tmp_path, config) == {}


def test_search_a_query_of_the_openimages_run(run, restore_process_state):
    from equihash.cli import main
    from equihash.search import grid_size

    workdir, _ = run
    r = workdir / "results"
    out = workdir / "search.png"
    assert main(["search", str(out), "--query-id", "0", "--index-dir", str(r / "index" / OI_RUN),
                 "--labels-dir", str(r / "labels" / "OpenImagesMosaic" / "default"),
                 "--fingerprints-dir", str(r / "fingerprints" / OI_RUN), "--task", "OpenImagesMosaic",
                 "--bank", str(r / "banks" / "OpenImagesMosaic"), "--perlin", str(r / "perlin" / "perlin180x270.hdf5"),
                 "--show", "3"]) == 0
    with Image.open(out) as image:
        assert image.size == grid_size((180, 270), 3)


def test_report_and_summary_of_the_run(run, tmp_path):
    from equihash.report.browser import find_browser, render, screenshot_statistics

    workdir, _ = run
    snakemake(workdir, "--report", "report.html")
    html = (workdir / "report.html").read_text()
    for run_name in (RUN, OI_RUN):
        assert all(f'"results/report/{run_name}/{name}"' in html
                   for name in ("metrics.html", "hamming_histograms.png", "multiprobe.png"))
    assert '"results/mosaics/OpenImagesMosaic/examples.png"' in html
    summary = pd.read_csv(workdir / "results" / "summary.csv")
    assert len(summary) == 2
    for run_name in (RUN, OI_RUN):
        metrics = json.loads((workdir / "results" / "metrics" / run_name / "metrics.json").read_text())
        row = summary[summary["task"] == metrics["task"]].iloc[0]
        assert row["equidict.recall"] == metrics["equidict"]["recall"]
        assert row["multiprobe.L16.false_positive_rate"] == metrics["multiprobe"][-1]["false_positive_rate"]
    if find_browser():
        shot = render(workdir / "report.html", tmp_path / "histograms.png", show="hamming_histograms.png")
        assert screenshot_statistics(shot.screenshot)["foreground_share"] > 0.1


def test_changed_training_parameter_reruns_training_and_downstream_only(run):
    workdir, _ = run
    changed = with_changes(tasks__MnistMosaic__models__ShannonHamming__learning_rate=0.002)
    jobs = planned_jobs(workdir, changed)
    assert jobs == {"all": 1, "train": 1, "plot_training": 1, "encode_shard": 2, "merge_shards": 1,
                    "encode_queries": 1, "index": 1, "join_index": 1, "evaluate_partition": 1, "evaluate": 1, "report_run": 1, "summary": 1}


def test_changed_perlin_file_reruns_the_openimages_noise_and_downstream_not_the_labels(run):
    workdir, _ = run
    jobs = planned_jobs(workdir, with_changes(perlin__seed=1))
    assert jobs == {"all": 1, "perlin": 1, "mosaic_examples": 1, "train": 1, "plot_training": 1, "encode_shard": 2,
                    "merge_shards": 1, "encode_queries": 1, "index": 1, "join_index": 1, "evaluate_partition": 1, "evaluate": 1, "report_run": 1,
                    "summary": 1}


def test_lost_shard_reruns_only_that_shard_the_merge_and_downstream(run):
    """One shard job failed (say its node died): its shard and all that follows are missing."""
    workdir, _ = run
    fingerprints = workdir / "results" / "fingerprints" / RUN
    shard, merged = fingerprints / "shards" / "1-of-2.parquet", fingerprints / "database.parquet"
    metrics = workdir / "results" / "metrics" / RUN / "metrics.json"
    before = {path: path.read_bytes() for path in (shard, merged, metrics)}
    for path in (shard, merged, metrics):
        path.unlink()
    shutil.rmtree(workdir / "results" / "index" / RUN)
    assert planned_jobs(workdir) == {"all": 1, "encode_shard": 1, "merge_shards": 1, "index": 1, "join_index": 1, "evaluate_partition": 1, "evaluate": 1,
                                     "report_run": 1, "summary": 1}
    dry = snakemake(workdir, "-n")
    outputs = re.findall(r"output: (\S+)", dry.stdout + dry.stderr)
    assert f"results/fingerprints/{RUN}/shards/1-of-2.parquet" in outputs
    assert f"results/fingerprints/{RUN}/shards/0-of-2.parquet" not in outputs
    snakemake(workdir)
    assert {path: path.read_bytes() for path in before} == before


def test_changed_forward_batch_reruns_the_encoding_and_downstream_not_the_training(run):
    workdir, _ = run
    jobs = planned_jobs(workdir, with_changes(encode__forward_batch=32))
    assert jobs == {"all": 1, "encode_shard": 4, "merge_shards": 2, "encode_queries": 2, "index": 2, "join_index": 2,
                    "evaluate_partition": 2, "evaluate": 2, "report_run": 2, "summary": 1}  # both tasks


def test_changed_shard_count_reruns_encoding_only_and_merges_identically(run):
    workdir, _ = run
    merged = workdir / "results" / "fingerprints" / RUN / "database.parquet"
    before = merged.read_bytes()
    metrics_path = workdir / "results" / "metrics" / RUN / "metrics.json"
    metrics_before = json.loads(metrics_path.read_text())
    changed = with_changes(encode__nb_shards=3)
    jobs = planned_jobs(workdir, changed)
    assert jobs == {"all": 1, "encode_shard": 6, "merge_shards": 2, "index": 2, "join_index": 2, "evaluate_partition": 2, "evaluate": 2, "report_run": 2,
                    "summary": 1}  # both tasks
    snakemake(workdir, config=changed)
    assert merged.read_bytes() == before
    metrics = json.loads(metrics_path.read_text())
    provenance, provenance_before = metrics.pop("provenance"), metrics_before.pop("provenance")
    assert metrics == metrics_before  # figures do not depend on the shard count; the provenance records it
    assert provenance == {**provenance_before, "nb_shards": 3}


def test_index_partitions_fan_out_and_give_byte_identical_metrics(run, tmp_path):
    """index.partitions = 4, then 16: one index and one evaluation job per partition, the
    index joined by its manifest, and the very bytes of metrics.json of one partition."""
    workdir = tmp_path / "copy"
    shutil.copytree(run[0], workdir, symlinks=True)
    metrics = Path("results") / "metrics" / RUN / "metrics.json"
    snakemake(workdir, str(metrics))  # up to date with the tiny config, whatever earlier tests changed
    before = (workdir / metrics).read_bytes()
    for partitions in (4, 16):
        changed = with_changes(index__partitions=partitions)
        assert planned_jobs_for(workdir, changed, str(metrics)) == {
            "index": partitions, "join_index": 1, "evaluate_partition": partitions, "evaluate": 1}
        snakemake(workdir, str(metrics), config=changed)
        assert (workdir / metrics).read_bytes() == before, partitions
        manifest = json.loads((workdir / "results" / "index" / RUN / "partitions.json").read_text())
        assert manifest["partitions"] == [f"{v}-of-{partitions}" for v in range(partitions)]
        counts = sorted((workdir / "results" / "metrics" / RUN / "partitions").glob(f"*-of-{partitions}.parquet"))
        assert len(counts) == partitions


def test_an_imported_run_bundle_is_up_to_date_and_a_pretrained_model_gives_its_figures(run, tmp_path,
                                                                                         restore_process_state):
    """bundle export --contents run, then import into a fresh folder: the same bytes, and
    snakemake plans nothing. A model block with pretrained: the bundle takes the model
    from it (rule pretrained_model, no training) and gives the figures of the run that
    trained it; one whose nbits differs fails naming the field."""
    from equihash.cli import main

    workdir = tmp_path / "copy"
    shutil.copytree(run[0], workdir, symlinks=True)
    model_dir = Path("results") / "models" / RUN.rsplit("/", 1)[0]
    metrics, curves = Path("results") / "metrics" / RUN / "metrics.json", model_dir / "training_curves.png"
    snakemake(workdir, str(metrics), str(curves))  # up to date with the tiny config, whatever earlier tests changed
    config = str(workdir / "config.yaml")
    for contents in ("run", "model"):
        assert main(["bundle", "export", RUN, str(tmp_path / f"{contents}.tar"), "--contents", contents,
                     "--config", config, "--results", str(workdir / "results")]) == 0
    imported = tmp_path / "imported"
    assert main(["bundle", "import", str(tmp_path / "run.tar"), "--config", config,
                 "--results", str(imported / "results")]) == 0
    placed = [p for p in (imported / "results").rglob("*") if p.is_file() and "banks" not in p.parts]
    assert len(placed) == 23  # 4 label files, 3 model files, 2 shards, 4 fingerprint files, 8 index, 3 metrics
    for path in placed:
        assert path.read_bytes() == (workdir / path.relative_to(imported)).read_bytes(), path
    assert planned_jobs_for(imported, TINY, str(metrics), str(curves)) == {}

    pretrained = with_changes(tasks__MnistMosaic__models__ShannonHamming__pretrained=str(tmp_path / "model.tar"))
    fresh = tmp_path / "pretrained"
    for folder in ("pretrained", "wrong", "missing"):
        (tmp_path / folder).mkdir()
    jobs = planned_jobs_for(fresh, pretrained, str(metrics))
    assert jobs["pretrained_model"] == 1 and "train" not in jobs
    snakemake(fresh, str(metrics), config=pretrained)
    trained, reused = (json.loads((folder / metrics).read_text()) for folder in (workdir, fresh))
    assert trained.pop("provenance")["config_sha256"] != reused.pop("provenance")["config_sha256"]
    assert reused == trained
    assert (fresh / model_dir / "model.pt").read_bytes() == (workdir / model_dir / "model.pt").read_bytes()

    wrong = with_changes(tasks__MnistMosaic__nbits=32,
                         tasks__MnistMosaic__models__ShannonHamming__pretrained=str(tmp_path / "model.tar"))
    failed = snakemake(tmp_path / "wrong", str(metrics), config=wrong, check=False)
    log = tmp_path / "wrong" / "results" / "logs" / "pretrained_model" / (RUN.rsplit("/", 1)[0] + ".log")
    assert failed.returncode != 0 and "the model's 'nbits' is 64, the model block's run needs 32" in log.read_text()
    assert not (tmp_path / "wrong" / model_dir / "model.pt").exists()

    missing = with_changes(tasks__MnistMosaic__models__ShannonHamming__pretrained=str(tmp_path / "none.tar"))
    failed = snakemake(tmp_path / "missing", str(metrics), "-n", config=missing, check=False)
    assert failed.returncode != 0 and "none.tar" in failed.stdout + failed.stderr  # never trained instead


def test_search_a_run_by_its_name(run, monkeypatch, restore_process_state, capsys):
    from equihash.cli import main

    workdir, _ = run
    monkeypatch.chdir(workdir)
    assert main(["search", "search-run.png", "--run", RUN, "--config", "config.yaml", "--query-id", "2"]) == 0
    assert "positive query 2" in capsys.readouterr().out
    assert (workdir / "search-run.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["search", "x.png", "--run", "MnistMosaic/ShannonHamming/main/nodb", "--config", "config.yaml",
                 "--query-id", "2"]) == 2
    assert "the configuration has no database 'nodb' of task 'MnistMosaic'" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"tasks__MnistMosaic__nbits": 12}, "multiple of 8"),
    ({"tasks__MnistMosaic__bogus": 1}, "bogus"),
    ({"tasks__MnistMosaic__models__ShannonHamming__steps": "many"}, "many"),
    ({"tasks__MnistMosaic__databases__default__size": -5}, "-5"),
    ({"tasks__MnistMosaic__bank__splits": {"train": 3, "valid": 100, "test": 100}}, "splits.train"),
    ({"tasks__MnistMosaic__bank": {"source": "hdf5", "path": "/nonexistent/mnist.hdf5"}},
     "tasks.MnistMosaic.bank.path"),
])
def test_bad_configuration_fails_before_any_job_naming_the_key(tmp_path, change, message):
    result = snakemake(tmp_path, "-n", config=with_changes(**change), check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_unknown_task_is_named(tmp_path):
    config = json.loads(json.dumps(TINY))
    config["tasks"]["Nope"] = config["tasks"]["MnistMosaic"]
    result = snakemake(tmp_path, "-n", config=config, check=False)
    assert result.returncode != 0 and "Nope" in result.stdout + result.stderr


def test_variant_table_runs_its_rows_and_an_edited_row_reruns_only_itself(run):
    workdir, _ = run
    tables = workdir / "variants" / "MnistMosaic" / "ShannonHamming"
    tables.mkdir(parents=True)
    table = tables / "weight.tsv"
    table.write_text("variant\tobjective.shannon_weight\nlow\t0.005\nhigh\t0.02\n")
    config = with_changes(variants=str(workdir / "variants"))
    target = "variants_MnistMosaic_ShannonHamming_weight"
    jobs = planned_jobs_for(workdir, config, target)
    assert jobs == {target: 1, "train": 2, "encode_shard": 4, "merge_shards": 2, "encode_queries": 2,
                    "index": 2, "join_index": 2, "evaluate_partition": 2, "evaluate": 2}  # labels and the bank are shared with main
    snakemake(workdir, target, config=config)
    table.write_text("variant\tobjective.shannon_weight\nlow\t0.005\nhigh\t0.03\n")
    jobs = planned_jobs_for(workdir, config, target)
    assert jobs == {target: 1, "train": 1, "encode_shard": 2, "merge_shards": 1, "encode_queries": 1,
                    "index": 1, "join_index": 1, "evaluate_partition": 1, "evaluate": 1}
    dry = snakemake(workdir, target, "-n", config=config)
    reasons = dry.stdout + dry.stderr
    assert "ShannonHamming/high" in reasons and "ShannonHamming/low/model.pt" not in reasons


def reversed_keys(value):
    if isinstance(value, dict):
        return {key: reversed_keys(value[key]) for key in reversed(list(value))}
    return [reversed_keys(v) for v in value] if isinstance(value, list) else value


def effective_tiny():
    """config/config.yaml with tests/tiny.yaml merged over it, as Snakemake merges them."""
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    update_config(config, json.loads(json.dumps(TINY)))
    return config


def plans_nothing(workdir, config, *targets):
    path = workdir / "restated.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "-n", *targets, "--configfile", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return "Nothing to be done" in result.stdout + result.stderr, result.stdout + result.stderr


def test_a_configuration_that_changes_nothing_reruns_nothing(run):
    workdir, _ = run
    snakemake(workdir)  # back to tests/tiny.yaml after the tests above changed the shard count
    config = effective_tiny()
    # Every default restated, mapping keys in reverse order (the YAML keeps that order).
    nothing, text = plans_nothing(workdir, reversed_keys(config))
    assert nothing, text[-3000:]
    # Integers written for floats.
    block = config["tasks"]["MnistMosaic"]["models"]["ShannonHamming"]
    block["clip_value"] = 10
    block["objective"].update(hamming_weight=1, prior=1, huber_knee=9, saturation=9)
    nothing, text = plans_nothing(workdir, config)
    assert nothing, text[-3000:]
    # A key written out that does not apply: the photo fractions of the embedded photographs,
    # the in-memory flag (how a bank is read, not what it holds); perlin.path at its default.
    config["tasks"]["OpenImagesMosaic"]["bank"].update(fractions={"train": 0.5, "valid": 0.25, "test": 0.25},
                                                        in_memory=True)
    config["perlin"]["path"] = None
    nothing, text = plans_nothing(workdir, config)
    assert nothing, text[-3000:]


def test_variant_rows_reordered_plan_nothing_and_an_added_row_plans_only_itself(run):
    workdir, _ = run
    tables = workdir / "variants2" / "MnistMosaic" / "ShannonHamming"
    tables.mkdir(parents=True)
    table = tables / "order.tsv"
    table.write_text("variant\tobjective.shannon_weight\tseed\nw1\t0.004\t0\nw2\t0.008\t1\n")
    config = with_changes(variants=str(workdir / "variants2"))
    target = "variants_MnistMosaic_ShannonHamming_order"
    snakemake(workdir, target, config=config)
    table.write_text("variant\tseed\tobjective.shannon_weight\nw2\t1\t0.008\nw1\t0\t0.004\n")  # rows and columns
    assert planned_jobs_for(workdir, config, target) == {}
    table.write_text("variant\tseed\tobjective.shannon_weight\nw2\t1\t0.008\nw1\t0\t0.004\nw3\t2\t0.004\n")
    assert planned_jobs_for(workdir, config, target) == {
        target: 1, "train": 1, "encode_shard": 2, "merge_shards": 1, "encode_queries": 1, "index": 1, "join_index": 1, "evaluate_partition": 1, "evaluate": 1}
    dry = snakemake(workdir, target, "-n", config=config)
    # What the planned jobs write (the target rule's inputs name every row, its output none).
    outputs = [line for line in dry.stdout.splitlines() if line.strip().startswith("output:")]
    assert outputs and all("ShannonHamming/w3/" in line for line in outputs), outputs


def test_a_changed_objective_weight_plans_training_and_downstream_only(run):
    workdir, _ = run
    config = effective_tiny()
    config["tasks"]["MnistMosaic"]["models"]["ShannonHamming"]["objective"]["shannon_weight"] = 0.02
    path = workdir / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    jobs = planned_jobs_for(workdir, config)
    assert jobs == {"all": 1, "train": 1, "plot_training": 1, "encode_shard": 2, "merge_shards": 1,
                    "encode_queries": 1, "index": 1, "join_index": 1, "evaluate_partition": 1, "evaluate": 1, "report_run": 1, "summary": 1}
    dry = snakemake(workdir, "-n", config=config)
    assert "Params have changed" in dry.stdout and "rule labels" not in dry.stdout


def test_changed_bank_splits_retrain_instead_of_resuming_the_old_checkpoint(run):
    # The checkpoint of the last training stays beside the model (not an output): a run on a
    # bank of other splits must train afresh, not resume it.
    workdir, _ = run
    config = with_changes(tasks__MnistMosaic__bank__splits={"train": 250, "valid": 150, "test": 100})
    target = f"results/models/{RUN.rsplit('/', 1)[0]}/model.pt"
    snakemake(workdir, target, config=config)
    log = (workdir / "results" / "logs" / "train" / (RUN.rsplit("/", 1)[0] + ".log")).read_text()
    assert "checkpoint of another configuration, starting afresh" in log and "resumed" not in log
