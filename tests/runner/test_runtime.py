"""Process-level settings of the CLI (``raw2logit.runtime``)."""

from __future__ import annotations

import os
import subprocess
import sys

from raw2logit.runtime import idle_threads_sleep
from tests.runner.conftest import ROOT

PROBE = (
    "import os; from raw2logit.runtime import idle_threads_sleep; took = idle_threads_sleep(); import torch; "
    "print(took, os.environ['OMP_WAIT_POLICY'])"
)


def probe(**env) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_idle_openmp_threads_sleep_unless_the_user_says_otherwise():
    assert probe() == "True PASSIVE"
    assert probe(OMP_WAIT_POLICY="ACTIVE") == "True ACTIVE"


def test_too_late_once_torch_is_loaded():
    import torch  # noqa: F401  (loaded: its OpenMP runtime has read its settings already)

    assert idle_threads_sleep() is False
