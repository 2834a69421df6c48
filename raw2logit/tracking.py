"""MLflow glue: a local store by default, a remote one from config or ``MLFLOW_TRACKING_URI``.

Every mode writes its files first and logs them afterwards, so a run that loses its tracking
server keeps everything it computed: logging errors after the start-up check become warnings.
Runs are addressed by id through ``MlflowClient`` (no global active run), which lets multirun jobs
hang their runs under one sweep run and trainings hang theirs under the mode's run. Every run
carries the tags that find it (mode, dataset, data model, task model, source and code version);
a failed run carries its one-sentence reason.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

from raw2logit.errors import InputError

STATUSES = ("FINISHED", "FAILED", "KILLED")
# MLflow 3 opens an experiment on its GenAI overview unless told it holds model development runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


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
        tags: tags of every run (e.g. mode, dataset, data model, task model).
        system_metrics: sample CPU, memory and GPU use into each run started with ``run`` (MLflow's
            system metrics monitor).
    """

    def __init__(self, uri: str | None = None, experiment: str = "raw2logit", outputs: str | Path = "outputs",
                 enabled: bool = True, log=print, tags: dict | None = None,
                 system_metrics: bool = False):  # fmt: skip
        self.enabled = enabled
        self.tags = {**source_tags(), **{k: str(v) for k, v in (tags or {}).items()}}  # on every run
        self.system_metrics = system_metrics
        self.system_metrics_interval = 10.0  # seconds between samples
        self._monitors: dict[str, object] = {}
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
                    self.experiment, artifact_location=location, tags=EXPERIMENT_KIND
                )
            else:
                self._experiment_id = experiment.experiment_id
                for key, value in EXPERIMENT_KIND.items():
                    if experiment.tags.get(key) != value:
                        self._client.set_experiment_tag(self._experiment_id, key, value)
        except Exception as error:  # any failure here means the store cannot be used
            raise InputError(
                f"The MLflow tracking store {self.uri} is not reachable ({type(error).__name__}); "
                "check tracking.uri or MLFLOW_TRACKING_URI, or run with tracking.enabled=false."
            ) from None

    @property
    def ui_command(self) -> str:
        # MLflow 3 opens experiments on its GenAI side unless the address asks for model training.
        page = f"#/experiments/{self._experiment_id}/runs?workflowType=machine_learning"
        if self.local:
            return f"mlflow ui --backend-store-uri {self.uri}\n  then open http://127.0.0.1:5000/{page}"
        return f"mlflow ui --backend-store-uri {self.uri}  (or open the server's own UI at <server>/{page})"

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
            all_tags = {**self.tags, **{k: str(v) for k, v in (tags or {}).items()}}
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

        self.log_metric_rows(run_id, [(metrics, step, int(time.time() * 1000))])

    def log_metric_rows(self, run_id, rows) -> None:
        """Many steps' metrics in as few writes as MLflow allows: ``rows`` of (metrics, step, time in ms)."""
        from mlflow.entities import Metric

        batch = [
            Metric(str(k), float(v), stamp, step) for metrics, step, stamp in rows for k, v in metrics.items()
        ]
        for start in range(0, len(batch), 1000):  # MLflow's limit per log_batch
            chunk = batch[start : start + 1000]
            self._safely(
                "log_metrics", lambda c=chunk: self._client.log_batch(run_id, metrics=c) if run_id else None
            )

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

    def discard(self, run_id) -> None:
        """Move a run to MLflow's trash (``mlflow gc`` removes it for good; the UI can restore it)."""
        if run_id:
            self._safely("delete_run", self._client.delete_run, run_id)

    def has_metrics(self, run_id) -> bool:
        run = self._safely("get_run", self._client.get_run, run_id) if run_id else None
        return bool(run and run.data.metrics)

    def set_tags(self, run_id, tags: dict) -> None:
        if run_id:
            for key, value in tags.items():
                self._safely("set_tag", self._client.set_tag, run_id, key, str(value)[:5000])

    def fail(self, run_id, error: BaseException) -> None:
        """End ``run_id`` FAILED with its reason: the one sentence of bad input, else the exception."""
        reason = str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
        self.set_tags(run_id, {"raw2logit.error": reason, "mlflow.note.content": f"Failed: {reason}"})
        self.end(run_id, "FAILED")

    @contextmanager
    def run(self, name: str, params: dict | None = None, parent: str | None = None, tags: dict | None = None):
        """A run that ends FINISHED, or FAILED with its reason if its block raises (KILLED on
        interruption); with ``system_metrics``, CPU/memory/GPU use is sampled into it meanwhile."""
        from raw2logit.runtime import interrupted

        run_id = self.start(name, params, tags=tags, parent=parent)
        monitor = self._monitor(run_id)
        try:
            yield run_id
        except BaseException as error:
            killed = isinstance(error, KeyboardInterrupt) or interrupted()
            if monitor is not None:
                monitor.finish()
            if killed:
                self.end(run_id, "KILLED")
            else:
                self.fail(run_id, error)
            raise
        if monitor is not None:
            monitor.finish()
        self.end(run_id, "FINISHED")

    def _monitor(self, run_id):
        if not (self.system_metrics and self.enabled and run_id):
            return None
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            run_id,
            sampling_interval=self.system_metrics_interval,
            samples_before_logging=1,
            tracking_uri=self.uri,
        )
        self._safely("system metrics", monitor.start)
        return monitor

    # -- models ---------------------------------------------------------------------------
    @contextmanager
    def _fluent(self):
        """MLflow's module-level functions (``mlflow.pytorch.log_model``) pointed at this store for the
        block, and pointed back afterwards (they read a process-wide tracking URI)."""
        import mlflow

        previous, variable = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.uri)
        try:
            yield mlflow
        finally:
            mlflow.set_tracking_uri(previous)
            if variable is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = variable

    def log_model(
        self, run_id, task_model, example, checkpoint: Path, name: str = "task_model"
    ) -> str | None:
        """Log ``task_model`` as an MLflow model of run ``run_id`` (signature and input example from
        ``example``, a (1, C, H, W) tensor; the weights-only ``checkpoint`` inside it, which is what
        raw2logit reads back), and end the run FINISHED. Returns the model's ``models:/`` URI.

        The model is saved in MLflow's pickle format: loading it with ``mlflow.pytorch.load_model``
        unpickles, which is fine for the user's own store; raw2logit itself only ever reads the
        checkpoint (``forensics.from_run`` accepts ``models:/`` URIs that way).
        """
        if not (self.enabled and run_id):
            return None

        def log():
            import torch
            from mlflow.models import infer_signature

            with torch.no_grad():
                output = task_model.eval()(example)
            signature = infer_signature(example.numpy(), output.numpy())
            with self._fluent() as mlflow:
                import mlflow.pytorch

                logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)  # its pickle caution, every time
                with mlflow.start_run(run_id=run_id):  # ends the run FINISHED when the block ends
                    info = mlflow.pytorch.log_model(task_model, name=name, signature=signature,
                                                    input_example=example.numpy(), pip_requirements=["torch"],
                                                    serialization_format="pickle",
                                                    extra_files=[str(checkpoint)])  # fmt: skip
            return info.model_uri

        return self._safely("log_model", log)


def source_tags() -> dict[str, str]:
    """MLflow's source tags: the command, and the code version (the git commit, or the hash of the
    package's source outside git)."""
    import sys

    from raw2logit.provenance import git_commit, source_hash

    commit = git_commit()
    return {"mlflow.source.name": Path(sys.argv[0]).name or "raw2logit", "mlflow.source.type": "LOCAL",
            "mlflow.source.git.commit": commit or f"source-{source_hash()}",
            "raw2logit.source_hash": source_hash()}  # fmt: skip
