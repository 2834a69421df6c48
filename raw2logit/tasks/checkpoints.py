"""Task model checkpoints: written by synthesis and forensics, read by forensics (and by users).

A checkpoint is data: plain tensors, numbers, strings and lists, read with
``torch.load(..., weights_only=True)`` (no pickled objects). The task model it holds is rebuilt
from its stored spec by looking the spec's builder up in ``TASK_MODELS`` and calling it with
checked plain arguments; nothing the file names is imported or called, and no pretrained weights
are fetched (the checkpoint's own weights replace them).
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import torch
from torch import nn

from raw2logit.errors import InputError
from raw2logit.names import TASKS
from raw2logit.tasks.models import TASK_MODELS

REQUIRED_KEYS = ("state_dict", "task", "num_classes", "task_model")
# Arguments the builder gets from the dataset, or that would fetch other weights.
SET_BY_LOADER = {"num_classes", "in_channels", "task", "pretrained", "weights_path"}


def save_task_model(task_model: nn.Module, normalisation: dict | None, path: Path, metadata: dict) -> Path:
    """Write ``task_model``'s weights, its input normalisation and ``metadata`` (the task model spec
    under ``task_model``, task, num_classes, pipeline, fold, ...) as a weights-only checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": task_model.state_dict(), "normalisation": normalisation, **metadata}, path)
    return path


def _plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(item) for item in value)
    return value is None or isinstance(value, (bool, int, float, str))


def build_from_spec(
    spec, num_classes: int, in_channels: int, where: str, task: str = "classification"
) -> nn.Module:
    """The task model a stored spec describes, through the ``TASK_MODELS`` allow-list."""
    if not isinstance(spec, dict) or not isinstance(spec.get("_target_"), str):
        raise InputError(
            f"{where} holds no task model spec (a mapping with '_target_'); it cannot be rebuilt."
        )
    target = spec["_target_"]
    builder = TASK_MODELS.get(target)
    if builder is None:
        raise InputError(f"{where} names the task model builder {target!r}, which is not one of raw2logit's "
                         f"({', '.join(TASK_MODELS)}); a checkpoint is data and names nothing that is run.")  # fmt: skip
    accepted = set(inspect.signature(builder).parameters) - SET_BY_LOADER
    arguments = {}
    for key, value in spec.items():
        if key == "_target_" or key in SET_BY_LOADER:
            continue
        if key not in accepted or not _plain(value):
            raise InputError(f"{where}: task model argument {key}={value!r} is not a plain value {builder.__name__} "
                             f"takes (expected among {', '.join(sorted(accepted)) or 'none'}).")  # fmt: skip
        arguments[key] = value
    if "task" in inspect.signature(builder).parameters:  # a family (small, paper) picks its network
        arguments["task"] = task
    return builder(num_classes=num_classes, in_channels=in_channels, **arguments)


def _normalisation(value, where: str) -> dict | None:
    if value is None:
        return None
    ok = isinstance(value, dict) and set(value) == {"mean", "std"}
    ok = ok and all(
        isinstance(value[k], list) and value[k] and all(_finite(v) for v in value[k]) for k in value
    )
    ok = ok and len(value["mean"]) == len(value["std"]) and all(v > 0 for v in value["std"])
    if not ok:
        raise InputError(f"{where} holds an invalid input normalisation {value!r}; expected "
                         "{'mean': [...], 'std': [...]} with finite values and positive std.")  # fmt: skip
    return value


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_task_checkpoint(path, dataset, key: str = "forensics.checkpoint", shown: str | None = None):
    """A task model checkpoint for ``dataset``: (model in eval mode, normalisation, metadata).

    ``shown`` names the checkpoint in messages (e.g. the MLflow run it was downloaded from) instead
    of its local path.

    Raises:
        InputError: a missing or unreadable file, a file that pickles objects, a spec naming a
            builder outside ``TASK_MODELS``, non-finite weights, or a model for another task.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{key}={path} does not exist.")
    where = shown or str(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(
            f"{where} is not a readable task model checkpoint ({type(error).__name__})."
        ) from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise InputError(f"{where} is not a raw2logit task model checkpoint (it lacks {', '.join(missing)}).")
    task, num_classes = checkpoint["task"], checkpoint["num_classes"]
    if task not in TASKS or not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"{where} holds an unknown task {task!r} with {num_classes!r} classes.")
    if task != dataset.task or num_classes != dataset.num_classes:
        raise InputError(
            f"{where} holds a {task} model with {num_classes} classes, but "
            f"{dataset.name} is a {dataset.task} dataset with {dataset.num_classes} classes."
        )
    state = checkpoint["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{where} holds no state dict of tensors.")
    bad = [
        name
        for name, tensor in state.items()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if bad:
        raise InputError(f"{where} holds non-finite weights (in {bad[0]}); it is not a usable task model.")
    normalisation = _normalisation(checkpoint.get("normalisation"), where)
    spec = checkpoint["task_model"]
    mismatch = _mismatch(spec, state, num_classes, where, task)
    if mismatch:
        at_saved_width = _at_saved_width(spec, state)
        if at_saved_width is not None and not _mismatch(at_saved_width, state, num_classes, where, task):
            spec, mismatch = at_saved_width, None
    if mismatch:
        raise InputError(f"{where} does not fit the task model it names ({mismatch}).")
    model = build_from_spec(spec, num_classes, 3, where, task)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise InputError(
            f"{where} does not fit the task model it names ({str(error).splitlines()[0]})."
        ) from None
    metadata = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    return model.eval(), normalisation, metadata


def _mismatch(spec, state: dict, num_classes: int, where: str, task: str) -> str | None:
    """How ``state`` differs from the weights of the model ``spec`` builds, or None.

    The model is built on the meta device, which allocates nothing: a spec asking for a huge model
    (a crafted width, say) is refused before any memory is taken.
    """
    with torch.device("meta"):
        expected = build_from_spec(spec, num_classes, 3, where, task).state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        return (
            f"its weights lack {missing[0]}" if missing else f"its weights hold an unexpected {unexpected[0]}"
        )
    for key, tensor in expected.items():
        if tensor.shape != state[key].shape:
            return f"{key} is {tuple(state[key].shape)} in the file, {tuple(tensor.shape)} in the model"
    return None


def _at_saved_width(spec, state: dict) -> dict | None:
    """A spec that left ``width`` unset, with the width its weights were saved at.

    Such a spec was built at its builder's default of the day, and the small models' default has
    changed (16, then 8): the first convolution's output channels say which it was. None where
    the spec sets a width or the weights hold no convolution.
    """
    if not isinstance(spec, dict) or spec.get("width") is not None:
        return None
    first = next((tensor for tensor in state.values() if tensor.dim() == 4), None)
    return None if first is None else {**spec, "width": int(first.shape[0])}
