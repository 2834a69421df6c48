"""Scale-out run end to end: a sweep through Hydra's submitit launcher (local executor, as SLURM would
run it), four jobs sharing the data and view caches, and ``trainer=ddp`` on CPU (2 processes, gloo)."""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from raw2logit.errors import InputError
from tests.cli.conftest import TINY, compose_config, run_cli

# What a SLURM job needs and a local process does not; every other launcher setting is shared.
CLUSTER_ONLY = {"partition", "timeout_min", "gpus_per_task", "cpus_per_task", "mem_gb"}
# trainer=ddp on this CPU: 2 processes (gloo, the preset's backend), full precision.
DDP_ON_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]


def launcher(name: str) -> dict:
    from hydra import compose, initialize_config_dir

    from tests.cli.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher)


def mlflow_runs(outputs: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("raw2logit")
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def clean_env() -> dict:
    """The tests' MLflow store is the run's own local one, and one thread per process."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    return env


# -- fast: the presets and the refusals -----------------------------------------------------------------
def test_slurm_preset_is_submitit_local_plus_what_a_cluster_needs():
    local, slurm = launcher("submitit_local"), launcher("slurm")
    assert local["_target_"].endswith("LocalLauncher") and slurm["_target_"].endswith("SlurmLauncher")
    shared = set(local) - {"_target_"}
    assert {k for k in shared if local[k] != slurm[k]} <= CLUSTER_ONLY
    assert {k for k in set(slurm) - shared if slurm[k] is not None} - {"_target_"} <= CLUSTER_ONLY | {
        "signal_delay_s", "max_num_timeout", "additional_parameters", "array_parallelism"}  # the plugin's defaults  # fmt: skip
    assert slurm["timeout_min"] == 720 and slurm["gpus_per_task"] == 1 and slurm["mem_gb"] == 32
    assert local["submitit_folder"] == slurm["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"


def test_ddp_preset_builds_a_forked_ddp_strategy_per_trainer():
    from raw2logit.modes.common import make_trainer_factory
    from raw2logit.training import ForkedDDP

    cfg = compose_config([*TINY, *DDP_ON_CPU])
    make = make_trainer_factory(cfg)
    first, second = make("a"), make("b")
    assert isinstance(first.strategy, ForkedDDP) and first.strategy is not second.strategy
    assert first.strategy.process_group_backend == "gloo" and first.num_devices == 2
    assert first.strategy._launcher.__class__.__name__ == "_CallbackStateLauncher"


def test_forensics_refuses_ddp_in_one_sentence(run_mode):
    with pytest.raises(
        InputError, match=r"^trainer=ddp is not available for mode=forensics: .*use trainer=cpu"
    ):
        run_mode(["mode=forensics", *DDP_ON_CPU])


# -- slow: a submitit sweep, four jobs at once on a fresh outputs folder ----------------------------------
@pytest.mark.slow
def test_submitit_local_sweep_shares_caches_and_mlflow(tmp_path):
    """2 train pipelines x 2 folds, each (pipeline, fold) a submitit job, all four started together
    on a fresh outputs folder (data, views, MLflow store created by the jobs themselves)."""
    sweep, outputs = tmp_path / "sweep", tmp_path / "outputs"
    start = time.perf_counter()
    done = run_cli(["-m", "hydra/launcher=submitit_local", *TINY, "synthesis.train=bi_s_me,ma_u_ga", "fold=0,1",
                    "synthesis.test=[bi_s_me,ma_u_ga]", "synthesis.corruptions=none", f"paths.outputs={outputs}",
                    f"hydra.sweep.dir={sweep}"], env=clean_env())  # fmt: skip
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"submitit_local sweep of 4 jobs: {seconds:.0f} s")
    # The assembled matrix and the jobs' results in the sweep directory.
    matrix = pd.read_csv(sweep / "synthesis" / "matrix.csv", index_col="train")
    assert list(matrix.index) == ["bi_s_me", "ma_u_ga"] and list(matrix.columns) == ["bi_s_me", "ma_u_ga"]
    assert json.loads((sweep / "summary.json").read_text())["cells"] == 4 and (sweep / "report.html").exists()
    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    cells = {(c["train"], c["fold"]) for job in jobs for c in map(json.loads, map(Path.read_text,
             (job / "synthesis" / "cells").glob("*/fold*.json")))}  # fmt: skip
    assert cells == {(t, k) for t in ("bi_s_me", "ma_u_ga") for k in (0, 1)}
    # submitit's own logs and results, per job.
    submitted = [p for p in (sweep / ".submitit").iterdir() if p.name != "%j"]
    outs = [p for folder in submitted for p in folder.glob("*_log.out")]
    assert len(outs) == 4 and len([p for f in submitted for p in f.glob("*_result.pkl")]) == 4
    assert all(
        "Job completed successfully" in p.read_text() + p.with_suffix(".err").read_text() for p in outs
    )
    # Each dataset and each view computed once, by whichever job came first.
    logs = "".join((job / "run.log").read_text() for job in jobs)
    assert logs.count("simulating 36 microscopy images") == 1, logs
    computed = Counter(name for line in re.findall(r"static view set\(s\) of .*?: (.*) -> ", logs)
                       for name in line.split(", "))  # fmt: skip
    assert computed == Counter({"bi_s_me": 1, "ma_u_ga": 1}), logs
    # MLflow: one sweep run, one child per job (each holding its cell's run), all finished.
    _, runs = mlflow_runs(outputs)
    (sweep_run,) = [r for r in runs if r.data.tags.get("raw2logit.sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep_run.info.run_id]
    assert len(children) == 4 and sorted(r.data.params["fold"] for r in children) == ["0", "0", "1", "1"]
    cell_runs = [
        r for r in runs if r.data.tags.get("mlflow.parentRunId") in {c.info.run_id for c in children}
    ]
    assert len(cell_runs) == 4 and len(runs) == 9
    assert {r.info.status for r in runs} == {"FINISHED"}


# -- slow: trainer=ddp on CPU ---------------------------------------------------------------------------
# 72 simulated images of 32x32 and 16 epochs: enough for the task model to learn (held-out accuracy
# 0.5-0.8 rather than chance), so that the comparison with a single process means something.
DDP_CELL = ["dataset.num_images=72", "dataset.size=32", "epochs=16", "folds=2", "fold=0", "augment=false",
            "synthesis.train=[bi_s_me]", "synthesis.test=[bi_s_me]", "synthesis.corruptions=none"]  # fmt: skip
# |DDP - single process| of the cell's held-out accuracy (36 images: a step of 0.028). Not bitwise:
# under DDP each process normalises its own half batch (BatchNorm statistics over 6 images, not 12),
# and Lightning's DistributedSampler draws each epoch's order from seed + epoch where the single
# process continues one generator, so from the second epoch on the batches differ. Both act as another
# seed would, so the tolerance is what another seed changes. Measured on the 2-core development
# machine, seeds 0-3: single process 0.806 0.778 0.778 0.611 (range 0.19), DDP 0.694 0.611 0.694
# 0.694, |DDP - single| 0.11 0.17 0.08 0.08. Tolerance 0.2: the seed-to-seed range, rounded up.
TOLERANCE = 0.2


def run_json(run: Path) -> dict:
    return json.loads(next(run.glob("synthesis/cells/*/fold0.json")).read_text())


@pytest.mark.slow
def test_ddp_trains_a_synthesis_cell_like_one_process(tmp_path, shared_data):
    """trainer=ddp with 2 CPU processes (gloo) trains the cell; the run itself (held-out evaluation,
    cell file, MLflow runs) happens once; the accuracy is a single-process run's within TOLERANCE
    (seed 0: 0.694 vs 0.806 when measured)."""
    common = [*DDP_CELL, f"paths.data={shared_data}"]
    single = run_cli([*common, "batch_size=12", f"paths.outputs={tmp_path / 'single'}",
                      f"hydra.run.dir={tmp_path / 'single' / 'run'}"], env=clean_env())  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    start = time.perf_counter()
    # batch_size is per process: 2 x 6 images a step, the single process's 12.
    ddp = run_cli([*common, "batch_size=6", *DDP_ON_CPU, f"paths.outputs={tmp_path / 'ddp'}",
                   f"hydra.run.dir={tmp_path / 'ddp' / 'run'}"], env=clean_env())  # fmt: skip
    seconds = time.perf_counter() - start
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    out = ddp.stdout
    assert out.count("DistributedDataParallel over 2 processes (gloo)") == 1, out
    assert out.count("epoch 16/16") == 1 and out.count("accuracy on own pipeline") == 1  # rank 0 prints
    cell, reference = run_json(tmp_path / "ddp" / "run"), run_json(tmp_path / "single" / "run")
    assert cell["test_size"] == reference["test_size"] == 36  # the whole held-out fold, evaluated once
    assert len(list((tmp_path / "ddp").glob("results/*/synthesis/cells/*/*.json"))) == 1
    # MLflow: the mode's run and the cell's run, each once; the training curve logged by rank 0 only.
    client, runs = mlflow_runs(tmp_path / "ddp")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    (child,) = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "train_loss_step")]
    assert len(steps) == len(set(steps)) == 16 * 3  # 36 training images: 3 steps of 2 x 6 an epoch
    difference = abs(cell["clean"] - reference["clean"])
    print(f"ddp {cell['clean']:.3f} vs single process {reference['clean']:.3f} (|Δ| {difference:.3f}, "
          f"tolerance {TOLERANCE}); ddp run {seconds:.0f} s")  # fmt: skip
    assert difference <= TOLERANCE


@pytest.mark.slow
def test_ddp_trains_an_optimization_fold_and_records_it_once(tmp_path, shared_data):
    """mode=optimization under trainer=ddp: rank 0 measures the whole held-out fold at every step
    and its history comes back to the run, which writes it (and its MLflow runs) once."""
    done = run_cli([*TINY, "mode=optimization", "fold=0", "batch_size=6", "optimization.val_every=1",
                    *DDP_ON_CPU, f"paths.data={shared_data}", f"paths.outputs={tmp_path}",
                    f"hydra.run.dir={tmp_path / 'run'}"], env=clean_env())  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("DistributedDataParallel over 2 processes (gloo)") == 1, done.stdout
    assert done.stdout.count(" fold 0: validation ") == 1  # printed by rank 0 only
    history = pd.read_csv(tmp_path / "run" / "optimization" / "history.csv")
    # 18 training images: 2 steps of 2 x 6 (the last 2 x 3) an epoch, 2 epochs; a point at every step.
    assert list(history["step"]) == [0, 1, 2, 3, 4] and history["metric"].between(0, 1).all()
    client, runs = mlflow_runs(tmp_path)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    (child,) = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")]
    assert sorted(steps) == [0, 1, 2, 3, 4]


def test_ddp_optimization_fold_in_process_keeps_rank_zeros_history(run_mode):
    """The fast check of trainer=ddp (2 forked CPU processes): the fold's history, recorded by rank 0
    during training, is the run's after ``fit``, one point per step."""
    summary, run_dir = run_mode(["mode=optimization", "fold=0", "epochs=1", "batch_size=6",
                                 "optimization.val_every=1", *DDP_ON_CPU])  # fmt: skip
    history = pd.read_csv(run_dir / "optimization" / "history.csv")
    assert list(history["step"]) == [0, 1, 2] and summary["folds"] == [0]
