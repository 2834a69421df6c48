"""``main(cfg)``: build every object from the Hydra config and run the selected mode.

This is the only module that reads the configuration; components receive plain arguments and
built objects. Bad input ends the run with one sentence on stderr and exit status 2
(``HYDRA_FULL_ERROR=1`` shows the traceback instead); an interrupted run (Ctrl-C, SIGTERM) ends
its MLflow runs as KILLED, keeps every file already written, and exits with status 130.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from raw2logit.errors import InputError

MODES = ("synthesis", "forensics", "optimization", "calibrate")


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


def _quiet_libraries() -> None:
    import pytorch_lightning  # noqa: F401  (configures its loggers on import: import first, then quieten)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available.*")
    warnings.filterwarnings("ignore", message=".*TPU available.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")


def run_dir(cfg: DictConfig) -> Path:
    """The Hydra run (or multirun job) directory; the current directory outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path(cfg.get("run_dir") or ".").resolve()


def fingerprint(cfg: DictConfig, keys: list[str]) -> str:
    """A short hash of the config values that decide a result (used to key resumable results).

    The package version is part of it: results of another release are not reused.
    """
    from raw2logit import __version__

    values = {key: OmegaConf.select(cfg, key) for key in keys} | {"raw2logit": __version__}
    values = {
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in values.items()
    }
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


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


def instantiate_clean(node, **kwargs):
    """``hydra.utils.instantiate`` that lets an ``InputError`` through unwrapped (one clear sentence)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, InputError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def build_dataset(cfg: DictConfig):
    return instantiate_clean(cfg.dataset, _convert_="all")


def build_task_model(cfg: DictConfig, num_classes: int, in_channels: int = 3):
    return instantiate_clean(cfg.task_model, num_classes=num_classes, in_channels=in_channels)


def make_module_factory(cfg: DictConfig, dataset, processor_factory=None, in_channels: int = 3):
    """A function returning a fresh ``DriftModule`` for ``dataset`` (one per cell or fold)."""
    from raw2logit.training import DriftModule

    def make(normalisation=None):
        processor = processor_factory() if processor_factory is not None else None
        return DriftModule(
            task_model=build_task_model(cfg, dataset.num_classes, in_channels),
            task=dataset.task,
            num_classes=dataset.num_classes,
            lr=cfg.lr,
            processor=processor,
            processor_lr=cfg.data_model.get("lr"),
            normalisation=normalisation if dataset.normalisation == "auto" else dataset.normalisation,
            augment=cfg.augment,
            seed=cfg.seed,
        )

    return make


def make_trainer_factory(cfg: DictConfig, callbacks_factory=None, **overrides):
    """A function (label, extra callbacks) -> a fresh Lightning ``Trainer`` from the ``trainer`` group.

    ``overrides`` replace Trainer arguments (e.g. ``max_epochs`` for the forensic search).
    """
    import pytorch_lightning as pl

    from raw2logit.training import ProgressPrinter

    settings = {
        "max_epochs": cfg.epochs,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        **overrides,
    }

    def make(label: str, extra_callbacks=None):
        callbacks = [ProgressPrinter(label, log)] + (callbacks_factory() if callbacks_factory else [])
        return pl.Trainer(**settings, callbacks=callbacks + list(extra_callbacks or []))

    return make


def record_run(ctx: Context, run_id: str | None) -> None:
    """Seed, resolved config, package versions and git commit, beside the results and in MLflow."""
    from raw2logit.provenance import provenance

    info = provenance(ctx.cfg)
    path = ctx.run_dir / "run.json"
    path.write_text(json.dumps({**info, "mlflow_run_id": run_id, "tracking_uri": ctx.tracker.uri}, indent=2))
    (ctx.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(ctx.cfg, resolve=True))
    ctx.tracker.log_artifact(run_id, path)
    ctx.tracker.log_artifact(run_id, ctx.run_dir / "config.yaml")


def _main(cfg: DictConfig):
    from raw2logit.runtime import idle_threads_sleep, keep_freed_memory
    from raw2logit.tracking import Tracker

    idle_threads_sleep()  # before anything imports torch
    keep_freed_memory()
    _quiet_libraries()
    if cfg.mode not in MODES:
        raise InputError(f"Unknown mode {cfg.mode!r}; expected one of {', '.join(MODES)}.")
    directory = run_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.paths.outputs, cfg.tracking.enabled, log
    ).connect()
    log(f"raw2logit {cfg.mode} on {cfg.dataset.name}; results in {directory}")
    if tracker.enabled:
        log(f"MLflow store: {tracker.uri}\n  open it with: {tracker.ui_command}")
    if cfg.mode == "calibrate" and cfg.calibrate.pairs:
        ctx = Context(cfg, directory, None, tracker, os.environ.get("RAW2LOGIT_PARENT_RUN_ID"))
        from raw2logit.modes import calibrate_mode

        return calibrate_mode(ctx)
    dataset = build_dataset(cfg)
    log(f"data: {len(dataset)} {dataset.task} images of {dataset.image_shape[0]}x{dataset.image_shape[1]} "
        f"({dataset.num_classes if dataset.task == 'classification' else 'binary'} classes), intensity "
        f"{dataset.intensity}, camera {dataset.camera.name}" + (f", {len(dataset.skipped)} bad files skipped" if dataset.skipped else ""))  # fmt: skip
    ctx = Context(cfg, directory, dataset, tracker, os.environ.get("RAW2LOGIT_PARENT_RUN_ID"))
    from raw2logit import modes

    handlers = {"synthesis": modes.synthesis_mode, "forensics": modes.forensics_mode,
                "optimization": modes.optimization_mode, "calibrate": modes.calibrate_mode}  # fmt: skip
    return handlers[cfg.mode](ctx)


def main(cfg: DictConfig):
    """Entry point called by ``run.py``."""
    from raw2logit.runtime import interrupted, request_interrupt

    previous = {sig: signal.signal(sig, request_interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _main(cfg)
    except InputError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    except (KeyboardInterrupt, SystemExit) as error:
        if isinstance(error, SystemExit) and not interrupted():
            raise
        print("interrupted: finished results are kept; run the same command again to resume.", file=sys.stderr,
              flush=True)  # fmt: skip
        sys.exit(130)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
