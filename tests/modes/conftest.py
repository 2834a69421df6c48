"""End-to-end runs of the modes on tiny simulated data: the real config, composed and shrunk.

``run_mode`` composes ``conf/config.yaml`` with Hydra's compose API, points every path at a
temporary folder (the simulated data root is shared by the session: generating it is
deterministic) and calls ``raw2logit.cli._main`` in-process, which returns the run's summary and
raises ``InputError`` on bad input. ``run_multirun`` runs ``python run.py -m ...`` in a subprocess,
as a user would (a subprocess costs about 8 s of imports, so only the sweeps use one).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[2]

# Tiny data: 36 simulated 32x32 leukocytes (6 classes), 2 folds of 18, 2 batches an epoch.
SIM_MICROSCOPY = ("dataset.num_images=36", "dataset.size=32", "epochs=2", "batch_size=12", "folds=2")
# Four 1024x1024 aerial captures rendered at scale 1/8 (128x128, cars ~9 px) and tiled to 32x32 (the
# scaled 256): tiles with a car kept, about 50.
SIM_DRONE = ("dataset=sim_drone", "dataset.num_images=4", "dataset.height=1024", "dataset.width=1024",
             "dataset.scale=0.125", "epochs=2", "batch_size=8", "folds=2")  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread():
    """One torch thread: the data is tiny, and OpenMP's spin-waiting on shared cores makes two
    threads much slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class ModeRun:
    """What one in-process run left: its summary, run directory, outputs folder and config."""

    summary: dict
    run_dir: Path
    outputs: Path
    cfg: DictConfig

    def json(self, relative: str) -> dict:
        return json.loads((self.run_dir / relative).read_text())


def tiny_overrides(overrides) -> list[str]:
    """The tiny settings of the dataset the overrides select, then the overrides (later ones win)."""
    base = SIM_DRONE if "dataset=sim_drone" in overrides else SIM_MICROSCOPY
    return [*base, *overrides]


def compose_config(overrides) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """The simulated data root of the whole session (generated on first use, then reused)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def run_mode(data_root):
    """``run_mode(directory, *overrides, outputs=None, tracking=False) -> ModeRun``.

    The run directory is ``directory/run``; ``paths.outputs`` (results store, cache, MLflow store)
    is ``outputs`` or ``directory/outputs``. Pass ``paths.results=...`` to share a results store.
    """
    from raw2logit.cli import _main

    def run(directory, *overrides, outputs=None, tracking: bool = False) -> ModeRun:
        directory = Path(directory)
        outputs = Path(outputs) if outputs is not None else directory / "outputs"
        cfg = compose_config(tiny_overrides([
            f"paths.outputs={outputs}", f"paths.data={data_root}", f"tracking.enabled={str(tracking).lower()}",
            f"+run_dir={directory / 'run'}", *overrides,
        ]))  # fmt: skip
        summary = _main(cfg)
        return ModeRun(summary, directory / "run", outputs, cfg)

    return run


@pytest.fixture(scope="session")
def build_dataset(data_root):
    """``build_dataset(*overrides)`` -> the tiny ``RawDataset`` a run with those overrides reads."""
    from raw2logit.modes.common import build_dataset as build

    return lambda *overrides: build(compose_config(tiny_overrides([f"paths.data={data_root}", *overrides])))


@pytest.fixture(scope="session")
def run_multirun(data_root):
    """``run_multirun(directory, *overrides) -> sweep directory``: ``python run.py -m`` with the local
    (joblib) launcher, tiny data and outputs under ``directory``, tracking off."""

    def run(directory, *overrides) -> Path:
        directory = Path(directory)
        sweep = directory / "sweep"
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
        command = [sys.executable, "run.py", "-m", "hydra/launcher=local", *tiny_overrides(overrides),
                   f"hydra.sweep.dir={sweep}", f"paths.outputs={directory / 'outputs'}", f"paths.data={data_root}",
                   "tracking.enabled=false"]  # fmt: skip
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return sweep

    return run


@contextlib.contextmanager
def isolated_mlflow():
    """A tracked run that logs to its own local store and leaves no MLflow state behind: no
    ``MLFLOW_TRACKING_URI`` from the environment (it would take precedence over the local store),
    and mlflow's process-wide tracking URI restored afterwards."""
    import mlflow
    import mlflow.tracking._tracking_service.utils as tracking_utils

    previous = tracking_utils._tracking_uri
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="session")
def mlflow_isolation():
    """``with mlflow_isolation(): ...`` runs tracked modes without leaking their store (see above)."""
    return isolated_mlflow
