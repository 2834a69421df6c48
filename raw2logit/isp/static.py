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

import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from raw2logit.errors import InputError
from raw2logit.isp.camera import CameraParams, check_camera
from raw2logit.isp.demosaic import DEMOSAIC_METHODS
from raw2logit.isp.denoise import gaussian_denoise, median_denoise
from raw2logit.isp.sharpen import sharpen_filter, unsharp_mask
from raw2logit.isp.steps import (
    GAMMA,
    Step,
    build_steps,
    records_gradient,
    run_chunked,
    run_shared_prefix,
    run_steps,
)
from raw2logit.isp.threads import one_openmp_thread
from raw2logit.isp.validation import check_raw
from raw2logit.names import parse_pipeline_name, resolve_pipeline_names

SHARPEN_METHODS = {"s": sharpen_filter, "u": unsharp_mask}
DENOISE_METHODS = {"me": median_denoise, "ga": gaussian_denoise}


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


class _LastPrefix(threading.local):
    """The intermediates of this thread's last ``StaticPipeline`` call without autograd.

    Twelve ``StaticPipeline``s called one after the other on the same batch would compute each
    demosaic four times and the black level and colour steps twelve times, which the bank computes
    once (or three times): about twice the bank's time. So a call keeps its path of intermediates
    (black level, demosaic, colour, sharpening, denoising; not the view it returns) and the next
    call on equal images with the same camera starts from the steps it shares.

    "Equal" is checked by value against a copy of the last input (one comparison pass, about 3 %
    of a pipeline's time): an input rewritten in place, even through a numpy array that shares its
    memory (which torch's version counter does not see), is never served stale intermediates. The
    path is let go when the input tensor it was computed from is garbage collected, when a call
    brings other images, or for inputs over ``_REUSE_MAX_PIXELS`` (about 44 bytes a pixel are
    held; the cap keeps that under 400 MB). One per thread, so threads never share one.
    """

    def __init__(self):
        self.entry: dict | None = None

    def paths(self, raw: torch.Tensor, camera: tuple) -> list[list]:
        entry = self.entry
        if (
            entry is not None
            and entry["camera"] == camera
            and entry["images"] is not None
            and entry["images"].shape == raw.shape
            and entry["images"].dtype == raw.dtype
            and entry["images"].device == raw.device
            and torch.equal(entry["images"], raw)
        ):
            return entry["paths"]
        if entry is not None:
            _let_go(entry)  # its finalizer holds it until its input is collected
        self.entry = entry = {"camera": camera, "images": raw.clone(), "paths": []}
        weakref.finalize(raw, _let_go, entry)
        return entry["paths"]


def _let_go(entry: dict) -> None:
    # New objects, not cleared ones: a call running in this thread keeps the list it was handed
    # even if the input is collected in another thread meanwhile.
    entry["images"] = None
    entry["paths"] = []


_LAST_PREFIX = _LastPrefix()
_REUSE_MAX_PIXELS = 2**23  # 128 images of 256 x 256


