"""Fuzz the command line: random overrides drawn from the config schema, in tiny runs (issue 16).

What is drawn. Each in-process draw picks a mode, its data model, a dataset (mostly the tiny
simulated one) and one to three keys of ``raw2logit.config``'s schema (``TOP_LEVEL``, ``fold``,
``MODE_OPTIONS``, ``DATASET``, ``DATA_MODEL``, ``TRACKING``: the keys present in the composed config),
now and then a key the schema leaves to the code it configures (``task_model.width``, a misspelt
``+key``). Each key gets a value of one kind (``SPEC``): valid and tiny, a wrong type (a string for a
number, a list for a scalar), out of range (0, -1, huge), nan/inf/-inf, an empty list, an unknown
name (``synthesis.train=[bi_x_me]``, ``forensics.target=saturation``), a missing or garbage file, a
θ file holding NaN, an unresolvable interpolation. The draw is composed with Hydra's compose API and
run with ``raw2logit.cli.main``, as ``run.py`` runs it. Command-line draws add what exists only before
Hydra has a config (unknown config-group options, unparsable overrides, unknown keys) to a schema
value and run ``python run.py`` in a subprocess.

What is asserted, for every draw: exit 0 with finite results (the summary, and every JSON, CSV,
checkpoint and cached view the draw wrote), or exit 2 with exactly one line on stderr, starting
``error: ``, no traceback and no ``summary.json``. Beyond that contract: a draw holding a value invalid
by construction exits 2 (a value the run cannot honour is never run silently), and a draw of only
valid values exits 0.

Draws are reproducible: draw ``n`` is seeded by ``(seed, n)`` alone, and a failure prints its
overrides and the ``python run.py`` line that replays it. By default (CI) 12 in-process and 4
command-line draws of seed ``RAW2LOGIT_FUZZ_SEED`` (0) run within a minute; the ``slow`` tests
(``make test-all``) run 200 and 40 more of seed ``RAW2LOGIT_FUZZ_SEED + 1000``, slow values included
(MLflow tracking, the numpy oracle, ResNet18, simulated drone data), in about five minutes. More draws
by hand:

    RAW2LOGIT_FUZZ_DRAWS=60 RAW2LOGIT_FUZZ_SEED=7 .venv/bin/python -m pytest tests/cli/test_fuzz.py

Defects found and not yet fixed go in ``KNOWN_DEFECTS`` (the draws avoid them; none is open now);
the ones found and fixed are replayed by ``test_fixed_defects_stay_fixed``.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import math
import os
import random
import shlex
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from raw2logit import config as schema
from raw2logit.names import BAYER_PATTERNS, DATA_MODEL_TARGETS, THETA_GROUPS
from tests.cli.conftest import CONF, ROOT, compose_config

SEED = int(os.environ.get("RAW2LOGIT_FUZZ_SEED", "0"))
DRAWS = int(os.environ.get("RAW2LOGIT_FUZZ_DRAWS", "12"))  # in-process draws of the default run
COMMAND_LINE_DRAWS = max(2, DRAWS // 3)
LONG_SEED, LONG_DRAWS, LONG_COMMAND_LINE_DRAWS = SEED + 1000, 200, 40  # make test-all

# -- the values a key may take, by kind -------------------------------------------------------------
# Placeholders in braces name the files of the ``fuzz_files`` fixture.
INT_WRONG = ("abc", "1.5", "[]", "[1]", "nan", "inf", "-inf", "true", "null", "${nope}")
NUMBER_WRONG = ("abc", "[]", "[0.1]", "nan", "inf", "-inf", "true", "null", "${nope}")
BOOL_WRONG = ("abc", "2", "[]", "[true]", "nan", "null", "${nope}")
NAME_WRONG = ("nope", "[]", "1", "nan", "true", "null", "''", "${nope}")
TEXT_WRONG = ("''", "[]", "1", "true", "${nope}")  # for optional file keys: null is valid
PIPELINES_WRONG = ("[]", "[bi_x_me]", "bi_x_me", "[all,bi_s_me]", "[bi_s_me,1]", "[[bi_s_me]]", *NAME_WRONG)
FILES_UNUSABLE = ("{missing}", "{garbage_json}", "{garbage_pt}", "{empty_dir}")


@dataclass(frozen=True)
class Values:
    """What a key may be set to, by kind (override strings)."""

    valid: tuple[str, ...] = ()  # tiny and valid: a draw of only these exits 0
    invalid: tuple[str, ...] = ()  # the schema rejects them wherever they stand: exit 2
    unusable: tuple[str, ...] = ()  # the schema passes them, the run cannot use them: exit 2 where read
    either: tuple[str, ...] = ()  # the schema accepts them; the run may refuse them in one sentence
    long: tuple[str, ...] = ()  # valid but slow: drawn by the long run only


def integer(valid, low=None, high=None, either=(), long=()) -> Values:
    out_of_range = [] if low is None else sorted({low - 1, -1, *([0] if low > 0 else [])} - {low})
    if high is not None:
        out_of_range += [high + 1, 10**9]
    return Values(tuple(valid), (*map(str, out_of_range), *INT_WRONG), either=tuple(either), long=tuple(long))


def number(valid, low=0.0, low_open=False, high=None, either=(), unusable=()) -> Values:
    out_of_range = ["-1", "-1e-9", *(["0"] if low_open else [])]
    if high is not None:
        out_of_range += [f"{high + 0.5:g}", "1e9"]
    return Values(
        tuple(valid), (*out_of_range, *NUMBER_WRONG), unusable=tuple(unusable), either=tuple(either)
    )


def names(valid, *wrong, long=()) -> Values:
    return Values(tuple(valid), (*wrong, f"[{valid[0]}]", *NAME_WRONG), long=tuple(long))


BOOLEAN = Values(("true", "false"), BOOL_WRONG)
OPTIONAL_FILE = Values(("null",), TEXT_WRONG, FILES_UNUSABLE)

# Every key of raw2logit.config's schema (``test_spec_covers_the_schema`` keeps them in step). A
# section's keys are read only in its mode (``used``); the schema checks them in every mode.
SPEC: dict[str, Values] = {
    "mode": names(("synthesis", "forensics", "optimization", "calibrate")),  # a group: drawn per draw
    "seed": integer(("0", "1", "12345"), 0, 2**32 - 1),
    "folds": integer(("2", "3"), 2, either=("100",)),
    "fold": Values(("null", "0", "1"), ("-1", "99", *(v for v in INT_WRONG if v != "null")), either=("2",)),
    "epochs": integer(("1", "2"), 1),
    "batch_size": integer(("12", "5", "1", "64"), 1),
    "val_every_epochs": integer(("1", "2"), 1),
    "lr": number(("0.003", "1e-4", "0.1"), low_open=True, either=("1e6", "1e30")),
    "lambda": number(("0", "0.001", "10"), either=("1e30", "1e300")),
    "augment": BOOLEAN,
    "resume": names(("auto", "never"), "always"),
    "synthesis.train": Values(
        ("[bi_s_me]", "[ma_u_ga]", "me_s_ga"),
        PIPELINES_WRONG,
        ("calibrated:{missing}", "[calibrated:{garbage_json}]", "[calibrated:{nan_theta}]"),
        either=("[bi_s_me,bi_s_me]", "[calibrated:{theta}]"),
    ),
    "synthesis.test": Values(
        ("[bi_s_me]", "[bi_s_me,me_s_ga]", "ma_u_ga", "all", "[bi_s_me,calibrated:{theta}]", "[libraw:AHD]"),
        (*PIPELINES_WRONG, "[libraw:FANCY]", "[all+libraw,bi_s_me]", "libraw:"),
        ("calibrated:{missing}", "[bi_s_me,calibrated:{garbage_json}]", "[calibrated:{nan_theta}]"),
        either=("[ma_u_ga,ma_u_ga]",),
    ),
    "synthesis.severity": integer(("1", "3", "5"), 1, 5),
    "synthesis.corruptions": Values(
        ("[contrast]", "none", "[gaussian_noise,zoom_blur]", "[]", "null", "all"),
        ("[nope]", "nope", "[contrast,nope]", "1", "nan", "true", "[[contrast]]", "''", "${nope}"),
    ),
    "synthesis.save_models": BOOLEAN,
    # more than one process starts torch again in each helper (seconds): drawn by the long run only
    "synthesis.workers": Values(
        ("1",), ("0", "-1", "two", "1.5", "[2]", "nan", "true", "''", "${nope}"), long=("2", "auto")
    ),
    # curve acts only with data_model=parametrized data_model.tone_curve=curve (refused in one sentence otherwise)
    "forensics.target": Values(
        ("all", *(g for g in THETA_GROUPS if g != "curve")),
        ("saturation", "ALL", "[]", "[all]", *NAME_WRONG),
        either=("curve",),
    ),
    "forensics.regulariser": names(("l2", "ssim"), "l1"),
    "forensics.epochs": integer(("1", "2"), 1),
    "forensics.lr": number(("0.002", "0.1"), low_open=True, either=("1e6", "1e30")),
    "forensics.plausible": BOOLEAN,
    "forensics.tolerance": number(("0", "0.02", "1"), either=("1e30",)),
    "forensics.checkpoint": OPTIONAL_FILE,
    "forensics.from_run": Values(("null",), TEXT_WRONG),  # no unknown run id: it imports MLflow (slow)
    "optimization.val_every": integer(("1", "2", "100"), 1),
    "calibrate.pairs": Values(("null",), TEXT_WRONG, ("{missing}", "{empty_dir}", "{garbage_json}")),
    "calibrate.variants": Values(
        ("[bi_s_me]", "[me_s_ga,bi_u_ga]", "me_u_me", "all"),
        ("calibrated:{theta}", "[bi_s_me,calibrated:{theta}]", *PIPELINES_WRONG),
    ),
    "calibrate.tone_curve": names(("power", "srgb", "curve"), "gamma"),
    "calibrate.white_balance_first": Values(
        ("null", "true", "false"), tuple(v for v in BOOL_WRONG if v != "null")
    ),
    "calibrate.steps": integer(("0", "1", "3"), 0),
    "calibrate.lr": number(("0.01",), low_open=True, either=("1e6", "1e30")),
    "calibrate.holdout": number(("0.25", "0.5"), low_open=True, high=1, either=("1",)),
    "calibrate.patch_size": Values(
        ("null", "16"), ("1", "0", "-1", "abc", "1.5", "nan", "inf", "[]", "true"), either=("7", "17", "1000")
    ),
    "calibrate.num_pairs": integer(("8", "1000"), 2, either=("2", "3")),
    "dataset.name": Values(("fuzz", "sim_microscopy"), ("''", "[]", "1", "null", "true", "${nope}")),
    "dataset.intensity": number(("1.0", "0.5", "0.05"), low_open=True, high=1, unusable=("0.3", "0.999")),
    "dataset.num_images": integer(("36", "24"), 1, either=("1", "5", "6", "7")),
    "dataset.size": integer(("32", "16"), 8, either=("17", "10", "34")),
    "dataset.height": integer(("128", "96"), 8, either=("129",)),
    "dataset.width": integer(("128", "160"), 8, either=("127",)),
    "dataset.tile_size": integer(("32", "64"), 8, either=("1000", "33", "16", "8")),
    "dataset.seed": integer(("0", "1"), 0, 2**32 - 1),
    "dataset.root": Values((), ("''", "[]", "1", "null", "true", "${nope}")),  # valid: the dataset's own
    "dataset.normalisation": Values(
        ("auto", "null", "{mean: [0.5, 0.5, 0.5], std: [0.2, 0.2, 0.2]}"),
        ("abc", "[]", "1", "{mean: [0.5], std: [0]}", "{mean: [0, 0, 0], std: [1, 1, 0]}"),
    ),
    "dataset.pattern": names(BAYER_PATTERNS, "rggb", "XXXX"),
    "dataset.on_bad_file": names(("raise", "skip"), "ignore"),
    "dataset.labels_csv": OPTIONAL_FILE,  # dng_folder only
    "dataset.masks_dir": OPTIONAL_FILE,  # dng_folder only
    "data_model._target_": Values(
        (), ("nope", "[]", "1", "null", "builtins.print")
    ),  # valid: the group's own
    "data_model.learn": BOOLEAN,
    "data_model.lr": number(("0.001", "0.1"), low_open=True, either=("1e6", "1e30")),
    "data_model.normalise_output": BOOLEAN,
    "data_model.theta": Values(
        ("null",),
        TEXT_WRONG,
        ("{missing}", "{garbage_json}", "{nan_theta}", "calibrated:{missing}"),
        either=("{theta}",),
    ),
    "data_model.backend": names(("torch",), "jax", long=("numpy",)),
    # gamma (forensics.target) acts only with the power curve: curve may be refused in one sentence
    "data_model.tone_curve": Values(("power",), ("gamma", "[power]", *NAME_WRONG), either=("curve", "srgb")),
    "data_model.width": integer(("4", "16"), 1),
    # null: the family's default width (task_model=small); other families may refuse it in one sentence
    "task_model.width": Values(
        ("4", "8"), tuple(v for v in integer((), 1).invalid if v != "null"), either=("null",)
    ),
    "task_model.encoder": Values((), ("''", "[]")),  # unetpp only
    "task_model.pretrained": Values(("false",), BOOL_WRONG),
    "task_model.weights_path": OPTIONAL_FILE,
    "trainer.accelerator": names(("cpu",), "tpu", long=("auto",)),
    "trainer.devices": Values(("1",), ("0", "-2", "abc", "[]", "nan")),
    "trainer.num_nodes": integer(("1",), 1),
    "trainer.precision": Values(("32-true", "32"), ("abc", "8", "[]", "nan")),
    "trainer.strategy": Values((), ("''", "[]")),
    "trainer.deterministic": Values(("true", "false"), ("abc", "[]")),
    "tracking.enabled": Values(("false",), BOOL_WRONG, long=("true",)),
    "tracking.uri": Values(("null",), TEXT_WRONG),
    "tracking.experiment": Values(("fuzz", "raw2logit"), ("''", "[]", "1", "null", "true", "${nope}")),
    "tracking.system_metrics": Values(("false",), BOOL_WRONG, long=("true",)),
}
# Keys the schema leaves to the code they configure (instantiated or passed on as they are), and
# misspelt keys added with ``+``: a careless user types them too.
BEYOND_SCHEMA: dict[str, Values] = {
    "+synthesis.trian": Values(either=("[bi_s_me]",)),  # ignored (Hydra adds unknown keys with +)
    "+fuzz_unknown": Values(either=("1", "nan")),
    "+dataset.sise": Values(invalid=("16",)),  # passed to the dataset builder
    "+task_model.depht": Values(invalid=("3",)),  # passed to the task model builder
    "+trainer.max_epoch": Values(invalid=("1",)),  # passed to Lightning's Trainer
}
# Groups that are drawn per draw: a mode, its data models, datasets (tiny settings per dataset).
DATA_MODELS = {
    "synthesis": (("static",), ("parametrized", "raw")),  # (valid, refused by the schema)
    "forensics": (("parametrized",), ("static", "raw", "nn")),
    "optimization": (("parametrized", "raw", "nn"), ("static",)),
    "calibrate": (("static", "parametrized"), ()),
}
SIM_MICROSCOPY = ("dataset.num_images=36", "dataset.size=32", "epochs=2", "batch_size=12", "folds=2")
SIM_DRONE = (
    "dataset=sim_drone",
    "dataset.num_images=4",
    "dataset.height=512",
    "dataset.width=512",
    "dataset.tile_size=128",
    "epochs=2",
    "batch_size=8",
    "folds=2",
)  # 128-px captures at scale 1/4; fmt: skip
DATASETS = {  # name -> (overrides, expectation); the real datasets need a folder of their files
    "sim_microscopy": (SIM_MICROSCOPY, "ok"),
    "sim_drone": (SIM_DRONE, "long"),
    "microscopy": (("dataset=microscopy", "epochs=1"), "error"),
    "microscopy_empty": (("dataset=microscopy", "dataset.root={empty_dir}", "epochs=1"), "error"),
    "drone_missing": (("dataset=drone", "dataset.root={missing}", "epochs=1"), "error"),
    "dng_folder_empty": (("dataset=dng_folder", "dataset.root={empty_dir}", "epochs=1"), "error"),
}
# Always set (before the drawn overrides, which win): every valid run stays a few seconds long.
TINY_MODES = {  # each mode's options exist only in that mode
    "synthesis": (
        "synthesis.train=[bi_s_me]",
        "synthesis.test=[bi_s_me,ma_u_ga]",
        "synthesis.corruptions=[contrast]",
        "synthesis.workers=1",  # a helper process would start torch again: seconds
    ),
    "forensics": ("forensics.epochs=1",),
    "calibrate": ("calibrate.steps=3", "calibrate.variants=[bi_s_me,me_s_ga]"),
    "optimization": ("optimization.val_every=2",),
}
# What exists only on the command line, before Hydra has composed a config.
COMMAND_LINE_ONLY = (
    *(f"{group.name}=nope" for group in sorted(CONF.iterdir()) if group.is_dir() and group.name != "hydra"),
    "dataset=sim_microscopy,nope", "trainer=cpu,nope", "hydra/launcher=nope", "dataset=", "mode=",
    "synthesis.train=[bi_s_me", "lr=1e-3]", "'seed=1", "epochs=${", "seed", "=3", "seed=1,2",
    "nokey=1", "synthesis.trian=[bi_s_me]", "dataset.sise=16", "~nokey", "+seed=3", "--nope",
)  # fmt: skip


@dataclass(frozen=True)
class Defect:
    """A defect the fuzzer found: draws skip ``overrides``; ``test_known_defects`` replays ``example``."""

    overrides: tuple[str, ...]  # "key=value"; "key=*": any value of key; "a=1 & b=2": both in one draw
    example: tuple[str, ...]
    command_line: bool  # replayed with ``python run.py`` (Hydra-level) rather than in-process
    reason: str


KNOWN_DEFECTS: tuple = ()  # none open: a defect found goes here, with a failing example


def known_defect(override: str, context=()) -> bool:
    """Whether ``override``, beside ``context`` (the draw so far), makes a draw hit a known defect."""
    key, present = override.partition("=")[0], {override, *context}
    for pattern in (pattern for defect in KNOWN_DEFECTS for pattern in defect.overrides):
        parts = pattern.split(" & ")
        if pattern in (override, f"{key}=*") or (
            len(parts) > 1 and override in parts and set(parts) <= present
        ):
            return True
    return False


# -- drawing ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Draw:
    number: int
    seed: int
    overrides: tuple[str, ...]  # the tiny base settings, then the drawn ones (later ones win)
    drawn: tuple[str, ...]  # what the fuzzer chose (shown on failure)
    expect: str  # "ok": exit 0; "error": exit 2; "either"


def used(key: str, mode: str) -> bool:
    """Whether ``mode`` reads ``key`` (the schema checks every key in every mode)."""
    section = key.lstrip("+").split(".")[0]
    if section in schema.MODE_OPTIONS:
        return section == mode
    if key == "data_model.theta":
        return mode in ("forensics", "optimization")
    return True


def _pick(rng: random.Random, key: str, values: Values, mode: str, kind: str, long: bool, context):
    """One value of ``kind`` for ``key`` -> (override, expectation), or None when there is none."""
    outcome = {"valid": "ok", "invalid": "error", "either": "either", "long": "ok",
               "unusable": "error" if used(key, mode) else "either"}  # fmt: skip
    pool = list(getattr(values, kind)) + (list(values.long) if kind == "valid" and long else [])
    pool = [value for value in pool if not known_defect(f"{key}={value}", context)]
    if not pool:
        return None
    return f"{key}={rng.choice(pool)}", outcome[kind]


def _combine(expectations) -> str:
    return "error" if "error" in expectations else "either" if "either" in expectations else "ok"


@functools.cache
def _present_keys(mode: str, data_model: str, dataset_overrides: tuple[str, ...]) -> tuple[str, ...]:
    """The schema's keys in the config these groups compose (the schema skips absent keys; Hydra refuses
    to set them without ``+``)."""
    cfg = compose_config([f"mode={mode}", f"data_model={data_model}", *(o for o in dataset_overrides
                                                                          if o.startswith("dataset="))])  # fmt: skip
    keys = [key for key in schema.TOP_LEVEL if key != "mode" and key in cfg] + ["fold"]
    for section, options in schema.MODE_OPTIONS.items():
        keys += [f"{section}.{key}" for key in options if section in cfg and key in cfg[section]]
    for section, options in (("dataset", schema.DATASET), ("data_model", schema.DATA_MODEL),
                             ("task_model", schema.TASK_MODEL), ("trainer", schema.TRAINER),
                             ("tracking", schema.TRACKING)):  # fmt: skip
        keys += [f"{section}.{key}" for key in options if key in cfg[section]]
    return tuple(keys)


# What a draw's values are drawn from, by the kind of draw, with weights.
DRAW_KINDS = {
    "valid": (("valid",), (1,)),  # a tiny run that must succeed
    "boundary": (("valid", "either"), (2, 1)),  # values the schema accepts, at its edges
    "refused": (("valid", "invalid", "unusable", "either"), (2, 4, 2, 3)),  # at least one refused value
}


def _value(rng: random.Random, key: str, spec: Values, mode: str, kinds, weights, long: bool, context):
    """A value of one of ``kinds`` for ``key`` -> (override, expectation), or None when none has one."""
    kinds, weights = list(kinds), list(weights)
    while kinds:
        index = rng.choices(range(len(kinds)), weights)[0]
        picked = _pick(rng, key, spec, mode, kinds[index], long, context)
        if picked is not None:
            return picked
        del kinds[index], weights[index]
    return None


def in_process_draw(number: int, seed: int, long: bool = False) -> Draw:
    """Draw ``number`` of the run seeded ``seed``: a mode, its data model, a dataset and a few keys."""
    rng = random.Random(f"raw2logit-fuzz-{seed}-{number}")
    mode = list(DATA_MODELS)[number % len(DATA_MODELS)]  # every mode in every run ...
    kind = (
        "valid" if number < len(DATA_MODELS) else rng.choices(list(DRAW_KINDS), (35, 25, 40))[0]
    )  # ... valid
    refused = kind == "refused"
    valid_models, refused_models = DATA_MODELS[mode]
    expectations = []
    data_model = rng.choice(valid_models)
    if refused and refused_models and rng.random() < 0.1:
        data_model = rng.choice(refused_models)
        expectations.append("error")
    dataset = "sim_microscopy"
    if refused and rng.random() < 0.1:
        dataset = rng.choice([name for name, (_, how) in DATASETS.items() if how == "error"])
        expectations.append("error")
    elif long and rng.random() < 0.1:
        dataset = "sim_drone"
    drawn = [f"mode={mode}", f"data_model={data_model}"] + (
        [f"dataset={dataset}"] if dataset != "sim_microscopy" else []
    )
    if kind != "valid" and rng.random() < 0.1:  # another config group
        group = rng.choice(["trainer=gpu", "trainer=ddp", "task_model=small_unet", "task_model=resnet18"])
        if not known_defect(group) and (long or group != "task_model=resnet18"):
            import torch

            drawn.append(group)
            no_gpu = group.startswith("trainer") and not torch.cuda.is_available()
            expectations.append("error" if no_gpu else "either")
    tracked_ok = kind == "valid" or not known_defect("tracking.enabled=true")
    if long and tracked_ok and rng.random() < 0.08:  # tracked: MLflow's local store under the draw's outputs
        drawn.append("tracking.enabled=true")
    dataset_overrides = DATASETS[dataset][0]
    # The mode's own keys and the top-level ones first: a key the mode never reads tests the schema only.
    candidates = {key: 4 if key.startswith(f"{mode}.") else 2 if "." not in key else 1
                  for key in _present_keys(mode, data_model, dataset_overrides)}  # fmt: skip
    chosen = []
    for _ in range(rng.randint(1, 3)):
        key = rng.choices(list(candidates), list(candidates.values()))[0]
        chosen.append(key)
        del candidates[key]
    if rng.random() < 0.15:
        chosen.append(
            rng.choice(
                [k for k in BEYOND_SCHEMA if not k.startswith("task_model") or dataset == "sim_microscopy"]
            )
        )
    for position, key in enumerate(chosen):
        spec = SPEC.get(key) or BEYOND_SCHEMA[key]
        if key == "data_model._target_":
            own = DATA_MODEL_TARGETS[data_model]
            spec = Values(
                (own,), spec.invalid, either=tuple(t for t in DATA_MODEL_TARGETS.values() if t != own)
            )
        kinds, weights = DRAW_KINDS[kind]
        if position == 0 and kind != "valid":  # the first value off the valid path (if the key has one)
            kinds, weights = kinds[1:], weights[1:]
        picked = _value(rng, key, spec, mode, kinds, weights, long, drawn)
        picked = picked or _value(rng, key, spec, mode, ("valid",), (1,), long, drawn)
        if picked is not None:
            drawn.append(picked[0])
            expectations.append(picked[1])
    base = [*dataset_overrides, *TINY_MODES[mode], "tracking.enabled=false"]
    overrides = (*base, *(o for o in drawn if not o.startswith("dataset=")))
    return Draw(number, seed, tuple(overrides), tuple(drawn), _combine(expectations))


def command_line_draw(number: int, seed: int) -> Draw:
    """A command-line-only override (or a schema value refused everywhere), and maybe a valid one."""
    rng = random.Random(f"raw2logit-fuzz-command-line-{seed}-{number}")
    drawn = []
    if rng.random() < 0.5:
        drawn.append(rng.choice([o for o in COMMAND_LINE_ONLY if not known_defect(o)]))
    else:
        key = rng.choice([k for k in _present_keys("synthesis", "static", SIM_MICROSCOPY) if SPEC[k].invalid])
        drawn.append(f"{key}={rng.choice([v for v in SPEC[key].invalid if not known_defect(f'{key}={v}')])}")
    if rng.random() < 0.5:  # a valid value beside it, of another key (the later of two values wins)
        key = rng.choice(
            [k for k in ("seed", "epochs", "lr", "lambda", "synthesis.severity") if k not in drawn[0]]
        )
        drawn.insert(rng.randint(0, 1), f"{key}={rng.choice(SPEC[key].valid)}")
    return Draw(number, seed, tuple(drawn), tuple(drawn), "error")


# -- running and judging -------------------------------------------------------------------------------
def replay_line(draw: Draw) -> str:
    return "python run.py " + " ".join(
        shlex.quote(o) for o in draw.overrides if not o.startswith("+run_dir=")
    )


def non_finite(value, where: str = "") -> list[str]:
    """Paths of the non-finite numbers in a JSON-like value (bools, strings and None are fine)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, (int, float)):
        return [] if math.isfinite(value) else [f"{where}={value}"]
    if isinstance(value, dict):
        return [bad for key, item in value.items() for bad in non_finite(item, f"{where}.{key}")]
    if isinstance(value, (list, tuple)):
        return [bad for index, item in enumerate(value) for bad in non_finite(item, f"{where}[{index}]")]
    return []


