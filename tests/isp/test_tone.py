"""The flexible tone curve (``raw2logit.isp.tone``) and the parametrized data model's structural options:
``tone_curve="curve"`` (its θ group ``curve``) and ``white_balance_first``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from raw2logit.errors import InputError
from raw2logit.isp import BAYER_PATTERNS, CameraParams, ParametrizedPipeline, StaticPipeline
from raw2logit.isp.colour import srgb_encode
from raw2logit.isp.tone import (
    KNOTS,
    NAMED_CURVES,
    ToneCurve,
    bt709_encode,
    curve_knots,
    knot_positions,
    named_curve,
    tone_curve,
)
from tests.isp.tolerance import assert_same_views

# Largest |curve through the named curve's knots - the named curve|, in 8-bit steps, measured on a
# fine ramp: power is exact (rounding), sRGB is off most in its linear toe below x = 0.0031.
INTERPOLATION_ERROR = {"power": 1e-6, "srgb": 2.1, "bt709": 0.93}


def ramp(count: int = 20001, dtype=torch.float64) -> torch.Tensor:
    """(1, 3, 1, count) linear values from 0 to 1 in every channel."""
    return torch.linspace(0, 1, count, dtype=dtype).view(1, 1, 1, -1).repeat(1, 3, 1, 1)


@pytest.mark.parametrize("kind", NAMED_CURVES)
def test_knots_follow_the_named_curve(kind):
    x = ramp()
    error = (tone_curve(x, curve_knots(kind)) - named_curve(kind, x)).abs().max().item() * 255
    assert error <= INTERPOLATION_ERROR[kind]
    # The knots sit exactly on the curve.
    positions = knot_positions().view(1, 1, 1, -1).repeat(1, 3, 1, 1)
    torch.testing.assert_close(tone_curve(positions, curve_knots(kind)), named_curve(kind, positions))


def test_power_knots_give_the_paper_gamma_in_float32():
    x = ramp(dtype=torch.float32)
    torch.testing.assert_close(tone_curve(x, curve_knots("power")), x ** (1 / 2.2), rtol=0, atol=2e-6)


def test_bt709_is_dcraw_gamma_curve():
    """dcraw's gamma_curve(0.45, 4.5): toe up to 0.018054 with slope 4.5, then 1.099297 x^0.45 - 0.099297,
    meeting with equal value and slope; sRGB's curve with the same recipe is the IEC one."""
    x = torch.tensor([0.0, 0.01, 0.018, 0.0181, 0.1, 0.5, 1.0], dtype=torch.float64)
    expected = torch.where(x < 0.018053968, 4.5 * x, 1.0992968268 * x**0.45 - 0.0992968268)
    torch.testing.assert_close(bt709_encode(x), expected, rtol=0, atol=1e-8)
    joint = torch.tensor([0.018053968 - 1e-9, 0.018053968 + 1e-9], dtype=torch.float64)
    assert abs(bt709_encode(joint)[1] - bt709_encode(joint)[0]) < 1e-8
    ramp_values = torch.linspace(0, 1, 1001, dtype=torch.float64)
    torch.testing.assert_close(
        bt709_encode(ramp_values, 1 / 2.4, 12.92), srgb_encode(ramp_values), rtol=0, atol=4e-4
    )


def test_any_knots_give_a_monotone_curve_per_channel():
    knots = torch.randn(3, KNOTS, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = tone_curve(ramp(), knots)
    assert (out.diff(dim=-1) >= 0).all()
    assert not torch.equal(out[0, 0], out[0, 1])  # per channel
    # Stored values that already increase are used as they are.
    increasing = torch.cumsum(torch.rand(3, KNOTS, dtype=torch.float64), dim=-1)
    positions = knot_positions().view(1, 1, 1, -1).repeat(1, 3, 1, 1)
    torch.testing.assert_close(tone_curve(positions, increasing)[0, :, 0], increasing)


def test_values_outside_zero_one_are_clipped():
    knots = curve_knots("srgb")
    out = tone_curve(
        torch.tensor([-0.5, 0.0, 1.0, 3.0], dtype=torch.float64).view(1, 1, 1, 4).repeat(1, 3, 1, 1), knots
    )
    torch.testing.assert_close(out[0, :, 0], torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3, dtype=torch.float64))


def test_module_equals_function_and_gradcheck():
    module = ToneCurve("bt709")
    x = 0.02 + 0.9 * torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(module(x), tone_curve(x, module.knots.detach()))
    knots = curve_knots("bt709").clone().requires_grad_()
    x64 = x.double().requires_grad_()
    assert torch.autograd.gradcheck(tone_curve, (x64, knots))


