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
        from raw2logit.controls.synthesis import assemble, format_matrix, load_cells
        from raw2logit.isp import STATIC_PIPELINE_NAMES

        sweep_dir = Path(config.hydra.sweep.dir)
        tracker = self._tracker(config)
        status = "FINISHED"
        try:
            if config.mode == "synthesis":
                cells = load_cells(sweep_dir)
                if cells:
                    summary = assemble(cells, sweep_dir, STATIC_PIPELINE_NAMES)
                    print(
                        f"\nsweep matrix ({summary['cells']} cells from {sweep_dir}):\n{format_matrix(sweep_dir)}"
                    )
                    tracker.log_artifacts(self.run_id, sweep_dir / "synthesis", "synthesis")
                    tracker.log_artifact(self.run_id, sweep_dir / "summary.json")
        except Exception:
            status = "FAILED"
            raise
        finally:
            tracker.end(self.run_id, status)
            os.environ.pop(PARENT_ENV, None)
