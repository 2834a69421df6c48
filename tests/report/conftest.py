"""Real run folders for the report tests: tiny runs of every mode, made once per test session.

Each template is what ``raw2logit.cli._main`` leaves in a run directory when it runs the real,
composed Hydra config (``conf/config.yaml``) on tiny simulated microscopy data (36 images of
32x32, 2 folds), tracking off. A sweep template is a sweep directory as Hydra's multirun lays it
out (one run directory per job: ``0/``, ``1/``, ...) after ``raw2logit.sweeps.assemble_sweep``, the
multirun callback's own assembly, has written the sweep's artifacts next to the jobs. Nothing
here writes an artifact by hand, so a change of an artifact's format reaches the report tests.

Every run has written its own ``report.html``; the templates are shared by the session and
must stay unchanged, so tests rewrite reports on private copies (the ``*_run`` / ``*_sweep``
fixtures). All runs together take about half a minute on 2 cores (one torch thread).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

# Tiny data: 36 simulated 32x32 leukocytes (6 classes), 2 folds of 18, 2 batches an epoch.
TINY = ("dataset.num_images=36", "dataset.size=32", "epochs=2", "batch_size=12", "folds=2")
# Three train pipelines (so a column has a rank 1, 2 and 3), four test pipelines (one never trained on).
SYNTHESIS_TRAIN = ("bi_s_me", "ma_u_ga", "me_s_ga")
SYNTHESIS_TEST = ("bi_s_me", "bi_u_ga", "ma_u_ga", "me_s_ga")
CORRUPTIONS = ("gaussian_noise", "contrast")
# A forensics sweep, job by job as ``-m forensics.target=... lambda=...`` numbers them. The larger
# search step lets two epochs move θ far enough to cost some held-out accuracy.
FORENSICS_TARGETS = ("all", "gamma", "white_balance")
FORENSICS_LAMBDAS = ("0.0001", "0.1")
FORENSICS = ("mode=forensics", "forensics.epochs=2", "forensics.lr=0.02")
# An optimization sweep: learned and frozen θ, and the task model directly on raw (paper Table 2).
OPTIMIZATION = ("mode=optimization", "optimization.val_every=2")
OPTIMIZATION_JOBS = (
    ("data_model=parametrized", "data_model.learn=true"),
    ("data_model=parametrized", "data_model.learn=false"),
    ("data_model=raw",),
)
CALIBRATION_VARIANTS = ("bi_s_ga", "ma_s_ga")


@contextlib.contextmanager
def one_torch_thread():
    """One torch thread: the data is tiny, and OpenMP's spin-waiting on shared cores makes two
    threads much slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def compose_config(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def private_copy(template: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(template, tmp_path / name))


@pytest.fixture(scope="session")
def run_settings() -> SimpleNamespace:
    """What the tiny runs were asked for: ``synthesis_train``, ``synthesis_test``, ``corruptions``,
    ``forensics_targets``, ``forensics_lambdas`` (as floats), ``optimization_jobs`` (their count)
    and ``calibration_variants``."""
    return SimpleNamespace(
        synthesis_train=list(SYNTHESIS_TRAIN),
        synthesis_test=list(SYNTHESIS_TEST),
        corruptions=list(CORRUPTIONS),
        forensics_targets=list(FORENSICS_TARGETS),
        forensics_lambdas=[float(value) for value in FORENSICS_LAMBDAS],
        optimization_jobs=len(OPTIMIZATION_JOBS),
        calibration_variants=list(CALIBRATION_VARIANTS),
    )


@pytest.fixture(scope="session")
def run_tiny(tmp_path_factory):
    """``run_tiny(run_dir, *overrides, outputs) -> composed config``: one in-process run of the
    real config on the tiny data (data generated once for the session), ``run_dir`` as its run
    directory, ``outputs`` its results store and cache (share it to share a trained task model)."""
    from raw2logit.cli import _main

    data = tmp_path_factory.mktemp("data")

    def run(run_dir: Path, *overrides: str, outputs: Path):
        cfg = compose_config([*TINY, f"paths.outputs={outputs}", f"paths.data={data}", "tracking.enabled=false",
                              f"+run_dir={run_dir}", *overrides])  # fmt: skip
        with one_torch_thread():
            _main(cfg)
        return cfg

    return run


def run_sweep(run_tiny, sweep: Path, jobs, outputs: Path) -> Path:
    """The jobs as run directories ``sweep/0``, ``sweep/1``, ..., then the sweep's own assembly."""
    from raw2logit.sweeps import assemble_sweep

    for number, overrides in enumerate(jobs):
        cfg = run_tiny(sweep / str(number), *overrides, outputs=outputs)
    with one_torch_thread():
        assemble_sweep(cfg, sweep)
    return sweep


@pytest.fixture(scope="session")
def synthesis_template(run_tiny, tmp_path_factory) -> Path:
    """A synthesis run directory (3 train x 4 test pipelines, 2 corruptions, 2 folds, 1 epoch):
    ``synthesis/`` (matrix, corruptions, ranking, best per test, heatmap, cells), ``summary.json``,
    ``stages.png``, ``run.json``, ``config.yaml``, ``report.html``. Shared: copy before changing."""
    from raw2logit.controls.corruptions import CORRUPTION_NAMES

    assert set(CORRUPTIONS) <= set(CORRUPTION_NAMES)
    directory = tmp_path_factory.mktemp("synthesis")
    run_dir = directory / "run"
    run_tiny(run_dir, "mode=synthesis", f"synthesis.train=[{','.join(SYNTHESIS_TRAIN)}]",
             f"synthesis.test=[{','.join(SYNTHESIS_TEST)}]", f"synthesis.corruptions=[{','.join(CORRUPTIONS)}]",
             "epochs=1", outputs=directory / "outputs")  # fmt: skip
    return run_dir


@pytest.fixture(scope="session")
def forensics_sweep_template(run_tiny, tmp_path_factory) -> Path:
    """A forensics sweep directory: one job per target x λ (target-major, so job 0 is ``all`` at the
    smallest λ), each a full forensics run against one shared task model; the assembly added
    ``forensics/signature.{json,md,png}``, ``summary.json`` and ``report.html``. Shared: copy first."""
    directory = tmp_path_factory.mktemp("forensics")
    jobs = [(*FORENSICS, f"forensics.target={target}", f"lambda={lam}")
            for target in FORENSICS_TARGETS for lam in FORENSICS_LAMBDAS]  # fmt: skip
    return run_sweep(run_tiny, directory / "sweep", jobs, directory / "outputs")


@pytest.fixture(scope="session")
def forensics_template(forensics_sweep_template) -> Path:
    """One forensics run directory (the sweep's job 0: all θ groups, λ=1e-4, 2 search epochs):
    ``forensics/result.json``, ``samples.png``, ``theta_adversarial.json``, ``summary.json``,
    ``stages.png``, ``run.json``, ``config.yaml``, ``report.html``. Shared: copy first."""
    return forensics_sweep_template / "0"


@pytest.fixture(scope="session")
def optimization_sweep_template(run_tiny, tmp_path_factory) -> Path:
    """An optimization sweep directory: learned θ, frozen θ and direct raw as jobs 0, 1, 2; the
    assembly (``raw2logit.modes.optimization.assemble_sweep``) added ``optimization/{history,comparison}.csv``,
    ``comparison.png``, ``summary.json`` and ``report.html``. Shared: copy first."""
    directory = tmp_path_factory.mktemp("optimization")
    jobs = [(*OPTIMIZATION, *job) for job in OPTIMIZATION_JOBS]
    return run_sweep(run_tiny, directory / "sweep", jobs, directory / "outputs")


@pytest.fixture(scope="session")
def optimization_template(optimization_sweep_template) -> Path:
    """One optimization run directory (the sweep's job 0: parametrized data model, θ learned):
    ``optimization/`` (history, curves, samples, θ files), ``summary.json``, ``stages.png``,
    ``run.json``, ``config.yaml``, ``report.html``. Shared: copy first."""
    return optimization_sweep_template / "0"


@pytest.fixture(scope="session")
def calibration_template(run_tiny, tmp_path_factory) -> Path:
    """A calibration run directory of the simulated demonstration (4 pairs, 2 variants, 5 steps):
    ``calibrate/`` (fit.json, variants.csv, pipeline.json, residuals.png), ``summary.json``,
    ``stages.png``, ``run.json``, ``config.yaml``, ``report.html``. Shared: copy first."""
    directory = tmp_path_factory.mktemp("calibration")
    run_dir = directory / "run"
    run_tiny(run_dir, "mode=calibrate", "calibrate.steps=5", f"calibrate.variants=[{','.join(CALIBRATION_VARIANTS)}]",
             "calibrate.num_pairs=4", outputs=directory / "outputs")  # fmt: skip
    return run_dir


@pytest.fixture
def synthesis_run(synthesis_template, tmp_path) -> Path:
    """A private copy of the synthesis run directory."""
    return private_copy(synthesis_template, tmp_path, "run")


@pytest.fixture
def forensics_run(forensics_template, tmp_path) -> Path:
    """A private copy of the forensics run directory."""
    return private_copy(forensics_template, tmp_path, "run")


@pytest.fixture
def forensics_sweep(forensics_sweep_template, tmp_path) -> Path:
    """A private copy of the forensics sweep directory, jobs included."""
    return private_copy(forensics_sweep_template, tmp_path, "sweep")


@pytest.fixture
def optimization_run(optimization_template, tmp_path) -> Path:
    """A private copy of the optimization run directory."""
    return private_copy(optimization_template, tmp_path, "run")


@pytest.fixture
def optimization_sweep(optimization_sweep_template, tmp_path) -> Path:
    """A private copy of the optimization sweep directory, jobs included."""
    return private_copy(optimization_sweep_template, tmp_path, "sweep")


@pytest.fixture
def calibration_run(calibration_template, tmp_path) -> Path:
    """A private copy of the calibration run directory."""
    return private_copy(calibration_template, tmp_path, "run")
