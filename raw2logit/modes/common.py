"""What every mode shares: the context it runs in, the objects built from the config, its results
store, its MLflow run, and how a run is finished (summary, artifacts, stage figure, report).

Only ``raw2logit.cli`` and the modes read the configuration; everything they call gets plain
arguments and built objects.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from raw2logit.errors import InputError
from raw2logit.names import MODES

# Config keys that never change a result, whatever the mode: where things are written and logged.
# Each mode adds its own (``RESULTS_IGNORE``); the options of the other modes are ignored too.
IGNORED_BY_EVERY_MODE = ("tracking", "paths", "hydra", "run_dir", "mode", "resume")


def log(message: str = "") -> None:
    print(message, flush=True)


@dataclass
class Context:
    """What every mode gets from the command line: the config, where to write, the data, tracking."""

    cfg: DictConfig
    run_dir: Path
    dataset: object
    tracker: object
    parent_run: str | None = None  # the enclosing sweep's MLflow run, for multirun jobs
    helpers: object = None  # helper processes started with the run (the mode's ``prestart``)


# -- the results store --------------------------------------------------------------------------------
def _drop(container: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    node = container
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(last, None)


def results_key(cfg: DictConfig, mode: str, ignore: Sequence[str] = (), extra: bytes = b"") -> str:
    """A short hash of everything that decides a mode's results: the whole resolved config minus the
    keys that do not (``IGNORED_BY_EVERY_MODE``, the other modes' options and ``ignore``), plus the
    package's source (edited code never reuses old results) and ``extra`` (e.g. a calibrated file)."""
    from raw2logit.provenance import source_hash

    values = OmegaConf.to_container(cfg, resolve=True)
    for key in (*IGNORED_BY_EVERY_MODE, *(m for m in MODES if m != mode), *ignore):
        _drop(values, key)
    digest = hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode())
    digest.update(source_hash().encode())
    digest.update(extra)
    return digest.hexdigest()[:12]


def results_store(cfg: DictConfig, mode: str, ignore: Sequence[str] = (), extra: bytes = b"") -> Path:
    """``<paths.results>/<mode>-<dataset>-<key>``: the resumable results of one experiment; with
    ``resume=never`` a store of its own (``...-<key>-fresh-<time>``), so nothing earlier is reused
    and nothing earlier is overwritten."""
    name = f"{mode}-{cfg.dataset.name}-{results_key(cfg, mode, ignore, extra)}"
    if cfg.get("resume", "auto") == "never":
        name += f"-fresh-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    return Path(cfg.paths.results) / name


def announce_resume(results: Path, done: int, total: int) -> None:
    """``resuming <run> from <date>: N of M units done`` when the results store holds earlier work."""
    state = results / "mlflow_run.json"
    if done and state.exists():
        record = json.loads(state.read_text())
        log(f"resuming {record.get('run_id') or 'an untracked run'} from {record.get('date', '?')}: "
            f"{done} of {total} units done ({results}; resume=never starts afresh)")  # fmt: skip


# -- objects built from the config --------------------------------------------------------------------
def flat_params(cfg: DictConfig) -> dict:
    """The resolved config as flat ``a.b.c: value`` pairs (for MLflow params)."""
    flat = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def unexpected_argument(error: BaseException, group: str, callable_) -> InputError | None:
    """A ``TypeError`` for an argument ``callable_`` does not take (a key added with ``+group.key=``)
    as one sentence naming the key and the arguments it does take; None for any other error."""
    import inspect
    import re

    match = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    if not isinstance(error, TypeError) or match is None:
        return None
    accepted = sorted(set(inspect.signature(callable_).parameters) - {"self", "args", "kwargs"})
    return InputError(f"{group}.{match.group(1)} is not an option of {getattr(callable_, '__name__', callable_)}; "
                      f"expected among {', '.join(accepted)}.")  # fmt: skip


def instantiate_clean(node, group: str = "config", **kwargs):
    """``hydra.utils.instantiate`` whose bad-input failures are one sentence: an ``InputError`` of the
    builder unwrapped, an argument the builder does not take named."""
    from hydra.errors import InstantiationException
    from hydra.utils import get_method, instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, InputError):
            sentence = unexpected_argument(cause, group, get_method(node._target_))
            if sentence is not None:
                raise sentence from None
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def build_dataset(cfg: DictConfig):
    return instantiate_clean(cfg.dataset, "dataset", _convert_="all")


