"""ISP throughput: the numpy reference vs the batched torch data models, in two process settings.

    python scripts/bench_isp.py [--batch 32] [--size 256] [--device cpu] [--out outputs/bench/isp.json]

(a) the numpy reference (colour-demosaicing, scikit-image, scipy), all 12 static pipelines, per image;
(b) the torch StaticPipelineBank, all 12 pipelines sharing their common prefix, batched;
(b') the 12 StaticPipelines called one after the other on the same batch;
(c) the ParametrizedPipeline forward, and forward + backward.

Each measurement runs twice, in two fresh Python processes: ``plain`` (glibc's default allocator
settings, what a library user gets) and ``keep_freed_memory`` (``raw2logit.runtime.keep_freed_memory``,
what the CLI turns on). (a), (b) and (b') are timed in alternating rounds (one numpy image, one bank
batch, one batch through the 12 pipelines) so that a slow spell of a shared machine hits all three;
times are per image, the best round, and the ratios are reported both as ratios of the best times
and as the median of the per-round ratios. The JSON keeps every round.

On a machine shared with other jobs, wall times of two threads measure the other jobs as much as
these (OpenMP's threads wait for each other at every operation, whichever of them was descheduled):
``--clock cpu`` times the CPU time of one thread instead (``--threads 1``), which other jobs barely
change.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = ("plain", "keep_freed_memory")
BANK_VS_NUMPY_TARGET = 30.0  # issue 17: the bank at least 30x the numpy reference ...
SEPARATE_VS_BANK_TARGET = 1.5  # ... and the 12 separate pipelines within 1.5x of the bank


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def best_time(fn, repeats: int, sync, clock=time.perf_counter) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        fn()
        sync()
        best = min(best, clock() - start)
    return best


def alternating_rounds(fns: dict, rounds: int, sync, clock=time.perf_counter) -> dict[str, list[float]]:
    """Time each function once per round, in turn; returns name -> seconds per round."""
    for fn in fns.values():
        fn()
    sync()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = clock()
            fn()
            sync()
            times[name].append(clock() - start)
    return times


def ratios_of(rounds_ms: dict[str, list[float]]) -> dict[str, float]:
    """Speed-ups from per-image round times: of the best rounds, and the median of per-round ratios."""
    best = {name: min(values) for name, values in rounds_ms.items()}
    bank_vs_numpy = [a / b for a, b in zip(rounds_ms["numpy_reference_12"], rounds_ms["torch_bank_12"])]
    separate_vs_bank = [a / b for a, b in zip(rounds_ms["torch_separate_12"], rounds_ms["torch_bank_12"])]
    return {
        "bank_vs_numpy": best["numpy_reference_12"] / best["torch_bank_12"],
        "separate_vs_numpy": best["numpy_reference_12"] / best["torch_separate_12"],
        "separate_vs_bank": best["torch_separate_12"] / best["torch_bank_12"],
        "bank_vs_numpy_per_round_median": statistics.median(bank_vs_numpy),
        "separate_vs_bank_per_round_median": statistics.median(separate_vs_bank),
    }


def measure(args) -> dict:
    """One setting, in this process: returns per-image times (ms), ratios and every round."""
    from raw2logit.runtime import keep_freed_memory

    tuned = keep_freed_memory() if args.setting == "keep_freed_memory" else False
    import torch

    from raw2logit.isp import (
        STATIC_PIPELINE_NAMES,
        CameraParams,
        ParametrizedPipeline,
        StaticPipeline,
        StaticPipelineBank,
        reference,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    camera = CameraParams.published(args.camera)
    generator = torch.Generator().manual_seed(0)
    raw = torch.rand(args.batch, args.size, args.size, generator=generator).to(device)
    images = itertools.cycle(raw[: args.numpy_images].double().cpu().numpy())

    def numpy_image():
        image = next(images)
        for name in STATIC_PIPELINE_NAMES:
            reference.process(image, name, camera)

    bank = StaticPipelineBank("all", camera).to(device)
    singles = [StaticPipeline(name, camera).to(device) for name in STATIC_PIPELINE_NAMES]
    parametrized = ParametrizedPipeline(camera).to(device)
    with torch.no_grad():
        rounds = alternating_rounds(
            {
                "numpy_reference_12": numpy_image,
                "torch_bank_12": lambda: bank(raw),
                "torch_separate_12": lambda: [single(raw) for single in singles],
            },
            args.repeats,
            sync,
            clock,
        )
        forward = best_time(lambda: parametrized(raw), args.repeats, sync, clock)

    def forward_backward():
        parametrized.zero_grad(set_to_none=True)
        parametrized(raw).square().mean().backward()

    backward = best_time(forward_backward, args.repeats, sync, clock)
    per_image = {"numpy_reference_12": 1, "torch_bank_12": args.batch, "torch_separate_12": args.batch}
    rounds_ms = {name: [1e3 * s / per_image[name] for s in values] for name, values in rounds.items()}
    ms_per_image = {name: min(values) for name, values in rounds_ms.items()}
    ms_per_image["parametrized_forward"] = 1e3 * forward / args.batch
    ms_per_image["parametrized_forward_backward"] = 1e3 * backward / args.batch
    return {
        "setting": args.setting,
        "allocator_tuned": tuned,
        "threads": torch.get_num_threads(),
        "ms_per_image": ms_per_image,
        "ratios": ratios_of(rounds_ms),
        "rounds_ms_per_image": rounds_ms,
    }


def run_setting(setting: str, args) -> dict:
    """``measure`` in a fresh Python process, so that one setting cannot leak into the other."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / f"{setting}.json"
        command = [sys.executable, __file__, "--setting", setting, "--child-out", str(out)]
        for key in ("batch", "size", "repeats", "numpy_images", "device", "camera", "threads", "clock"):
            command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
        env = dict(os.environ)
        if args.threads:  # the numpy reference's BLAS as well as torch
            env.update(
                {
                    name: str(args.threads)
                    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                }
            )
        subprocess.run(command, check=True, env=env)
        return json.loads(out.read_text())


