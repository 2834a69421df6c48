"""The parametrized data model Φ_para(x, θ): θ groups, initialisation at θ_stat, gradients, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from raw2logit.errors import InputError
from raw2logit.isp import (
    BAYER_PATTERNS,
    STAGE_NAMES,
    STATIC_PIPELINE_NAMES,
    THETA_GROUPS,
    CameraParams,
    ParametrizedPipeline,
    StaticPipeline,
    static_theta,
)
from raw2logit.isp.demosaic import bilinear_kernels
from raw2logit.isp.denoise import gaussian_denoise_kernel
from raw2logit.isp.sharpen import sharpen_kernel
from tests.isp.tolerance import assert_same_views

THETA_SHAPES = {
    "black_level": (4,),
    "demosaic": (3, 3, 3),
    "white_balance": (3,),
    "colour_matrix": (3, 3),
    "sharpen": (3, 3),
    "denoise": (5, 5),
    "gamma": (1,),
    "curve": (3, 17),
}


def random_raw(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return 0.05 + 0.9 * torch.rand(*shape, generator=generator)


def perturbed(pipeline: ParametrizedPipeline, seed=1) -> ParametrizedPipeline:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in pipeline.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return pipeline


def test_theta_groups_are_parameters_in_order():
    pipeline = ParametrizedPipeline(CameraParams.published("drone"))
    theta = pipeline.theta()
    assert tuple(theta) == THETA_GROUPS == tuple(THETA_SHAPES)
    for group, parameter in theta.items():
        assert isinstance(parameter, nn.Parameter), group
        assert parameter.shape == THETA_SHAPES[group], group
        assert parameter.requires_grad, group
    assert [name for name, _ in pipeline.named_parameters()] == list(THETA_GROUPS)


def test_initial_theta_is_theta_stat():
    camera = CameraParams.published("microscopy")
    theta = ParametrizedPipeline(camera).theta()
    expected = static_theta(camera)
    for group in THETA_GROUPS:
        torch.testing.assert_close(theta[group].detach().double(), expected[group].double(), rtol=0, atol=0)
    torch.testing.assert_close(
        theta["black_level"].detach().double(), torch.tensor(camera.black_level).double()
    )
    torch.testing.assert_close(theta["demosaic"].detach().double(), bilinear_kernels(torch.float64))
    torch.testing.assert_close(theta["sharpen"].detach().double(), sharpen_kernel(torch.float64))
    torch.testing.assert_close(
        theta["denoise"].detach().double(), gaussian_denoise_kernel(dtype=torch.float64)
    )
    assert theta["gamma"].item() == 2.2


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_initial_output_equals_static_bi_s_ga(pattern, cameras):
    """Φ_para(x, θ_stat) = Φ_stat(bi, s, ga) (Eq. 6), float32 and float64, within the contract's
    tolerance (``tests/isp/tolerance.py``): the two run different code paths, so not bit for bit."""
    for camera in cameras(pattern).values():
        raw = random_raw(2, 12, 16)
        for dtype in (torch.float32, torch.float64):
            assert_same_views(ParametrizedPipeline(camera), StaticPipeline("bi_s_ga", camera), raw.to(dtype),
                              f"{camera.name} {dtype}")  # fmt: skip


def test_same_pipeline_is_bitwise_deterministic():
    """The same code run twice in one process: bit for bit."""
    camera = CameraParams.published("microscopy")
    raw = random_raw(2, 12, 16)
    assert torch.equal(ParametrizedPipeline(camera)(raw), ParametrizedPipeline(camera)(raw))


# -- gradients and freezing ------------------------------------------------------------------------


@pytest.mark.parametrize("camera_name", ["identity", "microscopy", "drone"])
@pytest.mark.parametrize("tone_curve", ["power", "curve"])
def test_every_active_group_receives_a_gradient(camera_name, tone_curve):
    """The tone curve's own group (γ for power, the knots for curve) acts; the other one does not."""
    pipeline = ParametrizedPipeline(CameraParams.published(camera_name), tone_curve=tone_curve)
    inactive = {"power": "curve", "curve": "gamma"}[tone_curve]
    assert pipeline.active_groups() == [g for g in THETA_GROUPS if g != inactive]
    raw = random_raw(2, 12, 16).requires_grad_()
    pipeline(raw).square().mean().backward()
    for group, parameter in pipeline.theta().items():
        if group == inactive:
            assert parameter.grad is None, group
            continue
        assert parameter.grad is not None, group
        assert torch.isfinite(parameter.grad).all(), group
        assert parameter.grad.abs().sum() > 0, group
    assert torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0


