"""Hydra callback that turns a multirun sweep into one result: assembled artifacts, one MLflow run.

Registered in ``conf/config.yaml`` (``hydra.callbacks.sweep_report``). Before the jobs start it
opens a sweep run in MLflow and hands its id to the jobs (``RAW2LOGIT_PARENT_RUN_ID``), so every
job's run hangs below it; when the jobs are done it assembles, in the sweep directory, what the
mode defines over all jobs (synthesis: the matrix).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

PARENT_ENV = "RAW2LOGIT_PARENT_RUN_ID"


class SweepReport(Callback):
    def __init__(self):
        self.tracker = None
        self.run_id = None

    def _tracker(self, config: DictConfig):
        from raw2logit.modes.common import build_tracker

        if self.tracker is None:
            try:
                self.tracker = build_tracker(config, print)
            except ValueError as error:
                from raw2logit.tracking import Tracker

                print(f"warning: {error}")
                self.tracker = Tracker(enabled=False)
        return self.tracker

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        """The sweep's MLflow run, holding what is swept (each override as a param): its jobs' runs
        hang below it, those that reuse earlier results included (each job is a run of its own)."""
        tracker = self._tracker(config)
        swept = {}
        for override in config.hydra.overrides.task:
            key, _, value = str(override).partition("=")
            swept[f"sweep.{key.lstrip('+~')}"] = value
        self.run_id = tracker.start(f"{config.mode} sweep {config.dataset.name}",
                                    {"sweep_dir": config.hydra.sweep.dir, **swept}, tags={"raw2logit.sweep": "true"})  # fmt: skip
        if self.run_id:
            os.environ[PARENT_ENV] = self.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        tracker = self._tracker(config)
        try:
            assemble_sweep(config, sweep_dir, tracker, self.run_id)
        except Exception as error:
            tracker.fail(self.run_id, error)
            raise
        else:
            tracker.end(self.run_id, "FINISHED")
        finally:
            os.environ.pop(PARENT_ENV, None)


def assemble_sweep(config: DictConfig, sweep_dir: Path, tracker=None, run_id=None) -> dict | None:
    """What a sweep's jobs add up to, as the mode defines it (``assemble_sweep`` of its package),
    written into the sweep directory with its report, and logged to the sweep's run ``run_id``."""
    import json

    from raw2logit import modes

    mode = modes.get(config.mode)
    assemble = getattr(mode, "assemble_sweep", None)
    summary = assemble(config, sweep_dir) if assemble is not None else None
    if summary is None:
        return None
    from raw2logit.report.html import write_report

    (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    report = write_report(sweep_dir, title=f"raw2logit {config.mode} sweep")
    print(f"sweep report: {report}")
    if tracker is not None:
        tracker.log_artifacts(run_id, sweep_dir / mode.FOLDER, mode.FOLDER)
        tracker.log_artifact(run_id, sweep_dir / "summary.json")
        tracker.log_artifact(run_id, report)
        tracker.log_metrics(run_id, sweep_metrics(summary))
    return summary


def sweep_metrics(summary: dict) -> dict:
    """A sweep's headline numbers as metrics of its run: the forensic sensitivity per θ group, the
    synthesis changes under drift, the optimization settings' Table 2 means."""
    metrics = {f"sensitivity.{group}": value for group, value in summary.get("sensitivity", {}).items()}
    for key in ("isp", "corruptions"):
        part = summary.get(key) or {}
        metrics.update({f"{key}_{k}": v for k, v in part.items() if k in ("train", "test", "change")})
    metrics.update(
        {f"table2.{setting}": entry["mean"] for setting, entry in summary.get("table2", {}).items()}
    )
    # MLflow's metric names: letters, digits, _ - . / space and colon (a setting reads "learned (I=1)").
    return {
        re.sub(r"[^\w\-./ :]", "_", key): value
        for key, value in metrics.items()
        if isinstance(value, (int, float))
    }
