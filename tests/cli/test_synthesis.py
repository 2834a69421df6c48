"""mode=synthesis end to end on tiny simulated data: artifacts, MLflow, resume, interruption, multirun."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psutil
import pytest
import torch

from raw2logit.errors import InputError
from tests.cli.conftest import ROOT, TINY, compose_config, run_cli

SMALL = ["synthesis.train=[bi_s_me,me_u_ga]", "synthesis.test=[bi_s_me,ma_s_ga,me_u_ga]",
         "synthesis.corruptions=[gaussian_noise,contrast]"]  # fmt: skip


def test_synthesis_writes_the_matrix_artifacts_and_mlflow_runs(run_mode, tmp_path):
    summary, run_dir = run_mode(SMALL, tracking=True)
    folder = run_dir / "synthesis"
    matrix = pd.read_csv(folder / "matrix.csv", index_col="train")
    std = pd.read_csv(folder / "matrix_std.csv", index_col="train")
    assert list(matrix.index) == ["bi_s_me", "me_u_ga"] and list(matrix.columns) == [
        "bi_s_me",
        "ma_s_ga",
        "me_u_ga",
    ]
    assert (
        matrix.shape == std.shape and ((matrix >= 0) & (matrix <= 1)).all().all() and (std >= 0).all().all()
    )
    corruptions = pd.read_csv(folder / "corruptions.csv", index_col="train")
    assert list(corruptions.columns) == ["clean", "gaussian_noise", "contrast"]
    ranking = pd.read_csv(folder / "ranking.csv", index_col="train")
    assert list(ranking["rank"]) == [1, 2] and ranking["average"].is_monotonic_decreasing
    assert np.allclose(ranking.loc[matrix.index, "average"], matrix.mean(axis=1))
    for name in ("heatmap.png", "best_train_per_test.csv"):
        assert (folder / name).stat().st_size > 0
    # Cells: one per train pipeline x fold, and the matrix is their mean over folds.
    cells = sorted(folder.glob("cells/*/fold*.json"))
    assert len(cells) == 4
    values = [json.loads(p.read_text())["test"]["ma_s_ga"] for p in cells if p.parent.name == "bi_s_me"]
    assert matrix.loc["bi_s_me", "ma_s_ga"] == pytest.approx(np.mean(values))
    # The summary reports train -> test under ISP drift and under corruptions, as the paper does.
    diagonal = np.mean([matrix.loc[t, t] for t in matrix.index])
    assert summary["isp"]["train"] == pytest.approx(diagonal)
    assert summary["corruptions"]["severity"] == 3 and summary["mode"] == "synthesis"
    assert json.loads((run_dir / "summary.json").read_text())["isp"] == summary["isp"]
    assert (run_dir / "report.html").exists() and (run_dir / "stages.png").exists()
    assert json.loads((run_dir / "run.json").read_text())["seed"] == 0
    # MLflow: one parent run with the artifacts, a child run per train pipeline x fold.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("raw2logit").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 4
    assert parents[0].info.status == "FINISHED" and "isp_train" in parents[0].data.metrics
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id)} >= {
        "synthesis",
        "summary.json",
        "report.html",
    }
    assert "test.ma_s_ga" in children[0].data.metrics and "corruption.contrast" in children[0].data.metrics


def test_rerun_skips_finished_cells_and_reproduces_them(run_mode, tmp_path, capsys):
    _first, first_dir = run_mode(SMALL, "first")
    store = tmp_path / "outputs" / "results"
    (cell,) = store.glob("synthesis-*/synthesis/cells/me_u_ga/fold1.json")
    kept = json.loads(cell.read_text())
    cell.unlink()  # as if the run had been interrupted during this cell
    capsys.readouterr()
    _second, second_dir = run_mode(SMALL, "second")
    output = capsys.readouterr().out
    assert output.count("done in an earlier run, skipped") == 3
    redone = json.loads(cell.read_text())
    assert redone["test"] == kept["test"] and redone["corruptions"] == kept["corruptions"]  # deterministic
    pd.testing.assert_frame_equal(pd.read_csv(first_dir / "synthesis" / "matrix.csv"),
                                  pd.read_csv(second_dir / "synthesis" / "matrix.csv"))  # fmt: skip


def mlflow_runs(outputs):
    """(parent runs, child runs) of the ``raw2logit`` experiment in the local store under ``outputs``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("raw2logit").experiment_id])
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags], [
        r for r in runs if "mlflow.parentRunId" in r.data.tags
    ]