def test_gradcheck_theta_float64():
    """Φ_para is differentiable in every θ group (float64 gradcheck on a tiny input)."""
    pipeline = ParametrizedPipeline(CameraParams.published("drone"))
    raw = random_raw(1, 4, 6, seed=3).double()
    groups = [g for g in THETA_GROUPS if g != "curve"]  # the knots act with tone_curve="curve" (test_tone.py)

    def forward(*values):
        return torch.func.functional_call(pipeline, dict(zip(groups, values)), (raw,))

    inputs = tuple(getattr(pipeline, g).detach().clone().requires_grad_() for g in groups)
    assert torch.autograd.gradcheck(forward, inputs)


def test_freeze_gamma_stops_only_its_gradient():
    pipeline = ParametrizedPipeline(CameraParams.published("drone")).freeze("gamma")
    assert not pipeline.gamma.requires_grad
    pipeline(random_raw(1, 8, 10)).square().mean().backward()
    assert pipeline.gamma.grad is None
    for group in pipeline.active_groups():
        if group != "gamma":
            grad = getattr(pipeline, group).grad
            assert grad is not None and grad.abs().sum() > 0, group


def test_freeze_unfreeze_set_trainable_by_group_name():
    pipeline = ParametrizedPipeline(CameraParams())

    def trainable():
        return {group for group, parameter in pipeline.theta().items() if parameter.requires_grad}

    assert pipeline.freeze("gamma", "denoise") is pipeline
    assert trainable() == set(THETA_GROUPS) - {"gamma", "denoise"}
    pipeline.unfreeze("gamma")
    assert trainable() == set(THETA_GROUPS) - {"denoise"}
    pipeline.freeze()
    assert trainable() == set()
    pipeline.unfreeze()
    assert trainable() == set(THETA_GROUPS)
    pipeline.set_trainable(["sharpen", "white_balance"])
    assert trainable() == {"sharpen", "white_balance"}
    pipeline.set_trainable("colour_matrix")
    assert trainable() == {"colour_matrix"}
    pipeline.set_trainable("all")
    assert trainable() == set(THETA_GROUPS)
    pipeline.set_trainable([])
    assert trainable() == set()


@pytest.mark.parametrize("method", ["freeze", "unfreeze", "set_trainable"])
def test_unknown_group_raises_listing_valid_ones(method):
    pipeline = ParametrizedPipeline(CameraParams())
    valid = ", ".join(THETA_GROUPS)
    call = getattr(pipeline, method)
    with pytest.raises(
        InputError, match=rf"Unknown parameter group 'gama'; expected 'all' alone, or names among {valid}\."
    ):
        call(["gamma", "gama"]) if method == "set_trainable" else call("gamma", "gama")
    assert all(parameter.requires_grad for parameter in pipeline.parameters())


# -- output normalisation and stages ---------------------------------------------------------------


def test_normalise_output_is_affine_free_batchnorm():
    pipeline = ParametrizedPipeline(CameraParams.published("drone"), normalise_output=True)
    assert isinstance(pipeline.output_norm, nn.BatchNorm2d)
    assert not pipeline.output_norm.affine and pipeline.output_norm.num_features == 3
    assert [name for name, _ in pipeline.named_parameters()] == list(THETA_GROUPS)
    pipeline.train()
    out = pipeline(random_raw(4, 12, 16))
    assert out.shape == (4, 3, 12, 16)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.var(dim=(0, 2, 3), unbiased=False), torch.ones(3), rtol=0, atol=1e-2)
    plain = ParametrizedPipeline(CameraParams.published("drone"))
    assert plain.output_norm is None


@pytest.mark.parametrize("normalise_output", [False, True])
def test_forward_stages_returns_every_stage(normalise_output):
    pipeline = ParametrizedPipeline(CameraParams.published("microscopy"), normalise_output=normalise_output)
    raw = random_raw(2, 8, 12)
    stages = pipeline.forward_stages(raw)
    expected = [*STAGE_NAMES, "normalised"] if normalise_output else list(STAGE_NAMES)
    assert list(stages) == expected
    for stage, value in stages.items():
        shape = (2, 8, 12) if stage in ("raw", "black_level") else (2, 3, 8, 12)
        assert value.shape == shape, stage
    pipeline.eval()
    stages = pipeline.forward_stages(raw)
    # forward() runs white balance, colour correction and the luma split as one matrix product.
    torch.testing.assert_close(
        stages["normalised" if normalise_output else "gamma"], pipeline(raw), rtol=0, atol=1e-5
    )


# -- θ persistence ---------------------------------------------------------------------------------


def test_theta_dict_round_trips_exactly():
    camera = CameraParams.published("drone")
    source = perturbed(ParametrizedPipeline(camera))
    values = source.theta_dict()
    assert set(values) == {*THETA_GROUPS, "pattern"} and values["pattern"] == "RGGB"
    assert isinstance(values["gamma"], float)
    json.dumps(values)  # JSON-ready
    for target in (
        ParametrizedPipeline(camera).load_theta(values),
        ParametrizedPipeline(camera, theta=values),
    ):
        for group in THETA_GROUPS:
            assert torch.equal(getattr(target, group), getattr(source, group)), group
    raw = random_raw(1, 8, 10)
    assert torch.equal(ParametrizedPipeline(camera).load_theta(values)(raw), source(raw))


