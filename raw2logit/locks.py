"""Inter-process file locks: parallel multirun jobs share the data, view and model caches."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: str | Path):
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the block.

    The first job to arrive generates a dataset, view set or task model; the others wait and
    then find it done. POSIX only (``fcntl``), as the project's targets (Linux, macOS, clusters).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)
