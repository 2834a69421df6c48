"""Hostile and careless input (issue 16): files that name code, the network, non-finite numbers,
MLflow records that must stay true, and bad values that must end in one sentence and exit status 2.

Command-line cases run ``python run.py`` as a user does; config errors come back in about a second
because the config is checked before torch is imported. In-process cases call ``raw2logit.cli``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from raw2logit.errors import InputError
from tests.cli.conftest import ROOT, TINY, compose_config, run_cli

SYNTHESIS = [
    "synthesis.train=[bi_s_me,ma_u_ga]",
    "synthesis.test=[bi_s_me,ma_u_ga]",
    "synthesis.corruptions=[shot_noise]",
]


def one_sentence_exit_2(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2, one ``error: ...`` line on stderr naming ``fragments``, no traceback anywhere."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def cli(tmp_path, shared_data):
    """``cli(*overrides)``: ``python run.py`` on tiny data, outputs and run folder under tmp_path."""

    def run(*overrides, name="run", timeout=600, env=None):
        other_data = any(o.startswith("dataset=") and o != "dataset=sim_microscopy" for o in overrides)
        tiny = TINY if not other_data else [o for o in TINY if not o.startswith("dataset.")]
        return run_cli([*tiny, f"paths.outputs={tmp_path / 'outputs'}", f"paths.data={shared_data}",
                        "tracking.enabled=false", f"hydra.run.dir={tmp_path / name}", *overrides],
                       timeout=timeout, env=env)  # fmt: skip

    return run


# -- reading a file never runs what it names -------------------------------------------------------


def crafted_checkpoints(tmp_path, marker):
    """Checkpoints whose task model spec names ``pathlib.Path.touch`` (at the top, or nested in an argument)."""
    from raw2logit.tasks.models import SmallCNN

    state = SmallCNN(num_classes=6).state_dict()
    touch = {"_target_": "pathlib.Path.touch", "self": str(marker)}
    specs = {"top": touch, "nested": {"_target_": "raw2logit.tasks.models.SmallCNN", "width": touch}}
    paths = {}
    for name, spec in specs.items():
        paths[name] = tmp_path / f"{name}.pt"
        torch.save({"state_dict": state, "task": "classification", "num_classes": 6, "task_model": spec,
                    "normalisation": None}, paths[name])  # fmt: skip
    return paths


def test_a_checkpoint_naming_a_function_runs_nothing(tmp_path, shared_data):
    from raw2logit.modes.common import build_dataset
    from raw2logit.tasks.checkpoints import load_task_checkpoint

    marker = tmp_path / "touched"
    dataset = build_dataset(compose_config([*TINY, f"paths.data={shared_data}"]))
    for path in crafted_checkpoints(tmp_path, marker).values():
        with pytest.raises(InputError, match=r"names nothing that is run|not a plain value"):
            load_task_checkpoint(path, dataset)
    assert not marker.exists()


def test_a_checkpoint_without_a_width_loads_at_the_width_it_was_saved_with(tmp_path, shared_data):
    """Checkpoints whose spec left ``width`` unset were saved at the default of their day (16 before
    it became 8): they load at the width of their weights, and a spec naming a wrong width is still
    refused in one sentence."""
    from raw2logit.modes.common import build_dataset
    from raw2logit.tasks.checkpoints import load_task_checkpoint
    from raw2logit.tasks.models import SmallCNN

    dataset = build_dataset(compose_config([*TINY, f"paths.data={shared_data}"]))
    saved = SmallCNN(num_classes=dataset.num_classes, width=16)
    for name, spec in {"unset": {"_target_": "raw2logit.tasks.models.small", "width": None},
                       "absent": {"_target_": "raw2logit.tasks.models.small"}}.items():  # fmt: skip
        path = tmp_path / f"{name}.pt"
        torch.save({"state_dict": saved.state_dict(), "task": dataset.task, "num_classes": dataset.num_classes,
                    "task_model": spec, "normalisation": None}, path)  # fmt: skip
        model, _, _ = load_task_checkpoint(path, dataset)
        assert model.features[0][0].out_channels == 16
        for key, value in saved.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
    path = tmp_path / "wrong.pt"
    torch.save({"state_dict": saved.state_dict(), "task": dataset.task, "num_classes": dataset.num_classes,
                "task_model": {"_target_": "raw2logit.tasks.models.small", "width": 8},
                "normalisation": None}, path)  # fmt: skip
    with pytest.raises(InputError, match=r"does not fit the task model it names \(features.0.0.weight is "
                       r"\(16, 3, 3, 3\) in the file, \(8, 3, 3, 3\) in the model\)"):  # fmt: skip
        load_task_checkpoint(path, dataset)


def test_a_checkpoint_asking_for_a_huge_model_allocates_nothing(tmp_path, shared_data):
    """A spec's width, or an unset width read from a crafted first tensor, that would build a model of
    hundreds of GB is refused in one sentence before the model is built (it is sized on torch's meta
    device, which allocates nothing)."""
    from raw2logit.modes.common import build_dataset
    from raw2logit.tasks.checkpoints import load_task_checkpoint
    from raw2logit.tasks.models import SmallCNN

    dataset = build_dataset(compose_config([*TINY, f"paths.data={shared_data}"]))
    small = SmallCNN(num_classes=dataset.num_classes, width=8).state_dict()
    crafted = {**small, "features.0.0.weight": torch.zeros(100_000, 3, 1, 1)}  # first, as saved
    cases = {"width": ({"_target_": "raw2logit.tasks.models.small", "width": 100_000}, small),
             "first_tensor": ({"_target_": "raw2logit.tasks.models.small"}, crafted)}  # fmt: skip
    for name, (spec, state) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save({"state_dict": state, "task": dataset.task, "num_classes": dataset.num_classes,
                    "task_model": spec, "normalisation": None}, path)  # fmt: skip
        with pytest.raises(InputError, match=r"does not fit the task model it names"):
            load_task_checkpoint(path, dataset)


def test_forensics_refuses_a_crafted_checkpoint_file_and_mlflow_artifact(cli, tmp_path):
    """The same through the command line: ``forensics.checkpoint=<file>`` and ``forensics.from_run=<run>``
    whose logged artifact is the crafted file (a real local MLflow store)."""
    from mlflow.tracking import MlflowClient

    marker = tmp_path / "touched"
    crafted = crafted_checkpoints(tmp_path, marker)["top"]
    done = cli("mode=forensics", f"forensics.checkpoint={crafted}")
    one_sentence_exit_2(done, "pathlib.Path.touch")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store)
    experiment = client.create_experiment("crafted", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    client.log_artifact(run_id, str(crafted), "model")
    client.set_terminated(run_id)
    done = cli("mode=forensics", f"forensics.from_run={run_id}", "tracking.enabled=true", f"tracking.uri={store}",
               name="from_run")  # fmt: skip
    one_sentence_exit_2(done, "pathlib.Path.touch")
    assert not marker.exists()


@pytest.mark.parametrize(
    "document",
    [
        {"variant": "pathlib.Path.touch"},
        {"tone_curve": {"_target_": "pathlib.Path.touch"}},
        {"theta": {"gamma": {"_target_": "pathlib.Path.touch", "self": "MARKER"}}},
        {"camera": {"_target_": "pathlib.Path.touch", "self": "MARKER"}},
        {"theta": {"white_balance": [float("nan"), 1.0, 1.0]}},
        {"theta": {"gamma": float("inf")}},
    ],
    ids=["variant", "tone_curve", "theta", "camera", "nan", "inf"],
)
def test_theta_and_calibration_files_name_no_code_and_hold_finite_values(document, tmp_path):
    """A θ file (``data_model.theta``) and a calibration file (``calibrated:<file>``) are JSON data:
    a crafted or non-finite field is refused with one sentence naming the file; nothing runs."""
    from raw2logit.isp import CameraParams, ParametrizedPipeline
    from raw2logit.isp.specs import build_data_model

    marker = tmp_path / "touched"
    base = json.loads(json.dumps({"variant": "bi_s_ga", "tone_curve": "power", "camera": CameraParams().to_dict(),
                                  "theta": ParametrizedPipeline(CameraParams()).theta_dict()}))  # fmt: skip
    for key, value in document.items():
        base[key] = {**base[key], **value} if key == "theta" else value
    path = tmp_path / "device.json"
    path.write_text(json.dumps(base).replace("MARKER", str(marker)))
    with pytest.raises(InputError, match=r"device\.json"):
        ParametrizedPipeline.from_theta_json(path)
    with pytest.raises(InputError, match=r"device\.json"):
        build_data_model(f"calibrated:{path}")
    assert not marker.exists()


# -- offline means offline -------------------------------------------------------------------------

NETWORK_SPY = """
import socket, sys
_log = open({log!r}, "a")
def _refuse(kind):
    def call(*args, **kwargs):
        _log.write(kind + " " + repr(args[:2])[:200] + "\\n"); _log.flush()
        raise OSError("network blocked by the test: " + kind)
    return call