def build_task_model(cfg: DictConfig, task, in_channels: int = 3):
    """The task model of the ``task_model`` group for ``task`` (a builder that takes ``task``, such as
    ``small`` or ``paper``, picks the network for it)."""
    import inspect

    from hydra.utils import get_method

    extra = (
        {"task": task.name}
        if "task" in inspect.signature(get_method(cfg.task_model._target_)).parameters
        else {}
    )
    return instantiate_clean(cfg.task_model, "task_model", num_classes=task.num_classes, in_channels=in_channels,
                             **extra)  # fmt: skip


def check_task_model(task_model, task, in_channels: int, cfg: DictConfig, dataset_name: str) -> None:
    """The task model makes the logits its task needs (a classifier on segmentation data, or the
    reverse, is one sentence here rather than a shape error deep in the loss)."""
    import torch

    was_training = task_model.training
    with torch.no_grad():
        logits = task_model.eval()(torch.zeros(1, in_channels, 64, 64))
    task_model.train(was_training)
    expected = (1, task.num_classes) if task.name == "classification" else (1, 1)
    if tuple(logits.shape[:2]) != expected or (logits.dim() == 2) != (task.name == "classification"):
        target = cfg.task_model.get("_target_", "?").rsplit(".", 1)[-1]
        kind = "per-image class logits" if task.name == "classification" else "one logit map per image"
        raise InputError(f"task_model {target} gives logits of shape {tuple(logits.shape)} for a 64x64 image, but "
                         f"{dataset_name} is a {task.name} dataset that needs {kind}; choose a {task.name} task model.")  # fmt: skip


def device(cfg: DictConfig) -> str:
    """Where the run computes outside the training loop (views, evaluation). Under ``trainer=ddp``
    that is the CPU: the training processes are forked from the run, which CUDA does not survive."""
    import torch

    from raw2logit.config import is_distributed

    if is_distributed(cfg.trainer):
        return "cpu"
    return "cuda" if cfg.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"


def make_module_factory(cfg: DictConfig, dataset, data_model_factory=None, in_channels: int = 3):
    """A function ``(normalisation) -> DriftModule`` for ``dataset`` (a fresh one per cell or fold)."""
    from raw2logit.tasks.task import Task
    from raw2logit.training import DriftModule

    checked = []

    def make(normalisation=None):
        task_model = build_task_model(cfg, Task.of(dataset), in_channels)
        if not checked:
            check_task_model(task_model, Task.of(dataset), in_channels, cfg, dataset.name)
            checked.append(True)
        return DriftModule(
            task_model=task_model,
            task=Task.of(dataset),
            lr=cfg.lr,
            data_model=data_model_factory() if data_model_factory is not None else None,
            data_model_lr=cfg.data_model.get("lr"),
            normalisation=normalisation if dataset.normalisation == "auto" else dataset.normalisation,
            augment=cfg.augment,
            seed=cfg.seed,
        )

    return make


def make_trainer_factory(cfg: DictConfig, tracker=None, progress_bar: bool | None = None, **overrides):
    """A function ``(label, extra callbacks, run_id) -> Trainer`` of the ``trainer`` group.

    With a ``run_id`` (an MLflow run of ``tracker``), the training logs into that run through
    Lightning's logging: per-step training loss, per-epoch validation metric, learning rate. On a
    terminal Lightning draws its progress bar; in a log, one plain line per epoch.
    ``progress_bar`` (True or False) overrides both; ``overrides`` replace Trainer arguments (e.g.
    ``max_epochs`` for the forensic search).
    """
    import sys

    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from raw2logit.training import ProgressPrinter, RunLogger

    bar = cfg.trainer.get("enable_progress_bar") if progress_bar is None else progress_bar
    bar = sys.stdout.isatty() if bar is None else bool(bar)

    def make(label: str, extra_callbacks=None, run_id: str | None = None):
        partial = instantiate(cfg.trainer)  # anew for each Trainer: a strategy object serves one
        callbacks = [] if bar else [ProgressPrinter(label, log)]
        logger = False
        if tracker is not None and tracker.enabled and run_id:
            logger = RunLogger(tracker, run_id)
            callbacks.append(pl.callbacks.LearningRateMonitor(logging_interval="epoch"))
        try:
            return partial(callbacks=[*callbacks, *(extra_callbacks or [])], logger=logger,
                           enable_progress_bar=bar, **overrides)  # fmt: skip
        except TypeError as error:
            sentence = unexpected_argument(error, "trainer", pl.Trainer)
            if sentence is None:
                raise
            raise sentence from None

    return make


