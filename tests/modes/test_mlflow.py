"""What a user finds in the MLflow UI (issue 13), read back from a real local store with MlflowClient:
live per-epoch training curves, tags that find every run, task models as loadable MLflow models,
sweeps that compare by λ, explicit resume, and results keyed by the code version."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.modes.conftest import ROOT, tiny_overrides

SYNTHESIS = (
    "synthesis.train=[bi_s_me]",
    "synthesis.test=[bi_s_me,ma_u_ga]",
    "synthesis.corruptions=[contrast]",
)


def client_of(outputs):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")


def runs_of(outputs):
    client = client_of(outputs)
    experiment = client.get_experiment_by_name("raw2logit")
    return client, experiment, client.search_runs([experiment.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def tracked_synthesis(run_mode, tmp_path_factory, mlflow_isolation):
    """One tracked tiny synthesis: 1 train pipeline x 2 folds, 2 epochs."""
    with mlflow_isolation():
        return run_mode(tmp_path_factory.mktemp("tracked"), *SYNTHESIS, tracking=True)


def test_each_cell_charts_its_training_live(tracked_synthesis):
    """Per-epoch validation metric, training loss and learning rate (length = epochs), and the
    per-step training loss, in the cell's own run below the mode's run."""
    client, _, runs = runs_of(tracked_synthesis.outputs)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    cells = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(cells) == 2
    epochs = tracked_synthesis.cfg.epochs
    for cell in cells:
        history = {key: client.get_metric_history(cell.info.run_id, key)
                   for key in ("val_accuracy", "train_loss_epoch", "lr-Adam", "train_loss_step")}  # fmt: skip
        assert [len(history[k]) for k in ("val_accuracy", "train_loss_epoch", "lr-Adam")] == [epochs] * 3
        assert len(history["train_loss_step"]) == epochs * 2  # 18 images in batches of 12
        assert sorted(m.step for m in history["val_accuracy"]) == sorted(
            {m.step for m in history["val_accuracy"]}
        )
        assert cell.info.status == "FINISHED" and cell.info.start_time < parent.info.end_time


def test_runs_carry_the_tags_that_find_them(tracked_synthesis):
    _, experiment, runs = runs_of(tracked_synthesis.outputs)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the runs list
    for run in runs:
        tags = run.data.tags
        assert (tags["raw2logit.mode"], tags["raw2logit.dataset"]) == ("synthesis", "sim_microscopy")
        assert (tags["raw2logit.data_model"], tags["raw2logit.task_model"]) == ("static", "small")
        assert tags["mlflow.source.name"] and tags["mlflow.source.git.commit"]
    cells = [r for r in runs if "raw2logit.train_pipeline" in r.data.tags]
    assert sorted((r.data.tags["raw2logit.train_pipeline"], r.data.tags["raw2logit.fold"]) for r in cells) == [
        ("bi_s_me", "0"), ("bi_s_me", "1")]  # fmt: skip


def test_a_cells_logged_model_loads_and_reproduces_its_held_out_metric(tracked_synthesis, build_dataset):
    """mlflow.pytorch.load_model of the cell's logged model, fed the held-out views with the
    normalisation stored beside it, scores exactly the cell's own-pipeline accuracy."""
    import mlflow.pytorch

    from raw2logit.data.splits import kfold_splits
    from raw2logit.data.views import ViewCache
    from raw2logit.tasks.checkpoints import load_task_checkpoint

    client, experiment, runs = runs_of(tracked_synthesis.outputs)
    (cell_run,) = [r for r in runs if r.data.tags.get("raw2logit.fold") == "0"]
    (model,) = client.search_logged_models([experiment.experiment_id],
                                           filter_string=f"source_run_id = '{cell_run.info.run_id}'")  # fmt: skip
    loaded = mlflow.pytorch.load_model(model.artifact_location).eval()  # the store's own copy
    checkpoint = next(p for p in client.list_artifacts(cell_run.info.run_id, "model"))
    store = next((tracked_synthesis.outputs / "results").glob("synthesis-*"))
    _, normalisation, _ = load_task_checkpoint(store / "synthesis/models/bi_s_me/fold0.pt", build_dataset())
    dataset = build_dataset()
    _, test_index = kfold_splits(dataset, 2, 0)[0]
    views = ViewCache(dataset, tracked_synthesis.outputs / "cache" / "views").views("bi_s_me")[test_index]
    mean = torch.tensor(normalisation["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(normalisation["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        predictions = loaded((views - mean) / std).argmax(1).numpy()
    cell = json.loads((store / "synthesis/cells/bi_s_me/fold0.json").read_text())
    assert np.mean(predictions == dataset.targets[test_index]) == pytest.approx(cell["clean"], abs=1e-6)
    assert checkpoint.path == "model/fold0.pt"
    assert cell_run.data.metrics["accuracy"] == pytest.approx(cell["clean"])


def test_forensics_from_a_logged_model_uri_records_it(
    tracked_synthesis, run_mode, tmp_path, mlflow_isolation
):
    client, experiment, runs = runs_of(tracked_synthesis.outputs)
    (cell_run,) = [r for r in runs if r.data.tags.get("raw2logit.fold") == "0"]
    (model,) = client.search_logged_models([experiment.experiment_id],
                                           filter_string=f"source_run_id = '{cell_run.info.run_id}'")  # fmt: skip
    for source in (model.model_uri, f"runs:/{cell_run.info.run_id}/model/fold0.pt"):
        with mlflow_isolation():
            run = run_mode(tmp_path / source.split(":")[0], "mode=forensics", f"forensics.from_run={source}",
                           "forensics.epochs=1", outputs=tracked_synthesis.outputs, tracking=True)  # fmt: skip
        assert run.json("forensics/result.json")["task_model"]["pipeline"] == "bi_s_me"
        client, _, runs = runs_of(tracked_synthesis.outputs)
        (searched,) = [r for r in runs if r.data.params.get("forensics.from_run") == source]
        assert searched.data.params["task_model_source"] == source


def test_a_failed_run_records_its_reason(run_mode, tmp_path, mlflow_isolation):
    from raw2logit.errors import InputError

    with mlflow_isolation(), pytest.raises(InputError, match=r"non-finite|became nan|became inf"):
        run_mode(tmp_path, *SYNTHESIS, "lr=1e30", tracking=True)
    _, _, runs = runs_of(tmp_path / "outputs")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED" and "lower" in parent.data.tags["raw2logit.error"]
    (cell,) = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert (
        cell.info.status == "FAILED"
        and cell.data.tags["raw2logit.error"] == parent.data.tags["raw2logit.error"]
    )


def test_resume_never_starts_afresh_and_auto_says_what_it_resumes(run_mode, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    run_mode(tmp_path / "a", *SYNTHESIS, outputs=outputs)
    capsys.readouterr()
    run_mode(tmp_path / "b", *SYNTHESIS, outputs=outputs)
    resumed = capsys.readouterr().out
    assert "resuming" in resumed and "2 of 2 units done" in resumed and ": training on" not in resumed
    run_mode(tmp_path / "c", *SYNTHESIS, "resume=never", outputs=outputs)
    fresh = capsys.readouterr().out
    assert "resuming" not in fresh and fresh.count(": training on") == 2
    assert len(list((outputs / "results").glob("synthesis-*"))) == 2  # the earlier store is untouched


def test_a_code_change_changes_the_results_key(tmp_path):
    """The results key hashes the package source: any edit of a module (or template) makes a new key."""
    import shutil

    from raw2logit.provenance import source_hash

    package = tmp_path / "raw2logit"
    shutil.copytree(ROOT / "raw2logit", package, ignore=shutil.ignore_patterns("__pycache__"))
    before = source_hash(package)
    assert source_hash.__wrapped__(package) == before  # the same code, the same key
    module = package / "modes" / "synthesis" / "__init__.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    assert source_hash.__wrapped__(package) != before


@pytest.mark.slow
def test_a_forensics_sweep_compares_by_log10_lambda_per_target(tmp_path, data_root):
    """python run.py -m mode=forensics lambda=... forensics.target=...: one sweep run holding the swept
    values and the sensitivity per group; a child per job with log10_lambda and accuracy_after."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, "run.py", "-m", "hydra/launcher=local", *tiny_overrides(["mode=forensics"]),
               "lambda=0.1,0.001", "forensics.target=all,black_level", "forensics.epochs=2",
               f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.outputs={tmp_path / 'outputs'}",
               f"paths.data={data_root}"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    _, _, runs = runs_of(tmp_path / "outputs")
    (sweep,) = [r for r in runs if r.data.tags.get("raw2logit.sweep") == "true"]
    assert sweep.data.params["sweep.lambda"] == "0.1,0.001"
    assert {"sensitivity.all", "sensitivity.black_level"} <= set(sweep.data.metrics)
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
    assert len(jobs) == 4
    for job in jobs:
        lam = float(job.data.tags["raw2logit.lambda"])
        assert job.data.metrics["log10_lambda"] == pytest.approx(math.log10(lam))
        assert 0 <= job.data.metrics["accuracy_after"] <= 1 and "accuracy_before" in job.data.metrics
    assert sorted(j.data.tags["raw2logit.target"] for j in jobs) == [
        "all",
        "all",
        "black_level",
        "black_level",
    ]


def test_system_metrics_are_sampled_into_the_run_when_asked(tmp_path):
    """tracking.system_metrics=true: MLflow's monitor samples CPU and memory use into the mode's run."""
    import time

    from raw2logit.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", outputs=tmp_path, system_metrics=True).connect()
    tracker.system_metrics_interval = 1
    with tracker.run("monitored") as run_id:
        time.sleep(3)
    metrics = client_of(tmp_path).get_run(run_id).data.metrics
    assert any(key.startswith("system/cpu") for key in metrics) and any("memory" in key for key in metrics)


def test_the_progress_bar_is_drawn_on_a_terminal_only(monkeypatch):
    """Lightning's bar when stdout is a terminal; one plain line per epoch otherwise (logs)."""
    from raw2logit.modes.common import make_trainer_factory
    from raw2logit.training import ProgressPrinter
    from tests.modes.conftest import compose_config

    cfg = compose_config(tiny_overrides([]))
    for terminal in (True, False):
        monkeypatch.setattr(sys.stdout, "isatty", lambda terminal=terminal: terminal)
        trainer = make_trainer_factory(cfg)("label")
        printers = [c for c in trainer.callbacks if isinstance(c, ProgressPrinter)]
        assert (trainer.progress_bar_callback is not None, bool(printers)) == (terminal, not terminal)