socket.getaddrinfo = _refuse("getaddrinfo")
socket.gethostbyname = _refuse("gethostbyname")
socket.gethostbyname_ex = _refuse("gethostbyname_ex")
socket.create_connection = _refuse("create_connection")
_connect = socket.socket.connect
def _guarded(self, address):
    if self.family == getattr(socket, "AF_UNIX", None):
        return _connect(self, address)
    _refuse("connect")(self, address)
socket.socket.connect = _guarded
socket.socket.connect_ex = _guarded
"""


def offline_environment(tmp_path):
    """The environment of a plain shell: no pytest or CI variables (MLflow turns its telemetry off
    when it sees them) and no telemetry switches set by hand."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK",
                        "MLFLOW_TRACKING_URI")}  # fmt: skip
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def test_a_tracked_run_makes_no_lookup_or_connection(cli, tmp_path):
    """DNS resolution and connect are both refused and recorded (in the run's own process, through a
    sitecustomize module): a normal tracked run records none and succeeds."""
    spy = tmp_path / "spy"
    spy.mkdir()
    log = tmp_path / "network.log"
    (spy / "sitecustomize.py").write_text(NETWORK_SPY.format(log=str(log)))
    env = offline_environment(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(spy), str(ROOT), env.get("PYTHONPATH", "")])
    done = cli(*SYNTHESIS, "synthesis.train=[bi_s_me]", "epochs=1", "tracking.enabled=true", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not log.exists() or log.read_text() == "", log.read_text()


@pytest.mark.skipif(
    shutil.which("strace") is None and not os.environ.get("CI"),
    reason="strace is not installed (CI installs it, and there this test fails without it)",
)
def test_strace_sees_no_network_syscall(cli, tmp_path):
    """The kernel's view: no connect() or sendto() to an internet address (DNS included), from any
    thread or library, in a tracked run."""
    trace = tmp_path / "trace"
    env = offline_environment(tmp_path)
    command = ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg,sendmmsg", "-o", str(trace),
               sys.executable, "run.py", *TINY, *SYNTHESIS, "synthesis.train=[bi_s_me]", "epochs=1",
               f"paths.outputs={tmp_path / 'outputs'}", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    network = [line for line in trace.read_text().splitlines() if "AF_INET" in line]
    assert network == [], network


# -- no run exits 0 with non-finite numbers ---------------------------------------------------------


def nan_theta_file(tmp_path):
    from raw2logit.isp import CameraParams, ParametrizedPipeline

    pipeline = ParametrizedPipeline(CameraParams.published("microscopy"))
    path = pipeline.save_theta_json(tmp_path / "nan.json")
    document = json.loads(path.read_text())
    document["theta"]["black_level"] = [float("nan")] * 4
    path.write_text(json.dumps(document))  # json writes NaN, as a diverged fit would leave it
    return path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("lambda", "lambda must be a finite number"),
        ("lr_nan", "lr must be a finite number > 0"),
        ("lr_negative", "lr must be a finite number > 0"),
        ("epochs", "epochs must be an integer of at least 1"),
        ("calibrated_nan", "holds non-finite values"),
        ("theta_nan", "holds non-finite values"),
    ],
)
def test_non_finite_input_stops_the_run_and_stores_nothing(case, expected, cli, tmp_path):
    overrides = {
        "lambda": ["mode=forensics", "lambda=inf"],
        "lr_nan": ["lr=nan"],
        "lr_negative": ["lr=-1"],
        "epochs": ["epochs=0"],
        "calibrated_nan": [*SYNTHESIS[:1], f"synthesis.test=[bi_s_me,calibrated:{nan_theta_file(tmp_path)}]"],
        "theta_nan": [
            "mode=optimization",
            "data_model=parametrized",
            f"data_model.theta={nan_theta_file(tmp_path)}",
        ],
    }[case]
    one_sentence_exit_2(cli(*overrides), expected)
    assert not list((tmp_path / "outputs").glob("results/*/**/fold*.json"))
    assert not list((tmp_path / "outputs").glob("results/*/result.json"))


