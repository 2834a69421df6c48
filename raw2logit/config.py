"""Check the composed configuration before anything heavy is imported, built or written.

``check_config(cfg)`` raises ``InputError`` with one sentence naming the first bad key, its value
and what was expected. It imports only OmegaConf and the name lists of ``raw2logit.names`` (and
rawpy, no torch, when a ``libraw:`` pipeline is named: the installed LibRaw's algorithms), so a
typo on the command line is reported in well under a second, before torch, the data, the view
cache or MLflow are touched. What only the data or the machine can tell (a file's content, a GPU)
is checked where it is read, with the same kind of sentence.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from raw2logit.errors import InputError
from raw2logit.names import (
    ALL_WITH_LIBRAW,
    BAD_FILE_POLICIES,
    BAYER_PATTERNS,
    CALIBRATED_PREFIX,
    CORRUPTION_NAMES,
    DATA_MODEL_TARGETS,
    LIBRAW_ALGORITHMS,
    LIBRAW_PREFIX,
    MODES,
    REGULARISERS,
    STATIC_PIPELINE_NAMES,
    THETA_GROUPS,
    TONE_CURVES,
    libraw_algorithm,
)

SEED_MAX = 2**32 - 1  # numpy and torch seed with 32 bits
# Where a real dataset's files come from, for the sentence that asks for dataset.root.
ROOT_HINTS = {
    "microscopy": "the Raw-Microscopy download (`make data`, then dataset.root=data)",
    "drone": "the Raw-Drone download (`make data`, then dataset.root=data)",
    "dng_folder": "a folder of your own DNG raws",
}


# -- value checks: each returns an error phrase ("must be ...") or None ------------------------------
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(low: int | None = None, high: int | None = None) -> Callable:
    def check(value):
        if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                return f"an integer from {low} to {high}"
            return f"an integer of at least {low}" if low is not None else "an integer"
        return None

    return check


def number(low: float | None = None, high: float | None = None, low_open: bool = False) -> Callable:
    """A finite number in [low, high] (or (low, high] with ``low_open``)."""

    def check(value):
        ok = _is_number(value) and math.isfinite(value)
        ok = (
            ok
            and (low is None or (value > low if low_open else value >= low))
            and (high is None or value <= high)
        )
        if ok:
            return None
        if low is not None and high is not None:
            return f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}]"
        if low is not None:
            return f"a finite number {'>' if low_open else '>='} {low:g}"
        return "a finite number"

    return check


def boolean(value):
    return None if isinstance(value, bool) else "true or false"


def one_of(choices) -> Callable:
    return lambda value: None if value in choices else f"one of {', '.join(map(str, choices))}"


def optional(check: Callable) -> Callable:
    return lambda value: None if value is None else check(value)


def text(value):
    return None if isinstance(value, str) and value.strip() else "a non-empty string"


def pipeline_names(value, allow_calibrated: bool = True):
    """``all`` or a non-empty list of static pipeline names (and ``calibrated:<file>``, ``libraw:<algorithm>``
    specs, ``all+libraw``). Whether the installed LibRaw has an algorithm is checked where the specs are
    read (``raw2logit.isp.specs.parse_specs``), with the list of those it has."""
    items = (
        [value] if isinstance(value, str) else list(value) if isinstance(value, (list, ListConfig)) else None
    )
    expected = f"'all' or a non-empty list of pipeline names among {', '.join(STATIC_PIPELINE_NAMES)}"
    if allow_calibrated:
        expected += (f" (or {CALIBRATED_PREFIX}<file>, {LIBRAW_PREFIX}<algorithm> with one of "
                     f"{', '.join(LIBRAW_ALGORITHMS)}), or '{ALL_WITH_LIBRAW}' alone")  # fmt: skip
    keywords = ("all", ALL_WITH_LIBRAW) if allow_calibrated else ("all",)
    if not items or (len(items) > 1 and any(item in keywords for item in items)):
        return expected
    for item in items:
        text_item = isinstance(item, str)
        calibrated = allow_calibrated and text_item and item.startswith(CALIBRATED_PREFIX)
        libraw = (allow_calibrated and text_item and item.startswith(LIBRAW_PREFIX)
                  and item[len(LIBRAW_PREFIX) :].strip().upper() in LIBRAW_ALGORITHMS)  # fmt: skip
        if item not in keywords and item not in STATIC_PIPELINE_NAMES and not calibrated and not libraw:
            return expected
    return None


def corruption_names(value):
    if value in ("all", "none", None):
        return None
    items = (
        [value] if isinstance(value, str) else list(value) if isinstance(value, (list, ListConfig)) else None
    )
    if items is None or any(item not in CORRUPTION_NAMES for item in items):
        return f"'all', 'none' or a list of names among {', '.join(CORRUPTION_NAMES)}"
    return None


def normalisation(value):
    """``auto``, null, or ``{mean: [3 numbers], std: [3 positive numbers]}``."""
    expected = (
        "'auto', null or {mean: [m_R, m_G, m_B], std: [s_R, s_G, s_B]} with finite values and positive std"
    )
    if value in ("auto", None):
        return None
    if not isinstance(value, (dict, DictConfig)) or set(value.keys()) != {"mean", "std"}:
        return expected
    for key in ("mean", "std"):
        items = value[key]
        if not isinstance(items, (list, ListConfig)) or len(items) != 3 or any(number()(v) for v in items):
            return expected
    return None if all(v > 0 for v in value["std"]) else expected


def strategy(value):
    """Lightning's ``strategy`` by name, or a node building raw2logit's own (``trainer=ddp``)."""
    if isinstance(value, str) and value:
        return None
    if isinstance(value, DictConfig) and str(value.get("_target_", "")).startswith("raw2logit.training."):
        return None
    return "a strategy name such as 'auto' or 'ddp', or a node with _target_: raw2logit.training.ForkedDDP"


def is_distributed(trainer: DictConfig) -> bool:
    """Whether the ``trainer`` group trains in several processes (``trainer=ddp`` or a ``ddp*`` strategy)."""
    value = trainer.get("strategy", "auto")
    return isinstance(value, DictConfig) or "ddp" in str(value)


def devices(value):
    """Lightning's ``devices``: a count of at least 1, -1 (all) or ``auto``."""
    return (
        None
        if value in (-1, "auto") or not integer(1)(value)
        else "an integer of at least 1, -1 (all) or 'auto'"
    )


