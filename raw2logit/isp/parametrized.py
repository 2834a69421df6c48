"""The parametrized, differentiable data model of the paper (Section 4.2.2, Appendix A.1.2).

theta = (black level (4), demosaic kernels (3, 3, 3), white balance (3), colour matrix (3, 3),
sharpen kernel (3, 3), denoise kernel (5, 5), gamma (1), tone curve knots (3, 17)), every group an
``nn.Parameter``. At initialisation the pipeline equals ``StaticPipeline("bi_s_ga", camera)`` (Eq. 6):
bilinear demosaicing as three 3x3 convolutions of the zero-filled colour planes, the sharpening
filter, and scipy's sigma-0.5 Gaussian as a 5x5 kernel, with the same boundary modes as the
reference; the tone curve knots start on the paper's x ** (1/2.2) (``raw2logit.isp.tone``).

Two structural choices go beyond the paper, for fitting real devices (``mode=calibrate``):
``tone_curve="curve"`` ends in the flexible monotone curve, and ``white_balance_first`` applies the
white balance to the mosaic before demosaicing, as dcraw, LibRaw and most camera ISPs do (a
demosaic that mixes colours, Malvar's or Menon's, gives other values on white-balanced input).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from raw2logit.errors import InputError
from raw2logit.isp.camera import CameraParams, check_camera
from raw2logit.isp.colour import merge_luma
from raw2logit.isp.demosaic import DEMOSAIC_METHODS, bilinear_kernels, demosaic_planes
from raw2logit.isp.denoise import gaussian_denoise, gaussian_denoise_kernel, median_denoise
from raw2logit.isp.sharpen import sharpen_filter, sharpen_kernel, unsharp_mask
from raw2logit.isp.steps import GAMMA, Step, build_steps, run_steps
from raw2logit.isp.tone import KNOTS, curve_knots, tone_curve
from raw2logit.isp.validation import check_raw
from raw2logit.names import THETA_GROUPS, TONE_CURVES, parse_pipeline_name

THETA_SHAPES = {
    "black_level": (4,),
    "demosaic": (3, 3, 3),
    "white_balance": (3,),
    "colour_matrix": (3, 3),
    "sharpen": (3, 3),
    "denoise": (5, 5),
    "gamma": (1,),
    "curve": (3, KNOTS),
}
PATTERN_CHANNELS = {"R": 0, "G": 1, "B": 2}


def check_groups(groups: Iterable[str] | str) -> list[str]:
    """The θ group names in ``groups``; ``"all"`` (alone) means every group.

    Raises:
        InputError: an unknown group name.
    """
    groups = [groups] if isinstance(groups, str) else list(groups)
    if groups == ["all"]:
        return list(THETA_GROUPS)
    for group in groups:
        if group not in THETA_GROUPS:
            raise InputError(
                f"Unknown parameter group {group!r}; expected 'all' alone, or names among {', '.join(THETA_GROUPS)}."
            )
    return groups


def static_theta(camera: CameraParams, gamma: float = GAMMA) -> dict[str, torch.Tensor]:
    """θ_stat: the parameters for which the parametrized pipeline equals the static ``bi_s_ga``."""
    tensors = camera.tensors(dtype=torch.float64)
    return {
        "black_level": tensors["black_level"],
        "demosaic": bilinear_kernels(torch.float64),
        "white_balance": tensors["white_balance"],
        "colour_matrix": tensors["colour_matrix"],
        "sharpen": sharpen_kernel(torch.float64),
        "denoise": gaussian_denoise_kernel(dtype=torch.float64),
        "gamma": torch.tensor([float(gamma)], dtype=torch.float64),
        "curve": curve_knots("power"),
    }


class ParametrizedPipeline(nn.Module):
    """Differentiable data model Φ_para(x, θ).

    Args:
        camera: the sensor's ``CameraParams``; gives the Bayer pattern and θ_stat's black level,
            white balance and colour matrix.
        normalise_output: end with an affine-free ``BatchNorm2d`` over the 3 output channels,
            as the paper's published module does.
        theta: optional initial θ (group name -> values), e.g. from ``load_theta_json``; groups
            not given start at θ_stat.
        variant: the static pipeline whose discrete choices this data model makes (default
            ``bi_s_ga``, the paper's). The kernel groups act only where the variant uses a kernel
            (``demosaic`` for ``bi``, ``sharpen`` for ``s``, ``denoise`` for ``ga``); Malvar, Menon,
            unsharp masking and the median filter are used as they are. At θ_stat the output
            equals ``StaticPipeline(variant)``.
        tone_curve: ``"power"`` (the paper's ``x ** (1/gamma)``), ``"srgb"`` (the sRGB curve of
            device JPEGs) or ``"curve"`` (monotone per-channel curve through the ``curve`` knots,
            ``raw2logit.isp.tone``). ``gamma`` acts only with ``"power"``, ``curve`` only with ``"curve"``.
        white_balance_first: apply the white balance gains to the mosaic sites before demosaicing
            (dcraw/LibRaw order) instead of to the demosaiced image (the paper's order). Equal for
            bilinear demosaicing; different for Malvar's and Menon's, which mix colours.

    Shapes:
        raw (B, H, W) float in [0, 1], H and W even -> view (B, 3, H, W).
    """

    def __init__(
        self,
        camera: CameraParams,
        normalise_output: bool = False,
        theta: Mapping[str, object] | None = None,
        variant: str = "bi_s_ga",
        tone_curve: str = "power",
        white_balance_first: bool = False,
    ):
        super().__init__()
        check_camera(camera)
        if tone_curve not in TONE_CURVES:
            raise InputError(f"Unknown tone curve {tone_curve!r}; expected one of {', '.join(TONE_CURVES)}.")
        if not isinstance(white_balance_first, bool):
            raise InputError(f"white_balance_first must be true or false; got {white_balance_first!r}.")
        self.camera = camera
        self.variant = variant
        self.tone_curve = tone_curve
        self.white_balance_first = white_balance_first
        self._demosaic, self._sharpen, self._denoise = parse_pipeline_name(variant)
        # θ is kept in float64 (a few dozen numbers) and cast to the input's dtype at use: at θ_stat
        # the forward then matches the static pipeline within float32 (float64) rounding of the same steps.
        for group, value in static_theta(camera).items():
            self.register_parameter(group, nn.Parameter(value.to(torch.float64)))
        if theta:
            self.load_theta(theta)
        self.output_norm = nn.BatchNorm2d(3, affine=False) if normalise_output else None

    # -- θ groups -------------------------------------------------------------------------
    def theta(self) -> dict[str, nn.Parameter]:
        """Group name -> parameter, in ``THETA_GROUPS`` order."""
        return {group: getattr(self, group) for group in THETA_GROUPS}

    def set_trainable(self, groups: Iterable[str] | str = "all") -> ParametrizedPipeline:
        """Make exactly ``groups`` trainable (``requires_grad``) and freeze the others."""
        trainable = set(check_groups(groups))
        for group, parameter in self.theta().items():
            parameter.requires_grad_(group in trainable)
        return self

    def freeze(self, *groups: str) -> ParametrizedPipeline:
        """Stop gradients to the named groups (all groups when none is named)."""
        for group in check_groups(groups or ["all"]):
            getattr(self, group).requires_grad_(False)
        return self

    def unfreeze(self, *groups: str) -> ParametrizedPipeline:
        """Let gradients reach the named groups (all groups when none is named)."""
        for group in check_groups(groups or ["all"]):
            getattr(self, group).requires_grad_(True)
        return self

    def active_groups(self) -> list[str]:
        """The θ groups that act on the output for this variant and tone curve."""
        inactive = {
            "demosaic": self._demosaic != "bi",
            "sharpen": self._sharpen != "s",
            "denoise": self._denoise != "ga",
            "gamma": self.tone_curve != "power",
            "curve": self.tone_curve != "curve",
        }
        return [group for group in THETA_GROUPS if not inactive.get(group, False)]

    def theta_dict(self) -> dict[str, object]:
        """θ as plain nested lists (JSON-ready), plus the Bayer pattern."""
        values: dict[str, object] = {
            group: parameter.detach().cpu().double().reshape(THETA_SHAPES[group]).tolist()
            for group, parameter in self.theta().items()
        }
        values["gamma"] = values["gamma"][0]
        values["pattern"] = self.camera.pattern
        return values

    @torch.no_grad()
    def load_theta(self, theta: Mapping[str, object]) -> ParametrizedPipeline:
        """Set θ groups from a mapping (as ``theta_dict`` writes); unknown keys raise ``ValueError``."""
        for group, value in theta.items():
            if group == "pattern":
                if value != self.camera.pattern:
                    raise InputError(
                        f"θ was fitted for Bayer pattern {value!r}, but the camera's is {self.camera.pattern!r}."
                    )
                continue
            if group not in THETA_GROUPS:
                raise InputError(
                    f"Unknown parameter group {group!r} in θ; expected keys among {', '.join(THETA_GROUPS)}."
                )
            try:
                tensor = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
            except (TypeError, ValueError, RuntimeError):
                raise InputError(f"θ group {group!r} must hold numbers; got {str(value)[:80]}.") from None
            if not torch.isfinite(tensor).all():
                raise InputError(f"θ group {group!r} holds non-finite values ({tensor.tolist()}); expected finite "
                                 "numbers (a diverged fit or a damaged file).")  # fmt: skip
            expected = THETA_SHAPES[group]
            if tensor.numel() != torch.Size(expected).numel():
                raise InputError(
                    f"θ group {group!r} needs {torch.Size(expected).numel()} values (shape {expected}); "
                    f"got {tensor.numel()}."
                )
            parameter = getattr(self, group)
            parameter.copy_(tensor.reshape(parameter.shape).to(parameter.dtype))
        return self

    def save_theta_json(self, path: str | Path) -> Path:
        path = Path(path)
        document = {"variant": self.variant, "tone_curve": self.tone_curve,
                    "white_balance_first": self.white_balance_first, "theta": self.theta_dict(),
                    "camera": self.camera.to_dict()}  # fmt: skip
        path.write_text(json.dumps(document, indent=2))
        return path

    @classmethod
    def from_theta_json(cls, path: str | Path, normalise_output: bool = False,
                        camera: CameraParams | None = None) -> ParametrizedPipeline:  # fmt: skip
        """Reload a pipeline written by ``save_theta_json``; ``camera`` replaces the file's camera (its
        Bayer pattern must match θ's), e.g. to apply a θ to another dataset of the same sensor."""
        document = load_theta_json(path)
        try:
            camera = camera if camera is not None else CameraParams.from_dict(document["camera"])
            return cls(camera, normalise_output, document["theta"], document.get("variant", "bi_s_ga"),
                       document.get("tone_curve", "power"), document.get("white_balance_first", False))  # fmt: skip
        except InputError as error:
            raise InputError(f"θ file {path}: {error}") from None
        except (TypeError, ValueError) as error:
            raise InputError(f"θ file {path} is invalid ({type(error).__name__}: {error}); expected the file "
                             "save_theta_json writes.") from None  # fmt: skip

    # -- processing -----------------------------------------------------------------------
    def _site_gains(self, dtype: torch.dtype) -> torch.Tensor:
        """(4,) white balance gain of each 2x2 site (reading order) for the camera's pattern."""
        channels = [PATTERN_CHANNELS[colour] for colour in self.camera.pattern]
        return self.white_balance.to(dtype)[channels]

    def _steps(self, dtype: torch.dtype, stages: bool = False):
        if self._demosaic == "bi":
            demosaic = lambda cfa, pattern, dtype: demosaic_planes(cfa, pattern, self.demosaic, dtype)
        else:
            demosaic = DEMOSAIC_METHODS[self._demosaic]
        gains = self.white_balance
        if self.white_balance_first:
            # The gains scale the black-level-corrected mosaic; the later white balance step is then 1.
            plain_demosaic = demosaic

            def demosaic(cfa, pattern, dtype):
                height, width = cfa.shape[-2:]
                sites = self._site_gains(cfa.dtype).view(2, 2).repeat(height // 2, width // 2)
                return plain_demosaic(cfa * sites, pattern, dtype)

            gains = torch.ones(3, dtype=torch.float64, device=self.white_balance.device)
        sharpen = (lambda luma: sharpen_filter(luma, self.sharpen)) if self._sharpen == "s" else unsharp_mask
        denoise = (
            (lambda luma: gaussian_denoise(luma, self.denoise)) if self._denoise == "ga" else median_denoise
        )
        steps = build_steps(
            self.camera.pattern,
            self.black_level,
            ("theta", demosaic),
            gains,
            self.colour_matrix,
            ("theta", sharpen),
            ("theta", denoise),
            self.gamma,
            dtype,
            "power" if self.tone_curve == "curve" else self.tone_curve,
            stages,
        )
        if self.tone_curve == "curve":  # the last step is the tone curve

            def curve_step(state, out=None):
                view = tone_curve(merge_luma(*state), self.curve)
                return view if out is None else out.copy_(view)

            steps[-1] = Step("tone:curve", curve_step, "gamma")
        return steps

    def extra_repr(self) -> str:
        order = ", white_balance_first=True" if self.white_balance_first else ""
        return f"variant={self.variant!r}, tone_curve={self.tone_curve!r}{order}, camera={self.camera.name!r}"

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        check_raw(raw)
        view = run_steps(raw, self._steps(raw.dtype))
        return self.output_norm(view) if self.output_norm is not None else view

    def forward_stages(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """Intermediate stages, stage name -> tensor; ``"normalised"`` is added with ``normalise_output``."""
        check_raw(raw)
        stages: dict[str, torch.Tensor] = {}
        view = run_steps(raw, self._steps(raw.dtype, stages=True), stages)
        if self.output_norm is not None:
            stages["normalised"] = self.output_norm(view)
        return stages


def load_theta_json(path: str | Path) -> dict:
    """Read a θ file written by ``ParametrizedPipeline.save_theta_json``; errors name the file."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"θ file {path} does not exist.") from None
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"θ file {path} is not readable JSON ({error}).") from None
    if not isinstance(document, dict) or "theta" not in document or "camera" not in document:
        raise InputError(f"θ file {path} must hold a JSON object with keys 'theta' and 'camera'.")
    if not isinstance(document["theta"], dict) or not isinstance(document["camera"], dict):
        raise InputError(f"θ file {path}: 'theta' and 'camera' must be JSON objects (group -> values).")
    return document
