"""Progress reporting: a tqdm bar on a terminal, periodic plain lines in the log.

Library code logs to the ``equihash`` logger; the Snakemake scripts and the CLI attach
a handler (the rule's log file, or stderr) with :func:`setup_logging`. A long stage
counts its work with a :class:`Progress`:

- on a terminal (stderr is a tty) a tqdm bar is drawn to stderr and erased when the
  stage ends; elsewhere (a batch job, stderr redirected to a file) no bar is drawn at
  all, so no carriage return ever reaches a file;
- the log gets a plain line every ``every`` seconds (30 by default: done/total, share,
  rate, time left) and a final line with the elapsed time and the rate. Log files hold
  these lines only; their formatter also turns any stray ``\\r`` into a line break.
- when the log itself goes to the terminal (the CLI without ``--log``), its lines are
  printed above the open bars (``tqdm.write``) instead of through them.

Stages made of a few long vectorised steps (evaluation) count the steps with
:meth:`Progress.stage`, which also logs each step's duration.

Every ``Progress.update`` is a fault point of :mod:`equihash.fault_injection`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time

from tqdm import tqdm

from equihash.fault_injection import fault_point

logger = logging.getLogger("equihash")

DEFAULT_EVERY = 30.0
"""Seconds between two progress lines of one bar in the log."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def on_terminal(stream) -> bool:
    """Whether ``stream`` is an open terminal (False for files, pipes, None, closed streams)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class _LineFormatter(logging.Formatter):
    """The log format, one record per line break: a carriage return never reaches a log file."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r\n", "\n").replace("\r", "\n")


class _TerminalHandler(logging.StreamHandler):
    """Log lines to a terminal, printed above the open progress bars rather than through them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise; report as logging does
            self.handleError(record)


def setup_logging(log_path=None, level=logging.INFO) -> None:
    """Send the ``equihash`` logger to ``log_path`` (or stderr), once per process."""
    if log_path:
        handler = logging.FileHandler(log_path)
    elif on_terminal(sys.stderr):
        handler = _TerminalHandler(sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter(LOG_FORMAT))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    if log_path:  # an uncaught error also goes to the job's log, not only to stderr
        default_hook = sys.excepthook

        def log_then_raise(kind, value, trace):
            logger.error("failed", exc_info=(kind, value, trace))
            default_hook(kind, value, trace)

        sys.excepthook = log_then_raise


def format_duration(seconds: float) -> str:
    """``12.3 s`` below a minute, else ``4m05s`` or ``2h03m`` (log lines)."""
    if seconds < 59.95:  # what rounds to 60.0 is shown as 1m00s
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _postfix_text(postfix: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items())


class Progress:
    """Counts the work units of one stage: a tqdm bar on a terminal, plain lines in the log.

    ``total`` units are expected, ``initial`` of them already done (a resumed stage).
    The bar is drawn to stderr only when stderr is a terminal. The log gets a line
    ``desc: done/total unit (share), rate, time left`` at the first update at least
    ``every`` seconds after the previous line, and a final line with the elapsed time
    and the rate (of the units done by this process) when the bar is closed, whether
    the stage finished or not. ``clock`` (seconds, monotonic) is for tests. Every
    :meth:`update` is a fault point labelled ``desc`` (:mod:`equihash.fault_injection`).
    """

    def __init__(self, total: int, desc: str, unit: str = "it", every: float = DEFAULT_EVERY, initial: int = 0,
                 *, clock=time.monotonic):
        self.total, self.desc, self.unit, self.every = int(total), desc, unit, every
        self.initial = self.done = int(initial)
        self._clock = clock
        self._start = self._last = clock()
        self._postfix: dict = {}
        self._closed = False
        self._bar = tqdm(total=self.total, desc=desc, unit=unit, initial=self.initial, file=sys.stderr,
                         disable=not on_terminal(sys.stderr), leave=False, dynamic_ncols=True)

    def update(self, n: int = 1, **postfix) -> None:
        """Count ``n`` more units done; ``postfix`` (name=value) is shown on the bar and the log lines."""
        fault_point(self.desc)
        self.done += n
        self._bar.update(n)
        if postfix:
            self._postfix = postfix
            self._bar.set_postfix(postfix, refresh=False)
        now = self._clock()
        if now - self._last >= self.every:
            self._last = now
            rate = self._rate(now)
            left = f", {format_duration(max(0, self.total - self.done) / rate)} left" if rate > 0 else ""
            share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            extra = f", {_postfix_text(self._postfix)}" if self._postfix else ""
            logger.info("%s: %d/%d %s%s, %.3g %s/s%s%s", self.desc, self.done, self.total, self.unit, share, rate,
                        self.unit, left, extra)

    @contextlib.contextmanager
    def stage(self, name: str):
        """Time one named step of the stage, counted as one unit: the bar shows ``name``
        while it runs, and its end is logged with its duration (whatever ``every`` is)."""
        self._bar.set_postfix_str(name)
        start = self._clock()
        yield
        self._last = self._clock()  # this line stands for the periodic one
        logger.info("%s: %s done in %s (%d/%d %s)", self.desc, name, format_duration(self._last - start),
                    self.done + 1, self.total, self.unit)
        self.update(1)

    def _rate(self, now: float) -> float:
        elapsed = now - self._start
        return (self.done - self.initial) / elapsed if elapsed > 0 else 0.0

    def close(self) -> None:
        """Erase the bar and log the final line (once; closing again does nothing)."""
        if self._closed:
            return
        self._closed = True
        self._bar.close()
        now = self._clock()
        extra = f", {_postfix_text(self._postfix)}" if self._postfix else ""
        logger.info("%s: %d/%d %s in %s, %.3g %s/s%s", self.desc, self.done, self.total, self.unit,
                    format_duration(now - self._start), self._rate(now), self.unit, extra)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
