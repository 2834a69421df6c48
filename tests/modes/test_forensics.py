"""``mode=forensics`` end to end (paper §5.2, Eq. 9) on tiny simulated data.

Unless a test loads a checkpoint, the task model is trained by the mode itself (20 epochs on the
views at θ_stat of fold 0: about 0.78 held-out accuracy) and shared through one results store;
each search has its own λ / target / settings and so its own result. Runs are seeded and the
trainer is deterministic, so the numbers below are reproducible; the assertions keep margins.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raw2logit.controls.forensics import PLAUSIBLE
from raw2logit.errors import InputError
from raw2logit.isp import THETA_GROUPS, ParametrizedPipeline, static_theta

TASK_EPOCHS = "epochs=20"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def task_results(tmp_path_factory) -> Path:
    """One results store for the module: the task model trained at θ_stat is trained once."""
    return tmp_path_factory.mktemp("forensics-results")


@pytest.fixture
def forensics(run_mode, task_results, tmp_path):
    """``forensics(name, *overrides)``: a search against the module's shared task model."""
    return lambda name, *overrides: run_mode(
        tmp_path / name, "mode=forensics", TASK_EPOCHS, f"paths.results={task_results}", *overrides
    )


@pytest.fixture(scope="module")
def camera(build_dataset):
    return build_dataset().camera


def deviation(theta: dict, reference: dict, group: str) -> float:
    return float(np.max(np.abs(np.asarray(theta[group], float) - np.asarray(reference[group], float))))


def outside_plausible(theta: dict, reference: dict) -> dict[str, int]:
    """Number of entries of each θ group outside its ``PLAUSIBLE`` range around ``reference``."""
    counts = {}
    for group, (kind, low, high) in PLAUSIBLE.items():
        value, base = np.asarray(theta[group], float), np.asarray(reference[group], float)
        if kind == "absolute":
            lower, upper = np.full_like(value, low), np.full_like(value, high)
        elif kind == "offset":
            lower, upper = base + low, base + high
        else:  # ratio of θ_stat, same sign
            lower, upper = np.minimum(base * low, base * high), np.maximum(base * low, base * high)
        counts[group] = int(np.sum((value < lower) | (value > upper)))
    return counts


# -- λ ---------------------------------------------------------------------------------------


def test_small_lambda_breaks_the_model_more_than_large_lambda(forensics):
    # lr 0.005 for 6 epochs (12 steps): λ=1e-4 drives the accuracy to chance (0.17) with ℓ2 ≈ 40,
    # λ=100 keeps it near the clean 0.78 (0.61) with ℓ2 ≈ 2.5.
    small = forensics("small", "lambda=1e-4", "forensics.lr=0.005", "forensics.epochs=6").summary
    large = forensics("large", "lambda=100", "forensics.lr=0.005", "forensics.epochs=6").summary
    assert small["metric_before"] == large["metric_before"]  # the same frozen task model
    assert small["metric_after"] < small["metric_before"]
    assert small["metric_after"] < large["metric_after"]
    assert small["l2"] > large["l2"]


def test_very_large_lambda_keeps_theta_at_theta_stat(forensics, camera):
    # Adam moves each entry by about lr a step whatever the gradient's size, so the bound only tells
    # if a small λ with the same lr and steps leaves it: 12 steps of 2e-4 move λ=1e-4 by about
    # 2.3e-3 and λ=1e4, pulled back to θ_stat, by at most about 4e-4.
    settings = ("forensics.lr=2e-4", "forensics.epochs=6")
    large = forensics("large", "lambda=1e4", *settings).json("forensics/result.json")
    small = forensics("small", "lambda=1e-4", *settings).json("forensics/result.json")
    theta_stat = {group: value.numpy() for group, value in static_theta(camera).items()}
    for group in THETA_GROUPS:
        assert deviation(large["theta_after"], theta_stat, group) <= 1e-3, group
    assert max(deviation(small["theta_after"], theta_stat, group) for group in THETA_GROUPS) > 1e-3
    assert large["l2"] < 1e-2 < small["l2"]


# -- targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["white_balance", "gamma"])
def test_one_target_group_moves_and_every_other_stays_bit_identical(forensics, camera, target):
    result = forensics(target, f"forensics.target={target}", "lambda=1e-3", "forensics.lr=0.01",
                       "forensics.epochs=3").json("forensics/result.json")  # fmt: skip
    before, after = result["theta_before"], result["theta_after"]
    assert before == ParametrizedPipeline(camera).theta_dict()  # the search starts at θ_stat
    assert result["groups"] == [target]
    assert sorted(result["unchanged_groups"]) == sorted(g for g in THETA_GROUPS if g != target)
    assert deviation(after, before, target) > 1e-3
    for group in THETA_GROUPS:
        if group != target:
            assert after[group] == before[group], group
            assert all(entry["theta"][group] == before[group] for entry in result["history"]), group


