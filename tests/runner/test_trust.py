"""Trustworthy runs: determinism, interruption safety, offline by default, one-sentence errors."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from raw2logit.errors import InputError
from tests.runner.conftest import ROOT, TINY, compose_config, run_cli

SYNTHESIS = [
    "synthesis.train=[bi_s_me,me_u_ga]",
    "synthesis.test=[bi_s_me,me_u_ga]",
    "synthesis.corruptions=[shot_noise]",
]


def test_same_config_and_seed_give_bitwise_identical_results(run_mode, tmp_path):
    """Synthesis cells, forensic results and optimization histories, run twice from scratch."""
    outputs = {}
    for attempt in ("a", "b"):
        store = tmp_path / attempt
        _synthesis, run_dir = run_mode(SYNTHESIS, f"s{attempt}", outputs=store)
        cells = {
            p.relative_to(run_dir).as_posix(): json.loads(p.read_text())
            for p in run_dir.glob("synthesis/cells/*/*.json")
        }
        for cell in cells.values():
            cell.pop("seconds")
        _forensics, forensics_dir = run_mode(
            ["mode=forensics", "forensics.epochs=2", "lambda=0.01"], f"f{attempt}", outputs=store
        )
        result = json.loads((forensics_dir / "forensics" / "result.json").read_text())
        result.pop("seconds")
        _, optimization_dir = run_mode(["mode=optimization", "data_model=parametrized", "optimization.val_every=2"],
                                       f"o{attempt}", outputs=store)  # fmt: skip
        history = (optimization_dir / "optimization" / "history.csv").read_text()
        theta = (optimization_dir / "optimization" / "theta.json").read_text()
        outputs[attempt] = (cells, (run_dir / "synthesis" / "matrix.csv").read_text(), result, history, theta)
    assert outputs["a"] == outputs["b"]
    provenance = json.loads((tmp_path / "sa" / "run.json").read_text())
    assert provenance["seed"] == 0 and provenance["config"]["seed"] == 0
    assert provenance["packages"]["torch"] and "git_commit" in provenance
    # config.yaml beside the results is the resolved config the run used, and reloads as such.
    saved = OmegaConf.load(tmp_path / "sa" / "config.yaml")
    assert OmegaConf.to_container(saved) == provenance["config"]
    assert saved.synthesis.train == ["bi_s_me", "me_u_ga"] and saved.synthesis.corruptions == ["shot_noise"]


def test_runs_make_no_network_connection(run_mode, monkeypatch):
    """A quick synthesis, forensics and optimization run with every socket connection refused."""
    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError(f"network blocked in this test: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    run_mode([*SYNTHESIS, "synthesis.train=[bi_s_me]"], "synthesis", tracking=True)
    run_mode(["mode=forensics", "forensics.epochs=1"], "forensics", tracking=True)
    run_mode(["mode=optimization", "data_model=raw", "epochs=1"], "optimization", tracking=True)
    assert attempts == []


def test_no_credentials_hosts_or_pickles_in_code_or_config():
    sources = [*(ROOT / "raw2logit").rglob("*.py"), *(ROOT / "conf").rglob("*.yaml")]
    text = "\n".join(p.read_text() for p in sources)
    for needle in ("AWS_", "b2_", "password", "api_key", "token=", "amazonaws", "backblaze"):
        assert needle.lower() not in text.lower(), needle


class _RunsCodeWhenUnpickled:
    """A pickle payload: unpickling it calls ``open(marker, "w")``, which creates the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_runs_code_is_refused_and_runs_nothing(shared_data, tmp_path):
    """A .pt whose pickle calls a function is refused with one sentence; the function never runs."""
    from raw2logit.modes.common import build_dataset
    from raw2logit.tasks.checkpoints import load_task_checkpoint

    marker = tmp_path / "pwned"
    crafted = tmp_path / "model.pt"
    torch.save({"state_dict": _RunsCodeWhenUnpickled(marker), "task": "classification", "num_classes": 6,
                "task_model": {}}, crafted)  # fmt: skip
    with pytest.raises(InputError, match=r"model\.pt is not a readable task model checkpoint"):
        load_task_checkpoint(crafted, build_dataset(compose_config([*TINY, f"paths.data={shared_data}"])))
    assert not marker.exists()