def test_a_diverging_training_stops_with_one_sentence_and_stores_no_cell(cli, tmp_path):
    """A learning rate that passes the config check but blows the weights up (lr=1e30)."""
    line = one_sentence_exit_2(cli(*SYNTHESIS, "lr=1e30"), "lower")
    assert "became nan" in line or "became inf" in line or "non-finite" in line, line
    assert not list((tmp_path / "outputs").glob("results/*/synthesis/cells/*/fold*.json"))


# -- one sentence and exit status 2 instead of a traceback ------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["synthesis.test=[]"], "synthesis.test must be 'all' or a non-empty list"),
        (["synthesis.train=[]"], "synthesis.train must be 'all' or a non-empty list"),
        (["batch_size=0"], "batch_size must be an integer of at least 1"),
        (["seed=abc"], "seed must be an integer from 0 to 4294967295; got 'abc'"),
        (["dataset=microscopy"], "dataset=microscopy needs dataset.root="),
        (["dataset=dng_folder"], "dataset=dng_folder needs dataset.root="),
        (["dataset.intensity=abc"], "dataset.intensity must be a finite number in (0, 1]"),
        (["dataset.num_images=0"], "dataset.num_images must be an integer of at least 1"),
        (["mode=bogus"], "Unknown mode 'bogus'; expected one of"),
        (["hydra.run.dir=/sys/raw2logit-run"], "hydra.run.dir=/sys/raw2logit-run cannot be written"),
        (["paths.outputs=/sys/raw2logit-outputs"], "paths.outputs=/sys/raw2logit-outputs cannot be written"),
        (["hydra.run.dir="], "hydra.run.dir is empty; expected a folder"),
    ],
)
def test_config_errors_are_one_sentence_before_anything_heavy(overrides, expected, cli, tmp_path):
    start = time.perf_counter()
    done = cli(*overrides)
    seconds = time.perf_counter() - start
    one_sentence_exit_2(done, expected)
    assert not (tmp_path / "run").exists()  # no run folder is left behind
    assert seconds < 30  # nothing heavy was imported (about 1 s on an idle machine)


