"""The GPU check behind ``scripts/gpu_check.sh``: parity, timings and one paper-size cell, one table.

    scripts/gpu_check.sh [--out outputs/gpu_check]      # on a CUDA machine, under 8 minutes on one GPU
    scripts/gpu_check.sh --cpu-dry-run [--out DIR]      # every step tiny, on CPU (what the tests run)

1. the ISP parity tests on the device (``tests/isp/test_device_parity.py``: every static pipeline
   against the numpy oracle, device against CPU, the parametrized forward and backward);
2. the static bank (12 views) and the parametrized forward + backward, timed at batch 32 of 256 x 256
   and at full size (one 3648 x 5472 Raw-Drone capture);
3. one paper-size synthesis cell: ResNet18, 100 epochs, batch 128, Adam 1e-4, fold 1 of 5, trained on
   ``ma_s_me`` and tested on all 12 pipelines, on 940 simulated 256 x 256 microscopy raws (the real
   dataset's size and count), ``trainer=gpu``.

The table goes to stdout and, with every figure, to ``<out>/gpu_check.json``. Exit status 1 if a
step failed (the table still shows the others).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIME_LIMIT_S = 8 * 60
FULL = {  # what the check runs on a GPU
    "device": "cuda",
    "parity_k": None,
    "sizes": {"batch 32 x 256 x 256": (32, 256, 256), "full size 1 x 3648 x 5472": (1, 3648, 5472)},
    "repeats": 5,
    "cell": [
        "trainer=gpu",
        "epochs=100",
        "batch_size=128",
        "lr=0.0001",
        "folds=5",
        "dataset.num_images=940",
        "dataset.size=256",
    ],
}
DRY_RUN = {  # every step tiny, on CPU
    "device": "cpu",
    "parity_k": "RGGB",
    "sizes": {"batch 2 x 32 x 32": (2, 32, 32), "full size (dry run) 1 x 64 x 96": (1, 64, 96)},
    "repeats": 1,
    "cell": [
        "trainer=cpu",
        "epochs=1",
        "batch_size=8",
        "lr=0.0001",
        "folds=2",
        "dataset.num_images=36",
        "dataset.size=32",
    ],
}
CELL = ["task_model=resnet18", "fold=0", "synthesis.train=[ma_s_me]", "tracking.enabled=false"]


def run_parity(plan: dict, log: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/isp/test_device_parity.py",
    ]
    if plan["parity_k"]:
        command += ["-k", plan["parity_k"]]
    env = {**os.environ, "RAW2LOGIT_TEST_DEVICE": plan["device"]}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    log.write_text(done.stdout + done.stderr)
    counts = {
        key: int(value) for value, key in re.findall(r"(\d+) (passed|failed|skipped|error)", done.stdout)
    }
    ok = done.returncode == 0 and counts.get("passed", 0) > 0 and not counts.get("skipped")
    return {"ok": ok, "seconds": time.perf_counter() - start, **counts}


def run_timings(plan: dict) -> dict:
    import torch

    from raw2logit.isp import CameraParams, ParametrizedPipeline, StaticPipelineBank

    device = torch.device(plan["device"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    camera = CameraParams.published("drone")
    bank = StaticPipelineBank("all", camera).to(device)
    parametrized = ParametrizedPipeline(camera).to(device)

    def best(fn) -> float:
        fn()
        sync()
        times = []
        for _ in range(plan["repeats"]):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return min(times)

    def forward_backward(raw):
        parametrized.zero_grad(set_to_none=True)
        parametrized(raw).square().mean().backward()

    results = {}
    for label, shape in plan["sizes"].items():
        raw = torch.rand(*shape, generator=torch.Generator().manual_seed(0)).to(device)
        with torch.no_grad():
            bank_s = best(lambda raw=raw: bank(raw))
        backward_s = best(lambda raw=raw: forward_backward(raw))
        results[label] = {"bank_12_ms_per_image": 1e3 * bank_s / shape[0],
                          "parametrized_forward_backward_ms_per_image": 1e3 * backward_s / shape[0]}  # fmt: skip
        del raw
    if device.type == "cuda":
        results["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return results


def run_cell(plan: dict, out: Path) -> dict:
    run_dir = out / "cell"
    command = [sys.executable, "run.py", *CELL, *plan["cell"], f"paths.outputs={out / 'outputs'}",
               f"hydra.run.dir={run_dir}"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (out / "cell.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        return {"ok": False, "seconds": seconds, "error": (done.stderr or done.stdout)[-2000:]}
    cell = json.loads(next((out / "outputs").rglob("cells/ma_s_me/fold0.json")).read_text())
    others = [value for name, value in cell["test"].items() if name != "ma_s_me"]
    return {
        "ok": True,
        "seconds": seconds,
        "metric": cell["metric"],
        "own_pipeline": cell["test"]["ma_s_me"],
        "other_pipelines_mean": sum(others) / len(others),
        "corrupted_mean": sum(cell["corruptions"].values()) / max(1, len(cell["corruptions"])),
        "train_size": cell["train_size"],
        "cell_seconds": cell["seconds"],
    }


def step(name: str, results: dict, fn, *args) -> None:
    """Run one step; a failure is recorded, not raised, so the table still shows the others."""
    print(f"gpu_check: {name} ...", flush=True)
    start = time.perf_counter()
    try:
        results[name] = fn(*args)
    except Exception as error:  # the table must be printed whatever one step does
        results[name] = {
            "ok": False,
            "seconds": time.perf_counter() - start,
            "error": f"{type(error).__name__}: {error}",
        }


def table(results: dict, plan: dict, total_s: float, dry_run: bool) -> str:
    rows = []
    parity = results["parity"]
    rows.append(("ISP parity tests on " + plan["device"], "ok" if parity["ok"] else "FAILED",
                 f"{parity.get('passed', 0)} passed, {parity.get('failed', 0)} failed", parity["seconds"]))  # fmt: skip
    timings = results["timings"]
    for label in plan["sizes"]:
        figures = timings.get(label)
        if figures:
            rows.append((f"static bank (12 views), {label}", "ok",
                         f"{figures['bank_12_ms_per_image']:.2f} ms / image", None))  # fmt: skip
            rows.append((f"parametrized fwd + bwd, {label}", "ok",
                         f"{figures['parametrized_forward_backward_ms_per_image']:.2f} ms / image", None))  # fmt: skip
        else:
            rows.append((f"timings, {label}", "FAILED", timings.get("error", "")[:60], None))
    cell = results["cell"]
    if cell["ok"]:
        detail = (f"{cell['metric']} own {cell['own_pipeline']:.3f}, other 11 {cell['other_pipelines_mean']:.3f}, "
                  f"corrupted {cell['corrupted_mean']:.3f} ({cell['train_size']} train images)")  # fmt: skip
    else:
        detail = cell["error"].strip().splitlines()[-1][:80] if cell.get("error") else ""
    rows.append(("synthesis cell (ResNet18, " + " ".join(plan["cell"][:2]) + ")", "ok" if cell["ok"] else "FAILED",
                 detail, cell["seconds"]))  # fmt: skip
    within = total_s <= TIME_LIMIT_S
    rows.append(("total", "ok" if within or dry_run else "OVER 8 min", f"limit {TIME_LIMIT_S} s", total_s))
    width = max(len(row[0]) for row in rows)
    lines = [f"{'step':{width}s}  {'status':10s}  {'seconds':>8s}  result", "-" * (width + 80)]
    for name, status, detail, seconds in rows:
        lines.append(
            f"{name:{width}s}  {status:10s}  {'' if seconds is None else f'{seconds:8.1f}':>8s}  {detail}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-dry-run", action="store_true", help="every step tiny, on CPU")
    parser.add_argument("--out", default="outputs/gpu_check")
    args = parser.parse_args()
    plan = DRY_RUN if args.cpu_dry_run else FULL
    if not args.cpu_dry_run:
        import torch

        if not torch.cuda.is_available():
            sys.exit("gpu_check: no CUDA device here; run it where one is, or use --cpu-dry-run.")
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict = {}
    step("parity", results, run_parity, plan, out / "parity.log")
    step("timings", results, run_timings, plan)
    step("cell", results, run_cell, plan, out)
    total = time.perf_counter() - start
    results["timings"].setdefault("ok", "error" not in results["timings"])
    report = table(results, plan, total, args.cpu_dry_run)
    print(report)
    document = {"dry_run": args.cpu_dry_run, "device": plan["device"], "total_seconds": total,
                "within_8_minutes": total <= TIME_LIMIT_S, "steps": results}  # fmt: skip
    if plan["device"] == "cuda":
        import torch

        document["gpu"] = torch.cuda.get_device_name(0)
    (out / "gpu_check.json").write_text(json.dumps(document, indent=2))
    (out / "gpu_check.txt").write_text(report + "\n")
    print(f"wrote {out / 'gpu_check.json'}")
    sys.exit(0 if all(results[name]["ok"] for name in ("parity", "timings", "cell")) else 1)


if __name__ == "__main__":
    main()