def test_the_tone_curve_knots_are_a_target_group(forensics, camera):
    """With data_model.tone_curve=curve the knots are a θ group of their own: they move, the rest stays."""
    run = forensics("curve", "data_model=parametrized", "data_model.tone_curve=curve", "forensics.target=curve", "lambda=1e-3",
                    "forensics.lr=0.01", "forensics.epochs=3")  # fmt: skip
    result = run.json("forensics/result.json")
    before, after = result["theta_before"], result["theta_after"]
    assert before == ParametrizedPipeline(camera, tone_curve="curve").theta_dict()
    assert result["groups"] == ["curve"] and deviation(after, before, "curve") > 1e-3
    assert all(after[group] == before[group] for group in THETA_GROUPS if group != "curve")
    exported = ParametrizedPipeline.from_theta_json(run.run_dir / "forensics" / "theta_adversarial.json")
    assert exported.tone_curve == "curve" and exported.theta_dict()["curve"] == after["curve"]


def test_a_target_that_does_not_act_is_refused(run_mode, tmp_path):
    with pytest.raises(InputError, match=r"forensics\.target=curve does not act with the tone curve power; "
                       r"use data_model=parametrized data_model\.tone_curve=curve\."):  # fmt: skip
        run_mode(tmp_path, "mode=forensics", "forensics.target=curve")


# -- artifacts -------------------------------------------------------------------------------


def test_result_samples_and_summary_are_written(forensics):
    run = forensics("artifacts", "lambda=1e-3", "forensics.epochs=3")
    result = run.json("forensics/result.json")
    assert result["lambda"] == pytest.approx(1e-3)
    assert (result["target"], result["regulariser"], result["metric"]) == ("all", "l2", "accuracy")
    assert result["groups"] == list(THETA_GROUPS)
    assert 0 <= result["metric_after"] <= 1 and 0 <= result["metric_before"] <= 1
    assert result["metric_drop"] == pytest.approx(result["metric_before"] - result["metric_after"])
    assert result["l2"] > 0
    for theta in (result["theta_before"], result["theta_after"]):
        assert set(THETA_GROUPS) <= set(theta)
    assert result["theta_after"] != result["theta_before"]
    # One history point per search epoch; the last is the final state.
    history = result["history"]
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    assert all({"metric", "l2", "loss", "theta"} <= set(entry) for entry in history)
    assert history[-1]["theta"] == result["theta_after"]
    assert history[-1]["metric"] == pytest.approx(result["metric_after"], abs=1e-9)
    assert history[-1]["l2"] == pytest.approx(result["l2"], rel=1e-9)
    # The adversarial θ is exported and reloads.
    reloaded = ParametrizedPipeline.from_theta_json(run.run_dir / "forensics" / "theta_adversarial.json")
    assert reloaded.theta_dict() == result["theta_after"]
    assert (run.run_dir / "forensics" / "samples.png").read_bytes().startswith(PNG)
    assert run.json("summary.json") == run.summary


