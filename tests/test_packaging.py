"""The README's commands, CI, the conda environment and the shipped configurations agree."""

import re
from pathlib import Path

import jsonschema
import yaml

from equihash.config import check_config

REPO = Path(__file__).resolve().parents[1]


def quickstart_commands():
    text = (REPO / "README.md").read_text()
    quickstart = text.split("## Quickstart")[1].split("\n## ")[0]
    return re.findall(r"```bash\n(.+?)\n```", quickstart)


def test_readme_has_two_one_line_commands_and_ci_runs_the_test_one_verbatim():
    commands = quickstart_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert commands[0].endswith("snakemake --cores all")
    assert commands[1].endswith("pytest")
    ci_lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "set ", "cd "))]
    # the test command last; before it, as root only, the SLURM cluster of tests/test_slurm.py
    # and the chromium of tests/test_report.py
    assert ci_lines[-1] == commands[1]
    # before it: a fresh virtual environment without site-packages and the quickstart's install
    # (with a dry run of the default run)
    venv, activate, install = ci_lines[-4:-1]
    assert "python3 -m venv" in activate and "--system-site-packages" not in activate and "source" in activate
    assert install == commands[0].replace("snakemake --cores all", "snakemake -n --quiet")
    setup = [line.strip() for line in ci_lines[:-4]]
    assert setup[0] == 'if [ "$(id -u)" = 0 ]; then' and setup[-1] == "fi"
    assert all(any(word in line for word in ("slurm", "chromium", "then", "fi")) for line in setup)


def requirement_names(requirements):
    return {re.split(r"[<>=!\s]", r, maxsplit=1)[0].lower() for r in requirements}


def test_conda_environment_matches_setup_py():
    setup_py = (REPO / "setup.py").read_text()
    install_requires = re.search(r"install_requires=\[(.*?)\]", setup_py, re.S)[1]
    setup_names = requirement_names(re.findall(r'"([^"]+)"', install_requires))
    conda = yaml.safe_load((REPO / "envs" / "equihash.yaml").read_text())["dependencies"]
    from_pip = [d for entry in conda if isinstance(entry, dict) for d in entry.get("pip", []) if not d.startswith("-")]
    conda_names = requirement_names([*(d for d in conda if isinstance(d, str)), *from_pip]) - {"python", "pip", "cython"}
    assert {"pytorch" if n == "torch" else n for n in setup_names} == conda_names


def merged(base, override):
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def test_shipped_configurations_are_valid():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    jsonschema.validate(default, schema)
    check_config(default)
    thesis = merged(default, yaml.safe_load((REPO / "config" / "thesis_mnist.yaml").read_text()))
    jsonschema.validate(thesis, schema)  # the bank path is the user's: check_config needs the file
    assert thesis["tasks"]["MnistMosaic"]["databases"]["default"]["size"] == 10_000_000
    from equihash.data.perlin import THESIS_FIELDS

    openimages = merged(default, yaml.safe_load((REPO / "config" / "thesis_openimages.yaml").read_text()))
    jsonschema.validate(openimages, schema)
    task = openimages["tasks"]["OpenImagesMosaic"]
    model, database = task["models"]["ShannonHamming"], task["databases"]["default"]
    assert openimages["run_tasks"] == ["OpenImagesMosaic"] and task["network"] == {"depth": 18}
    assert (model["steps"], model["batch_size"], model["batches_per_step"]) == (100_000, 64, 32)
    assert (database["size"], database["positive_queries"], database["negative_queries"],
            database["negative_pairs"]) == (10**9, 10**6, 10**6, 10**6)
    assert openimages["perlin"]["fields"] == THESIS_FIELDS