def test_bad_knots_raise():
    with pytest.raises(InputError, match=r"knots must have shape \(3, K\) with K >= 2; got \(17,\)"):
        tone_curve(torch.rand(1, 3, 2, 2), torch.linspace(0, 1, 17))
    with pytest.raises(InputError, match="Unknown tone curve shape 'gamma'"):
        curve_knots("gamma")


# -- in the parametrized data model ----------------------------------------------------------------


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_curve_at_theta_stat_equals_static_bi_s_ga(pattern, cameras):
    for camera in cameras(pattern).values():
        raw = 0.05 + 0.9 * torch.rand(2, 12, 16, generator=torch.Generator().manual_seed(2))
        for dtype in (torch.float32, torch.float64):
            assert_same_views(ParametrizedPipeline(camera, tone_curve="curve"), StaticPipeline("bi_s_ga", camera),
                              raw.to(dtype), f"{camera.name} {dtype}")  # fmt: skip


def test_curve_group_is_trainable_and_round_trips(tmp_path):
    camera = CameraParams.published("drone")
    pipeline = ParametrizedPipeline(camera, variant="ma_s_ga", tone_curve="curve", white_balance_first=True)
    pipeline.set_trainable("curve")
    raw = 0.05 + 0.9 * torch.rand(1, 12, 16, generator=torch.Generator().manual_seed(3))
    pipeline(raw).mean().backward()
    assert pipeline.curve.grad is not None and pipeline.curve.grad.abs().sum() > 0
    assert all(p.grad is None for g, p in pipeline.theta().items() if g != "curve")
    with torch.no_grad():
        pipeline.curve.copy_(curve_knots("bt709") * torch.tensor([[1.0], [0.95], [0.9]], dtype=torch.float64))
    path = pipeline.save_theta_json(tmp_path / "theta.json")
    document = json.loads(path.read_text())
    assert document["tone_curve"] == "curve" and document["white_balance_first"] is True
    assert np.asarray(document["theta"]["curve"]).shape == (3, KNOTS)
    loaded = ParametrizedPipeline.from_theta_json(path)
    assert loaded.white_balance_first and loaded.tone_curve == "curve"
    assert torch.equal(loaded.curve, pipeline.curve)
    with torch.no_grad():  # one code path for both (with gradients, in-place steps are not taken)
        assert torch.equal(loaded(raw), pipeline(raw))


def test_old_theta_files_load_with_the_paper_order(tmp_path):
    pipeline = ParametrizedPipeline(CameraParams.published("drone"))
    document = json.loads(pipeline.save_theta_json(tmp_path / "t.json").read_text())
    del document["white_balance_first"], document["theta"]["curve"]
    (tmp_path / "old.json").write_text(json.dumps(document))
    loaded = ParametrizedPipeline.from_theta_json(tmp_path / "old.json")
    assert not loaded.white_balance_first
    assert torch.equal(loaded.curve, curve_knots("power"))
    document["white_balance_first"] = "yes"
    (tmp_path / "bad.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match=r"bad\.json: white_balance_first must be true or false; got 'yes'"):
        ParametrizedPipeline.from_theta_json(tmp_path / "bad.json")


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_white_balance_first(pattern):
    """Bilinear demosaicing is per channel: the order does not matter. Malvar's mixes colours: it does,
    and white balancing first equals demosaicing a mosaic whose sites were scaled by their gains."""
    camera = CameraParams((0.01, 0.02, 0.02, 0.03), (2.0, 1.0, 1.5), pattern=pattern)
    raw = 0.04 + 0.45 * torch.rand(2, 16, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for variant, same in (("bi_s_ga", True), ("ma_u_me", False)):
        after = ParametrizedPipeline(camera, variant=variant)(raw)
        first = ParametrizedPipeline(camera, variant=variant, white_balance_first=True)(raw)
        assert torch.allclose(first, after, rtol=0, atol=1e-10) == same, variant
    gains = {"R": 2.0, "G": 1.0, "B": 1.5}
    sites = torch.tensor([gains[c] for c in pattern], dtype=torch.float64).view(2, 2).repeat(8, 10)
    black = torch.tensor(camera.black_level, dtype=torch.float64).view(2, 2).repeat(8, 10)
    unit = CameraParams(camera.black_level, (1.0, 1.0, 1.0), pattern=pattern)
    scaled = (raw - black) * sites + black
    torch.testing.assert_close(
        ParametrizedPipeline(camera, variant="ma_u_me", white_balance_first=True)(raw),
        ParametrizedPipeline(unit, variant="ma_u_me")(scaled),
        rtol=0,
        atol=1e-10,
    )