@pytest.mark.parametrize("normalise_output", [False, True])
def test_theta_json_round_trips_exactly(tmp_path, normalise_output):
    camera = CameraParams(
        (0.01, 0.02, 0.03, 0.04), (1.5, 1.0, 2.0), (1.1, -0.1, 0.0, 0.0, 1.0, 0.0, 0.0, -0.2, 1.2), "GBRG"
    )
    source = perturbed(ParametrizedPipeline(camera))
    path = source.save_theta_json(tmp_path / "theta.json")
    assert path == tmp_path / "theta.json" and path.exists()
    document = json.loads(path.read_text())
    assert set(document) == {"theta", "camera", "variant", "tone_curve", "white_balance_first"}
    loaded = ParametrizedPipeline.from_theta_json(path, normalise_output=normalise_output)
    assert loaded.camera == camera
    assert (loaded.output_norm is not None) == normalise_output
    for group in THETA_GROUPS:
        assert torch.equal(getattr(loaded, group), getattr(source, group)), group
    raw = random_raw(2, 8, 10)
    loaded.eval()
    expected = source(raw)
    if normalise_output:
        expected = loaded.output_norm(expected)
    assert torch.equal(loaded(raw), expected)


def test_load_theta_rejects_bad_values(tmp_path):
    pipeline = ParametrizedPipeline(CameraParams(pattern="BGGR"))
    with pytest.raises(InputError, match=r"fitted for Bayer pattern 'RGGB'.*camera's is 'BGGR'"):
        pipeline.load_theta({"pattern": "RGGB"})
    with pytest.raises(InputError, match=r"θ group 'colour_matrix' needs 9 values \(shape \(3, 3\)\); got 4"):
        pipeline.load_theta({"colour_matrix": [1.0, 0.0, 0.0, 1.0]})
    with pytest.raises(InputError, match=r"Unknown parameter group 'saturation'"):
        pipeline.load_theta({"saturation": [1.0]})
    missing = tmp_path / "missing.json"
    with pytest.raises(InputError, match=rf"θ file {missing} does not exist"):
        ParametrizedPipeline.from_theta_json(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InputError, match=r"broken\.json is not readable JSON"):
        ParametrizedPipeline.from_theta_json(broken)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"theta": {}}))
    with pytest.raises(
        InputError, match=r"partial\.json must hold a JSON object with keys 'theta' and 'camera'"
    ):
        ParametrizedPipeline.from_theta_json(partial)


def test_load_theta_rejects_the_key_all():
    """'all' is a group selector, not a θ key: load_theta must refuse it with an InputError."""
    with pytest.raises(InputError, match=r"'all'"):
        ParametrizedPipeline(CameraParams()).load_theta({"all": [2.2]})


@pytest.mark.parametrize("variant", STATIC_PIPELINE_NAMES)
def test_variant_equals_its_static_pipeline_and_round_trips(tmp_path, variant):
    """Any static variant as a data model: the static pipeline at θ_stat (within the contract's
    tolerance); variant and tone curve survive the JSON round trip bit for bit (same code, same
    process); only the kernels the variant uses are active."""
    camera = CameraParams.published("drone")
    raw = random_raw(2, 16, 24)
    pipeline = ParametrizedPipeline(camera, variant=variant)
    assert_same_views(pipeline, StaticPipeline(variant, camera), raw, variant)
    demosaic, sharpen, denoise = variant.split("_")
    active = set(pipeline.active_groups())
    assert ("demosaic" in active) == (demosaic == "bi")
    assert ("sharpen" in active) == (sharpen == "s")
    assert ("denoise" in active) == (denoise == "ga")
    srgb = ParametrizedPipeline(camera, variant=variant, tone_curve="srgb")
    assert "gamma" not in srgb.active_groups()
    loaded = ParametrizedPipeline.from_theta_json(srgb.save_theta_json(tmp_path / "t.json"))
    assert (loaded.variant, loaded.tone_curve) == (variant, "srgb")
    assert torch.equal(loaded(raw), srgb(raw))


def test_srgb_tone_curve_matches_the_standard():
    """The sRGB curve against scikit-image's conversion of linear RGB (XYZ round trip avoided)."""
    from raw2logit.isp.colour import srgb_encode

    linear = torch.linspace(0, 1, 1001, dtype=torch.float64).view(1, 1, 1, -1).expand(1, 3, 1, -1)
    encoded = srgb_encode(linear)[0, 0, 0].numpy()
    x = linear[0, 0, 0].numpy()
    expected = np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)
    assert np.abs(encoded - expected).max() < 1e-12
    with pytest.raises(InputError, match="tone curve 'log'"):
        ParametrizedPipeline(CameraParams(), tone_curve="log")
