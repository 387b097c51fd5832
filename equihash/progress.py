"""Progress reporting: a tqdm bar on a terminal, periodic plain lines in the log.

Library code logs to the ``equihash`` logger; the Snakemake scripts and the CLI attach
a handler (the rule's log file, or stderr). The bar is drawn only when stderr is a
terminal, so log files never fill with carriage returns.

Fault injection (tests/faults/). Every ``Progress.update`` (a batch of mosaics, a
training step) and every commit of an atomic write (``equihash.io.atomic_path``, just
before the rename) is a *fault point*. With ``EQUIHASH_FAULT_AFTER=n`` in the
environment a process kills itself with SIGKILL at its n-th fault point, as a
preempted or out-of-memory job dies: no ``finally`` block, no clean-up.
``EQUIHASH_FAULT_MATCH=<regex>`` counts only the fault points whose label matches
(a bar's description such as ``train MnistMosaic/ShannonHamming`` or
``encode shard 1/2``, or ``commit <path>``), so one job of a workflow can be targeted;
``EQUIHASH_FAULT_GROUP=1`` kills the whole process group instead (Snakemake and all
its jobs: a lost node). Without ``EQUIHASH_FAULT_AFTER`` a fault point does nothing.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time

from tqdm import tqdm

logger = logging.getLogger("equihash")


def setup_logging(log_path=None, level=logging.INFO) -> None:
    """Send the ``equihash`` logger to ``log_path`` (or stderr), once per process."""
    handler = logging.FileHandler(log_path) if log_path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    if log_path:  # an uncaught error also goes to the job's log, not only to stderr
        default_hook = sys.excepthook

        def log_then_raise(kind, value, trace):
            logger.error("failed", exc_info=(kind, value, trace))
            default_hook(kind, value, trace)

        sys.excepthook = log_then_raise


FAULT_AFTER = "EQUIHASH_FAULT_AFTER"
FAULT_MATCH = "EQUIHASH_FAULT_MATCH"
FAULT_GROUP = "EQUIHASH_FAULT_GROUP"
_fault_points_seen = 0


def fault_point(label: str) -> None:
    """Count a fault point; SIGKILL this process (or its group) at the n-th, see the module docstring."""
    global _fault_points_seen
    after = os.environ.get(FAULT_AFTER)
    if not after:
        return
    pattern = os.environ.get(FAULT_MATCH)
    if pattern and not re.search(pattern, label):
        return
    _fault_points_seen += 1
    if _fault_points_seen >= int(after):
        logger.warning("fault injected at fault point %d (%s)", _fault_points_seen, label)
        if os.environ.get(FAULT_GROUP) == "1":
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


class Progress:
    """Counts work units; draws a bar on a terminal and logs a line every ``every`` seconds."""

    def __init__(self, total: int, desc: str, unit: str = "it", every: float = 30.0, initial: int = 0):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.done = initial
        self._start = self._last = time.monotonic()
        self._bar = tqdm(total=total, desc=desc, unit=unit, initial=initial,
                         disable=not sys.stderr.isatty(), leave=False)

    def update(self, n: int = 1, **postfix) -> None:
        fault_point(self.desc)
        self.done += n
        self._bar.update(n)
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items())
            logger.info("%s: %d/%d %s %s", self.desc, self.done, self.total, self.unit, extra)

    def close(self) -> None:
        self._bar.close()
        elapsed = time.monotonic() - self._start
        logger.info("%s: %d/%d %s in %.1f s", self.desc, self.done, self.total, self.unit, elapsed)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
