"""Hydra callback that turns a multirun sweep into one result: assembled artifacts, one MLflow run.

Registered in ``conf/config.yaml`` (``hydra.callbacks.sweep_report``). Before the jobs start it
opens a sweep run in MLflow and hands its id to the jobs (``RAW2LOGIT_PARENT_RUN_ID``), so every
job's run hangs below it; when the jobs are done it assembles, in the sweep directory, what the
mode defines over all jobs (synthesis: the matrix).
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

PARENT_ENV = "RAW2LOGIT_PARENT_RUN_ID"


class SweepReport(Callback):
    def __init__(self):
        self.tracker = None
        self.run_id = None

    def _tracker(self, config: DictConfig):
        from raw2logit.tracking import Tracker

        if self.tracker is None:
            self.tracker = Tracker(config.tracking.uri, config.tracking.experiment, config.paths.outputs,
                                   config.tracking.enabled, print)  # fmt: skip
            try:
                self.tracker.connect()
            except ValueError as error:
                print(f"warning: {error}")
                self.tracker.enabled = False
        return self.tracker

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        tracker = self._tracker(config)
        self.run_id = tracker.start(
            f"{config.mode} sweep {config.dataset.name}", {"sweep_dir": config.hydra.sweep.dir}
        )
        if self.run_id:
            os.environ[PARENT_ENV] = self.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        tracker = self._tracker(config)
        status = "FINISHED"
        try:
            assemble_sweep(config, sweep_dir, tracker, self.run_id)
        except Exception:
            status = "FAILED"
            raise
        finally:
            tracker.end(self.run_id, status)
            os.environ.pop(PARENT_ENV, None)


def assemble_sweep(config: DictConfig, sweep_dir: Path, tracker=None, run_id=None) -> dict | None:
    """What a sweep's jobs add up to, written into the sweep directory (and logged to ``run_id``).

    synthesis: the matrix artifacts over all jobs' cells; forensics: the forensic signature over
    all jobs' results; optimization: the comparison of all jobs' settings.
    """
    import json

    summary = None
    if config.mode == "synthesis":
        from raw2logit.controls.synthesis import assemble, format_matrix, load_cells
        from raw2logit.isp import STATIC_PIPELINE_NAMES

        cells = load_cells(sweep_dir)
        if cells:
            summary = assemble(cells, sweep_dir, STATIC_PIPELINE_NAMES)
            print(f"\nsweep matrix ({summary['cells']} cells from {sweep_dir}):\n{format_matrix(sweep_dir)}")
    elif config.mode == "forensics":
        from raw2logit.controls.forensics import assemble_signature

        results = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/forensics/result.json"))]
        if results:
            signature = assemble_signature(results, sweep_dir, config.forensics.tolerance)
            summary = {"mode": "forensics", "sweep": True, "runs": len(results), "metric": signature["metric"],
                       "ranking": signature["ranking"], "sensitivity": signature["sensitivity"]}  # fmt: skip
            print(f"\nforensic signature of {len(results)} runs: {sweep_dir / 'forensics' / 'signature.md'}")
    elif config.mode == "optimization":
        summary = compare_optimization(sweep_dir)
    if summary is not None:
        from raw2logit.report.html import write_report

        (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        report = write_report(sweep_dir, title=f"raw2logit {config.mode} sweep")
        print(f"sweep report: {report}")
        if tracker is not None:
            for folder in ("synthesis", "forensics", "optimization"):
                tracker.log_artifacts(run_id, sweep_dir / folder, folder)
            tracker.log_artifact(run_id, sweep_dir / "summary.json")
            tracker.log_artifact(run_id, report)
    return summary


def compare_optimization(sweep_dir: Path) -> dict | None:
    """One table and figure over every optimization job of a sweep (paper Table 2, Fig. 7)."""
    import pandas as pd

    from raw2logit.controls.optimization import table2
    from raw2logit.report.figures import curves_figure

    frames = [pd.read_csv(p) for p in sorted(sweep_dir.glob("*/optimization/history.csv"))]
    if not frames:
        return None
    history = pd.concat(frames, ignore_index=True)
    folder = sweep_dir / "optimization"
    folder.mkdir(exist_ok=True)
    history.to_csv(folder / "history.csv", index=False)
    stats = table2(history)
    table = pd.DataFrame.from_dict(stats, orient="index")
    table.to_csv(folder / "comparison.csv", index_label="setting")
    metric = "metric"
    for path in sorted(sweep_dir.glob("*/summary.json")):
        import json

        metric = json.loads(path.read_text()).get("metric", metric)
        break
    curves_figure(history, metric, folder / "comparison.png")
    print("\noptimization comparison (mean ± std of the validation metric over steps and folds):")
    for setting, entry in stats.items():
        print(f"  {setting:32s} {entry['mean']:.3f} ± {entry['std']:.3f}")
    return {"mode": "optimization", "sweep": True, "metric": metric, "table2": stats}
