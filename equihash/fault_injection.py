"""Fault injection: a process kills itself at a chosen point, as a preempted or
out-of-memory job dies, so that tests (tests/faults/) can show that every stage resumes.

Every ``Progress.update`` (a batch of mosaics, a training step, a chunk of labels, a batch
of codes read into the index, a stage of an evaluation) and every commit of an atomic
write (``equihash.io.atomic_path``, just before the rename) is a *fault point*. With
``EQUIHASH_FAULT_AFTER=n`` in the environment a process kills itself with SIGKILL at its
n-th fault point: no ``finally`` block, no clean-up. ``EQUIHASH_FAULT_MATCH=<regex>``
counts only the fault points whose label matches (a bar's description such as
``train MnistMosaic/ShannonHamming`` or ``encode shard 1/2``, or ``commit <path>``), so
one job of a workflow can be targeted; ``EQUIHASH_FAULT_GROUP=1`` kills the whole process
group instead (Snakemake and all its jobs: a lost node). Without ``EQUIHASH_FAULT_AFTER``
a fault point does nothing.
"""

from __future__ import annotations

import logging
import os
import re
import signal

FAULT_AFTER = "EQUIHASH_FAULT_AFTER"
FAULT_MATCH = "EQUIHASH_FAULT_MATCH"
FAULT_GROUP = "EQUIHASH_FAULT_GROUP"
FAULT_VARIABLES = (FAULT_AFTER, FAULT_MATCH, FAULT_GROUP)
_points_seen = 0


def clean_environment(**fault) -> dict[str, str]:
    """This process's environment without the fault variables, plus ``fault`` (name -> value):
    the environment of a child process that must die only where a test says."""
    env = {k: v for k, v in os.environ.items() if k not in FAULT_VARIABLES}
    env.update({k: str(v) for k, v in fault.items()})
    return env


def points_seen() -> int:
    """The fault points this process has counted so far."""
    return _points_seen


def fault_point(label: str) -> None:
    """Count a fault point; SIGKILL this process (or its group) at the n-th, see the module docstring."""
    global _points_seen
    after = os.environ.get(FAULT_AFTER)
    if not after:
        return
    pattern = os.environ.get(FAULT_MATCH)
    if pattern and not re.search(pattern, label):
        return
    _points_seen += 1
    if _points_seen >= int(after):
        logging.getLogger("equihash").warning("fault injected at fault point %d (%s)", _points_seen, label)
        if os.environ.get(FAULT_GROUP) == "1":
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
