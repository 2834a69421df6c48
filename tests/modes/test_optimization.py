"""``mode=optimization`` end to end (paper §5.3, Fig. 7, Table 2) on tiny simulated data.

The parametrized data model is trained with the task model (``learn=true``) or kept at θ_stat
(``learn=false``); ``raw`` and ``nn`` train the task model on the packed mosaic or behind a small
learned processor. 18 training images in batches of 12 make 2 optimisation steps an epoch.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from raw2logit.errors import InputError
from raw2logit.isp import THETA_GROUPS, ParametrizedPipeline, static_theta

PNG = b"\x89PNG\r\n\x1a\n"
EPOCHS, VAL_EVERY = 3, 4
PARAMETRIZED = (
    "mode=optimization",
    "data_model=parametrized",
    f"epochs={EPOCHS}",
    f"optimization.val_every={VAL_EVERY}",
)


@pytest.fixture(scope="module")
def dataset(build_dataset):
    return build_dataset()


@pytest.fixture(scope="module")
def learned(run_mode, tmp_path_factory):
    return run_mode(tmp_path_factory.mktemp("learned"), *PARAMETRIZED, "data_model.learn=true")


@pytest.fixture(scope="module")
def frozen(run_mode, tmp_path_factory):
    return run_mode(tmp_path_factory.mktemp("frozen"), *PARAMETRIZED, "data_model.learn=false")


def history_of(run) -> pd.DataFrame:
    return pd.read_csv(run.run_dir / "optimization" / "history.csv")


def max_change(theta: dict, reference: dict) -> float:
    return max(
        float(np.max(np.abs(np.asarray(theta[g], float) - np.asarray(reference[g], float))))
        for g in THETA_GROUPS
    )


# -- θ learned or frozen ---------------------------------------------------------------------------


def test_learned_theta_moves_away_from_theta_stat(learned, dataset):
    theta = learned.json("optimization/theta.json")["theta"]
    assert learned.summary["setting"] == "learned (I=1)" and learned.summary["learn"] is True
    assert max_change(theta, ParametrizedPipeline(dataset.camera).theta_dict()) > 1e-4


def test_frozen_theta_stays_bit_identical_to_theta_stat(frozen, dataset):
    theta_stat = ParametrizedPipeline(dataset.camera).theta_dict()
    assert frozen.summary["setting"] == "frozen (I=1)" and frozen.summary["learn"] is False
    assert frozen.json("optimization/theta.json")["theta"] == theta_stat
    for group, value in static_theta(dataset.camera).items():
        assert np.array_equal(np.asarray(theta_stat[group]).reshape(-1), value.numpy().reshape(-1)), group
    for snapshots in frozen.json("optimization/theta_history.json").values():
        assert all(snapshot["theta"] == theta_stat for snapshot in snapshots)


# -- artifacts -------------------------------------------------------------------------------------


def test_history_curves_and_table2_are_written(learned, dataset):
    from raw2logit.data.splits import kfold_splits

    history = history_of(learned)
    assert list(history.columns) == ["step", "setting", "fold", "metric"]
    assert set(history["setting"]) == {"learned (I=1)"}
    assert sorted(history["fold"].unique()) == [0, 1]
    for fold, (train_index, _) in enumerate(kfold_splits(dataset, 2, 0)):
        steps = EPOCHS * math.ceil(len(train_index) / 12)
        expected = sorted({0, *range(VAL_EVERY, steps + 1, VAL_EVERY), steps})  # start, every N steps, end
        assert history[history["fold"] == fold]["step"].tolist() == expected, fold
    assert history["metric"].between(0, 1).all()
    assert (learned.run_dir / "optimization" / "curves.png").read_bytes().startswith(PNG)
    summary = learned.json("summary.json")
    assert summary == learned.summary
    assert (summary["mode"], summary["metric"], summary["folds"]) == ("optimization", "accuracy", [0, 1])
    stats = summary["table2"]["learned (I=1)"]
    metric = history["metric"].to_numpy()
    assert stats["mean"] == pytest.approx(metric.mean())
    assert stats["std"] == pytest.approx(metric.std())
    assert (stats["points"], stats["folds"]) == (len(history), 2)
    final = history.sort_values("step").groupby("fold")["metric"].last()
    assert stats["final_mean"] == pytest.approx(final.mean())


def test_exported_theta_reloads_and_reproduces_the_learned_views(learned, dataset):
    from raw2logit.data.dataset import RawInputs

    folder = learned.run_dir / "optimization"
    last = learned.json("optimization/theta_history.json")["0"][-1]
    assert last["step"] == history_of(learned).query("fold == 0")["step"].max()
    assert json.loads((folder / "theta.json").read_text())["theta"] == last["theta"]
    assert (folder / "theta.json").read_text() == (folder / "theta_fold0.json").read_text()
    raw = RawInputs(dataset)[np.arange(4)]
    with torch.no_grad():
        reloaded = ParametrizedPipeline.from_theta_json(folder / "theta.json")(raw)
        snapshot = ParametrizedPipeline(dataset.camera).load_theta(last["theta"])(raw)
        initial = ParametrizedPipeline(dataset.camera)(raw)
    assert torch.equal(reloaded, snapshot)
    assert not torch.equal(reloaded, initial)


def test_theta_file_is_the_initial_theta_of_a_later_run(run_mode, learned, tmp_path):
    exported = learned.run_dir / "optimization" / "theta.json"
    later = run_mode(tmp_path, "mode=optimization", "data_model=parametrized", f"data_model.theta={exported}",
                     "data_model.learn=false")  # fmt: skip
    theta = json.loads(exported.read_text())["theta"]
    assert later.json("optimization/theta.json")["theta"] == theta
    for snapshots in later.json("optimization/theta_history.json").values():
        assert snapshots[0]["step"] == 0 and snapshots[0]["theta"] == theta


def test_the_tone_curve_is_learned_with_the_task_model(run_mode, tmp_path, dataset):
    run = run_mode(tmp_path, *PARAMETRIZED, "data_model.learn=true", "data_model.tone_curve=curve")
    exported = run.json("optimization/theta.json")
    assert exported["tone_curve"] == "curve"
    start = ParametrizedPipeline(dataset.camera, tone_curve="curve").theta_dict()
    assert np.abs(np.asarray(exported["theta"]["curve"]) - np.asarray(start["curve"])).max() > 1e-4
    assert exported["theta"]["gamma"] == start["gamma"]  # the power curve's γ does not act


# -- other data models ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_model", "setting"), [("raw", "direct raw (I=1)"), ("nn", "learned U-Net (I=1)")]
)
def test_raw_and_nn_data_models_train_and_evaluate(run_mode, tmp_path, data_model, setting):
    run = run_mode(tmp_path, "mode=optimization", f"data_model={data_model}")
    history = history_of(run)
    assert sorted(history["fold"].unique()) == [0, 1]
    assert set(history["setting"]) == {setting}
    assert all(history.groupby("fold")["step"].max() > 0)  # trained, then validated
    assert np.isfinite(history["metric"]).all() and history["metric"].between(0, 1).all()
    assert (run.summary["data_model"], run.summary["setting"]) == (data_model, setting)
    assert list(run.summary["table2"]) == [setting]
    assert not (run.run_dir / "optimization" / "theta.json").exists()  # no θ to export


def test_low_intensity_trains(run_mode, tmp_path):
    run = run_mode(tmp_path, "mode=optimization", "data_model=parametrized", "dataset.intensity=0.01")
    assert run.summary["intensity"] == pytest.approx(0.01)
    assert run.summary["setting"] == "learned (I=0.01)"
    history = history_of(run)
    assert np.isfinite(history["metric"]).all() and history["metric"].between(0, 1).all()
    theta = run.json("optimization/theta.json")["theta"]
    assert all(np.isfinite(np.asarray(theta[group], float)).all() for group in THETA_GROUPS)


def test_static_data_model_is_refused(run_mode, tmp_path):
    with pytest.raises(InputError, match=re.escape("use data_model=parametrized or raw or nn (got static)")):
        run_mode(tmp_path, "mode=optimization", "data_model=static")


# -- sweep -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_learn_multirun_writes_the_comparison(run_multirun, tmp_path):
    sweep = run_multirun(
        tmp_path, "mode=optimization", "data_model=parametrized", "data_model.learn=true,false"
    )
    folder = sweep / "optimization"
    comparison = pd.read_csv(folder / "comparison.csv", index_col="setting")
    assert sorted(comparison.index) == ["frozen (I=1)", "learned (I=1)"]
    assert {"mean", "std", "final_mean", "final_std", "folds", "points"} <= set(comparison.columns)
    assert comparison["mean"].between(0, 1).all()
    assert (folder / "comparison.png").read_bytes().startswith(PNG)
    summary = json.loads((sweep / "summary.json").read_text())
    assert (summary["mode"], sorted(summary["table2"])) == ("optimization", ["frozen (I=1)", "learned (I=1)"])