def non_finite_files(folder: Path) -> list[str]:
    """Non-finite numbers in the results under ``folder``: JSON, CSV (an empty cell counts), task model
    checkpoints and cached views. ``run.json`` and YAML files echo the input, so they are not results."""
    import numpy as np
    import torch

    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name == "run.json":
            continue
        name = str(path.relative_to(folder))
        if path.suffix == ".json":
            found += non_finite(json.loads(path.read_text()), name)
        elif path.suffix == ".csv":
            with path.open(newline="") as handle:
                rows = list(csv.reader(handle))
            header = rows[0] if rows else []
            for row in rows[1:]:
                for column, cell in zip(header, row):
                    try:
                        number = float(cell) if cell.strip() else math.nan
                    except ValueError:
                        continue  # a name
                    if not math.isfinite(number):
                        found.append(f"{name}: {row[0]}/{column}={cell!r}")
        elif path.suffix == ".pt":
            state = torch.load(path, map_location="cpu", weights_only=True)
            tensors = state.get("state_dict", {}) if isinstance(state, dict) else {}
            found += [f"{name}: {key}" for key, tensor in tensors.items()
                      if tensor.is_floating_point() and not torch.isfinite(tensor).all()]  # fmt: skip
            found += non_finite({k: v for k, v in state.items() if k != "state_dict"}, name)
        elif path.suffix == ".npy":
            if not np.isfinite(np.load(path, mmap_mode="r")).all():
                found.append(name)
    return found