def cpu_model() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_report(document: dict) -> None:
    settings = document["settings"]
    names = list(settings)
    print(
        f"ISP throughput at {document['size']}x{document['size']}, batch {document['batch']}, "
        f"{document['device']}, {document['threads']} threads, {document['clock']} time"
    )
    print(
        f"CPU: {document['cpu_model']}, {document['cpus']} cores, torch CPU capability {document['cpu_capability']}"
    )
    print(f"{'ms / image':48s}" + "".join(f"{name:>20s}" for name in names))
    rows = [
        ("(a) numpy reference, 12 pipelines", "numpy_reference_12"),
        ("(b) torch StaticPipelineBank, 12 pipelines", "torch_bank_12"),
        ("(b') torch, 12 separate StaticPipelines", "torch_separate_12"),
        ("(c) ParametrizedPipeline forward", "parametrized_forward"),
        ("(c) ParametrizedPipeline forward + backward", "parametrized_forward_backward"),
    ]
    for label, key in rows:
        print(f"{label:48s}" + "".join(f"{settings[name]['ms_per_image'][key]:20.2f}" for name in names))
    for name in names:
        ratios = settings[name]["ratios"]
        bank_met = ratios["bank_vs_numpy"] >= BANK_VS_NUMPY_TARGET
        separate_met = ratios["separate_vs_bank"] <= SEPARATE_VS_BANK_TARGET
        print(
            f"{name}: (b) vs (a) {ratios['bank_vs_numpy']:.1f}x (per-round median "
            f"{ratios['bank_vs_numpy_per_round_median']:.1f}x; target >= {BANK_VS_NUMPY_TARGET:g}x "
            f"{'met' if bank_met else 'NOT met'});  (b') / (b) {ratios['separate_vs_bank']:.2f} (per-round "
            f"median {ratios['separate_vs_bank_per_round_median']:.2f}; target <= {SEPARATE_VS_BANK_TARGET:g} "
            f"{'met' if separate_met else 'NOT met'})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=12, help="timed rounds (and best-of runs for (c))")
    parser.add_argument(
        "--numpy-images", type=int, default=4, help="images the numpy reference cycles through"
    )
    parser.add_argument("--device", default=None, help="default: cuda where available, else cpu")
    parser.add_argument("--camera", default="microscopy", choices=["microscopy", "drone", "identity"])
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {SETTINGS}")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall time, or one thread's CPU time (--threads 1)",
    )
    parser.add_argument("--out", default="outputs/bench/isp.json")
    parser.add_argument("--setting", choices=SETTINGS, help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.setting:
        Path(args.child_out).write_text(json.dumps(measure(args)))
        return
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu times one thread: add --threads 1")
    settings = [name.strip() for name in args.settings.split(",")]
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown setting(s) {', '.join(unknown)}; expected among {', '.join(SETTINGS)}")
    import numpy as np
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = {setting: run_setting(setting, args) for setting in settings}
    document = {
        "batch": args.batch,
        "size": args.size,
        "device": args.device,
        "camera": args.camera,
        "clock": args.clock,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": results[settings[0]]["threads"],
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "targets": {
            "bank_vs_numpy_min": BANK_VS_NUMPY_TARGET,
            "separate_vs_bank_max": SEPARATE_VS_BANK_TARGET,
        },
        "settings": results,
    }
    print_report(document)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
