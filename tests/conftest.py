"""Fixtures shared by the test modules."""

import hashlib
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from equihash.fault_injection import clean_environment

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def restore_process_state():
    """equihash.cli.main() sets torch threads, the equihash logger and sys.excepthook;
    give the pytest process its state back after the module."""
    logger = logging.getLogger("equihash")
    saved = torch.get_num_threads(), list(logger.handlers), logger.level, logger.propagate, sys.excepthook
    yield
    torch.set_num_threads(saved[0])
    logger.handlers[:], logger.level, logger.propagate, sys.excepthook = saved[1:]


@dataclass(frozen=True)
class TinyRun:
    workdir: Path  # holds config.yaml (tests/tiny.yaml) and results/; tests may rerun parts of it
    result: subprocess.CompletedProcess  # the finished snakemake process, its output captured
    digests: dict  # every file under results/ but the logs (relative path) -> SHA-256, as the run left it


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """The workflow on tests/tiny.yaml, run once from scratch (``--cores 2``) for the whole
    session: the workflow tests build on it and the killed-workflow test compares with it."""
    workdir = tmp_path_factory.mktemp("tiny-run")
    config = workdir / "config.yaml"
    config.write_text((REPO / "tests" / "tiny.yaml").read_text())
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                             str(workdir), "--configfile", str(config), "--cores", "2"],
                            capture_output=True, text=True, env=clean_environment())
    assert result.returncode == 0, f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    results = workdir / "results"
    digests = {str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted(results.rglob("*")) if p.is_file() and "logs" not in p.relative_to(results).parts}
    return TinyRun(workdir, result, digests)
