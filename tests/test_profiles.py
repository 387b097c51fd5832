"""The Snakemake profiles and the per-rule cluster resources taken from config `cluster`.

Snakemake rejects a profile key that is not one of its options, so a dry-run through a
profile checks it. Resources are read back from dry-runs, which print each job's.
(tests/test_packaging.py checks envs/equihash.yaml against setup.py.)
"""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

from test_workflow import TINY, planned_jobs, planned_jobs_for, snakemake

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "workflow" / "profiles"
JOB_CLASSES = ("train", "encode", "cpu", "small")


def rule_blocks(text: str) -> dict[str, str]:
    """Rule name -> its block, for every `rule NAME:` of a .smk file."""
    starts = list(re.finditer(r"^rule (\w+):\n", text, re.M))
    ends = [m.start() for m in starts[1:]] + [len(text)]
    return {m[1]: text[m.end():end] for m, end in zip(starts, ends)}


def job_classes() -> dict[str, str]:
    """Rule -> job class for every rule that runs code; fails on one missing env or resources."""
    classes = {}
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for rule, block in rule_blocks(path.read_text()).items():
            if not re.search(r"^    (script|shell|run|notebook|wrapper):", block, re.M):
                continue  # a target rule: nothing runs
            assert re.search(r"^    conda:\n        ENV\n", block, re.M), f"{path.name}: rule {rule} has no conda: ENV"
            used = re.search(r'^    resources:\n        \*\*job_resources\("(\w+)"(?:, mem_mb=[^\n]*)?\),', block, re.M)
            assert used and used[1] in JOB_CLASSES, f"{path.name}: rule {rule} takes no resources from config cluster"
            classes[rule] = used[1]
    return classes


def test_every_rule_that_runs_code_declares_the_env_and_a_job_class():
    classes = job_classes()
    assert classes["train"] == "train"
    assert classes["encode_shard"] == classes["encode_queries"] == "encode"
    assert {r for r, c in classes.items() if c == "cpu"} == {"labels", "index", "evaluate_partition"}
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert re.search(r'^ENV = f"\{workflow.basedir\}/envs/equihash.yaml"$', common, re.M)
    assert (REPO / "envs" / "equihash.yaml").is_file()


def job_resources(text: str) -> dict[str, list[dict[str, str]]]:
    """Rule -> the `resources:` of each of its submitted jobs in a dry-run's output."""
    out: dict[str, list[dict[str, str]]] = {}
    for m in re.finditer(r"^rule (\w+):\n((?:    .*\n)+)", text, re.M):
        line = re.search(r"^    resources: (.*)$", m[2], re.M)[1]
        out.setdefault(m[1], []).append(dict(item.split("=", 1) for item in line.split(", ")))
    return out


def with_cluster(cluster: dict) -> dict:
    config = json.loads(json.dumps(TINY))
    config["cluster"] = cluster
    return config


DISTINCT = {"partition": "p_test", "account": "a_test", "gpu_type": "h100", "gpus": {"train": 2, "encode": 3},
            "jobs": {name: {"cpus": 11 + i, "mem_mb": 1101 * (i + 1), "runtime": 111 * (i + 1)}
                     for i, name in enumerate(JOB_CLASSES)}}


def test_every_job_takes_partition_account_gpus_cpus_memory_and_time_from_the_config(tmp_path):
    tables = tmp_path / "variants" / "MnistMosaic" / "ShannonHamming"
    tables.mkdir(parents=True)
    (tables / "weight.tsv").write_text("variant\tseed\tobjective.shannon_weight\nlow_seed0\t0\t0.005\n"
                                       "low_seed1\t1\t0.005\nhigh_seed0\t0\t0.02\n")
    config = {**with_cluster(DISTINCT), "variants": str(tmp_path / "variants"),
              "index": {"partitions": 2, "memory_mb": 4321}}  # the memory of each partition's jobs
    config["tasks"]["MnistMosaic"]["models"]["HashNet"] = {"pretrained": "builtin:mnist"}  # rule pretrained_model
    result = snakemake(tmp_path, "-n", "--forceall", "all", "compare", "ablations", config=config)
    jobs = job_resources(result.stdout + result.stderr)
    classes = job_classes()
    assert set(classes) <= set(jobs)  # every rule that runs code is in the DAG of all + compare + ablations
    for rule, name in classes.items():
        resources = jobs[rule]
        job = DISTINCT["jobs"][name]
        mem_mb = config["index"]["memory_mb"] if rule in ("index", "evaluate_partition") else job["mem_mb"]
        expected = {"cpus_per_task": str(job["cpus"]), "mem_mb": str(mem_mb), "runtime": str(job["runtime"]),
                    "slurm_partition": "p_test", "slurm_account": "a_test"}
        if name in ("train", "encode"):
            expected["gres"] = f"gpu:h100:{DISTINCT['gpus'][name]}"
        for r in resources:
            assert {k: r.get(k) for k in (*expected, "gres")} == {"gres": None, **expected}, rule


def test_defaults_leave_partition_and_account_to_slurm_and_gpus_to_the_count(tmp_path):
    default_cluster = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["cluster"]
    assert default_cluster["partition"] is None and default_cluster["account"] is None
    config = with_cluster({**DISTINCT, "partition": None, "account": None, "gpu_type": None,
                           "gpus": {"train": 1, "encode": 0}})
    result = snakemake(tmp_path, "-n", config=config)
    jobs = job_resources(result.stdout + result.stderr)
    every = [r for resources in jobs.values() for r in resources]
    assert not any("slurm_partition" in r or "slurm_account" in r for r in every)
    run_tasks = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["run_tasks"]
    assert [r["gres"] for r in jobs["train"]] == ["gpu:1"] * len(run_tasks)  # one training per task
    assert not any("gres" in r for rule in ("encode_shard", "encode_queries") for r in jobs[rule])


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_profile_is_valid_and_plans_the_same_jobs(tmp_path, profile):
    settings = yaml.safe_load((PROFILES / profile / "config.yaml").read_text())
    if profile == "slurm":
        assert settings["executor"] == "slurm" and settings["jobs"] >= 2
        if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
            pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -e '.[test]'): "
                        "Snakemake cannot read the slurm profile's options without it")
    # a dry-run through the profile (an unknown key would be an error) plans what a plain one does
    assert planned_jobs_for(tmp_path, TINY, "--profile", str(PROFILES / profile)) == planned_jobs(tmp_path)
