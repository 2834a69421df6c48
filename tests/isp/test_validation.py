"""Bad input raises ``InputError`` (a ValueError) with one sentence naming the offending value."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from raw2logit.errors import InputError
from raw2logit.isp import (
    STATIC_PIPELINE_NAMES,
    CameraParams,
    ParametrizedPipeline,
    StaticPipeline,
    StaticPipelineBank,
    bayer_masks,
    reference,
)
from raw2logit.isp.demosaic import demosaic_menon2007

PIPELINE_LIST = re.escape(", ".join(STATIC_PIPELINE_NAMES))
PATTERN_LIST = "RGGB, BGGR, GRBG, GBRG"


def test_a_library_caller_catches_bad_input_as_value_error():
    """Code that calls the ISP and handles ``ValueError`` (as for any bad argument in Python) gets
    the one-sentence message, and nothing else (a programming error is not turned into one)."""
    camera = CameraParams.published("drone")
    with pytest.raises(ValueError) as caught:
        StaticPipeline("bi_s_me", camera)(torch.rand(1, 5, 8))
    message = str(caught.value)
    assert message.startswith("Raw input") and message.count(". ") == 0 and "\n" not in message
    with pytest.raises(ValueError, match=r"Unknown static pipeline 'bi_x_me'; expected one of"):
        StaticPipeline("bi_x_me", camera)
    with pytest.raises(TypeError):  # a wrong call is not "bad input"
        StaticPipeline("bi_s_me", camera)(torch.rand(1, 4, 4), "extra")


def nan_raw():
    raw = torch.rand(2, 4, 6)
    raw[1, 2, 3] = float("nan")
    return raw


def inf_raw():
    raw = torch.rand(1, 4, 6)
    raw[0, 0, 0] = float("inf")
    return raw


BAD_RAW = {
    "2d": (lambda: torch.rand(8, 8), r"must have shape \(B, H, W\); got shape \(8, 8\)"),
    "4d": (lambda: torch.rand(2, 1, 8, 8), r"must have shape \(B, H, W\); got shape \(2, 1, 8, 8\)"),
    "odd_height": (lambda: torch.rand(1, 5, 8), r"height and width must be even.*got 5x8"),
    "odd_width": (lambda: torch.rand(1, 8, 7), r"height and width must be even.*got 8x7"),
    "too_small": (lambda: torch.rand(1, 0, 4), r"height and width must be even and at least 2.*got 0x4"),
    "nan": (nan_raw, r"contains NaN or Inf"),
    "inf": (inf_raw, r"contains NaN or Inf"),
    "negative": (lambda: torch.rand(1, 4, 6) - 0.5, r"must lie in \[0, 1\].*got values in \[-0\.\d+, "),
    "above_one": (lambda: torch.rand(1, 4, 6) + 1.0, r"must lie in \[0, 1\].*got values in \[1\.\d+, "),
    "integer": (
        lambda: torch.randint(0, 2, (1, 4, 6)),
        r"floating-point tensor in \[0, 1\]; got dtype torch\.int64",
    ),
    "empty_batch": (lambda: torch.rand(0, 4, 6), r"empty batch"),
    "numpy": (lambda: np.random.rand(1, 4, 6), r"must be a torch\.Tensor of shape \(B, H, W\); got ndarray"),
}


@pytest.mark.parametrize("case", list(BAD_RAW))
def test_bad_raw_raises_for_every_model(case):
    """Static (both backends), bank and parametrized models, forward and forward_stages, all check."""
    make_raw, message = BAD_RAW[case]
    camera = CameraParams.published("drone")
    models = [
        StaticPipeline("me_s_me", camera),
        StaticPipeline("bi_u_ga", camera, backend="numpy"),
        StaticPipelineBank(["ma_s_ga"], camera),
        ParametrizedPipeline(camera),
    ]
    for model in models:
        with pytest.raises(InputError, match=rf"^Raw input .*{message}"):
            model(make_raw())
        if hasattr(model, "forward_stages"):
            with pytest.raises(InputError, match=message):
                model.forward_stages(make_raw())


def test_values_exactly_at_the_range_ends_are_accepted():
    raw = torch.zeros(1, 4, 6)
    raw[0, 1] = 1.0
    assert StaticPipeline("bi_s_me", CameraParams())(raw).shape == (1, 3, 4, 6)


BAD_REFERENCE_RAW = {
    "3d": (np.random.rand(1, 4, 6), r"must have shape \(H, W\); got shape \(1, 4, 6\)"),
    "odd": (np.random.rand(4, 5), r"height and width must be even.*got 4x5"),
    "nan": (np.full((4, 6), np.nan), r"NaN or Inf"),
    "above_one": (np.full((4, 6), 1.5), r"got values in \[1\.5, 1\.5\]"),
    "integer": (np.ones((4, 6), dtype=np.uint16), r"floating point in \[0, 1\]; got dtype uint16"),
}


@pytest.mark.parametrize("case", list(BAD_REFERENCE_RAW))
def test_reference_rejects_bad_raw(case):
    raw, message = BAD_REFERENCE_RAW[case]
    with pytest.raises(InputError, match=rf"^Raw image .*{message}"):
        reference.process(raw, "bi_s_me", CameraParams())
    with pytest.raises(InputError, match=message):
        reference.process_stages(raw, "me_u_ga", CameraParams())


def test_unknown_pipeline_name_lists_the_valid_ones():
    message = rf"Unknown static pipeline 'bi_x_me'; expected one of {PIPELINE_LIST}\."
    with pytest.raises(InputError, match=message):
        StaticPipeline("bi_x_me", CameraParams())
    with pytest.raises(InputError, match=message):
        StaticPipelineBank(["bi_s_me", "bi_x_me"], CameraParams())
    with pytest.raises(InputError, match=message):
        reference.process(np.zeros((4, 4)), "bi_x_me", CameraParams())
    with pytest.raises(InputError, match=r"Unknown static pipeline 'everything'"):
        StaticPipelineBank("everything")


def test_unknown_backend_and_camera_type():
    with pytest.raises(InputError, match=r"Unknown backend 'jax'; expected one of torch, numpy\."):
        StaticPipeline("bi_s_me", CameraParams(), backend="jax")
    with pytest.raises(InputError, match=r"camera must be a CameraParams; got dict"):
        StaticPipeline("bi_s_me", {"pattern": "RGGB"})
    with pytest.raises(InputError, match=r"camera must be a CameraParams; got str"):
        ParametrizedPipeline("drone")


def test_unknown_bayer_pattern_lists_the_valid_ones():
    message = rf"Unknown Bayer pattern 'XYZW'; expected one of {PATTERN_LIST}\."
    with pytest.raises(InputError, match=message):
        CameraParams(pattern="XYZW")
    with pytest.raises(InputError, match=message):
        bayer_masks("XYZW", 4, 4)
    with pytest.raises(InputError, match=r"Unknown Bayer pattern 'rggb'"):
        demosaic_menon2007(torch.rand(1, 4, 4), "rggb")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"black_level": (0.0, 0.0, 0.0)}, r"CameraParams\.black_level needs 4 values, got 3\."),
        ({"black_level": (0.0,) * 5}, r"CameraParams\.black_level needs 4 values, got 5\."),
        ({"white_balance": (1.0, 1.0)}, r"CameraParams\.white_balance needs 3 values, got 2\."),
        (
            {"white_balance": (1.0, float("nan"), 1.0)},
            r"CameraParams\.white_balance must be finite, got \(1\.0, nan, 1\.0\)",
        ),
        ({"colour_matrix": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))}, r"colour_matrix must be 3x3, got 2 rows\."),
        (
            {"colour_matrix": ((1.0, 0.0), (0.0, 1.0), (0.0, 0.0))},
            r"colour_matrix row needs 3 values, got 2\.",
        ),
        ({"colour_matrix": (1.0,) * 8}, r"colour_matrix must be 3x3, got 8 rows\."),
    ],
    ids=[
        "black_level_3",
        "black_level_5",
        "white_balance_2",
        "white_balance_nan",
        "matrix_2_rows",
        "matrix_short_row",
        "matrix_flat_8",
    ],
)
def test_camera_params_with_wrong_fields(kwargs, message):
    with pytest.raises(InputError, match=message):
        CameraParams(**kwargs)


def test_camera_params_accepts_flat_colour_matrix():
    camera = CameraParams(colour_matrix=tuple(float(v) for v in np.eye(3).ravel()))
    assert camera.colour_matrix == ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def test_unknown_camera_and_camera_keys():
    with pytest.raises(
        InputError, match=r"Unknown camera 'satellite'; expected one of microscopy, drone, identity\."
    ):
        CameraParams.published("satellite")
    with pytest.raises(InputError, match=r"Unknown camera parameter\(s\) \['gain'\]"):
        CameraParams.from_dict({"pattern": "RGGB", "gain": 2.0})


def test_unknown_theta_group_lists_the_valid_ones():
    pipeline = ParametrizedPipeline(CameraParams())
    with pytest.raises(
        InputError,
        match=r"Unknown parameter group 'hue'; expected 'all' alone, or names among black_level, demosaic, "
        r"white_balance, colour_matrix, sharpen, denoise, gamma, curve\.",
    ):
        pipeline.freeze("hue")
