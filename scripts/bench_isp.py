"""ISP throughput: the numpy reference vs the batched torch data models, in one process.

    python scripts/bench_isp.py [--batch 32] [--size 256] [--device cpu] [--out outputs/bench/isp.json]

(a) the numpy reference (colour-demosaicing, scikit-image, scipy), all 12 static pipelines, per image;
(b) the torch StaticPipelineBank, all 12 pipelines sharing their common prefix, batched;
    (b') the 12 StaticPipelines run separately, for comparison;
(c) the ParametrizedPipeline forward, and forward + backward.
Times are the best of ``--repeats`` runs, per image; ratios are taken within this one run. (a) and
(b) are timed in alternating rounds (one numpy image, then one torch batch), so that a slow spell of
a shared machine hits both: the ratio of the best times and the median of the per-round ratios are
reported.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from raw2logit.isp import (
    STATIC_PIPELINE_NAMES,
    CameraParams,
    ParametrizedPipeline,
    StaticPipeline,
    StaticPipelineBank,
    reference,
)
from raw2logit.runtime import keep_freed_memory


def best_time(fn, repeats: int, sync) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def alternating_rounds(fns: dict, rounds: int, sync) -> dict[str, list[float]]:
    """Time each function once per round, in turn; returns name -> seconds per round."""
    for fn in fns.values():
        fn()
    sync()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=12, help="timed runs (rounds for (a) and (b))")
    parser.add_argument(
        "--numpy-images", type=int, default=4, help="images the numpy reference cycles through"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--camera", default="microscopy", choices=["microscopy", "drone", "identity"])
    parser.add_argument("--default-allocator", action="store_true", help="skip keep_freed_memory()")
    parser.add_argument("--out", default="outputs/bench/isp.json")
    args = parser.parse_args()

    tuned = False if args.default_allocator else keep_freed_memory()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    camera = CameraParams.published(args.camera)
    generator = torch.Generator().manual_seed(0)
    raw = torch.rand(args.batch, args.size, args.size, generator=generator).to(device)
    raw_numpy = raw[: args.numpy_images].double().cpu().numpy()

    def numpy_image(image):
        for name in STATIC_PIPELINE_NAMES:
            reference.process(image, name, camera)

    results = {}
    bank = StaticPipelineBank("all", camera).to(device)
    singles = [StaticPipeline(name, camera).to(device) for name in STATIC_PIPELINE_NAMES]
    parametrized = ParametrizedPipeline(camera).to(device)
    images = itertools.cycle(raw_numpy)
    with torch.no_grad():
        rounds = alternating_rounds(
            {"numpy": lambda: numpy_image(next(images)), "bank": lambda: bank(raw)}, args.repeats, sync
        )
        per_image_bank = [seconds / args.batch for seconds in rounds["bank"]]
        results["numpy_reference_12"] = min(rounds["numpy"])
        results["torch_bank_12"] = min(per_image_bank)
        paired = [a / b for a, b in zip(rounds["numpy"], per_image_bank)]
        results["torch_separate_12"] = (
            best_time(lambda: [p(raw) for p in singles], args.repeats, sync) / args.batch
        )
        results["parametrized_forward"] = (
            best_time(lambda: parametrized(raw), args.repeats, sync) / args.batch
        )

    def forward_backward():
        parametrized.zero_grad(set_to_none=True)
        parametrized(raw).square().mean().backward()

    results["parametrized_forward_backward"] = best_time(forward_backward, args.repeats, sync) / args.batch

    per_image_ms = {key: value * 1e3 for key, value in results.items()}
    ratios = {
        "bank_vs_numpy": results["numpy_reference_12"] / results["torch_bank_12"],
        "separate_vs_numpy": results["numpy_reference_12"] / results["torch_separate_12"],
        "bank_vs_separate": results["torch_separate_12"] / results["torch_bank_12"],
        "bank_vs_numpy_per_round_median": statistics.median(paired),
        "bank_vs_numpy_per_round_min": min(paired),
        "bank_vs_numpy_per_round_max": max(paired),
    }
    rows = [
        ("(a) numpy reference, 12 pipelines", per_image_ms["numpy_reference_12"]),
        ("(b) torch StaticPipelineBank, 12 pipelines", per_image_ms["torch_bank_12"]),
        ("(b') torch, 12 separate StaticPipelines", per_image_ms["torch_separate_12"]),
        ("(c) ParametrizedPipeline forward", per_image_ms["parametrized_forward"]),
        ("(c) ParametrizedPipeline forward + backward", per_image_ms["parametrized_forward_backward"]),
    ]
    print(
        f"ISP throughput at {args.size}x{args.size}, batch {args.batch}, {device.type}, "
        f"{torch.get_num_threads()} threads, allocator tuned: {tuned}"
    )
    print(f"{'':48s} {'ms / image':>12s}")
    for label, value in rows:
        print(f"{label:48s} {value:12.2f}")
    print(
        f"speed-up (b) vs (a): {ratios['bank_vs_numpy']:.1f}x   "
        f"(b') vs (a): {ratios['separate_vs_numpy']:.1f}x   (b) vs (b'): {ratios['bank_vs_separate']:.2f}x"
    )
    print(
        f"(b) vs (a) per round ({args.repeats} rounds): median {ratios['bank_vs_numpy_per_round_median']:.1f}x, "
        f"range {ratios['bank_vs_numpy_per_round_min']:.1f}-{ratios['bank_vs_numpy_per_round_max']:.1f}x"
    )

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "ms_per_image": per_image_ms,
                "ratios": ratios,
                "batch": args.batch,
                "size": args.size,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "allocator_tuned": tuned,
                "camera": args.camera,
                "torch": torch.__version__,
                "numpy": np.__version__,
                "machine": platform.processor() or platform.machine(),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