def judge(draw: Draw, code, stdout: str, stderr: str, summary, folder: Path, run_dir: Path) -> None:
    """The contract for one draw (see the module docstring); the message replays the draw."""
    context = (f"draw {draw.number} of seed {draw.seed}, expected {draw.expect}, exit {code}\n"
               f"  drawn: {' '.join(draw.drawn)}\n  replay: {replay_line(draw)}\n"
               f"--- stderr (end) ---\n{stderr[-3000:]}\n--- stdout (end) ---\n{stdout[-1500:]}")  # fmt: skip
    assert "Traceback" not in stdout + stderr, f"a traceback\n{context}"
    assert code in (0, 2), f"exit status neither 0 nor 2\n{context}"
    if code == 0:
        assert draw.expect != "error", f"a value invalid by construction was run without a word\n{context}"
        bad = non_finite(summary, "summary") + non_finite_files(folder)
        assert not bad, f"exit 0 with non-finite results {bad[:10]}\n{context}"
    else:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (
            f"not one 'error: ' line on stderr\n{context}"
        )
        assert draw.expect != "ok", f"a draw of valid values was refused\n{context}"
        assert not (run_dir / "summary.json").exists(), f"exit 2, yet a summary.json was written\n{context}"
        bad = non_finite_files(folder)
        assert not bad, f"exit 2 left non-finite results {bad[:10]}\n{context}"


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory) -> dict[str, str]:
    """The files the placeholders of ``SPEC`` name: garbage, missing, empty, a θ file and its NaN twin."""
    from raw2logit.isp import CameraParams, ParametrizedPipeline

    folder = tmp_path_factory.mktemp("fuzz-files")
    (folder / "empty").mkdir()
    (folder / "garbage.json").write_text("{not json")
    (folder / "garbage.pt").write_bytes(b"\x80\x02garbage")
    camera = CameraParams.published("microscopy")
    theta = ParametrizedPipeline(camera).save_theta_json(folder / "theta.json")
    document = json.loads(theta.read_text())
    document["theta"]["gamma"] = math.nan
    (folder / "nan_theta.json").write_text(json.dumps(document))
    return {"missing": str(folder / "missing" / "file.json"), "garbage_json": str(folder / "garbage.json"),
            "garbage_pt": str(folder / "garbage.pt"), "empty_dir": str(folder / "empty"), "theta": str(theta),
            "nan_theta": str(folder / "nan_theta.json")}  # fmt: skip


