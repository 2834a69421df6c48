"""``main(cfg)``: check the composed config, set the process up, and hand over to the selected mode.

The command line composes (Hydra) and dispatches (``raw2logit.modes``); the modes build what they
need from the config. Bad input ends the run with one sentence on stderr and exit status 2
(``HYDRA_FULL_ERROR=1`` shows the traceback instead); an interrupted run (Ctrl-C, SIGTERM) ends
its MLflow runs as KILLED, keeps every file already written, and exits with status 130.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from omegaconf import DictConfig

from raw2logit.errors import InputError


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


def check_writable(folder: Path, key: str) -> Path:
    """Create ``folder`` if needed and prove a file can be written there (one sentence if not)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".raw2logit-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise InputError(f"{folder} is not writable ({error.strerror or type(error).__name__}); "
                         f"expected a folder raw2logit can write to (set {key}=...).") from None  # fmt: skip
    return folder


def check_machine(cfg: DictConfig) -> None:
    """What only this machine can tell: a GPU for trainer=gpu/ddp."""
    import torch

    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise InputError(f"trainer.accelerator={accelerator} needs a CUDA GPU, and torch sees none on this machine "
                         "(torch.cuda.is_available() is False); use trainer=cpu.")  # fmt: skip


def _main(cfg: DictConfig):
    from raw2logit.runtime import idle_threads_sleep

    idle_threads_sleep()  # before anything imports torch
    from raw2logit import modes
    from raw2logit.config import check_config
    from raw2logit.modes.common import log
    from raw2logit.runtime import offline_libraries

    check_config(cfg)
    offline_libraries()
    log(f"raw2logit {cfg.mode} on {cfg.dataset.name}")  # at once: importing torch and Lightning takes seconds
    check_machine(cfg)
    directory = check_writable(run_dir(cfg), "hydra.run.dir")
    check_writable(Path(cfg.paths.outputs), "paths.outputs")
    mode = modes.get(cfg.mode)
    # A mode's helper processes start now: their imports overlap this one's MLflow store and data.
    helpers = mode.prestart(cfg, directory) if hasattr(mode, "prestart") else None
    try:
        return _run_mode(cfg, mode, directory, helpers)
    finally:
        if helpers is not None:
            helpers.close()


def _run_mode(cfg: DictConfig, mode, directory: Path, helpers):
    from raw2logit import modes
    from raw2logit.modes.common import Context, build_dataset, build_tracker, log
    from raw2logit.runtime import console_log, keep_freed_memory
    from raw2logit.sweeps import PARENT_ENV

    with console_log(directory / "run.log"):  # the job's console output, kept beside its results
        keep_freed_memory()
        _quiet_libraries()
        log(f"results in {directory}")
        tracker = build_tracker(cfg)
        if tracker.enabled:
            log(f"MLflow store: {tracker.uri}\n  open it with: {tracker.ui_command}")
        dataset = None
        if modes.uses_dataset(mode, cfg):
            dataset = build_dataset(cfg)
            log(f"data: {len(dataset)} {dataset.task} images of {dataset.image_shape[0]}x{dataset.image_shape[1]} "
                f"({dataset.num_classes if dataset.task == 'classification' else 'binary'} classes), intensity "
                f"{dataset.intensity}, camera {dataset.camera.name}" + (f", {len(dataset.skipped)} bad files skipped" if dataset.skipped else ""))  # fmt: skip
        return mode.run(Context(cfg, directory, dataset, tracker, os.environ.get(PARENT_ENV), helpers))


def _append_to_run_log(cfg: DictConfig, line: str) -> None:
    """The run's last word, in its job log too (when the run got as far as starting one)."""
    try:
        log = run_dir(cfg) / "run.log"
        if log.exists():
            with log.open("a", encoding="utf-8") as stream:
                stream.write(line + "\n")
    except (OSError, ValueError):
        pass


def _discard_empty_run_dir(cfg: DictConfig) -> None:
    """A run stopped by bad input before it wrote anything leaves no folder behind (Hydra creates
    the run folder and its ``.hydra/`` before the config can be checked)."""
    import shutil

    try:
        directory = run_dir(cfg)
        if directory.is_dir() and {p.name for p in directory.iterdir()} <= {".hydra"}:
            shutil.rmtree(directory)
    except (OSError, InputError, ValueError):
        pass


def main(cfg: DictConfig):
    """Entry point called by ``run.py``."""
    from raw2logit.runtime import interrupted, request_interrupt

    previous = {sig: signal.signal(sig, request_interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _main(cfg)
    except InputError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _discard_empty_run_dir(cfg)
        print(f"error: {error}", file=sys.stderr, flush=True)
        _append_to_run_log(cfg, f"error: {error}")
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
