"""Fixtures of the fault-injection tests (helpers: fault_harness.py, stages: fault_stages.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from equihash.fault_injection import FAULT_VARIABLES
from fault_stages import make_inputs


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fault-inputs")
    make_inputs(root)
    return root


@pytest.fixture(autouse=True)
def no_fault_in_this_process(monkeypatch):
    """A fault variable left in the test environment would kill the test process itself."""
    for name in FAULT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
