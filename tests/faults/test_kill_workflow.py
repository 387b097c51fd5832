"""The DAG-level behaviour: the workflow on tests/tiny.yaml, killed twice, ends byte-identical
to a clean run, and no job that had finished runs again.

1. The train job is SIGKILLed at a seeded step (a job killed by the scheduler): Snakemake
   reports the failure and removes nothing but the job's own (absent) outputs.
2. Rerun: training resumes from its last checkpoint; while shard 1 is being encoded the
   whole process group dies at a seeded batch (a lost node: Snakemake and every job at once).
3. ``snakemake --unlock`` then ``snakemake --rerun-incomplete``: the run completes.

Afterwards metrics.json and the merged database are byte-identical to the session's clean
run (``tiny_run``, tests/conftest.py; which also shows that two runs of the configuration
give identical metrics), every file that existed before step 3 is untouched, no temporary
or partial state remains, and
over the three runs every job of the DAG finished exactly once: only the killed jobs
(train, shard 1) started twice.
"""

from __future__ import annotations

import collections
import hashlib
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import equihash.fault_injection as fault_injection
from fault_harness import leftovers

REPO = Path(__file__).resolve().parents[2]
TINY = yaml.safe_load((REPO / "tests" / "tiny.yaml").read_text())
RUN = "MnistMosaic/ShannonHamming/main"
SEED = 8


def snakemake(workdir: Path, *args, **fault) -> subprocess.CompletedProcess:
    """Snakemake on tiny.yaml in ``workdir``, in a session of its own (a group kill spares pytest)."""
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(TINY))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(config), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=fault_injection.clean_environment(**fault),
                          start_new_session=True)


def jobs(result: subprocess.CompletedProcess) -> tuple[collections.Counter, collections.Counter]:
    """Rule -> number of jobs Snakemake started, and finished, in this run."""
    text = result.stdout + result.stderr
    return (collections.Counter(re.findall(r"^(?:local)?rule (\w+):$", text, re.M)),
            collections.Counter(re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)$", text, re.M)))


def stamps(results: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``results`` but logs, temporaries and partial states -> (inode, mtime)."""
    left = tuple(leftovers(results))
    files = (p for p in results.rglob("*") if p.is_file() and "logs" not in p.parts)
    return {str(p.relative_to(results)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in files
            if not str(p.relative_to(results)).startswith(left)}


def test_killed_workflow_resumes_to_the_clean_results(tiny_run, tmp_path):
    """Against the session's uninterrupted run of tiny.yaml (tests/conftest.py)."""
    rng = np.random.default_rng(SEED)
    model = TINY["tasks"]["MnistMosaic"]["models"]["ShannonHamming"]
    kill_step = int(rng.integers(2, model["steps"] + 1))
    shard_rows = TINY["tasks"]["MnistMosaic"]["databases"]["default"]["size"] // TINY["encode"]["nb_shards"]
    kill_batch = int(rng.integers(1, -(-shard_rows // TINY["encode"]["forward_batch"]) + 1))
    results = tmp_path / "results"

    # 1. the train job dies after step kill_step, before that step's checkpoint
    first = snakemake(tmp_path, **{fault_injection.FAULT_AFTER: kill_step, fault_injection.FAULT_MATCH: "^train "})
    assert first.returncode == 1 and "Error in rule train" in first.stderr
    assert not (results / "models" / RUN / "model.pt").exists()
    started, finished = jobs(first)
    assert started - finished == {"train": 1}

    # 2. training resumes at its checkpoint; the node is lost during batch kill_batch of shard 1
    second = snakemake(tmp_path, **{fault_injection.FAULT_AFTER: kill_batch, fault_injection.FAULT_MATCH: "^encode shard 1/2$",
                                    fault_injection.FAULT_GROUP: 1})
    assert second.returncode == -signal.SIGKILL
    checkpoint_step = (kill_step - 1) // model["checkpoint_every"] * model["checkpoint_every"]
    train_log = (results / "logs" / "train" / f"{RUN}.log").read_text()
    if checkpoint_step:
        assert f"at step {checkpoint_step}\n" in train_log.split("resumed from")[1]
    started2, finished2 = jobs(second)
    assert (started2 - finished2)["encode_shard"] >= 1
    assert "prepare_bank" not in started2
    started, finished = started + started2, finished + finished2

    # 3. unlock, rerun what is incomplete
    before = stamps(results)
    assert snakemake(tmp_path, "--unlock").returncode == 0
    third = snakemake(tmp_path, "--rerun-incomplete")
    assert third.returncode == 0, third.stderr[-4000:]
    started3, finished3 = jobs(third)
    assert started3 == finished3
    started, finished = started + started3, finished + finished3
    after = stamps(results)
    assert {path: after[path] for path in before} == before  # nothing finished was written again

    clean_started, clean_finished = jobs(tiny_run.result)
    assert clean_started == clean_finished
    assert finished == clean_finished  # every job of the DAG finished exactly once over the three runs
    assert leftovers(results) == []
    for artifact in (f"metrics/{RUN}/default/metrics.json", f"fingerprints/{RUN}/default/database.parquet"):
        assert hashlib.sha256((results / artifact).read_bytes()).hexdigest() == tiny_run.digests[artifact], artifact
    print(f"\nworkflow: train killed after step {kill_step} (checkpoint {checkpoint_step}), node lost at batch "
          f"{kill_batch} of shard 1; jobs started {dict(started)}, finished {dict(finished)}; "
          "metrics.json and database identical")
