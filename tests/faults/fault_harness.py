"""Helpers of the fault-injection tests: killed child processes, snapshots of what a stage
leaves on disk, fault-point counting."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import equihash.fault_injection as fault_injection

HERE = Path(__file__).resolve().parent


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path) -> SHA-256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(root: Path) -> list[str]:
    """Temporaries and partial states under ``root``: what a finished stage must not leave."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith(".tmp") or ".partial" in p.name)


def run_child(stage: str, inputs: Path, work: Path, *, after: int | None = None,
              delay: float | None = None) -> int:
    """Run ``stage`` in a fresh process, SIGKILLed at its ``after``-th fault point or ``delay``
    seconds after its imports; return its exit status (-9 when killed)."""
    env = fault_injection.clean_environment(**({fault_injection.FAULT_AFTER: after} if after is not None else {}))
    child = subprocess.Popen([sys.executable, str(HERE / "fault_stages.py"), stage, str(inputs), str(work)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert child.stdout.readline() == "ready\n", child.communicate()[1]
    if delay is not None:
        try:
            child.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            child.kill()
    _, err = child.communicate(timeout=300)
    assert child.returncode in (0, -9), err[-3000:]
    return child.returncode


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread, as the child processes do; give the test process its state back."""
    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])


@contextlib.contextmanager
def counting_fault_points():
    """Count the fault points passed inside the block (``EQUIHASH_FAULT_AFTER`` set out of reach)."""
    counter = {"before": fault_injection.points_seen()}
    with pytest.MonkeyPatch.context() as patch:
        for name in fault_injection.FAULT_VARIABLES:
            patch.delenv(name, raising=False)
        patch.setenv(fault_injection.FAULT_AFTER, str(1 << 62))
        yield counter
    counter["count"] = fault_injection.points_seen() - counter["before"]