def test_trainer_gpu_without_a_gpu_is_one_sentence(cli):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    one_sentence_exit_2(cli("trainer=gpu"), "needs a CUDA GPU", "use trainer=cpu")


def test_labels_naming_a_single_class_are_one_sentence(cli, tmp_path):
    from tests.dng import write_dng

    root = tmp_path / "dng"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        write_dng(
            root / f"img{i}.dng",
            rng.integers(0, 65535, (32, 32), dtype=np.uint16),
            neutral=(0.5, 1.0, 0.6),
            xyz_to_camera="srgb",
        )
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n" + "".join(f"img{i},only\n" for i in range(4)))
    done = cli("dataset=dng_folder", f"dataset.root={root}", f"dataset.labels_csv={labels}")
    one_sentence_exit_2(done, "has a single class ('only') among its 4 images", "at least two classes")


def test_a_full_disk_is_one_sentence_naming_the_folder_and_the_space(tmp_path, monkeypatch):
    """posix_fallocate fails as on a full disk (ENOSPC): the view file is refused before any view is
    written, instead of the SIGBUS ("Bus error") a memory map gets when the disk fills under it."""
    import errno

    from raw2logit.data.views import open_view_file

    def no_space(handle, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(
        InputError, match=r"has no room for views\.npy: it needs 0\.\d+ GiB and the disk has .* free"
    ):
        open_view_file(tmp_path / "views.npy", (100, 3, 256, 256))
    assert not (tmp_path / "views.npy").exists()


# -- MLflow records stay true -----------------------------------------------------------------------


def mlflow_children(store, experiment="raw2logit"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    return client, [run for run in runs if "raw2logit.train_pipeline" in run.data.tags]


@pytest.mark.parametrize("point", ["start", "log_metrics", "log_artifact", "end"])
def test_sigterm_while_a_cell_is_recorded_leaves_every_child_finished_after_resume(point, tmp_path, shared_data,
                                                                                   monkeypatch):  # fmt: skip
    """SIGTERM arrives while the first cell's file and MLflow child run are being written (at each call
    to the tracker in turn). The run ends interrupted (status 130); the same command resumes; then
    every cell has exactly one child run, FINISHED, with its metrics and its model."""
    from raw2logit import cli as command
    from raw2logit import runtime
    from raw2logit.tracking import Tracker

    overrides = [*TINY, *SYNTHESIS, "epochs=1", f"paths.outputs={tmp_path / 'outputs'}", f"paths.data={shared_data}",
                 "tracking.enabled=true", f"+run_dir={tmp_path / 'run'}"]  # fmt: skip
    original = getattr(Tracker, point)
    sent = []

    def interrupting(self, *args, **kwargs):
        if not sent and (
            point != "start" or kwargs.get("parent")
        ):  # the first cell's child, not the mode run
            sent.append(point)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Tracker, point, interrupting)
    monkeypatch.setattr(runtime, "_interrupted", False)
    with pytest.raises(SystemExit) as stopped:
        command.main(compose_config(overrides))
    assert stopped.value.code == 130 and sent == [point]
    monkeypatch.setattr(Tracker, point, original)
    monkeypatch.setattr(runtime, "_interrupted", False)
    command.main(compose_config(overrides))
    client, children = mlflow_children(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    cells = sorted(
        (run.data.tags["raw2logit.train_pipeline"], run.data.tags["raw2logit.fold"]) for run in children
    )
    assert cells == [("bi_s_me", "0"), ("bi_s_me", "1"), ("ma_u_ga", "0"), ("ma_u_ga", "1")]
    for run in children:
        assert run.info.status == "FINISHED"
        assert "test.bi_s_me" in run.data.metrics and "corruption.shot_noise" in run.data.metrics
        assert [a.path for a in client.list_artifacts(run.info.run_id, "model")], run.info.run_name


def test_a_child_left_running_by_a_crash_is_completed_by_the_next_run(run_mode, tmp_path):
    """A crash (SIGKILL) can leave a child RUNNING with nothing logged: the next run completes it."""
    from raw2logit.modes.synthesis import cell_record

    store = tmp_path / "outputs"
    run_mode([*SYNTHESIS, "synthesis.train=[bi_s_me]"], "first", outputs=store, tracking=True)
    client, children = mlflow_children(f"sqlite:///{store / 'mlflow.db'}")
    crashed = children[0]
    client.update_run(crashed.info.run_id, status="RUNNING")
    results = next((store / "results").glob("synthesis-*"))
    note = cell_record(
        results, crashed.data.tags["raw2logit.train_pipeline"], int(crashed.data.tags["raw2logit.fold"])
    )
    note.write_text(json.dumps({**json.loads(note.read_text()), "status": "RUNNING"}))
    run_mode([*SYNTHESIS, "synthesis.train=[bi_s_me]"], "second", outputs=store, tracking=True)
    client, after = mlflow_children(f"sqlite:///{store / 'mlflow.db'}")
    assert len(after) == len(children) and all(run.info.status == "FINISHED" for run in after)


def test_rerunning_with_other_cells_makes_a_new_run_and_hides_no_failure(run_mode, tmp_path, recwarn):
    """Another synthesis.train or fold on the same results store: a new MLflow run tagged with the one it
    continues, no param clash, no warning."""
    from mlflow.tracking import MlflowClient

    store = tmp_path / "outputs"
    run_mode([*SYNTHESIS, "synthesis.train=[bi_s_me]", "fold=0"], "a", outputs=store, tracking=True)
    run_mode([*SYNTHESIS, "synthesis.train=[ma_u_ga]", "fold=1"], "b", outputs=store, tracking=True)
    assert not [w for w in recwarn if "MLflow" in str(w.message)]
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("raw2logit").experiment_id])
    parents = sorted(
        (r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time
    )
    assert len(parents) == 2 and all(run.info.status == "FINISHED" for run in parents)
    assert parents[1].data.tags["raw2logit.continues"] == parents[0].info.run_id


def test_every_distinct_mlflow_failure_is_told():
    from raw2logit.tracking import Tracker

    tracker = Tracker(enabled=True)
    tracker._client = object()  # every call fails

    def fail(message):
        raise RuntimeError(message)

    with pytest.warns(UserWarning) as caught:
        tracker._safely("log_metrics", fail, "store is gone")
        tracker._safely("log_metrics", fail, "store is gone")  # the same failure again: told once
        tracker._safely("log_artifact", fail, "disk full")
    assert [str(w.message).split(" failed")[0] for w in caught] == [
        "MLflow log_metrics",
        "MLflow log_artifact",
    ]


def test_two_first_runs_together_both_succeed_with_one_set_of_children(tmp_path, shared_data):
    """Two identical runs started at once on a fresh outputs folder: the SQLite store is created once,
    each cell is trained once (by one run or the other), and the store holds one child per cell."""
    outputs = tmp_path / "outputs"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "run.py",
                *TINY,
                *SYNTHESIS,
                "epochs=1",
                f"paths.outputs={outputs}",
                f"paths.data={shared_data}",
                f"hydra.run.dir={tmp_path / name}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    outputs_text = [process.communicate(timeout=900) for process in processes]
    for process, (_, err) in zip(processes, outputs_text):
        assert process.returncode == 0, err[-3000:]
    trained = sum(out.count(": training on ") for out, _ in outputs_text)
    assert trained == 4  # 2 train pipelines x 2 folds, each once
    _, children = mlflow_children(f"sqlite:///{outputs / 'mlflow.db'}")
    assert len(children) == 4 and all(run.info.status == "FINISHED" for run in children)
    matrices = [(tmp_path / name / "synthesis" / "matrix.csv").read_text() for name in ("a", "b")]
    assert matrices[0] == matrices[1]


def test_result_files_follow_the_umask(tmp_path):
    from raw2logit.data.files import write_json_atomic

    previous = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "cell.json", {"a": 1})
        assert (tmp_path / "cell.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o002)
        write_json_atomic(tmp_path / "cell.json", {"a": 2})
        assert (tmp_path / "cell.json").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(previous)


def test_finite_results_are_stored(run_mode):
    """The other side of the guards: a normal tiny run stores finite numbers everywhere."""
    summary, run_dir = run_mode([*SYNTHESIS, "synthesis.train=[bi_s_me]"], "finite")
    cells = [json.loads(p.read_text()) for p in run_dir.glob("synthesis/cells/*/*.json")]

    def numbers(value):
        if isinstance(value, dict):
            return [n for v in value.values() for n in numbers(v)]
        if isinstance(value, list):
            return [n for v in value for n in numbers(v)]
        return [value] if isinstance(value, float) else []

    assert cells and all(math.isfinite(n) for n in numbers(cells) + numbers(summary))