@pytest.fixture(scope="module")
def fuzz_data(tmp_path_factory) -> Path:
    """The simulated data of every draw (generated on first use; a draw that changes it regenerates it)."""
    return tmp_path_factory.mktemp("fuzz-data")


def _fill(draw: Draw, files: dict[str, str], extra: tuple[str, ...]) -> Draw:
    def fill(override: str) -> str:
        for name, path in files.items():
            override = override.replace(f"{{{name}}}", path)
        return override

    return Draw(draw.number, draw.seed, (*map(fill, draw.overrides), *extra), tuple(map(fill, draw.drawn)),
                draw.expect)  # fmt: skip


@contextlib.contextmanager
def command_line_warnings():
    """Warnings as a plain ``python run.py`` shows them: Python's default filters, printed on stderr
    (pytest would record them instead, hiding a warning line printed before an ``error:`` line)."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: (
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
        )
        yield


def run_in_process(draw: Draw, tmp_path: Path, files, data: Path, capfd, monkeypatch) -> None:
    """Compose the draw's config and run ``raw2logit.cli.main`` on it, as ``run.py`` does."""
    import traceback

    from raw2logit.cli import main

    outputs, run_dir = tmp_path / "outputs", tmp_path / "outputs" / "run"
    draw = _fill(draw, files, (f"paths.outputs={outputs}", f"paths.data={data}", f"+run_dir={run_dir}"))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # it turns the one sentence into a traceback
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # a tracked draw logs to its own store
    monkeypatch.chdir(tmp_path)  # an empty or relative path lands here, not in the repository
    environment = dict(os.environ)  # the run sets offline variables for the process: undone below
    try:
        cfg = compose_config(list(draw.overrides))
    except ConfigCompositionException as error:  # a key the drawn group lacks: run.py says it in one sentence
        judge(draw, 2, "", f"error: {str(error).splitlines()[0]}\n", None, outputs, run_dir)
        return
    capfd.readouterr()
    summary, code, trace = None, 0, ""
    try:
        with command_line_warnings():
            summary = main(cfg)
    except SystemExit as exit_:
        code = exit_.code
    except BaseException as error:  # anything else that escapes is a traceback on the command line
        code, trace = f"traceback ({type(error).__name__})", "".join(traceback.format_exception(error))
    finally:
        os.environ.clear()
        os.environ.update(environment)
    captured = capfd.readouterr()
    judge(draw, code, captured.out, captured.err + trace, summary, outputs, run_dir)


