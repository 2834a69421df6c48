"""Measure a synthesis at the real Raw-Microscopy size: peak memory, and every view computed once.

    python scripts/measure_full_size.py [--num-images 940] [--size 256] [--out outputs/bench/full_size.json]
                                        [run.py overrides ...]

Raw-Microscopy holds 940 raw images of 256 x 256 (../shared/PAPER_FACTS.md); the simulator makes as
many (``dataset.num_images``, ``dataset.size``). The run is the CLI's own (``raw2logit.cli.main`` on the
composed config, in this process, with the CLI's allocator setting), with a small task model and one
epoch by default: the point is memory and view computation, not accuracy. It trains one pipeline on
one fold and tests it on all 12, so all 12 view sets are needed. Reported: the peak resident set
size of the process (``ru_maxrss``: everything the run touched, memory-mapped view files included),
the views the static pipelines computed, per pipeline (each image's view should be computed exactly
once), the view time per image (the 12 static pipelines alone, and with quantising and writing the
view cache) and the run's wall time. The simulated raw data is kept under
``--data`` for the next measurement; views, results and the tracking store are made afresh.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK_RSS_LIMIT_GB = 4.0  # issue 17


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports kilobytes, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-images", type=int, default=940)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--data", default="outputs/data", help="simulated raw data (kept and reused)")
    parser.add_argument("--out", default="outputs/bench/full_size.json")
    args, overrides = parser.parse_known_args()

    from hydra import compose, initialize_config_dir

    import raw2logit.isp.static as static
    from raw2logit.cli import main as run
    from raw2logit.data.views import ViewCache

    views_per_pipeline: Counter[str] = Counter()
    view_seconds = 0.0
    iter_views = static.StaticPipelineBank.iter_views

    def counted(bank, raw):
        nonlocal view_seconds
        start = time.perf_counter()
        for name, views in iter_views(bank, raw):
            views_per_pipeline[name] += views.shape[0]
            view_seconds += time.perf_counter() - start
            yield name, views
            start = time.perf_counter()

    static.StaticPipelineBank.iter_views = counted
    cache_seconds = 0.0
    compute = ViewCache._compute

    def timed(cache, missing):
        nonlocal cache_seconds
        start = time.perf_counter()
        compute(cache, missing)
        cache_seconds += time.perf_counter() - start

    ViewCache._compute = timed
    with tempfile.TemporaryDirectory() as scratch:
        settings = [
            "task_model=small_cnn", "epochs=1", "folds=2", "fold=0", "synthesis.train=[ma_s_me]",
            "synthesis.corruptions=[gaussian_noise]", "tracking.enabled=false",
            f"dataset.num_images={args.num_images}", f"dataset.size={args.size}",
            f"paths.outputs={scratch}/outputs", f"paths.data={(ROOT / args.data).resolve()}",
            f"+run_dir={scratch}/run",
        ]  # fmt: skip
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[*settings, *overrides])
        start = time.perf_counter()
        run(cfg)
        seconds = time.perf_counter() - start

    images = args.num_images
    once = bool(views_per_pipeline) and all(count == images for count in views_per_pipeline.values())
    computed = sum(views_per_pipeline.values())
    peak = peak_rss_bytes()
    report = {
        "command": "python scripts/measure_full_size.py " + " ".join(sys.argv[1:]),
        "images": images,
        "size": args.size,
        "peak_rss_gb": round(peak / 1e9, 2),
        "under_4_gb": peak < PEAK_RSS_LIMIT_GB * 1e9,
        "views_computed_per_pipeline": dict(views_per_pipeline),
        "each_view_once": once and len(views_per_pipeline) == 12,
        "view_ms_per_image": round(1e3 * view_seconds / images, 2) if computed else None,
        "view_ms_per_view": round(1e3 * view_seconds / computed, 3) if computed else None,
        "view_cache_ms_per_image": round(1e3 * cache_seconds / images, 2),
        "run_seconds": round(seconds, 1),
    }
    print(json.dumps(report, indent=2))
    print(
        f"peak RSS {report['peak_rss_gb']} GB ({'under' if report['under_4_gb'] else 'OVER'} "
        f"{PEAK_RSS_LIMIT_GB:g} GB); {computed} views computed for {len(views_per_pipeline)} pipelines x "
        f"{images} images ({'each once' if report['each_view_once'] else 'NOT each once'}); "
        f"view time {report['view_ms_per_image']} ms per image (12 views; with quantising and writing "
        f"the cache {report['view_cache_ms_per_image']} ms)"
    )
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