def theta_target(value):
    return None if value == "all" or value in THETA_GROUPS else f"'all' or one of {', '.join(THETA_GROUPS)}"


# -- the schema: key -> check; keys absent from a config are skipped --------------------------------
TOP_LEVEL = {
    "mode": one_of(MODES),
    "seed": integer(0, SEED_MAX),
    "folds": integer(2),
    "epochs": integer(1),
    "batch_size": integer(1),
    "val_every_epochs": integer(1),
    "lr": number(0, low_open=True),
    "lambda": number(0),
    "augment": boolean,
    "resume": one_of(("auto", "never")),
}
MODE_OPTIONS = {
    "synthesis": {
        "train": pipeline_names,
        "test": pipeline_names,
        "severity": integer(1, 5),
        "corruptions": corruption_names,
        "save_models": boolean,
        "workers": lambda value: (
            None if value == "auto" or integer(1)(value) is None else "'auto' or an integer of at least 1"
        ),
    },
    "forensics": {
        "target": theta_target,
        "regulariser": one_of(REGULARISERS),
        "epochs": integer(1),
        "lr": number(0, low_open=True),
        "plausible": boolean,
        "tolerance": number(0),
        "checkpoint": optional(text),
        "from_run": optional(text),
    },
    "optimization": {"val_every": integer(1)},
    "calibrate": {
        "pairs": optional(text),
        "variants": lambda value: pipeline_names(value, allow_calibrated=False),
        "tone_curve": one_of(TONE_CURVES),
        "white_balance_first": optional(boolean),
        "steps": integer(0),
        "lr": number(0, low_open=True),
        "holdout": number(0, 1, low_open=True),
        "patch_size": optional(integer(2)),
        "num_pairs": integer(2),
    },
}
DATASET = {
    "name": text,
    "root": text,
    "intensity": number(0, 1, low_open=True),
    "num_images": integer(1),
    "size": integer(8),
    "height": integer(8),
    "width": integer(8),
    "tile_size": integer(8),
    "seed": integer(0, SEED_MAX),
    "pattern": one_of(BAYER_PATTERNS),
    "on_bad_file": one_of(BAD_FILE_POLICIES),
    "labels_csv": optional(text),
    "masks_dir": optional(text),
    "normalisation": normalisation,
}
TASK_MODEL = {
    "width": optional(integer(1)),  # null: the family's default width
    "encoder": text,
    "pretrained": boolean,
    "weights_path": optional(text),
}
# Lightning's values; what only the machine can tell (a GPU) is checked when the run starts.
PRECISIONS = ("64-true", "64", "32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
TRAINER = {
    "accelerator": one_of(("cpu", "gpu", "cuda", "mps", "auto")),
    "devices": devices,
    "num_nodes": integer(1),
    # Lightning takes 32 or "32"; the command line gives an integer for trainer.precision=32
    "precision": lambda value: (
        None
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value) in PRECISIONS
        else f"one of {', '.join(PRECISIONS)}"
    ),
    "strategy": strategy,
    "deterministic": lambda value: (
        None if isinstance(value, bool) or value == "warn" else "true, false or 'warn'"
    ),
}
# The keys each data model's _target_ takes (raw2logit.isp.specs): a key of another option is refused.
DATA_MODEL_KEYS = {
    "static": ("backend",),
    "parametrized": ("learn", "lr", "normalise_output", "theta", "tone_curve"),
    "raw": ("learn", "lr"),
    "nn": ("learn", "lr", "width"),
}
DATA_MODEL = {
    "_target_": one_of(tuple(DATA_MODEL_TARGETS.values())),
    "learn": boolean,
    "lr": number(0, low_open=True),
    "normalise_output": boolean,
    "theta": optional(text),
    "tone_curve": one_of(TONE_CURVES),
    "backend": one_of(("torch", "numpy")),
    "width": integer(1),
}
TRACKING = {"enabled": boolean, "uri": optional(text), "experiment": text, "system_metrics": boolean}


