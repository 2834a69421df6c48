"""The 12 static data models of the paper (Section 4.2.1, Appendix A.1.1) as batched torch modules.

A pipeline is named demosaic_sharpen_denoise: demosaic ``bi`` bilinear, ``ma`` Malvar2004,
``me`` Menon2007; sharpen ``s`` 3x3 sharpening filter, ``u`` unsharp masking; denoise ``me``
3x3 median, ``ga`` Gaussian (sigma 0.5). Order: black level -> demosaic -> white balance ->
colour correction -> sharpen (on Y) -> denoise (on Y) -> gamma.

The reference converts RGB -> YUV -> RGB around each of sharpening and denoising. Both filters
change only the luma Y, and ``yuv2rgb`` adds Y to every channel with weight 1, so the torch
pipelines carry (Y, chroma) with RGB = chroma + Y: the filters run on Y alone and U, V are never
converted back and forth. Values are equal up to rounding (about 1e-16, which the gamma's
infinite slope at 0 can turn into up to 1e-8 on black pixels).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from raw2logit.errors import InputError
from raw2logit.isp.black_level import black_level_correction
from raw2logit.isp.camera import CameraParams, check_camera
from raw2logit.isp.colour import (
    colour_correction,
    colour_to_luma,
    gamma_correction,
    merge_luma,
    split_luma,
    srgb_encode,
    white_balance,
)
from raw2logit.isp.demosaic import DEMOSAIC_METHODS
from raw2logit.isp.denoise import gaussian_denoise, median_denoise
from raw2logit.isp.sharpen import sharpen_filter, unsharp_mask
from raw2logit.isp.validation import check_raw
from raw2logit.names import TONE_CURVES, parse_pipeline_name, resolve_pipeline_names

SHARPEN_METHODS = {"s": sharpen_filter, "u": unsharp_mask}
DENOISE_METHODS = {"me": median_denoise, "ga": gaussian_denoise}
GAMMA = 2.2
STAGE_NAMES = (
    "raw",
    "black_level",
    "demosaic",
    "white_balance",
    "colour_correction",
    "sharpen",
    "denoise",
    "gamma",
)
BACKENDS = ("torch", "numpy")


@dataclass(frozen=True)
class Step:
    """One step of a data model: ``key`` identifies the computation (for sharing prefixes),
    ``stage`` names its output for ``forward_stages`` (None for internal steps). Between the
    ``luma`` and ``rgb`` steps the state is a (Y, chroma) pair (``on_luma``)."""

    key: str
    fn: Callable
    stage: str | None = None
    on_luma: bool = False


def _on_luma(filter_fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    def apply(state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        luma, chroma = state
        return filter_fn(luma), chroma

    return apply


def build_steps(
    pattern: str,
    black_level: torch.Tensor,
    demosaic: tuple[str, Callable],
    white_balance_gains: torch.Tensor,
    colour_matrix: torch.Tensor,
    sharpen: tuple[str, Callable],
    denoise: tuple[str, Callable],
    gamma: torch.Tensor | float,
    dtype: torch.dtype = torch.float32,
    tone_curve: str = "power",
    stages: bool = False,
) -> list[Step]:
    """The step sequence shared by static and parametrized pipelines (Eq. 5).

    ``demosaic``, ``sharpen`` and ``denoise`` are (key, function) pairs; the demosaic function
    is called as ``fn(cfa, pattern, dtype=dtype)``, the others take a luma channel (B, 1, H, W).
    The black-level-corrected mosaic is kept in float64 (one subtraction): Menon's directional
    decision must compare the very values the reference compares. Everything after the
    demosaic runs in ``dtype``. ``tone_curve`` is the paper's ``"power"`` law ``x ** (1/gamma)``
    or ``"srgb"`` (the sRGB curve; ``gamma`` is then unused). With ``stages`` every stage is
    its own step (for ``forward_stages``); without, white balance, colour correction and the
    luma split are one (4, 3) matrix product (equal to rounding).
    """
    if tone_curve not in TONE_CURVES[:2]:  # "curve" (learnable knots) is added by ParametrizedPipeline
        raise InputError(f"Unknown tone curve {tone_curve!r}; expected one of {', '.join(TONE_CURVES[:2])}.")
    demosaic_key, demosaic_fn = demosaic
    sharpen_key, sharpen_fn = sharpen
    denoise_key, denoise_fn = denoise
    if stages:
        colour = [
            Step("white_balance", lambda rgb: white_balance(rgb, white_balance_gains), "white_balance"),
            Step("colour_correction", lambda rgb: colour_correction(rgb, colour_matrix), "colour_correction"),
            Step("luma", split_luma),
        ]
    else:
        colour = [Step("colour", lambda rgb: colour_to_luma(rgb, white_balance_gains, colour_matrix))]
    return [
        Step(
            "black_level",
            lambda raw: black_level_correction(raw.double(), black_level.double()),
            "black_level",
        ),
        Step(f"demosaic:{demosaic_key}", lambda cfa: demosaic_fn(cfa, pattern, dtype=dtype), "demosaic"),
        *colour,
        Step(f"sharpen:{sharpen_key}", _on_luma(sharpen_fn), "sharpen", on_luma=True),
        Step(f"denoise:{denoise_key}", _on_luma(denoise_fn), "denoise", on_luma=True),
        # In place on the merged image, a temporary (when no gradient is recorded).
        Step("gamma", lambda state: gamma_correction(merge_luma(*state), gamma, in_place=True), "gamma")
        if tone_curve == "power"
        else Step("gamma:srgb", lambda state: srgb_encode(merge_luma(*state)), "gamma"),
    ]


def run_steps(raw: torch.Tensor, steps: Sequence[Step], stages: dict | None = None) -> torch.Tensor:
    """Apply ``steps`` in order; if ``stages`` is a dict, fill it with stage name -> RGB output
    (build the steps with ``stages=True`` for every stage)."""
    x = raw
    if stages is not None:
        stages["raw"] = raw
    for step in steps:
        x = step.fn(x)
        if stages is not None and step.stage is not None:
            stages[step.stage] = (merge_luma(*x) if step.on_luma else x).to(raw.dtype)
    return x


def run_shared_prefix(raw: torch.Tensor, pipelines: Sequence[Sequence[Step]]) -> Iterator[torch.Tensor]:
    """Run several step sequences, computing each shared prefix once.

    Only the intermediates on the current path are held, so running the 12 pipelines in the
    paper's order needs memory for one path, not for twelve.
    """
    path: list[tuple[str, torch.Tensor]] = []
    for steps in pipelines:
        shared = 0
        while shared < min(len(path), len(steps)) and path[shared][0] == steps[shared].key:
            shared += 1
        del path[shared:]
        x = path[-1][1] if path else raw
        for step in steps[shared:]:
            x = step.fn(x)
            path.append((step.key, x))
        yield x


def _static_steps(
    name: str, pattern: str, camera: dict[str, torch.Tensor], dtype: torch.dtype, stages: bool = False
) -> list[Step]:
    demosaic, sharpen, denoise = parse_pipeline_name(name)
    return build_steps(
        pattern,
        camera["black_level"],
        (demosaic, DEMOSAIC_METHODS[demosaic]),
        camera["white_balance"],
        camera["colour_matrix"],
        (sharpen, SHARPEN_METHODS[sharpen]),
        (denoise, DENOISE_METHODS[denoise]),
        GAMMA,
        dtype,
        stages=stages,
    )


class _CameraModule(nn.Module):
    def __init__(self, camera: CameraParams, backend: str):
        super().__init__()
        check_camera(camera)
        if backend not in BACKENDS:
            raise InputError(f"Unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}.")
        self.camera = camera
        self.backend = backend
        # float64: cast to the input's dtype at use, so a float64 pipeline is exact to the reference.
        for key, value in camera.tensors(dtype=torch.float64).items():
            self.register_buffer(key, value, persistent=False)

    def _camera_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "black_level": self.black_level,
            "white_balance": self.white_balance,
            "colour_matrix": self.colour_matrix,
        }

    def _numpy_views(self, raw: torch.Tensor, name: str) -> torch.Tensor:
        from raw2logit.isp import reference

        images = raw.detach().cpu().double().numpy()
        views = [reference.process(image, name, self.camera) for image in images]
        return torch.from_numpy(reference.to_chw_batch(views)).to(raw.device, raw.dtype)


class StaticPipeline(_CameraModule):
    """One of the 12 static data models as an ``nn.Module``.

    Args:
        name: pipeline name, one of ``STATIC_PIPELINE_NAMES`` (e.g. ``"bi_s_me"``).
        camera: the sensor's ``CameraParams``.
        backend: ``"torch"`` (batched, differentiable w.r.t. the raw input, any device) or
            ``"numpy"`` (the reference, one image at a time on CPU).

    Shapes:
        raw (B, H, W) float in [0, 1], H and W even -> view (B, 3, H, W) float in [0, 1].
    """

    def __init__(self, name: str, camera: CameraParams, backend: str = "torch"):
        super().__init__(camera, backend)
        parse_pipeline_name(name)
        self.name = name

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        check_raw(raw)
        if self.backend == "numpy":
            return self._numpy_views(raw, self.name)
        return run_steps(
            raw, _static_steps(self.name, self.camera.pattern, self._camera_tensors(), raw.dtype)
        )

    def forward_stages(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """All intermediate stages, stage name -> tensor (``STAGE_NAMES``; RGB stages are (B, 3, H, W))."""
        check_raw(raw)
        if self.backend == "numpy":
            from raw2logit.isp import reference

            per_image = [
                reference.process_stages(image, self.name, self.camera)
                for image in raw.detach().cpu().double().numpy()
            ]
            return {
                stage: torch.from_numpy(reference.to_chw_batch([s[stage] for s in per_image])).to(
                    raw.device, raw.dtype
                )
                for stage in STAGE_NAMES
            }
        stages: dict[str, torch.Tensor] = {}
        steps = _static_steps(self.name, self.camera.pattern, self._camera_tensors(), raw.dtype, stages=True)
        run_steps(raw, steps, stages)
        return stages

    def extra_repr(self) -> str:
        return f"name={self.name!r}, camera={self.camera.name!r}, backend={self.backend!r}"


class StaticPipelineBank(_CameraModule):
    """Several static data models run together, sharing their common prefixes.

    One black level feeds the three demosaics, each demosaic feeds its two sharpenings, each
    sharpening its two denoisings: the 12 views cost far less than 12 separate pipelines.

    Args:
        names: pipeline names, or ``"all"`` (default) for the 12 in the paper's order.
        camera: the sensor's ``CameraParams``.
        backend: ``"torch"`` or ``"numpy"``.
    """

    def __init__(
        self, names: str | Iterable[str] = "all", camera: CameraParams | None = None, backend: str = "torch"
    ):
        super().__init__(camera if camera is not None else CameraParams(), backend)
        self.names = resolve_pipeline_names(names)

    def iter_views(self, raw: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (name, views (B, 3, H, W)) pipeline by pipeline."""
        check_raw(raw)
        if self.backend == "numpy":
            for name in self.names:
                yield name, self._numpy_views(raw, name)
            return
        tensors = self._camera_tensors()
        steps = [_static_steps(name, self.camera.pattern, tensors, raw.dtype) for name in self.names]
        yield from zip(self.names, run_shared_prefix(raw, steps))

    def forward(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(self.iter_views(raw))
