"""Measure the main job as a newcomer meets it: ``python run.py`` from scratch, timed, and its matrix checked.

    python scripts/measure_quick_run.py [--out outputs/bench/quick_run.json] [run.py overrides ...]

Runs in a fresh outputs folder (simulated data, view cache, results and MLflow store all created
anew), reports the wall time and whether the matrix is informative: diagonal mean between 0.5
and 0.97 (the task is learned, not saturated) and at least one off-diagonal cell 0.03 or more
below its row's diagonal (the drift shows).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="outputs/bench/quick_run.json")
    parser.add_argument(
        "--keep", default=None, help="copy the run's heatmap and report.html into this folder"
    )
    args, overrides = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "run"
        command = [
            sys.executable,
            "run.py",
            f"paths.outputs={scratch}/outputs",
            f"hydra.run.dir={run_dir}",
            *overrides,
        ]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if result.returncode:
            sys.exit(f"python run.py failed ({result.returncode}):\n{result.stderr[-3000:]}")
        matrix = pd.read_csv(run_dir / "synthesis" / "matrix.csv", index_col="train")
        summary = json.loads((run_dir / "summary.json").read_text())
        if args.keep:
            keep = ROOT / args.keep
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(run_dir / "synthesis" / "heatmap.png", keep / "heatmap.png")
            shutil.copy(run_dir / "report.html", keep / "quick_run_report.html")
    diagonal = pd.Series({t: matrix.loc[t, t] for t in matrix.index if t in matrix.columns})
    drops = matrix.rsub(diagonal, axis=0)
    report = {
        "command": "python run.py " + " ".join(overrides),
        "wall_seconds": round(seconds, 1),
        "within_3_minutes": bool(seconds <= 180),
        "diagonal_mean": float(diagonal.mean()),
        "diagonal_in_range": bool(0.5 <= diagonal.mean() <= 0.97),
        "largest_drop_below_diagonal": float(drops.to_numpy().max()),
        "informative": bool(0.5 <= diagonal.mean() <= 0.97 and drops.to_numpy().max() >= 0.03),
        "isp": summary["isp"],
        "corruptions": summary.get("corruptions"),
        "best_train_pipeline": summary["best_train_pipeline"],
    }
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