@pytest.mark.parametrize(
    ("overrides", "threads", "pending", "expected"),
    [([], 2, 24, 2), ([], 2, 1, 1), ([], 64, 100, 8), (["trainer=gpu"], 16, 24, 1), (["trainer=ddp"], 16, 24, 1),
     (["synthesis.workers=3"], 1, 24, 3), (["synthesis.workers=3"], 1, 2, 2), (["synthesis.workers=1"], 16, 24, 1)],
)  # fmt: skip
def test_how_many_processes_compute_the_cells(overrides, threads, pending, expected):
    """auto: one process per torch thread on CPU (at most 8), one on a GPU or under DDP; never more than
    the cells left to compute."""
    from raw2logit.modes.synthesis import resolve_workers

    cfg = compose_config(overrides)
    torch.set_num_threads(threads)  # the fixture one_thread restores it
    assert resolve_workers(cfg, pending) == expected


def test_helper_processes_share_the_cells(run_mode, tmp_path):
    """synthesis.workers=2: each cell is computed and logged once (one FINISHED MLflow child), and is the
    same cell as a run alone computes. (These cells take a second: the helper may start after the run
    has done them all; test_interrupted_run_stops_its_helpers_and_resumes sees both processes train at once.)"""
    cells = ["synthesis.train=[bi_s_me,ma_u_ga,me_s_ga]", "synthesis.test=[bi_s_me,me_s_ga]",
             "synthesis.corruptions=[contrast]", "epochs=6"]  # fmt: skip
    summary, run_dir = run_mode([*cells, "synthesis.workers=2"], tracking=True)
    log = (run_dir / "run.log").read_text()
    assert "cells computed by 2 processes of 1 torch thread(s) each" in log and "helper process" not in log
    (parent,), children = mlflow_runs(tmp_path / "outputs")
    assert parent.info.status == "FINISHED" and summary["cells"] == 6
    assert sorted(
        (r.data.tags["raw2logit.train_pipeline"], r.data.tags["raw2logit.fold"]) for r in children
    ) == [(train, fold) for train in ("bi_s_me", "ma_u_ga", "me_s_ga") for fold in ("0", "1")]
    assert {r.info.status for r in children} == {"FINISHED"}
    # Each cell is seeded on its own: the same numbers whichever process computed it.
    _, alone_dir = run_mode([*cells, "synthesis.workers=1", "resume=never", "synthesis.train=[me_s_ga]", "fold=1"],
                                name="alone")  # fmt: skip
    together = json.loads((run_dir / "synthesis/cells/me_s_ga/fold1.json").read_text())
    single = json.loads((alone_dir / "synthesis/cells/me_s_ga/fold1.json").read_text())
    assert (together["test"], together["corruptions"]) == (single["test"], single["corruptions"])


def test_a_helper_stopped_as_it_exits_prints_no_traceback(tmp_path, shared_data):
    """At the end of a normal run the run stops its helpers with SIGTERM, which may reach a helper that
    is already exiting: it must end quietly, not raise KeyboardInterrupt in the interpreter's exit
    handlers (a traceback on the user's console). Here the helper finds no cells (its order pipe is
    closed) and the SIGTERM arrives from an exit handler, every time."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(compose_config([*TINY, f"paths.data={shared_data}"]), resolve=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    script = f"""
import atexit, json, os, signal
from multiprocessing import Pipe
from raw2logit.modes.synthesis import cell_worker
orders, sender = Pipe(duplex=False)
sender.close()
atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))
cell_worker(json.load(open({str(tmp_path / "config.json")!r})), {str(tmp_path)!r}, orders)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr
    assert done.returncode == -signal.SIGTERM, (done.returncode, done.stderr)


