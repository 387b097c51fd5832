"""The tiny workflow as SLURM jobs (`--profile workflow/profiles/slurm`) on a live cluster.

CI starts a one-node cluster on this host first (.ci/run runs .ci/slurm-up.sh as root).
Without one these tests are skipped, saying what is missing: the SLURM client tools, the
executor plugin, an answering controller, or a cluster that runs jobs on this host (the
tests' temporary folders are not on a shared file system).

Checked: every rule job (each encode shard and each index partition its own) was a SLURM job that SLURM allocated
and saw exit 0; metrics.json and the merged database are byte-identical to a local run
of the same configuration; a missing partition fails naming the partition, rule and log.
"""

import importlib.util
import json
import re
import shutil
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from test_workflow import RUN, TINY, planned_jobs, snakemake

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "slurm"
# A cluster without accounting (SLURM_CI.md): poll squeue, first poll after 2 s instead of
# 20, keep the logs of successful jobs for the checks below, no shared-FS latency.
SMALL_CLUSTER = ("--jobs", "2", "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks",
                 "2", "--slurm-keep-successful-logs", "--latency-wait", "5")


def live_cluster() -> dict:
    """Default partition, CPUs per node and slurmctld log of a live SLURM cluster that runs
    jobs on this host; skips the test naming what is missing otherwise."""
    for tool in ("sinfo", "sbatch", "squeue", "scontrol"):
        if shutil.which(tool) is None:
            pytest.skip(f"SLURM client '{tool}' not found: CI starts a one-node cluster with .ci/slurm-up.sh (root)")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed: pip install -e '.[test]'")
    info = subprocess.run(["sinfo", "-h", "-o", "%P %N %c %T"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        pytest.skip(f"no SLURM controller answers (sinfo: {info.stderr.strip()}); "
                    "start a one-node cluster with .ci/slurm-up.sh (root)")
    host = socket.gethostname().split(".")[0]
    rows = [line.split() for line in info.stdout.splitlines()]
    usable = [row for row in rows if row[0].endswith("*") and row[1] == host and row[3] in ("idle", "mixed")]
    if not usable:
        pytest.skip(f"the default SLURM partition does not run jobs on this host ({host}): sinfo says {rows}")
    partition, _, cpus, _ = usable[0]
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"^SlurmctldLogFile\s*=\s*(/\S+)", config, re.M)
    if not found:
        pytest.skip("slurmctld logs to no file (SlurmctldLogFile): the job checks read that log")
    log = Path(found[1])
    try:
        log.read_text()
    except OSError as error:
        pytest.skip(f"slurmctld's log {log} is not readable here ({error}): the job checks read it")
    return {"partition": partition.rstrip("*"), "cpus": int(cpus), "log": log}


def cluster_config(partition: str, cpus: int) -> dict:
    """The tiny configuration with a `cluster` block that fits a small one-node cluster, its
    index cut into 4 partitions (4 index and 4 evaluation jobs). One task: the other runs
    the same rules, and the cluster test stays short."""
    config = json.loads(json.dumps(TINY))
    config["run_tasks"] = ["MnistMosaic"]
    config["index"] = {"partitions": 4, "memory_mb": 2000}
    jobs = {"cpus": min(2, cpus), "mem_mb": 2000, "runtime": 10}
    config["cluster"] = {"partition": partition, "account": None, "gpu_type": None,
                         "gpus": {"train": 0, "encode": 0},
                         "jobs": {"train": jobs, "encode": jobs, "cpu": {**jobs, "cpus": 1},
                                  "small": {**jobs, "cpus": 1}}}
    return config


@pytest.fixture(scope="module")
def cluster():
    return live_cluster()


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The same configuration run locally and as SLURM jobs, each in its own folder."""
    config = cluster_config(cluster["partition"], cluster["cpus"])
    local, on_slurm = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("slurm")
    planned = planned_jobs(on_slurm, config)
    with ThreadPoolExecutor(1) as pool:  # the local run computes while the SLURM run mostly waits
        local_run = pool.submit(snakemake, local, config=config)
        snakemake(on_slurm, "--profile", str(PROFILE), *SMALL_CLUSTER, config=config)
        local_run.result()
    return {"local": local, "slurm": on_slurm, "planned": planned, "cluster": cluster}


def slurm_job_ids(workdir: Path) -> dict[str, list[int]]:
    """Rule -> SLURM job ids, from the executor's per-job logs (slurm_logs/rule_R/.../ID.log)."""
    ids: dict[str, list[int]] = {}
    for path in (workdir / ".snakemake" / "slurm_logs").rglob("*.log"):
        rule = path.relative_to(workdir / ".snakemake" / "slurm_logs").parts[0].removeprefix("rule_")
        ids.setdefault(rule, []).append(int(path.stem))
    return ids


def test_every_rule_job_ran_as_a_slurm_job_that_exited_0(runs):
    planned = {rule: n for rule, n in runs["planned"].items() if rule != "all"}  # `all` runs no code
    assert planned["encode_shard"] == TINY["encode"]["nb_shards"]  # one SLURM job per shard
    assert planned["index"] == planned["evaluate_partition"] == 4  # and per index partition
    ids = slurm_job_ids(runs["slurm"])
    assert {rule: len(v) for rule, v in ids.items()} == planned
    every = sorted(i for v in ids.values() for i in v)
    assert len(set(every)) == len(every) == sum(planned.values())
    controller_log = runs["cluster"]["log"].read_text()
    partition = runs["cluster"]["partition"]
    for job in every:
        started = (rf"Allocate JobId={job} NodeList=\S+ #CPUs=\d+ Partition={partition}\b"  # main scheduler
                   rf"|Started JobId={job} in {partition} on ")  # backfill scheduler
        assert re.search(started, controller_log), job
        assert re.search(rf"_job_complete: JobId={job} WEXITSTATUS 0\b", controller_log), job
    cpus = cluster_config(partition, runs["cluster"]["cpus"])["cluster"]["jobs"]["train"]["cpus"]
    assert re.search(rf"Allocate JobId={ids['train'][0]} NodeList=\S+ #CPUs={cpus} ", controller_log)  # from config
    train_log = next((runs["slurm"] / ".snakemake" / "slurm_logs" / "rule_train").rglob("*.log")).read_text()
    assert "--mode remote" in train_log and "Finished jobid: 0 (Rule: train)" in train_log  # the rule ran inside


def test_metrics_and_merged_database_equal_those_of_a_local_run(runs):
    metrics = Path("results") / "metrics" / RUN / "metrics.json"
    merged = Path("results") / "fingerprints" / RUN / "database.parquet"
    for path in (metrics, merged):
        assert (runs["slurm"] / path).read_bytes() == (runs["local"] / path).read_bytes(), path
    provenance = json.loads((runs["slurm"] / metrics).read_text())["provenance"]
    assert provenance["nb_shards"] == TINY["encode"]["nb_shards"] and len(provenance["config_sha256"]) == 64


def test_missing_partition_fails_naming_it_the_rule_and_the_log(cluster, tmp_path):
    config = cluster_config("nosuchpartition", cluster["cpus"])
    result = snakemake(tmp_path, "--profile", str(PROFILE), *SMALL_CLUSTER, config=config, check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "invalid partition specified: nosuchpartition" in text
    assert "Error in rule prepare_bank" in text
    assert "log: results/logs/prepare_bank/MnistMosaic.log" in text
    # the profile resubmits a failed job once, with twice the time limit (cluster.jobs.small.runtime = 10)
    assert re.findall(r"^\s*sbatch .* -t (\d+) ", text, re.M) == ["10", "20"]
    assert not slurm_job_ids(tmp_path)  # nothing was submitted
