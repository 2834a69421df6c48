"""MLflow glue: a local store by default, a remote one from config or ``MLFLOW_TRACKING_URI``.

Every mode writes its files first and logs them afterwards, so a run that loses its tracking
server keeps everything it computed: logging errors after the start-up check become warnings.
Runs are addressed by id through ``MlflowClient`` (no global active run), which lets a resumed
run continue its MLflow run and lets multirun jobs hang their runs under one sweep run.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

from raw2logit.errors import InputError

STATUSES = ("FINISHED", "FAILED", "KILLED")


def default_uri(outputs: str | Path = "outputs") -> str:
    return f"sqlite:///{Path(outputs).resolve() / 'mlflow.db'}"


class Tracker:
    """Logs runs to one MLflow experiment.

    Args:
        uri: tracking URI; None means ``MLFLOW_TRACKING_URI`` if set, else the local store
            ``sqlite:///<outputs>/mlflow.db`` with artifacts in ``<outputs>/mlartifacts``.
        experiment: experiment name.
        outputs: folder of the local store.
        enabled: False turns every call into a no-op (files are still written by the modes).
        log: printer for messages.
    """

    def __init__(self, uri: str | None = None, experiment: str = "raw2logit", outputs: str | Path = "outputs",
                 enabled: bool = True, log=print):  # fmt: skip
        self.enabled = enabled
        self.log = log
        self.outputs = Path(outputs).resolve()
        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(self.outputs)
        self.local = self.uri.startswith("sqlite:") and str(self.outputs) in self.uri
        self.experiment = experiment
        self._client = None
        self._experiment_id = None
        self._failures: set[str] = set()

    # -- set-up ---------------------------------------------------------------------------
    def connect(self) -> Tracker:
        """Open the store and the experiment; an unreachable server is an error now, not later."""
        if not self.enabled:
            return self
        from raw2logit.runtime import offline_libraries

        offline_libraries()
        # MLflow logs "Creating initial MLflow database tables..." at INFO on stderr (its loggers are
        # configured on import, from this variable): bad input found later must be the only line there.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # bars are for notebooks
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.tracking import MlflowClient

        if os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING":  # mlflow was imported before, at its INFO
            logging.getLogger("mlflow").setLevel(logging.WARNING)

        from raw2logit.locks import file_lock

        lock = file_lock(self.outputs / ".mlflow.lock") if self.local else nullcontext()
        with lock:  # two first runs together: one creates the SQLite store, the other waits for it
            self._open_store(MlflowClient)
        # No mlflow.set_tracking_uri: it exports MLFLOW_TRACKING_URI to the whole process (and its
        # children), which would send a later run with another store to this one.
        return self

    def _open_store(self, MlflowClient) -> None:
        if self.local:
            self.outputs.mkdir(parents=True, exist_ok=True)
        try:
            self._client = MlflowClient(tracking_uri=self.uri)
            experiment = self._client.get_experiment_by_name(self.experiment)
            if experiment is None:
                location = (self.outputs / "mlartifacts").as_uri() if self.local else None
                self._experiment_id = self._client.create_experiment(
                    self.experiment, artifact_location=location
                )
            else:
                self._experiment_id = experiment.experiment_id
        except Exception as error:  # any failure here means the store cannot be used
            raise InputError(
                f"The MLflow tracking store {self.uri} is not reachable ({type(error).__name__}); "
                "check tracking.uri or MLFLOW_TRACKING_URI, or run with tracking.enabled=false."
            ) from None

    @property
    def ui_command(self) -> str:
        if self.local:
            return f"mlflow ui --backend-store-uri {self.uri}"
        return f"mlflow ui --backend-store-uri {self.uri}  (or open the server's own UI)"

    # -- runs -----------------------------------------------------------------------------
    def _safely(self, action: str, fn, *args, **kwargs):
        if not self.enabled or self._client is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # logging must never lose the run's results
            message = f"MLflow {action} failed ({type(error).__name__}: {str(error)[:300]}); files are kept on disk."
            if message not in self._failures:  # every distinct failure is told, each once
                self._failures.add(message)
                warnings.warn(message, stacklevel=3)
            return None

    def start(self, name: str, params: dict | None = None, tags: dict | None = None,
              parent: str | None = None) -> str | None:  # fmt: skip
        """Create a run; returns its id (None when tracking is off or the store failed)."""

        def create():
            all_tags = dict(tags or {})
            if parent:
                all_tags["mlflow.parentRunId"] = parent
            run = self._client.create_run(self._experiment_id, run_name=name, tags=all_tags)
            return run.info.run_id

        run_id = self._safely("start", create)
        if run_id and params:
            self.log_params(run_id, params)
        return run_id

    def log_params(self, run_id, params: dict) -> None:
        from mlflow.entities import Param

        flat = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        self._safely("log_params", lambda: self._client.log_batch(run_id, params=flat) if run_id else None)

    def log_metrics(self, run_id, metrics: dict, step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(str(k), float(v), stamp, step) for k, v in metrics.items()]
        self._safely("log_metrics", lambda: self._client.log_batch(run_id, metrics=batch) if run_id else None)

    def log_artifacts(self, run_id, folder: str | Path, artifact_path: str | None = None) -> None:
        if run_id and Path(folder).exists():
            self._safely("log_artifacts", self._client.log_artifacts, run_id, str(folder), artifact_path)

    def log_artifact(self, run_id, path: str | Path, artifact_path: str | None = None) -> None:
        if run_id and Path(path).exists():
            self._safely("log_artifact", self._client.log_artifact, run_id, str(path), artifact_path)

    def end(self, run_id, status: str = "FINISHED") -> None:
        if run_id:
            self._safely("end", self._client.set_terminated, run_id, status)

    def status(self, run_id) -> str | None:
        run = self._safely("get_run", self._client.get_run, run_id) if run_id else None
        return run.info.status if run else None

    def has_metrics(self, run_id) -> bool:
        run = self._safely("get_run", self._client.get_run, run_id) if run_id else None
        return bool(run and run.data.metrics)

    @contextmanager
    def run(self, name: str, params: dict | None = None, parent: str | None = None, tags: dict | None = None):
        """A run that ends FINISHED, or FAILED if its block raises (KILLED on interruption)."""
        from raw2logit.runtime import interrupted

        run_id = self.start(name, params, tags=tags, parent=parent)
        try:
            yield run_id
        except BaseException as error:
            killed = isinstance(error, KeyboardInterrupt) or interrupted()
            self.end(run_id, "KILLED" if killed else "FAILED")
            raise
        self.end(run_id, "FINISHED")