def _check_group(cfg: DictConfig, prefix: str, schema: dict) -> None:
    present = set(cfg.keys())  # ``key in cfg`` is False for a missing (???) value
    for key, check in schema.items():
        if key not in present:
            continue
        if OmegaConf.is_missing(cfg, key):
            raise InputError(f"{prefix}{key} has no value; set {prefix}{key}=... on the command line.")
        value = cfg[key]
        problem = check(value)
        if problem:
            shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            raise InputError(f"{prefix}{key} must be {problem}; got {shown!r}.")


def check_config(cfg: DictConfig) -> None:
    """Raise ``InputError`` on the first bad value of the composed config (see the module doc)."""
    try:
        _check(cfg)
    except OmegaConfBaseException as error:  # e.g. an interpolation that does not resolve
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"The configuration cannot be read: {first_line}.") from None


def _check(cfg: DictConfig) -> None:
    _check_group(cfg, "", TOP_LEVEL)
    if cfg.get("fold") is not None and integer(0, cfg.folds - 1)(cfg.fold):
        raise InputError(f"fold must be empty or an integer from 0 to {cfg.folds - 1} (folds={cfg.folds}); "
                         f"got {cfg.fold!r}.")  # fmt: skip
    for mode, schema in MODE_OPTIONS.items():
        if mode in cfg:
            _check_group(cfg[mode], f"{mode}.", schema)
    dataset = cfg.dataset
    if "root" in dataset.keys() and OmegaConf.is_missing(dataset, "root"):
        hint = ROOT_HINTS.get(dataset.get("name"), "the dataset's folder")
        raise InputError(f"dataset={dataset.get('name')} needs dataset.root=<folder> pointing at {hint}.")
    _check_group(dataset, "dataset.", DATASET)
    if (
        dataset.get("tile_size")
        and dataset.get("height")
        and dataset.tile_size > min(dataset.height, dataset.width)
    ):
        raise InputError(f"dataset.tile_size={dataset.tile_size} is larger than the captures "
                         f"({dataset.height}x{dataset.width}); expected a tile size at most their shorter side.")  # fmt: skip
    _check_group(cfg.data_model, "data_model.", DATA_MODEL)
    _check_group(cfg.task_model, "task_model.", TASK_MODEL)
    _check_group(cfg.trainer, "trainer.", TRAINER)
    if cfg.mode == "forensics" and is_distributed(cfg.trainer):
        raise InputError("trainer=ddp is not available for mode=forensics: the search of θ against one frozen task "
                         "model runs in one process; use trainer=cpu or trainer=gpu.")  # fmt: skip
    _check_group(cfg.tracking, "tracking.", TRACKING)
    if "synthesis" in cfg:  # the installed LibRaw's algorithms (rawpy is imported only for a libraw: name)
        for key in ("train", "test"):
            value = cfg.synthesis.get(key)
            for item in [value] if isinstance(value, str) else list(value or []):
                if isinstance(item, str) and item.startswith(LIBRAW_PREFIX):
                    try:
                        libraw_algorithm(item)
                    except InputError as error:
                        raise InputError(f"synthesis.{key}: {error}") from None
    tone = cfg.data_model.get("tone_curve", "power")
    acting = {"gamma": "power", "curve": "curve"}
    if (cfg.mode == "forensics" and cfg.forensics.get("target") in acting and not cfg.data_model.get("theta")
            and acting[cfg.forensics.target] != tone):  # fmt: skip
        raise InputError(f"forensics.target={cfg.forensics.target} does not act with the tone curve {tone}; use "
                         f"data_model=parametrized data_model.tone_curve={acting[cfg.forensics.target]}.")  # fmt: skip
    needs = {
        "synthesis": ("static",),
        "forensics": ("parametrized",),
        "optimization": ("parametrized", "raw", "nn"),
    }
    data_model = next(
        name for name, target in DATA_MODEL_TARGETS.items() if target == cfg.data_model._target_
    )
    foreign = [key for key in cfg.data_model if key != "_target_" and key not in DATA_MODEL_KEYS[data_model]]
    if foreign:
        raise InputError(f"data_model.{foreign[0]} is not an option of the {data_model} data model "
                         f"({cfg.data_model._target_}); its options: {', '.join(DATA_MODEL_KEYS[data_model]) or 'none'}.")  # fmt: skip
    if cfg.mode in needs and data_model not in needs[cfg.mode]:
        what = {"synthesis": "trains on the static pipelines' views", "forensics": "searches θ of the parametrized "
                "data model", "optimization": "trains a data model inside the training step"}[cfg.mode]  # fmt: skip
        raise InputError(
            f"mode={cfg.mode} {what}; use data_model={' or '.join(needs[cfg.mode])} (got {data_model})."
        )
