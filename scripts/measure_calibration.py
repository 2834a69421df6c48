"""Measure calibration against LibRaw (issue 15): held-out PSNR and ΔE per camera and LibRaw algorithm,
seconds per step against the data model's own forward + backward, and the whole fit's time.

    PYTHONPATH=. python scripts/measure_calibration.py [--size 256] [--count 12] [--threads 2]
        [--cameras kestrel heron] [--algorithms AHD DCB VNG PPG] [--out outputs/bench/calibration.json]

The pairs are those of ``tests/controls/test_calibration_libraw.py`` (``tests/controls/libraw_pairs.py``):
DNGs of made-up cameras written with pidng from scikit-image photographs, LibRaw's processing of each
(camera white balance, sRGB, BT.709, no auto-brightness, ``adjust_maximum_thr=0``) as the device.
Prints a Markdown table (the README's) and writes every figure to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def forward_backward_seconds(pipeline, raw: torch.Tensor, repeats: int = 30) -> float:
    """Median seconds of one forward + backward of ``pipeline`` on ``raw`` (every θ group trainable)."""
    pipeline.set_trainable(pipeline.active_groups())
    pipeline(raw).square().mean().backward()  # warm-up
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        pipeline.zero_grad(set_to_none=True)
        pipeline(raw).square().mean().backward()
        durations.append(time.perf_counter() - started)
    return float(np.median(durations))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cameras", nargs="+", default=["kestrel", "heron"])
    parser.add_argument("--algorithms", nargs="+", default=["AHD", "DCB", "VNG", "PPG"])
    parser.add_argument("--out", default="outputs/bench/calibration.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from raw2logit.controls.calibration import fit, read_pairs
    from raw2logit.controls.calibration.optimise import auto_patch_size
    from tests.controls.libraw_pairs import write_libraw_pairs

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for camera in args.cameras:
            folders = write_libraw_pairs(Path(scratch), camera, tuple(args.algorithms), args.size, args.count)
            for algorithm, folder in folders.items():
                pairs = read_pairs(folder)
                started = time.perf_counter()
                result = fit(pairs.raw, pairs.rgb, pairs.camera, tone_curve="curve", names=pairs.names,
                             log=lambda line: print("   ", line, flush=True))  # fmt: skip
                seconds = time.perf_counter() - started
                train = len(result.train_names)
                patch = auto_patch_size(train, args.size, args.size, 4) or args.size
                batch = torch.from_numpy(pairs.raw[:train, :patch, :patch]).float()
                reference = forward_backward_seconds(result.pipeline, batch)
                improved = all(r["psnr"] > r["initial_psnr"] and r["delta_e"] < r["initial_delta_e"]
                               for r in result.pairs.values())  # fmt: skip
                row = {
                    "camera": camera,
                    "algorithm": algorithm,
                    "chosen": result.label,
                    "psnr": result.psnr,
                    "delta_e": result.delta_e,
                    "initial_psnr": result.initial_psnr,
                    "initial_delta_e": result.initial_delta_e,
                    "improves_every_pair": improved,
                    "follows_demosaic": result.demosaic["follows_device"],
                    "edge_psnr": result.demosaic["edge_psnr"],
                    "flat_psnr": result.demosaic["flat_psnr"],
                    "seconds": seconds,
                    "steps": result.timing["steps"],
                    "seconds_per_step": result.timing["seconds_per_step"],
                    "forward_backward_seconds": reference,
                    "median_seconds_per_step": result.timing["median_seconds_per_step"],
                    # the chosen structure's median step against its median forward + backward on the same batch
                    "step_over_forward_backward": result.timing["median_seconds_per_step"] / reference,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    print(f"\n{args.count} pairs of {args.size}x{args.size}, {args.threads} thread(s); written to {out}\n")
    print(
        "| camera | LibRaw | chosen | held-out PSNR (dB) | ΔE2000 | metadata start: PSNR, ΔE | every pair better "
        "| demosaic followed | fit (s) | ms/step (median) | step / (fwd+bwd) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['camera']} | {r['algorithm']} | {r['chosen']} | {r['psnr']:.2f} | {r['delta_e']:.2f} | "
            f"{r['initial_psnr']:.2f}, {r['initial_delta_e']:.2f} | {'yes' if r['improves_every_pair'] else 'no'} | "
            f"{'yes' if r['follows_demosaic'] else 'no'} (edges {r['edge_psnr']:.1f} dB) | {r['seconds']:.1f} | "
            f"{1000 * r['median_seconds_per_step']:.0f} | {r['step_over_forward_backward']:.2f} |"
        )


if __name__ == "__main__":
    main()