def test_interrupted_run_stops_its_helpers_and_resumes(tmp_path):
    """SIGTERM while the run and its helper process both train a cell: exit 130, the run and both cells'
    MLflow runs end KILLED (none left RUNNING), the helper is gone, finished cells stay; a re-run
    completes the rest as its own FINISHED run naming the run it continues.

    The images are larger than elsewhere so that a cell trains for seconds and the signal lands in it.
    """
    args = ["dataset.num_images=60", "dataset.size=64", "folds=2", "batch_size=12", "epochs=20",
            "synthesis.train=[bi_s_me,bi_u_ga]", "synthesis.test=[bi_s_me]", "synthesis.corruptions=none",
            "synthesis.workers=2", f"paths.outputs={tmp_path / 'outputs'}", f"hydra.run.dir={tmp_path / 'first'}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    process = subprocess.Popen([sys.executable, "run.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    lines, training, deadline = [], set(), time.time() + 300
    for line in process.stdout:
        lines.append(line)
        cell = line.strip().split(" epoch ")[0].split(":")[0]
        if "epoch 2/" in line:
            training.add(cell)
        elif "on own pipeline" in line:
            training.discard(cell)
        if len(training) == 2:  # two cells train at once: the run's and the helper's
            process.send_signal(signal.SIGTERM)
            break
        assert time.time() < deadline, "".join(lines)
    output = "".join(lines) + process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    assert "interrupted: finished results are kept" in output and "Traceback" not in output
    helper = int(re.search(r"and helper (\d+)", output).group(1))
    assert not psutil.pid_exists(helper) or psutil.Process(helper).status() == psutil.STATUS_ZOMBIE
    (parent,), children = mlflow_runs(tmp_path / "outputs")
    statuses = sorted(r.info.status for r in children)  # a cell may have finished before the signal
    assert parent.info.status == "KILLED" and statuses.count("KILLED") == 2 and "RUNNING" not in statuses
    store = next((tmp_path / "outputs" / "results").glob("synthesis-*"))
    kept = sorted(store.glob("synthesis/cells/*/*.json"))
    assert len(kept) == statuses.count("FINISHED")

    resumed = run_cli([*args[:-1], f"hydra.run.dir={tmp_path / 'second'}"], env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("done in an earlier run, skipped") == len(kept)
    assert len(list(store.glob("synthesis/cells/*/*.json"))) == 4
    parents, children = mlflow_runs(tmp_path / "outputs")
    assert len([r for r in children if r.info.status == "FINISHED"]) == 4  # killed ones go to MLflow's trash
    # The killed run stays KILLED (what happened); the resumed invocation is its own FINISHED run that
    # names the run it continues.
    (continued,) = [r for r in parents if r.info.run_id != parent.info.run_id]
    assert continued.data.tags.get("raw2logit.continues") == parent.info.run_id
    assert continued.info.status == "FINISHED" and {r.info.status for r in parents} == {"KILLED", "FINISHED"}
    matrix = pd.read_csv(tmp_path / "second" / "synthesis" / "matrix.csv", index_col="train")
    assert list(matrix.index) == ["bi_s_me", "bi_u_ga"]


def test_two_job_multirun_assembles_the_matrix(tmp_path, shared_data):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", "hydra/launcher=local", *TINY, "synthesis.train=bi_s_me,ma_u_ga", "fold=0",
                      "synthesis.test=[bi_s_me,ma_u_ga]", "synthesis.corruptions=none",
                      f"paths.outputs={tmp_path / 'outputs'}", f"paths.data={shared_data}", "tracking.enabled=false",
                      f"hydra.sweep.dir={sweep}"])  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "synthesis"]
    matrix = pd.read_csv(sweep / "synthesis" / "matrix.csv", index_col="train")
    assert list(matrix.index) == ["bi_s_me", "ma_u_ga"] and list(matrix.columns) == ["bi_s_me", "ma_u_ga"]
    for job in ("0", "1"):  # each job ran one train pipeline
        assert len(list((sweep / job / "synthesis" / "cells").glob("*/*.json"))) == 1
    assert json.loads((sweep / "summary.json").read_text())["cells"] == 2
    assert (sweep / "report.html").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [("synthesis.train=[bi_s_xx]", "synthesis.train must be 'all' or a non-empty list of pipeline names among bi_s_me"),
     ("synthesis.severity=6", "synthesis.severity must be an integer from 1 to 5; got 6"),
     ("folds=1", "folds must be an integer of at least 2"),
     ("synthesis.corruptions=[fog]", "synthesis.corruptions must be 'all', 'none' or a list of names among"),
     ("data_model=parametrized", "use data_model=static"),
     ("fold=5", "fold must be empty or an integer from 0 to 1")],
)  # fmt: skip
def test_bad_synthesis_settings_are_one_sentence(run_mode, override, message):
    with pytest.raises(InputError, match=message):
        run_mode(
            ["synthesis.train=[bi_s_me]", "synthesis.test=[bi_s_me]", "synthesis.corruptions=none", override]
        )


