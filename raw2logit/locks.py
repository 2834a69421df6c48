"""Inter-process file locks: parallel multirun jobs share the data, view and model caches."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: str | Path, wait: bool = True):
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the block.

    The first job to arrive generates a dataset, view set or task model; the others wait and
    then find it done. With ``wait=False`` the block gets False at once instead of waiting when
    another process holds the lock (it then holds nothing): parallel runs of one config take the
    units of work nobody holds and come back to the others. POSIX only (``fcntl``), as the
    project's targets (Linux, macOS, clusters).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)
