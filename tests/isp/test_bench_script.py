"""``make bench`` runs: the benchmark script on tiny inputs prints its table and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    assert all(value > 0 for value in document["ms_per_image"].values())
    ratios = document["ratios"]
    assert ratios["bank_vs_numpy"] > 0
    assert ratios["bank_vs_numpy_per_round_min"] <= ratios["bank_vs_numpy_per_round_median"]
    assert ratios["bank_vs_numpy_per_round_median"] <= ratios["bank_vs_numpy_per_round_max"]