def test_calibrated_pipeline_as_a_test_column(run_mode):
    """Issue 8 end to end: calibrate (simulated device), then use the fitted file as a synthesis column."""
    calibration, calibrate_dir = run_mode(["mode=calibrate", "calibrate.steps=40", "calibrate.num_pairs=4",
                                           "calibrate.variants=[me_s_ga,bi_s_ga]"], "calibrate")  # fmt: skip
    assert calibration["variant"] == "me_s_ga"
    device = calibrate_dir / "calibrate" / "device.json"
    device.write_text((calibrate_dir / "calibrate" / "pipeline.json").read_text())
    _summary, run_dir = run_mode(["synthesis.train=[bi_s_me]", f"synthesis.test=[bi_s_me,calibrated:{device}]",
                                 "synthesis.corruptions=none"], "synthesis")  # fmt: skip
    matrix = pd.read_csv(run_dir / "synthesis" / "matrix.csv", index_col="train")
    assert list(matrix.columns) == ["bi_s_me", "calibrated:device"]
    # The same file as the initial θ of the parametrized data model (forensics' θ_stat, optimization's start).
    theta = json.loads(device.read_text())["theta"]
    _, forensics_dir = run_mode(["mode=forensics", "forensics.epochs=1", "data_model=parametrized",
                                 f"data_model.theta=calibrated:{device}"], "forensics")  # fmt: skip
    assert json.loads((forensics_dir / "forensics" / "result.json").read_text())["theta_before"] == theta
    _, optimization_dir = run_mode(["mode=optimization", "data_model=parametrized", "data_model.learn=false",
                                    f"data_model.theta=calibrated:{device}"], "optimization")  # fmt: skip
    exported = json.loads((optimization_dir / "optimization" / "theta.json").read_text())
    assert exported["theta"] == theta and exported["variant"] == "me_s_ga"
    with pytest.raises(InputError, match=r"missing\.json"):
        run_mode(
            ["synthesis.train=[bi_s_me]", f"synthesis.test=[calibrated:{device.parent / 'missing.json'}]"]
        )


def test_calibrate_with_the_flexible_tone_curve_exports_and_reloads(run_mode):
    """Issue 15, item 1: calibrate.tone_curve=curve fits the knots; the file is a synthesis column and the
    parametrized data model's start (its curve group then moves in optimization)."""
    calibration, calibrate_dir = run_mode(["mode=calibrate", "calibrate.steps=20", "calibrate.num_pairs=4",
                                           "calibrate.variants=[me_s_ga]", "calibrate.tone_curve=curve"], "calibrate")  # fmt: skip
    pipeline = calibrate_dir / "calibrate" / "pipeline.json"
    document = json.loads(pipeline.read_text())
    assert document["tone_curve"] == "curve" and np.shape(document["theta"]["curve"]) == (3, 17)
    assert json.loads((calibrate_dir / "calibrate" / "fit.json").read_text())["tone_curve"] == "curve"
    assert calibration["psnr"] > calibration["initial_psnr"]
    _summary, run_dir = run_mode(["synthesis.train=[bi_s_me]", f"synthesis.test=[bi_s_me,calibrated:{pipeline}]",
                                 "synthesis.corruptions=none"], "synthesis")  # fmt: skip
    assert list(pd.read_csv(run_dir / "synthesis" / "matrix.csv", index_col="train").columns) == [
        "bi_s_me",
        "calibrated:pipeline",
    ]
    _, optimization_dir = run_mode(["mode=optimization", "data_model=parametrized", "data_model.learn=true",
                                    f"data_model.theta=calibrated:{pipeline}"], "optimization")  # fmt: skip
    exported = json.loads((optimization_dir / "optimization" / "theta.json").read_text())
    assert exported["tone_curve"] == "curve" and exported["theta"]["curve"] != document["theta"]["curve"]


def test_libraw_columns_are_computed_once_and_reported_apart(run_mode):
    """Issue 15: LibRaw's processing as drift, beside the data models; its views are cached like theirs."""
    pytest.importorskip("rawpy")
    overrides = ["synthesis.train=[bi_s_me]", "synthesis.test=[bi_s_me,libraw:ahd,libraw:LINEAR]",
                 "synthesis.corruptions=none"]  # fmt: skip
    summary, run_dir = run_mode(overrides, "libraw")
    matrix = pd.read_csv(run_dir / "synthesis" / "matrix.csv", index_col="train")
    assert list(matrix.columns) == ["bi_s_me", "libraw:AHD", "libraw:LINEAR"]
    assert summary["libraw"]["algorithms"] == ["libraw:AHD", "libraw:LINEAR"]
    assert summary["libraw"]["test"] == pytest.approx(
        matrix.loc["bi_s_me", ["libraw:AHD", "libraw:LINEAR"]].mean()
    )
    assert summary["isp"]["test"] is None  # the data models' own drift leaves LibRaw out
    cache = run_dir.parent / "outputs" / "cache" / "views"
    cached = sorted(p.name for p in cache.rglob("libraw-*.npy"))
    assert len(cached) == 2 and cached[0].startswith("libraw-AHD-")
    stamps = [p.stat().st_mtime_ns for p in sorted(cache.rglob("libraw-*.npy"))]
    run_mode([*overrides[:1], "synthesis.test=[libraw:LINEAR]", "synthesis.corruptions=none"], "again")
    assert [p.stat().st_mtime_ns for p in sorted(cache.rglob("libraw-*.npy"))] == stamps  # not recomputed