def build_tracker(cfg: DictConfig, log=log):
    """The MLflow tracker of the ``tracking`` group, connected, tagging every run with what the config
    selected (mode, dataset, data model, task model)."""
    from raw2logit.names import DATA_MODEL_TARGETS
    from raw2logit.tracking import Tracker

    data_model = {target: name for name, target in DATA_MODEL_TARGETS.items()}.get(
        cfg.data_model.get("_target_")
    )
    tags = {"raw2logit.mode": cfg.mode, "raw2logit.dataset": cfg.dataset.name,
            "raw2logit.data_model": data_model or "-",
            "raw2logit.task_model": str(cfg.task_model.get("_target_", "-")).rsplit(".", 1)[-1]}  # fmt: skip
    return Tracker(cfg.tracking.uri, cfg.tracking.experiment, cfg.paths.outputs, cfg.tracking.enabled, log, tags,
                   bool(cfg.tracking.get("system_metrics", False))).connect()  # fmt: skip


# -- the run: MLflow, provenance, summary, report ------------------------------------------------------
def record_run(ctx: Context, run_id: str | None) -> None:
    """Seed, resolved config, package versions and git commit, beside the results and in MLflow."""
    from raw2logit.provenance import provenance

    info = provenance(ctx.cfg)
    path = ctx.run_dir / "run.json"
    path.write_text(json.dumps({**info, "mlflow_run_id": run_id, "tracking_uri": ctx.tracker.uri}, indent=2))
    (ctx.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(ctx.cfg, resolve=True))
    ctx.tracker.log_artifact(run_id, path)
    ctx.tracker.log_artifact(run_id, ctx.run_dir / "config.yaml")


@contextmanager
def mode_run(
    ctx: Context, name: str, results: Path | None = None, tags: dict | None = None
) -> Iterator[str | None]:
    """This invocation's MLflow run (ended FINISHED, FAILED or KILLED with its block), with the run's
    provenance recorded. Runs are never reopened: when the results store was used before, the new run
    is tagged with the run it continues (``raw2logit.continues``)."""
    from raw2logit.data.files import write_json_atomic

    state = results / "mlflow_run.json" if results is not None else None
    previous = json.loads(state.read_text()).get("run_id") if state is not None and state.exists() else None
    tags = {**(tags or {}), **({"raw2logit.continues": previous} if previous else {})}
    with ctx.tracker.run(name, params=flat_params(ctx.cfg), parent=ctx.parent_run, tags=tags) as run_id:
        if state is not None:
            write_json_atomic(state, {"run_id": run_id, "date": time.strftime("%Y-%m-%d %H:%M:%S")})
        record_run(ctx, run_id)
        yield run_id


def finish_run(ctx: Context, run_id, summary: dict, folder: Path | None, data_model=None, raw=None) -> None:
    """summary.json and the mode's folder, then the stage-by-stage figure (paper Fig. 1) of
    ``data_model`` on ``raw`` and the self-contained report.html; all logged to the run."""
    from raw2logit.report.html import write_report
    from raw2logit.report.stages import save_stage_figure

    (ctx.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if folder is not None:
        ctx.tracker.log_artifacts(run_id, folder, folder.name)
    ctx.tracker.log_artifact(run_id, ctx.run_dir / "summary.json")
    try:
        if data_model is not None and raw is not None:
            save_stage_figure(data_model.cpu(), raw, ctx.run_dir / "stages.png", names=None)
            ctx.tracker.log_artifact(run_id, ctx.run_dir / "stages.png")
        report = write_report(ctx.run_dir)
        ctx.tracker.log_artifact(run_id, report)
        log(f"report: {report}")
    except Exception as error:  # a figure or report must never cost the run's results
        log(f"warning: report.html not written ({type(error).__name__}: {error})")


def check_finite_result(result: dict, keys, what: str) -> None:
    """Nothing non-finite is stored as a finished result."""
    import math

    from raw2logit.errors import NonFiniteError

    bad = {key: result[key] for key in keys if not math.isfinite(float(result[key]))}
    if bad:
        raise NonFiniteError(f"The {what} ended with non-finite results {bad}; nothing is stored (check lambda and "
                             "the learning rates).")  # fmt: skip