def _torch_views(
    module: _CameraModule, raw: torch.Tensor, names: Sequence[str], reuse: bool = False, at_once: bool = False
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, views) pipeline by pipeline, those with the same demosaic (and within them the same
    sharpening) one after the other, so that each prefix is computed once. With ``reuse``, from
    the intermediates of this thread's last such call where it had equal images (``_LastPrefix``).
    With ``at_once`` (for a caller that keeps every view) each chunk of images runs through all the
    pipelines in one pass, instead of once per demosaic group (the black level once, not three
    times, and one wait for the chunk threads: 5 % faster, measured)."""
    names = _prefix_order(names)
    tensors = module.camera_tensors()
    steps = [_static_steps(name, module.camera.pattern, tensors, raw.dtype) for name in names]
    if records_gradient(raw):
        yield from zip(names, run_shared_prefix(raw, steps))
        return
    if reuse and raw.numel() <= _REUSE_MAX_PIXELS:
        camera = (module.camera.pattern, *(tuple(value.tolist()) for value in tensors.values()))
        with one_openmp_thread(raw.device):
            paths = _LAST_PREFIX.paths(raw, camera)
        yield from zip(names, run_chunked(raw, steps, paths))
        return
    if at_once:
        yield from zip(names, run_chunked(raw, steps))
        return
    # Without autograd, chunk by chunk: the views of the pipelines with the same demosaic are
    # computed together (their prefix once), the next group's after they are yielded.
    start = 0
    while start < len(steps):
        end = start + 1
        while end < len(steps) and steps[end][1].key == steps[start][1].key:
            end += 1
        yield from zip(names[start:end], run_chunked(raw, steps[start:end]))
        start = end


def _torch_stages(module: _CameraModule, raw: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
    stages: dict[str, torch.Tensor] = {}
    run_steps(
        raw,
        _static_steps(name, module.camera.pattern, module.camera_tensors(), raw.dtype, stages=True),
        stages,
    )
    return stages


def _numpy_views(
    module: _CameraModule, raw: torch.Tensor, names: Sequence[str], reuse: bool = False, at_once: bool = False
):
    """The oracle's views, one image at a time (``reuse`` and ``at_once`` do not apply: the reference
    keeps nothing and runs image by image)."""
    from raw2logit.isp import reference_backend  # imports the oracle's libraries on first use only

    return reference_backend.iter_views(raw, names, module.camera)


def _numpy_stages(module: _CameraModule, raw: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
    from raw2logit.isp import reference_backend

    return reference_backend.stages(raw, name, module.camera)


# backend -> (views of several pipelines, stages of one): the torch steps, or the numpy reference
# one image at a time on CPU (raw2logit.isp.reference_backend).
BACKENDS = {"torch": (_torch_views, _torch_stages), "numpy": (_numpy_views, _numpy_stages)}


class _CameraModule(nn.Module):
    def __init__(self, camera: CameraParams, backend: str):
        super().__init__()
        check_camera(camera)
        if backend not in BACKENDS:
            raise InputError(f"Unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}.")
        self.camera = camera
        self.backend = backend
        self._views, self._stages = BACKENDS[backend]
        # float64: cast to the input's dtype at use, so a float64 pipeline is exact to the reference.
        for key, value in camera.tensors(dtype=torch.float64).items():
            self.register_buffer(key, value, persistent=False)

    def camera_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "black_level": self.black_level,
            "white_balance": self.white_balance,
            "colour_matrix": self.colour_matrix,
        }


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
        _check_raw(raw)
        return next(iter(self._views(self, raw, [self.name], reuse=True)))[1]

    def forward_stages(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """All intermediate stages, stage name -> tensor (``STAGE_NAMES``; RGB stages are (B, 3, H, W))."""
        check_raw(raw)
        return self._stages(self, raw, self.name)

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
        """Yield (name, views (B, 3, H, W)) pipeline by pipeline (the torch backend in an order that
        computes each shared prefix once)."""
        _check_raw(raw)
        yield from self._views(self, raw, self.names)

    def forward(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """Name -> views (B, 3, H, W), in the order of ``names``."""
        _check_raw(raw)
        views = dict(self._views(self, raw, self.names, at_once=True))
        return {name: views[name] for name in self.names}


def _check_raw(raw: torch.Tensor) -> None:
    """``check_raw`` on one OpenMP thread: the views are computed on threads of their own next."""
    with one_openmp_thread(raw.device if isinstance(raw, torch.Tensor) else torch.device("cpu")):
        check_raw(raw)


def _prefix_order(names: Sequence[str]) -> list[str]:
    """``names`` grouped by demosaic, then by sharpening, each group where its first name stands."""
    first: dict = {}
    keys = []
    for name in names:
        demosaic, sharpen, _ = parse_pipeline_name(name)
        keys.append(
            (first.setdefault(demosaic, len(first)), first.setdefault((demosaic, sharpen), len(first)))
        )
    return [name for _, name in sorted(zip(keys, names), key=lambda pair: pair[0])]
