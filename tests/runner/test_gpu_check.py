"""``scripts/gpu_check.sh --cpu-dry-run``: every step of the GPU check, tiny, on CPU, and one table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step_and_prints_one_table(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    command = ["bash", "scripts/gpu_check.sh", "--cpu-dry-run", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads((tmp_path / "gpu_check.json").read_text())
    assert document["dry_run"] and document["device"] == "cpu"
    steps = document["steps"]
    parity = steps["parity"]
    assert parity["ok"] and parity["passed"] > 0 and not parity.get("failed")
    sizes = [label for label in steps["timings"] if label.startswith(("batch", "full size"))]
    assert len(sizes) == 2
    for label in sizes:
        figures = steps["timings"][label]
        assert (
            figures["bank_12_ms_per_image"] > 0 and figures["parametrized_forward_backward_ms_per_image"] > 0
        )
    cell = steps["cell"]
    assert cell["ok"] and cell["metric"] == "accuracy" and cell["train_size"] > 0
    assert 0 <= cell["own_pipeline"] <= 1 and 0 <= cell["other_pipelines_mean"] <= 1
    # one table: a header, then one line per step, the same figures as the JSON
    table = (tmp_path / "gpu_check.txt").read_text()
    assert table.strip() in done.stdout
    assert f"{parity['passed']} passed, 0 failed" in table
    for label in sizes:
        assert f"{steps['timings'][label]['bank_12_ms_per_image']:.2f} ms / image" in table
    assert table.splitlines()[-1].startswith("total") and "ok" in table.splitlines()[-1]


def test_gpu_check_without_a_gpu_says_so(tmp_path):
    """Without ``--cpu-dry-run`` on a machine with no CUDA device: one sentence, exit status non-zero."""
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--out", str(tmp_path / "out")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode != 0 and "no CUDA device" in done.stderr
    assert not (tmp_path / "out").exists()