def run_command_line(draw: Draw, tmp_path: Path, data: Path) -> None:
    outputs = tmp_path / "outputs"
    base = ("epochs=1", "folds=2", "synthesis.train=[bi_s_me]", "synthesis.test=[bi_s_me]",
            "synthesis.corruptions=none", "tracking.enabled=false")  # fmt: skip
    if not any(o.startswith("dataset") for o in draw.drawn):
        base = (*SIM_MICROSCOPY[:2], *base)
    paths = (f"paths.outputs={outputs}", f"paths.data={data}", f"hydra.run.dir={outputs / 'run'}")
    draw = Draw(draw.number, draw.seed, (*base, *draw.drawn, *paths), draw.drawn, draw.expect)
    environment = {
        k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI")
    }
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), *draw.overrides], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    judge(draw, done.returncode, done.stdout, done.stderr, None, outputs, outputs / "run")


# -- the tests ------------------------------------------------------------------------------------------
def test_spec_covers_the_schema():
    """Every key of the schema has values to draw (a new key must be added to SPEC)."""
    keys = {*schema.TOP_LEVEL, "fold"}
    keys |= {f"{section}.{key}" for section, options in schema.MODE_OPTIONS.items() for key in options}
    for section, options in (("dataset", schema.DATASET), ("data_model", schema.DATA_MODEL),
                             ("task_model", schema.TASK_MODEL), ("trainer", schema.TRAINER),
                             ("tracking", schema.TRACKING)):  # fmt: skip
        keys |= {f"{section}.{key}" for key in options}
    assert set(SPEC) == keys


