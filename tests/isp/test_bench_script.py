"""``make bench`` runs: the benchmark script on tiny inputs prints its table and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_script_prints_ratios_and_writes_json(tmp_path):
    out = tmp_path / "isp.json"
    command = [sys.executable, "scripts/bench_isp.py", "--batch", "2", "--size", "16", "--repeats", "2",
               "--numpy-images", "1", "--device", "cpu", "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    assert "speed-up (b) vs (a)" in result.stdout and "per round" in result.stdout
    document = json.loads(out.read_text())
    assert set(document["ms_per_image"]) == {
        "numpy_reference_12", "torch_bank_12", "torch_separate_12",
        "parametrized_forward", "parametrized_forward_backward",
    }  # fmt: skip
    times, ratios = document["ms_per_image"], document["ratios"]
    assert all(value > 0 for value in times.values())
    # The ratios are those of the reported times, and the printed table shows the same figures.
    assert ratios["bank_vs_numpy"] == pytest.approx(times["numpy_reference_12"] / times["torch_bank_12"])
    assert ratios["separate_vs_numpy"] == pytest.approx(
        times["numpy_reference_12"] / times["torch_separate_12"]
    )
    assert ratios["bank_vs_separate"] == pytest.approx(times["torch_separate_12"] / times["torch_bank_12"])
    assert f"speed-up (b) vs (a): {ratios['bank_vs_numpy']:.1f}x" in result.stdout
    for label, key in (
        ("(a) numpy reference", "numpy_reference_12"),
        ("(b) torch StaticPipelineBank", "torch_bank_12"),
    ):
        line = next(line for line in result.stdout.splitlines() if line.startswith(label))
        assert float(line.split()[-1]) == pytest.approx(times[key], abs=0.006)
