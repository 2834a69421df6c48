"""The modes behind ``python run.py mode=...``, one package each, found by name.

A mode package (``raw2logit/modes/<name>/``) defines:

- ``run(ctx: Context) -> dict``: the mode itself (writes its folder, summary.json and report.html);
- ``assemble_sweep(config, sweep_dir) -> dict | None`` (optional): what a multirun's jobs add up to;
- ``uses_dataset(cfg) -> bool`` (optional, default True): whether the dataset is built for it;
- ``FOLDER``: the artifact folder it writes in the run directory.

Adding a mode: one package here, its name in ``raw2logit.names.MODES`` and one ``conf/mode/<name>.yaml``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from raw2logit.errors import InputError
from raw2logit.names import MODES


def get(name: str) -> ModuleType:
    """The package of mode ``name``."""
    if name not in MODES:
        raise InputError(f"Unknown mode {name!r}; expected one of {', '.join(MODES)}.")
    return importlib.import_module(f"raw2logit.modes.{name}")


def uses_dataset(mode: ModuleType, cfg) -> bool:
    return getattr(mode, "uses_dataset", lambda cfg: True)(cfg)