@pytest.mark.parametrize(
    ("value", "message"),
    [("[libraw:FANCY]", r"synthesis\.test must be 'all' or a non-empty list .*libraw:<algorithm> with one of AHD"),
     ("[all+libraw,bi_s_me]", r"synthesis\.test must be .* or 'all\+libraw' alone; got \['all\+libraw', 'bi_s_me'\]")],
)  # fmt: skip
def test_bad_libraw_names_are_one_sentence(run_mode, value, message):
    with pytest.raises(InputError, match=message):
        run_mode(["synthesis.train=[bi_s_me]", f"synthesis.test={value}", "synthesis.corruptions=none"])


def test_an_algorithm_the_installed_libraw_lacks_is_one_sentence(run_mode):
    """Issue 15, item 5: the sentence names the algorithm, the pack it needs and the available ones."""
    pytest.importorskip("rawpy")
    from raw2logit.names import LIBRAW_ALGORITHMS, libraw_available_algorithms

    available = libraw_available_algorithms()
    missing = [name for name in LIBRAW_ALGORITHMS if name not in available]
    if not missing:
        pytest.skip("this LibRaw has every demosaic algorithm")
    message = (rf"^synthesis\.test: LibRaw demosaic algorithm {missing[-1]} is not in the installed LibRaw [0-9.]+ "
               rf"\(it needs LibRaw's GPL[23] demosaic pack\); available: {', '.join(available)}\.$")  # fmt: skip
    with pytest.raises(InputError, match=message):
        run_mode(["synthesis.train=[bi_s_me]", f"synthesis.test=[bi_s_me,libraw:{missing[-1].lower()}]"])


def test_numpy_backend_runs_the_reference(run_mode):
    """data_model.backend=numpy computes the views with the numpy oracle (colour-demosaicing, scipy, skimage)."""
    summary, run_dir = run_mode(["data_model.backend=numpy", "synthesis.train=[ma_u_ga]", "synthesis.test=[ma_u_ga]",
                                 "synthesis.corruptions=none"])  # fmt: skip
    assert summary["train_pipelines"] == ["ma_u_ga"]
    assert any("-numpy-" in p.name for p in (run_dir.parent / "outputs" / "cache" / "views").iterdir())


@pytest.mark.slow
def test_the_main_job_is_informative(tmp_path):
    """``python run.py`` as a newcomer runs it: the diagonal learns without saturating and drift shows."""
    result = run_cli(
        [f"paths.outputs={tmp_path / 'outputs'}", f"hydra.run.dir={tmp_path / 'run'}"], timeout=1200
    )
    assert result.returncode == 0, result.stderr[-3000:]
    matrix = pd.read_csv(tmp_path / "run" / "synthesis" / "matrix.csv", index_col="train")
    diagonal = pd.Series({t: matrix.loc[t, t] for t in matrix.index})
    assert matrix.shape == (12, 12) and 0.5 <= diagonal.mean() <= 0.97
    assert matrix.rsub(diagonal, axis=0).to_numpy().max() >= 0.03


@pytest.mark.slow
def test_the_drone_quick_run_learns(run_mode):
    """``dataset=sim_drone`` at its defaults, one train pipeline per demosaicing: the U-Net learns the
    cars (IoU at least 0.5 on its own pipeline) and no row's diagonal falls below its mean over the
    other test pipelines (the quick run's matrix measures drift, not noise)."""
    train = ["bi_s_me", "ma_u_ga", "me_s_ga"]
    summary, run_dir = run_mode(
        ["dataset=sim_drone", f"synthesis.train=[{','.join(train)}]", "synthesis.corruptions=none"], base=[]
    )
    matrix = pd.read_csv(run_dir / "synthesis" / "matrix.csv", index_col="train")
    assert list(matrix.index) == train and matrix.shape == (3, 12)
    diagonal = pd.Series({t: matrix.loc[t, t] for t in train})
    others = pd.Series({t: matrix.loc[t].drop(t).mean() for t in train})
    print(f"diagonal {diagonal.round(3).to_dict()}, others {others.round(3).to_dict()}")
    assert diagonal.mean() >= 0.5 and summary["isp"]["train"] == pytest.approx(diagonal.mean())
    assert (diagonal >= others).all()
