"""The command line checked before Hydra runs: ``python run.py`` calls ``check(sys.argv[1:])`` first.

Hydra reports a bad command line (an unparsable override, an unknown key or config-group option, a
comma list without ``-m``) in several lines and exits with status 1, and creates the run folder
before the config can be checked. Here the overrides are parsed with Hydra's own parser, the config
is composed once with Hydra's compose API (the first value of each swept key) and checked with
``raw2logit.config.check_config``; anything wrong ends in one sentence and exit status 2, in about a
second (nothing heavy is imported), before any folder or MLflow run exists. The folders a run writes
must be creatable. Only OmegaConf and Hydra are imported.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from raw2logit.errors import InputError

CONF = Path(__file__).resolve().parent.parent / "conf"
# Hydra's own options. With one of the first set Hydra prints something instead of running (the
# command line is left to it); the second set selects another config (not checked here).
PRINTING_OPTIONS = {"-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info", "-sc",
                    "--shell-completion", "--experimental-rerun"}  # fmt: skip
OTHER_CONFIG_OPTIONS = {
    "-cp",
    "--config-path",
    "-cn",
    "--config-name",
    "-cd",
    "--config-dir",
    "-p",
    "--package",
}
RUN_OPTIONS = {"-m", "--multirun", "-r", "--run", "--resolve"}


def fail(sentence: str) -> None:
    print(f"error: {sentence}", file=sys.stderr, flush=True)
    sys.exit(2)


def check(arguments: list[str], conf: Path = CONF) -> None:
    """Exit with status 2 and one sentence if the command line cannot run (see the module docstring)."""
    try:
        _check(arguments, conf)
    except InputError as error:
        fail(str(error))


def _check(arguments: list[str], conf: Path) -> None:
    options = [a for a in arguments if a.startswith("-")]
    if any(o.split("=")[0] in PRINTING_OPTIONS | OTHER_CONFIG_OPTIONS for o in options):
        return
    unknown = [o for o in options if o not in RUN_OPTIONS]
    if unknown:
        raise InputError(f"Unknown option {unknown[0]!r}; expected Hydra overrides (key=value), -m for a "
                         "multirun, or --help.")  # fmt: skip
    multirun = any(o in ("-m", "--multirun") for o in options)
    overrides = _parse([a for a in arguments if not a.startswith("-")], multirun, conf)
    cfg = _compose(overrides, conf)
    from raw2logit.config import check_config

    check_config(cfg)
    _check_folders(cfg, overrides)


def _parse(arguments: list[str], multirun: bool, conf: Path) -> list[str]:
    """The overrides, each checked, with a swept key replaced by its first value (to compose)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    groups = {path.name for path in conf.iterdir() if path.is_dir() and path.name != "hydra"}
    plain = []
    for argument in arguments:
        try:
            (override,) = parser.parse_overrides([argument])
        except OverrideParseException as error:
            reason = str(error).strip().splitlines()[0]
            raise InputError(f"The override {argument!r} cannot be read ({reason}); expected key=value, "
                             "with quotes around values holding spaces or brackets.") from None  # fmt: skip
        key = override.key_or_group
        if not key:
            raise InputError(f"The override {argument!r} names no key; expected key=value.")
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else None
        if values is not None and not multirun:
            raise InputError(
                f"{argument} lists several values; add -m to run one job per value (a multirun)."
            )
        if key in groups:
            options = sorted(path.stem for path in (conf / key).glob("*.yaml"))
            for choice in values or [override.value()]:
                if choice not in options and choice is not None and choice != "null":
                    raise InputError(f"Unknown {key} {choice!r}; expected one of {', '.join(options)}.")
        if values is not None:
            prefix = argument[: len(argument) - len(argument.lstrip("+~"))]
            plain.append(f"{prefix}{key}={values[0]}")
        else:
            plain.append(argument)
    return plain


def _compose(overrides: list[str], conf: Path):
    """The config the run will get (Hydra's compose API), or one sentence for what stops Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            return compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except MissingConfigException as error:
        raise InputError(_missing_option(error)) from None
    except (HydraException, OmegaConfBaseException) as error:
        raise InputError(_hydra_sentence(error)) from None


def _missing_option(error) -> str:
    """ "Could not find 'hydra/launcher/nope'" + the options Hydra lists -> one sentence."""
    text = str(error)
    options = [
        line.strip() for line in text.splitlines() if line.startswith("\t") and "provider=" not in line
    ]
    first = next((line for line in text.splitlines() if "Could not find" in line), text.splitlines()[0])
    choice = first.split("Could not find ")[-1].strip("' .")
    group, _, name = choice.rpartition("/")
    if options:
        return f"Unknown {group} {name!r}; expected one of {', '.join(options)}."
    return f"{first.strip()}."


def _hydra_sentence(error) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    first = lines[0] if lines else type(error).__name__
    if first.startswith("Could not override '"):
        key = first.split("'")[1]
        return (
            f"{key} is not a config key; check its spelling (+{key}=... adds a key that does not exist yet)."
        )
    if first.startswith("Could not append to config. An item is already at '"):
        key = first.split("'")[1]
        return f"{key} is already a config key; set it with {key}=... (without +)."
    if first.startswith("Could not delete from config. "):
        return f"{first.rstrip('.')}; only existing keys can be deleted with ~."
    return first if first.endswith(".") else f"{first}."


def _check_folders(cfg, overrides: list[str]) -> None:
    """The folders a run writes must be creatable: a probe folder is made and removed in the nearest
    existing parent (Hydra would otherwise stop with a traceback when it creates the run folder)."""
    given = dict(o.partition("=")[::2] for o in overrides if "=" in o)
    targets = {key: given[key] for key in ("hydra.run.dir", "hydra.sweep.dir") if key in given}
    targets.update({f"paths.{key}": str(value) for key, value in cfg.paths.items()})
    for key, value in targets.items():
        if "${" in value:
            continue  # a value only Hydra resolves (the date in the run folder): its parent is checked
        if not value.strip():
            raise InputError(f"{key} is empty; expected a folder (the current one is ., written explicitly).")
        parent = Path(value).expanduser().absolute()
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        try:
            if not parent.is_dir():
                raise NotADirectoryError(0, f"{parent} is not a folder")
            Path(tempfile.mkdtemp(prefix=".raw2logit-probe-", dir=parent)).rmdir()
        except OSError as error:
            reason = error.strerror if not parent.is_dir() else f"{error.strerror} in {parent}"
            raise InputError(
                f"{key}={value} cannot be written ({reason}); expected a writable folder."
            ) from None