def run_main(overrides, tmp_path, shared_data, capsys):
    """cli.main as run.py calls it: exit status and stderr."""
    from raw2logit.cli import main

    cfg = compose_config([*TINY, f"paths.outputs={tmp_path / 'outputs'}", f"paths.data={shared_data}",
                          f"+run_dir={tmp_path / 'run'}", *overrides])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(cfg)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["synthesis.train=[xx_s_me]"], "synthesis.train must be 'all' or a non-empty list of pipeline names among bi_s_me"),
     (["mode=forensics", "lambda=-1"], "lambda must be a finite number >= 0; got -1"),
     (["folds=1"], "folds must be an integer of at least 2"),
     (["dataset.intensity=0.3"], "Unknown intensity 0.3; expected one of 0.01"),
     (["mode=forensics", "forensics.target=hue"], "forensics.target must be 'all' or one of black_level"),
     (["tracking.uri=http://127.0.0.1:9"], "The MLflow tracking store http://127.0.0.1:9 is not reachable")],
)  # fmt: skip
def test_bad_input_is_one_sentence_and_exit_status_2(overrides, message, tmp_path, shared_data, capsys):
    code, stderr = run_main(overrides, tmp_path, shared_data, capsys)
    assert code == 2
    # MLflow's own INFO log lines (a date first) are not ours; everything else is the one sentence.
    lines = [
        line for line in stderr.splitlines() if line.strip() and not re.match(r"\d{4}/\d{2}/\d{2} ", line)
    ]
    assert lines == [lines[0]] and lines[0].startswith("error: ") and message in lines[0], stderr
    assert "Traceback" not in stderr


def test_checkpoint_for_another_task_is_refused(run_mode, tmp_path):
    drone = ["dataset=sim_drone", "dataset.num_images=4", "dataset.height=1024", "dataset.width=1024",
             "dataset.scale=0.125", "synthesis.train=[bi_s_me]",
             "synthesis.test=[bi_s_me]", "synthesis.corruptions=none"]  # fmt: skip
    run_mode(drone, "drone", base=["epochs=1", "folds=2"])
    (checkpoint,) = (tmp_path / "outputs" / "results").glob(
        "synthesis-sim_drone-*/synthesis/models/bi_s_me/fold0.pt"
    )
    with pytest.raises(
        InputError, match="holds a segmentation model with 1 classes, but sim_microscopy is a classification"
    ):
        run_mode(["mode=forensics", f"forensics.checkpoint={checkpoint}"], "forensics")


@pytest.mark.parametrize(
    ("args", "message"),
    [(["dataset=imagenet"], "Unknown dataset 'imagenet'; expected one of dng_folder, drone"),
     (["synthesis.nonsense=1"], "synthesis.nonsense is not a config key; check its spelling")],
)  # fmt: skip
def test_unknown_group_option_or_key_is_one_sentence(args, message, tmp_path):
    result = run_cli([*args, f"paths.outputs={tmp_path}"])
    assert result.returncode == 2 and result.stderr.strip() == f"error: {result.stderr.strip()[7:]}"
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_killed_optimization_restarts_the_unfinished_fold(tmp_path):
    """SIGTERM during fold 1: fold 0 is kept; the re-run skips it and trains fold 1 afresh."""
    args = ["mode=optimization", "data_model=parametrized", "dataset.num_images=60", "dataset.size=64", "epochs=30",
            "folds=2", "batch_size=12", f"paths.outputs={tmp_path / 'outputs'}", f"hydra.run.dir={tmp_path / 'first'}"]  # fmt: skip
    process = subprocess.Popen([sys.executable, "run.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines, deadline = [], time.time() + 300
    for line in process.stdout:
        lines.append(line)
        if "fold 1 epoch 2/" in line:  # fold 0 is done, fold 1 has 28 epochs to go
            process.send_signal(signal.SIGTERM)
            break
        assert time.time() < deadline, "".join(lines)
    output = "".join(lines) + process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    store = next((tmp_path / "outputs" / "results").glob("optimization-*"))
    assert sorted(p.name for p in store.glob("fold*.json")) == ["fold0.json"]
    resumed = run_cli([*args[:-1], f"hydra.run.dir={tmp_path / 'second'}"])
    assert resumed.returncode == 0, resumed.stderr
    assert "fold 0: done in an earlier run, skipped" in resumed.stdout
    history = pd.read_csv(tmp_path / "second" / "optimization" / "history.csv")
    assert sorted(history["fold"].unique()) == [0, 1]