def test_draws_are_reproducible_and_varied():
    """A draw depends only on (seed, number); the default run draws every expectation."""
    first = [in_process_draw(n, SEED) for n in range(DRAWS)]
    assert first == [in_process_draw(n, SEED) for n in range(DRAWS)]
    assert {draw.expect for draw in first} >= {"ok", "error"}


@pytest.mark.parametrize("number", range(DRAWS), ids=lambda n: f"draw{n}")
def test_fuzz_in_process(number, tmp_path, fuzz_files, fuzz_data, capfd, monkeypatch):
    run_in_process(in_process_draw(number, SEED), tmp_path, fuzz_files, fuzz_data, capfd, monkeypatch)


@pytest.mark.parametrize("number", range(COMMAND_LINE_DRAWS), ids=lambda n: f"draw{n}")
def test_fuzz_command_line(number, tmp_path, fuzz_data):
    run_command_line(command_line_draw(number, SEED), tmp_path, fuzz_data)


@pytest.mark.slow
@pytest.mark.parametrize("number", range(LONG_DRAWS), ids=lambda n: f"draw{n}")
def test_fuzz_in_process_long(number, tmp_path, fuzz_files, fuzz_data, capfd, monkeypatch):
    draw = in_process_draw(number, LONG_SEED, long=True)
    run_in_process(draw, tmp_path, fuzz_files, fuzz_data, capfd, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("number", range(LONG_COMMAND_LINE_DRAWS), ids=lambda n: f"draw{n}")
def test_fuzz_command_line_long(number, tmp_path, fuzz_data):
    run_command_line(command_line_draw(number, LONG_SEED), tmp_path, fuzz_data)


# Defects the fuzzer found once, fixed since: each is replayed and must keep the contract (in-process
# or on the command line, as the fuzzer found it).
FIXED_DEFECTS = (
    (("seed=-1",), False), (("seed=4294967296",), False), (("dataset.seed=-1",), False),
    (("task_model.width=0",), False), (("trainer.devices=0",), False), (("trainer.precision=abc",), False),
    (("dataset.normalisation=abc",), False), (("+dataset.sise=16",), False), (("+task_model.depht=3",), False),
    (("+trainer.max_epoch=2",), False), (("task_model=small_unet",), False),
    (("tracking.enabled=true", "dataset.intensity=0.3"), False),
    (("mode=optimization", "data_model=raw", "dataset.size=16"), False),
    (("=3",), True), (("synthesis.train=[bi_s_me",), True), (("lr=1e-3]",), True), (("seed",), True),
    (("synthesis.trian=[bi_s_me]",), True), (("dataset=",), True), (("hydra/launcher=nope",), True),
    (("seed=1,2",), True), (("+seed=3",), True), (("~nokey",), True), (("--nope",), True),
    (("dataset.root=",), True),
)  # fmt: skip


@pytest.mark.parametrize(
    ("example", "command_line"), FIXED_DEFECTS, ids=[" ".join(e) for e, _ in FIXED_DEFECTS]
)
def test_fixed_defects_stay_fixed(example, command_line, tmp_path, fuzz_files, fuzz_data, capfd, monkeypatch):
    """Each defect the fuzzer found, replayed: exit 2 with one sentence (all were refusals)."""
    if command_line:
        run_command_line(Draw(-1, SEED, example, example, "error"), tmp_path, fuzz_data)
    else:
        mode = next((item.split("=")[1] for item in example if item.startswith("mode=")), "synthesis")
        overrides = (*SIM_MICROSCOPY, *TINY_MODES[mode], "tracking.enabled=false", *example)
        run_in_process(Draw(-1, SEED, overrides, example, "error"), tmp_path, fuzz_files, fuzz_data, capfd,
                       monkeypatch)  # fmt: skip
