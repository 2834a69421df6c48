"""Run raw2logit's modes in-process on tiny simulated data (Hydra compose API, real Lightning, real MLflow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
TINY = ["dataset.num_images=36", "dataset.size=32", "epochs=2", "batch_size=12", "folds=2"]


@pytest.fixture(autouse=True)
def one_thread():
    """OpenMP spin-waiting makes two threads far slower than one on the shared test machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory) -> Path:
    """One simulated data root for the session (generation is deterministic, so sharing is safe)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def run_mode(tmp_path, shared_data):
    """run_mode(overrides, name) -> (summary, run directory); outputs under tmp_path, data shared."""
    from raw2logit.cli import _main

    def run(overrides: list[str], name: str = "run", outputs: Path | None = None, tracking: bool = False,
            base: list[str] = TINY):  # fmt: skip
        run_dir = tmp_path / name
        cfg = compose_config(
            [
                *base,
                f"paths.outputs={outputs or tmp_path / 'outputs'}",
                f"paths.data={shared_data}",
                f"tracking.enabled={str(tracking).lower()}",
                f"+run_dir={run_dir}",
                *overrides,
            ]
        )
        return _main(cfg), run_dir

    return run


def run_cli(args: list[str], cwd: Path = ROOT, timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    """``python run.py <args>`` in a subprocess (what a user types), on one torch thread as the
    in-process tests (so ``synthesis.workers=auto`` is one process: a helper would import torch again)."""
    kwargs.setdefault("env", {**os.environ, "OMP_NUM_THREADS": "1"})
    return subprocess.run([sys.executable, "run.py", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, **kwargs)  # fmt: skip
