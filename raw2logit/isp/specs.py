"""Data models by specification: one place turns a spec into a data model.

A spec is what a config or a user writes wherever a pipeline is named:

- a static pipeline name, one of the paper's 12 (``bi_s_me`` ... ``me_u_ga``), or ``all`` for the 12;
- ``calibrated:<file>``: a data model fitted to a device by ``mode=calibrate`` (its ``pipeline.json``,
  a θ file with the device's camera);
- a θ file (``data_model.theta=<file>``): a parametrized data model exported by optimization or
  forensics, applied with the dataset's camera;
- ``libraw:<algorithm>``: LibRaw's own processing with that demosaic (``raw2logit.isp.libraw``), a
  real-world ISP as drift; ``all+libraw`` is the 12 and every algorithm the installed LibRaw offers.

``parse_specs`` checks a config value and expands ``all``; ``build_data_model`` builds any spec;
``spec_digest`` fingerprints the file behind a spec (a changed file is a different experiment).
The options of the ``data_model`` config group are the dataclasses at the end (their ``_target_``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from raw2logit.errors import InputError
from raw2logit.names import (
    ALL_WITH_LIBRAW,
    CALIBRATED_PREFIX,
    LIBRAW_PREFIX,
    STATIC_PIPELINE_NAMES,
    libraw_algorithm,
    libraw_available_algorithms,
    resolve_pipeline_names,
)

# Part of a LibRaw view's cache key beside LibRaw's version: bump when LIBRAW_SETTINGS or the DNG change.
LIBRAW_VIEWS_VERSION = 1


def is_static(spec: str) -> bool:
    return spec in STATIC_PIPELINE_NAMES


def is_libraw(spec) -> bool:
    return isinstance(spec, str) and spec.startswith(LIBRAW_PREFIX)


def libraw_specs() -> list[str]:
    """``libraw:<algorithm>`` for every algorithm the installed LibRaw offers, in ``LIBRAW_ALGORITHMS`` order."""
    return [f"{LIBRAW_PREFIX}{name}" for name in libraw_available_algorithms()]


def spec_file(spec: str) -> Path:
    """The file a ``calibrated:<file>`` spec names (one sentence if it names none)."""
    if not isinstance(spec, str) or not spec.startswith(CALIBRATED_PREFIX):
        raise InputError(
            f"Data model {spec!r} names no file; expected '{CALIBRATED_PREFIX}/path/to/device.json'."
        )
    path = Path(spec[len(CALIBRATED_PREFIX) :]).expanduser()
    if not str(spec[len(CALIBRATED_PREFIX) :]).strip() or path == Path("."):
        raise InputError(f"Calibrated data model {spec!r} names no file; expected "
                         f"'{CALIBRATED_PREFIX}/path/to/device.json'.")  # fmt: skip
    return path.resolve()


def spec_name(spec: str) -> str:
    """How a spec is shown in matrices and logs: the static name, ``libraw:<ALGORITHM>``, or
    ``calibrated:<file stem>``."""
    if is_static(spec):
        return spec
    if is_libraw(spec):
        return f"{LIBRAW_PREFIX}{libraw_algorithm(spec)}"
    return f"{CALIBRATED_PREFIX}{spec_file(spec).stem}"


def parse_specs(value) -> list[str]:
    """The specs of a config value (``all``, ``all+libraw``, a name, or a list of names, ``calibrated:<file>``
    and ``libraw:<algorithm>``), each checked now: unknown names, LibRaw algorithms the installed LibRaw
    lacks and unreadable calibrated files get one sentence here, not later."""
    from omegaconf import OmegaConf

    value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    items = [value] if isinstance(value, str) else list(value)
    specs = []
    for item in items:
        if item == ALL_WITH_LIBRAW:
            specs += [*STATIC_PIPELINE_NAMES, *libraw_specs()]
        elif is_libraw(item):
            specs.append(f"{LIBRAW_PREFIX}{libraw_algorithm(item)}")
        elif isinstance(item, str) and item.startswith(CALIBRATED_PREFIX):
            build_data_model(item)  # reads and checks the file
            specs.append(f"{CALIBRATED_PREFIX}{spec_file(item)}")
        else:
            specs += resolve_pipeline_names(item)
    return specs


def spec_digest(spec: str) -> bytes:
    """What a spec's views depend on beyond the data: nothing for a static name, LibRaw's version and
    settings for ``libraw:``, the file's content for a calibrated file. Part of every cache key."""
    if is_static(spec):
        return b""
    if is_libraw(spec):
        import rawpy

        version = f"{spec_name(spec)}|LibRaw {rawpy.libraw_version}|rawpy {rawpy.__version__}|v{LIBRAW_VIEWS_VERSION}"
        return hashlib.sha1(version.encode()).digest()
    return hashlib.sha1(spec_file(spec).read_bytes()).digest()


