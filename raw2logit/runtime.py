"""Process-level settings for raw2logit's own processes (the CLI, benchmarks).

OpenMP's idle worker threads spin between parallel regions by default; on shared cores the
spinning thread holds the core the working one needs (``idle_threads_sleep``).

glibc hands large freed blocks straight back to the operating system, so every new tensor of a
few MB page-faults its memory in again. On the 2-core machines this project is developed on, that
first touch cost more than the arithmetic (the static pipelines ran about 1.5x slower). Keeping
freed memory in the heap removes it. It changes the allocator of the whole process, so the
library never does it on import: ``run.py`` and the benchmark scripts call it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from contextlib import contextmanager

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Tune glibc's malloc to reuse freed memory; returns False where that does not apply."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's ceiling for this threshold
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**30)
    ok &= mallopt(_M_TOP_PAD, 64 * 2**20)
    return bool(ok)


def idle_threads_sleep() -> bool:
    """Let torch's idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``).

    A worker thread that has done its share of a parallel region spins, waiting for the next
    one. On the 2-core development machines, shared with other jobs, the spinning thread took
    the core the other thread needed: a sim_drone cell (batch 8, many small steps) trained in
    315 s instead of 22 s, to the same bits. The OpenMP runtime reads the setting when it loads
    (with torch), so this must run first; a user's own ``OMP_WAIT_POLICY`` is kept. Returns
    whether it can still take effect.
    """
    if "torch" in sys.modules:
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return True


_interrupted = False
_deferring = 0  # > 0 inside ``deferred_interrupts``
_pending = None


def request_interrupt(signum=None, frame=None):
    """Signal handler for SIGINT/SIGTERM: remember the interruption, then raise ``KeyboardInterrupt``
    (at once, or at the end of a ``deferred_interrupts`` block).

    pytorch-lightning turns a ``KeyboardInterrupt`` inside ``fit`` into ``SystemExit(1)``; the
    flag lets the run still be recorded as KILLED (not FAILED) and exit with status 130.
    """
    global _interrupted, _pending
    _interrupted = True
    if _deferring:
        _pending = signum
        return
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def deferred_interrupts():
    """A block that an interruption does not cut in two: a SIGINT/SIGTERM arriving inside it takes
    effect when it ends. Used where a result file and its MLflow record must both be written (a
    few hundred milliseconds with a local store)."""
    global _deferring, _pending
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending is not None:
            signum, _pending = _pending, None
            raise KeyboardInterrupt(f"signal {signum}")


def interrupted() -> bool:
    return _interrupted


def offline_libraries() -> None:
    """Keep libraries from calling home: MLflow 3 sends usage telemetry (a DNS lookup of its
    telemetry host at the first client call) unless told not to. raw2logit makes no connection
    unless the user asks for one (a remote tracking URI, a pretrained download, ``make data``); a
    user who wants MLflow's telemetry sets ``MLFLOW_DISABLE_TELEMETRY=false`` explicitly."""
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")


class _Tee:
    """A text stream that writes to the console and to the run's log file."""

    def __init__(self, console, log):
        self.console, self.log = console, log

    def write(self, text: str) -> int:
        self.log.write(text)
        self.log.flush()
        return self.console.write(text)

    def flush(self) -> None:
        self.console.flush()

    def isatty(self) -> bool:  # Lightning's progress bar asks: it draws only on a terminal
        return self.console.isatty()

    def __getattr__(self, name):
        return getattr(self.console, name)


@contextmanager
def console_log(path):
    """Everything printed in the block (stdout and stderr) is also appended to ``path``: the job log
    beside the run's results."""
    log = open(path, "a", encoding="utf-8")
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams
        log.close()