def test_metric_after_is_the_frozen_models_accuracy_on_the_adversarial_views(forensics, build_dataset,
                                                                             task_results):  # fmt: skip
    """Recomputed outside the mode: the saved task model, the held-out fold, Φ(x, θ~) from the exported
    θ file, the checkpoint's normalisation, argmax; and ℓ2 is the mean per-image ||V - V~||²."""
    from raw2logit.data.splits import kfold_splits
    from raw2logit.tasks.checkpoints import load_task_checkpoint

    run = forensics("recomputed", "lambda=1e-3", "forensics.epochs=2")
    result = run.json("forensics/result.json")
    dataset = build_dataset()
    from raw2logit.modes.forensics import FOLDER, TASK_MODEL_IGNORE, results_key

    # this run's task model (other tests leave task models of other configs in the same store)
    trained = task_results / f"task-model-{dataset.name}-{results_key(run.cfg, FOLDER, TASK_MODEL_IGNORE)}.pt"
    model, normalisation, _ = load_task_checkpoint(trained, dataset)
    _, test_index = kfold_splits(dataset, run.cfg.folds, run.cfg.seed)[0]
    raw = dataset.normalised(test_index)
    adversarial = ParametrizedPipeline.from_theta_json(run.run_dir / "forensics" / "theta_adversarial.json")
    with torch.no_grad():
        views, clean = adversarial(raw), ParametrizedPipeline(dataset.camera)(raw)
        mean = torch.tensor(normalisation["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(normalisation["std"]).view(1, 3, 1, 1)
        predictions = model.eval()((views - mean) / std).argmax(1).numpy()
    assert result["metric_after"] == pytest.approx(
        np.mean(predictions == dataset.targets[test_index]), abs=1e-6
    )
    assert result["l2"] == pytest.approx((views - clean).square().sum((1, 2, 3)).mean().item(), rel=1e-3)


def test_ssim_regulariser_runs(forensics):
    result = forensics("ssim", "forensics.regulariser=ssim", "lambda=1e-3", "forensics.lr=0.005",
                       "forensics.epochs=3").json("forensics/result.json")  # fmt: skip
    assert result["regulariser"] == "ssim"
    assert 0 <= result["metric_after"] <= 1
    assert math.isfinite(result["l2"]) and result["l2"] > 0  # ℓ2 is reported whatever the regulariser
    assert result["theta_after"] != result["theta_before"]


def test_plausible_projection_keeps_theta_in_range(forensics):
    # lr 0.05 moves the black level by about 0.6 in 12 steps: below 0 without the projection.
    settings = ("lambda=1e-4", "forensics.lr=0.05", "forensics.epochs=6")
    free = forensics("free", *settings, "forensics.plausible=false").json("forensics/result.json")
    assert sum(outside_plausible(free["theta_after"], free["theta_before"]).values()) > 0
    projected = forensics("projected", *settings, "forensics.plausible=true").json("forensics/result.json")
    assert projected["plausible_projection"] is True
    for theta in [projected["theta_after"]] + [entry["theta"] for entry in projected["history"]]:
        assert outside_plausible(theta, projected["theta_before"]) == dict.fromkeys(PLAUSIBLE, 0)
    assert projected["theta_after"] != projected["theta_before"]


# -- segmentation ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def segmentation(run_mode, tmp_path_factory):
    """A sim_drone search, with the ``ForensicsModule`` it built (to check its loss)."""
    from raw2logit.controls import forensics as controls

    modules = []

    class RecordingModule(controls.ForensicsModule):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            modules.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(controls, "ForensicsModule", RecordingModule)
        run = run_mode(tmp_path_factory.mktemp("segmentation"), "mode=forensics", "dataset=sim_drone", "epochs=3",
                       "forensics.epochs=2", "forensics.lr=0.01")  # fmt: skip
    return run, modules


def test_segmentation_search_uses_iou_and_dice_plus_bce(segmentation):
    run, modules = segmentation
    result = run.json("forensics/result.json")
    assert run.summary["metric"] == result["metric"] == "iou"
    assert 0 <= result["metric_after"] <= 1 and 0 <= result["metric_before"] <= 1
    assert result["theta_after"] != result["theta_before"]
    assert (run.run_dir / "forensics" / "samples.png").exists()
    assert result["task_model"]["task"] == "segmentation"
    # The search loss is Dice + BCE, as the paper's (the training loss is Dice alone).
    (module,) = modules
    from segmentation_models_pytorch.losses import DiceLoss

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, generator=generator)
    mask = (torch.rand(2, 8, 8, generator=generator) > 0.5).long()
    target = mask.float().unsqueeze(1)
    expected = DiceLoss(mode="binary", from_logits=True)(logits, target) + F.binary_cross_entropy_with_logits(
        logits, target
    )
    torch.testing.assert_close(module.loss_fn(logits, mask), expected)


# -- the task model from a synthesis run ------------------------------------------------------


@pytest.fixture(scope="module")
def synthesis(run_mode, tmp_path_factory, mlflow_isolation):
    """A tracked synthesis run on bi_s_ga alone (2 folds, 10 epochs) and its results store."""
    directory = tmp_path_factory.mktemp("synthesis")
    with mlflow_isolation():
        run = run_mode(directory, "mode=synthesis", "epochs=10", "synthesis.train=[bi_s_ga]",
                       "synthesis.test=[bi_s_ga]", "synthesis.corruptions=none", tracking=True)  # fmt: skip
    (store,) = (run.outputs / "results").glob("synthesis-*")
    return run, store


def synthesis_checkpoint(store: Path, fold: int) -> Path:
    return store / "synthesis" / "models" / "bi_s_ga" / f"fold{fold}.pt"


def cell_metric(store: Path, fold: int) -> float:
    cell = json.loads((store / "synthesis" / "cells" / "bi_s_ga" / f"fold{fold}.json").read_text())
    return cell["test"]["bi_s_ga"]


def test_synthesis_checkpoint_drives_forensics(run_mode, synthesis, tmp_path):
    # Φ_para at θ_stat is bi_s_ga within 1e-5, below the 16-bit steps (1.5e-5) of the cached views the
    # cell was scored on: far too little to move a prediction, so the frozen model scores its cell.
    _, store = synthesis
    run = run_mode(tmp_path, "mode=forensics", f"forensics.checkpoint={synthesis_checkpoint(store, 0)}",
                   "forensics.epochs=1")  # fmt: skip
    result = run.json("forensics/result.json")
    assert (result["task_model"]["pipeline"], result["task_model"]["fold"]) == ("bi_s_ga", 0)
    assert result["metric_before"] == pytest.approx(cell_metric(store, 0), abs=1e-6)
    assert not list((run.outputs / "results").glob("task-model-*.pt"))  # nothing trained here


def test_checkpoint_of_another_fold_is_evaluated_on_its_own_held_out_images(run_mode, synthesis, tmp_path):
    _, store = synthesis
    result = run_mode(tmp_path, "mode=forensics", f"forensics.checkpoint={synthesis_checkpoint(store, 1)}",
                      "forensics.epochs=1").json("forensics/result.json")  # fmt: skip
    assert result["metric_before"] == pytest.approx(cell_metric(store, 1), abs=1e-6)


def test_from_run_loads_the_synthesis_model(run_mode, synthesis, tmp_path, mlflow_isolation):
    from mlflow.tracking import MlflowClient

    run, store = synthesis
    client = MlflowClient(tracking_uri=f"sqlite:///{run.outputs}/mlflow.db")
    experiment = client.get_experiment_by_name("raw2logit")
    children = [
        r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags
    ]
    (child,) = [
        r for r in children if r.data.params.get("train") == "bi_s_ga" and r.data.params.get("fold") == "0"
    ]
    with mlflow_isolation():
        forensics_run = run_mode(tmp_path, "mode=forensics", f"forensics.from_run={child.info.run_id}",
                                 "forensics.epochs=1", outputs=run.outputs, tracking=True)  # fmt: skip
    result = forensics_run.json("forensics/result.json")
    assert (result["task_model"]["pipeline"], result["task_model"]["fold"]) == ("bi_s_ga", 0)
    assert result["metric_before"] == pytest.approx(cell_metric(store, 0), abs=1e-6)


def test_checkpoint_of_another_task_is_refused(run_mode, segmentation, tmp_path):
    run, _ = segmentation
    (drone_model,) = (run.outputs / "results").glob("task-model-sim_drone-*.pt")
    with pytest.raises(InputError, match=re.escape(str(drone_model))) as refused:
        run_mode(tmp_path, "mode=forensics", f"forensics.checkpoint={drone_model}")
    assert "segmentation" in str(refused.value) and "classification" in str(refused.value)


def test_missing_checkpoint_is_refused(run_mode, tmp_path):
    missing = tmp_path / "models" / "no_such_model.pt"
    with pytest.raises(InputError, match=re.escape(str(missing))):
        run_mode(tmp_path, "mode=forensics", f"forensics.checkpoint={missing}")


# -- sweeps and bad input ----------------------------------------------------------------------


@pytest.mark.slow
def test_lambda_by_target_multirun_writes_the_signature(run_multirun, tmp_path):
    sweep = run_multirun(tmp_path, "mode=forensics", "lambda=1,0.001", "forensics.target=all,gamma",
                         "epochs=5", "forensics.epochs=2")  # fmt: skip
    folder = sweep / "forensics"
    signature = json.loads((folder / "signature.json").read_text())
    assert sorted(signature["targets"]) == ["all", "gamma"]
    for runs in signature["targets"].values():
        assert sorted(run["lambda"] for run in runs) == [0.001, 1]
    assert signature["ranking"] == ["gamma"]  # "all" is a reference curve, not a group to rank
    assert list(signature["limitations_of_use"]) == ["gamma"]
    limits = signature["limitations_of_use"]["gamma"]
    assert np.all(np.asarray(limits["safe_min"]) <= limits["theta_stat"])  # θ_stat itself is safe
    assert np.all(np.asarray(limits["safe_max"]) >= limits["theta_stat"])
    assert "## Ranges within which the model keeps its performance" in (folder / "signature.md").read_text()
    assert (folder / "signature.png").read_bytes().startswith(PNG)
    summary = json.loads((sweep / "summary.json").read_text())
    assert (summary["mode"], summary["runs"], summary["ranking"]) == ("forensics", 4, ["gamma"])


@pytest.mark.parametrize(
    ("override", "value"),
    [("lambda=-1", "-1"), ("forensics.target=exposure", "exposure"), ("forensics.regulariser=l1", "l1")],
)
def test_bad_forensics_settings_name_the_value(run_mode, tmp_path, override, value):
    with pytest.raises(InputError, match=re.escape(value)):
        run_mode(tmp_path, "mode=forensics", override)
    assert not (tmp_path / "outputs" / "results").exists()  # refused before any training
