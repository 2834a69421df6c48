"""The step machinery every torch data model runs on (Eq. 5 as a sequence of steps).

A data model is a list of ``Step``s: black level -> demosaic -> white balance -> colour correction
-> sharpen (on Y) -> denoise (on Y) -> tone curve. ``build_steps`` makes the list from the step
functions and their parameters (fixed for the static pipelines, θ for the parametrized one);
``run_steps`` runs one list, ``run_shared_prefix`` several with each common prefix once (the bank
of static pipelines) and ``run_chunked`` does so a few images at a time on CPU without autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from raw2logit.errors import InputError
from raw2logit.isp.black_level import black_level_correction
from raw2logit.isp.buffers import empty_output
from raw2logit.isp.colour import (
    colour_correction,
    colour_to_luma,
    gamma_correction,
    merge_luma,
    split_luma,
    srgb_encode,
    white_balance,
)
from raw2logit.isp.filters import cpu_chunk
from raw2logit.isp.threads import run_in_threads
from raw2logit.names import TONE_CURVES

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
# Images per pass through a whole pipeline on CPU without autograd: every intermediate then holds
# 8 images, not the batch, and the heap reuses their memory from one chunk to the next (8 measured
# 6-9 % faster than 16 on 2 AVX2 cores: a chunk's intermediates stay nearer the cores).
_CPU_CHUNK_PIXELS = 8 * 256 * 256


@dataclass(frozen=True)
class Step:
    """One step of a data model: ``key`` identifies the computation (for sharing prefixes),
    ``stage`` names its output for ``forward_stages`` (None for internal steps). Between the
    ``luma`` and ``rgb`` steps the state is a (Y, chroma) pair (``on_luma``). The last step (the
    tone curve) also takes ``out=``, a (B, 3, H, W) tensor to write the view into."""

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
            lambda raw: black_level_correction(raw, black_level.double()),
            "black_level",
        ),
        Step(f"demosaic:{demosaic_key}", lambda cfa: demosaic_fn(cfa, pattern, dtype=dtype), "demosaic"),
        *colour,
        Step(f"sharpen:{sharpen_key}", _on_luma(sharpen_fn), "sharpen", on_luma=True),
        Step(f"denoise:{denoise_key}", _on_luma(denoise_fn), "denoise", on_luma=True),
        Step("gamma", _power_curve(gamma), "gamma")
        if tone_curve == "power"
        else Step("gamma:srgb", _srgb_curve),
    ]


def _power_curve(gamma: torch.Tensor | float) -> Callable:
    def apply(state: tuple[torch.Tensor, torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
        # In place on the merged image, a temporary or ``out`` (when no gradient is recorded).
        return gamma_correction(merge_luma(*state, out=out), gamma, in_place=True)

    return apply


def _srgb_curve(state: tuple[torch.Tensor, torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    view = srgb_encode(merge_luma(*state))
    return view if out is None else out.copy_(view)


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


def run_shared_prefix(
    raw: torch.Tensor,
    pipelines: Sequence[Sequence[Step]],
    outputs: Sequence[torch.Tensor] | None = None,
    path: list[tuple[str, torch.Tensor]] | None = None,
) -> Iterator[torch.Tensor]:
    """Run several step sequences, computing each shared prefix once.

    Only the intermediates on the current path are held, so running the 12 pipelines in the
    paper's order needs memory for one path, not for twelve. With ``outputs`` (one tensor per
    sequence), each sequence's last step writes into its output. ``path`` is that path, (step key,
    output) pairs from the first step on: pass one left by an earlier run on the same ``raw`` with
    steps of the same parameters to start from it (it is updated in place).
    """
    path = [] if path is None else path
    for index, steps in enumerate(pipelines):
        shared = 0
        while shared < min(len(path), len(steps)) and path[shared][0] == steps[shared].key:
            shared += 1
        del path[shared:]
        x = path[-1][1] if path else raw
        out = None if outputs is None else outputs[index]
        for position in range(shared, len(steps)):
            step = steps[position]
            x = step.fn(x, out=out) if out is not None and position == len(steps) - 1 else step.fn(x)
            path.append((step.key, x))
        if out is not None and x is not out:  # the same sequence twice: its view is already computed
            x = out.copy_(x)
        yield x


def records_gradient(raw: torch.Tensor) -> bool:
    """Whether autograd records operations on ``raw`` (the static pipelines' only differentiable input)."""
    return torch.is_grad_enabled() and raw.requires_grad


def run_chunked(
    raw: torch.Tensor, pipelines: Sequence[Sequence[Step]], paths: list[list] | None = None
) -> list[torch.Tensor]:
    """The views of several step sequences, without autograd: a few images at a time on CPU.

    Each chunk of images runs through every sequence (shared prefixes once) and the tone curve
    writes straight into the output, allocated up front (``empty_output``). Intermediates then
    hold a chunk, not the batch: in a process with glibc's default allocator settings their memory
    is reused instead of page-faulted in afresh, and they stay nearer the cores.

    On CPU the chunks run on threads of their own, each with one torch thread (``run_in_threads``).
    With ``paths`` (a list, empty the first time), each chunk's intermediates of the last sequence
    but its final step (whose output is the caller's view) are kept there, one path per chunk, and
    a later call with ``paths`` starts from them (``run_shared_prefix``'s ``path``): it must be a
    call on equal images with steps of the same parameters.
    """
    batch, height, width = raw.shape
    outputs = [empty_output((batch, 3, height, width), raw.dtype, raw.device) for _ in pipelines]
    images = cpu_chunk(raw, _CPU_CHUNK_PIXELS)
    starts = range(0, batch, images)
    if paths is not None:
        paths.extend([] for _ in range(len(starts) - len(paths)))

    def run(index: int) -> None:
        chunk = slice(starts[index], starts[index] + images)
        path = None if paths is None else paths[index]
        for _ in run_shared_prefix(raw[chunk], pipelines, [out[chunk] for out in outputs], path):
            pass
        if path is not None:
            del path[len(pipelines[-1]) - 1 :]

    run_in_threads(run, range(len(starts)), raw.device)
    return outputs