def build_data_model(spec: str, camera=None, normalise_output: bool = False):
    """The data model a spec names, as a torch module in eval mode.

    Args:
        spec: a static name, ``libraw:<algorithm>``, ``calibrated:<file>``, or a θ file path (see the
            module docstring).
        camera: the dataset's ``CameraParams``: required for a static name and LibRaw (it is written into
            the DNG LibRaw reads); replaces the camera stored in a θ file; a calibrated file keeps its
            device's camera.
        normalise_output: end a parametrized data model with the affine-free BatchNorm.
    """
    from raw2logit.isp.parametrized import ParametrizedPipeline
    from raw2logit.isp.static import StaticPipeline

    if is_static(spec):
        if camera is None:
            raise InputError(f"The static data model {spec} needs the dataset's camera parameters.")
        return StaticPipeline(spec, camera).eval()
    if is_libraw(spec):
        from raw2logit.isp.libraw import LibRawPipeline

        if camera is None:
            raise InputError(f"The data model {spec} needs the dataset's camera parameters.")
        return LibRawPipeline(spec, camera).eval()
    if isinstance(spec, str) and spec.startswith(CALIBRATED_PREFIX):
        path = spec_file(spec)
        try:
            return ParametrizedPipeline.from_theta_json(path, normalise_output).eval()
        except InputError as error:
            if str(path) in str(error):
                raise
            raise InputError(f"Calibrated data model file {path} is invalid: {error}") from None
    return ParametrizedPipeline.from_theta_json(Path(spec).expanduser(), normalise_output, camera).eval()


def parametrized_data_model(camera, theta: str | None = None, normalise_output: bool = False,
                            tone_curve: str = "power"):  # fmt: skip
    """The parametrized data model at θ_stat of ``camera`` ending in ``tone_curve`` (``data_model.tone_curve``),
    or at the θ of a spec (``data_model.theta``: a θ file or ``calibrated:<file>``, whose own variant and
    tone curve then apply); trainable (every θ group requires grad)."""
    from raw2logit.isp.parametrized import ParametrizedPipeline

    if theta:
        return build_data_model(str(theta), camera, normalise_output).train().requires_grad_(True)
    return ParametrizedPipeline(camera, normalise_output, tone_curve=tone_curve)


# -- the data_model config group: each option is one of these (``_target_``) ------------------------------
@dataclass(frozen=True)
class StaticViews:
    """``data_model=static``: the static pipelines' views, computed once per run before training
    (``backend``: ``torch``, or ``numpy``, the reference implementation)."""

    backend: str = "torch"
    name = "static"
    in_step = False  # nothing of the data model runs inside the training step

    def describe(self, intensity: float) -> str:
        return f"static (I={intensity:g})"


@dataclass(frozen=True)
class Parametrized:
    """``data_model=parametrized``: Φ_para(x, θ) inside the training step, θ learned (``learn``) with
    its own learning rate, or frozen; starting at θ_stat ending in ``tone_curve`` (``power``: θ group
    ``gamma``; ``curve``: the monotone knots, θ group ``curve``) or at the θ of ``theta`` (a θ file or
    ``calibrated:<file>``, which keeps its own tone curve)."""

    learn: bool = True
    lr: float = 1e-3
    normalise_output: bool = False
    theta: str | None = None
    tone_curve: str = "power"
    name = "parametrized"
    in_step = True

    def build(self, camera):
        model = parametrized_data_model(camera, self.theta, self.normalise_output, self.tone_curve)
        # Only the groups that act on the output learn: a parameter without gradient would stop DDP.
        return model.set_trainable(model.active_groups() if self.learn else [])

    def describe(self, intensity: float) -> str:
        return f"{'learned' if self.learn else 'frozen'} (I={intensity:g})"


@dataclass(frozen=True)
class PackedRaw:
    """``data_model=raw``: no ISP; the mosaic packed to half resolution, as the paper's direct-raw baseline."""

    learn: bool = False
    lr: float | None = None
    name = "raw"
    in_step = True

    def build(self, camera):
        from raw2logit.isp.learned import RawPacking

        return RawPacking(camera.pattern)

    def describe(self, intensity: float) -> str:
        return f"direct raw (I={intensity:g})"


@dataclass(frozen=True)
class LearnedUNet:
    """``data_model=nn``: a small U-Net from packed raw to RGB, trained with the task model."""

    learn: bool = True
    lr: float = 1e-3
    width: int = 16
    name = "nn"
    in_step = True

    def build(self, camera):
        from raw2logit.isp.learned import UNetDataModel

        return UNetDataModel(camera.pattern, self.width)

    def describe(self, intensity: float) -> str:
        return f"learned U-Net (I={intensity:g})"
