"""The 12 static data models: parity with the numpy oracle, the bank, the numpy backend, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raw2logit.isp import (
    BAYER_PATTERNS,
    STATIC_PIPELINE_NAMES,
    CameraParams,
    StaticPipeline,
    StaticPipelineBank,
    parse_pipeline_name,
    reference,
    resolve_pipeline_names,
    static,
    steps,
)
from tests.isp.tolerance import gamma_aware_bound

FLOAT32_ATOL = 1e-4
FLOAT64_ATOL = 1e-9
LARGE_ERROR_FRACTION = 1e-4  # float32 output values above FLOAT32_ATOL allowed near the gamma's zero


def batch(raw: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    """(H, W) mosaic -> (1, H, W) tensor (a copy)."""
    return torch.tensor(raw[None], dtype=dtype)


def hwc(tensor: torch.Tensor) -> np.ndarray:
    """First view of a (B, 3, H, W) tensor as a float64 (H, W, 3) array."""
    return tensor[0].detach().double().cpu().numpy().transpose(1, 2, 0)


def test_pipeline_names_are_the_papers_twelve():
    assert len(STATIC_PIPELINE_NAMES) == len(set(STATIC_PIPELINE_NAMES)) == 12
    parts = {parse_pipeline_name(name) for name in STATIC_PIPELINE_NAMES}
    assert parts == {(d, s, n) for d in ("bi", "ma", "me") for s in ("s", "u") for n in ("me", "ga")}
    assert resolve_pipeline_names("all") == list(STATIC_PIPELINE_NAMES)
    assert resolve_pipeline_names("ma_u_ga") == ["ma_u_ga"]
    assert resolve_pipeline_names(("me_s_me", "bi_u_ga")) == ["me_s_me", "bi_u_ga"]


# -- parity with the oracle ----------------------------------------------------------------------


@pytest.mark.parametrize("name", STATIC_PIPELINE_NAMES)
@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_pipeline_float64_matches_reference(pattern, name, raw_images, cameras):
    """float64 raw in, float64 views out, against ``reference.process_stages``.

    Photographs and random raw; identity, microscopy and drone cameras. Every stage up to the
    gamma is within 1e-12 (measured ~1e-14) and the output within 1e-9 wherever the gamma's
    infinite slope at 0 does not amplify the pre-gamma rounding (bound as in the float32 test):
    the torch pipelines convert YUV -> RGB once after denoising where the reference converts
    YUV -> RGB -> YUV between the two filters, which leaves ~1e-18 on black pixels that the gamma
    turns into up to 7e-9.
    """
    for camera_name, camera in cameras(pattern).items():
        pipeline = StaticPipeline(name, camera)
        for image_name, raw in raw_images(pattern).items():
            where = f"{camera_name} camera, {image_name} raw"
            expected = reference.process_stages(raw, name, camera)
            stages = pipeline.forward_stages(batch(raw, torch.float64))
            view = stages["gamma"]
            assert view.dtype == torch.float64 and view.shape == (1, 3, *raw.shape)
            pre_t, pre_ref = hwc(stages["denoise"]), expected["denoise"]
            assert np.abs(pre_t - pre_ref).max() <= 1e-12, where
            error = np.abs(hwc(view) - expected["gamma"])
            bound = gamma_aware_bound(pre_t, pre_ref, FLOAT64_ATOL, 1e-12)
            assert np.all(error <= bound), f"{where}: worst excess {np.max(error - bound):.3g}"


@pytest.mark.parametrize("name", STATIC_PIPELINE_NAMES)
@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_pipeline_float32_matches_reference(pattern, name, raw_images, cameras):
    """float32 views against the float64 oracle.

    The gamma ``x ** (1/2.2)`` has an infinite slope at 0: a pre-gamma value of 1e-9 (float32
    rounding of a value that is 0 in the reference) becomes 1e-9 ** (1/2.2) = 8e-5, and 1e-8
    becomes 2.3e-4. So a uniform 1e-4 bound on the output cannot hold, and instead:

    (i) the pre-gamma stage (``denoise``) is within 1e-4 everywhere;
    (ii) at every value, |out - ref| <= max(1e-4, |pre_t - pre_ref| ** (1/2.2) + 1e-6), with pre_*
        the ``denoise`` values clipped to [0, 1]: x ** p is p-Hölder for p < 1
        (|a**p - b**p| <= |a - b|**p), so this is the most the gamma can amplify the pre-gamma
        error (1e-6 for float32 rounding of the power itself);
    (iii) at most 1 output value in 10,000 (``LARGE_ERROR_FRACTION``) exceeds 1e-4;
    (iv) ``forward()`` (white balance, colour correction and luma split fused into one matrix
        product) is within 1e-4 wherever the reference's pre-gamma value is above 1e-4, and
        obeys (iii) as well.
    """
    large, forward_large, total = 0, 0, 0
    for camera_name, camera in cameras(pattern).items():
        pipeline = StaticPipeline(name, camera)
        for image_name, raw in raw_images(pattern).items():
            where = f"{camera_name} camera, {image_name} raw"
            expected = reference.process_stages(raw, name, camera)
            stages = pipeline.forward_stages(batch(raw))
            view = stages["gamma"]
            assert view.dtype == torch.float32 and view.shape == (1, 3, *raw.shape)
            pre_t, pre_ref = hwc(stages["denoise"]), expected["denoise"]
            assert np.abs(pre_t - pre_ref).max() <= FLOAT32_ATOL, where
            error = np.abs(hwc(view) - expected["gamma"])
            bound = gamma_aware_bound(pre_t, pre_ref, FLOAT32_ATOL, 1e-6)
            assert np.all(error <= bound), f"{where}: worst excess {np.max(error - bound):.3g}"
            forward_error = np.abs(hwc(pipeline(batch(raw))) - expected["gamma"])
            away_from_zero = np.clip(pre_ref, 0, 1) > 1e-4
            assert forward_error[away_from_zero].max() <= FLOAT32_ATOL, where
            large += int(np.count_nonzero(error > FLOAT32_ATOL))
            forward_large += int(np.count_nonzero(forward_error > FLOAT32_ATOL))
            total += error.size
    assert large / total <= LARGE_ERROR_FRACTION, f"{large} of {total} values exceed {FLOAT32_ATOL}"
    assert forward_large / total <= LARGE_ERROR_FRACTION, f"forward(): {forward_large} of {total}"


def test_pipeline_output_range_and_batching():
    camera = CameraParams.published("drone")
    raw = torch.rand(3, 10, 14)
    for name in STATIC_PIPELINE_NAMES:
        views = StaticPipeline(name, camera)(raw)
        assert views.shape == (3, 3, 10, 14) and views.dtype == torch.float32
        assert views.min() >= 0 and views.max() <= 1
        for b in range(3):
            torch.testing.assert_close(views[b : b + 1], StaticPipeline(name, camera)(raw[b : b + 1]))


# -- the bank and the numpy backend ---------------------------------------------------------------


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_bank_equals_single_pipelines(pattern, raw_images, cameras):
    """``StaticPipelineBank("all")`` returns name -> views, each the single pipeline's (to 1e-6)."""
    raw = torch.tensor(np.stack([raw_images(pattern)["astronaut"], raw_images(pattern)["random"]]))
    raw = raw.float()
    for camera in cameras(pattern).values():
        views = StaticPipelineBank("all", camera)(raw)
        assert list(views) == list(STATIC_PIPELINE_NAMES)
        for name, view in views.items():
            torch.testing.assert_close(view, StaticPipeline(name, camera)(raw), rtol=0, atol=1e-6)


def test_bank_subset_in_any_order():
    """Prefix sharing must not leak state between pipelines that diverge early and then rejoin."""
    names = ["me_u_ga", "bi_s_me", "me_u_me", "bi_s_ga", "me_s_me"]
    camera = CameraParams.published("microscopy")
    raw = torch.rand(2, 12, 16)
    bank = StaticPipelineBank(names, camera)
    views = bank(raw)
    assert list(views) == names
    for name in names:
        torch.testing.assert_close(views[name], StaticPipeline(name, camera)(raw), rtol=0, atol=1e-6)
    assert dict(bank.iter_views(raw)).keys() == views.keys()
    single = StaticPipelineBank("ma_s_me", camera)(raw)
    assert list(single) == ["ma_s_me"]


def test_bank_computes_each_demosaic_once_whatever_the_order(monkeypatch):
    """Names in any order: the bank yields those with the same demosaic (then sharpening) together,
    so each demosaic runs once per chunk; ``forward`` keeps the order asked for."""
    calls = _count_demosaics(monkeypatch)
    names = ["me_u_ga", "bi_s_me", "me_s_me", "bi_s_ga", "me_u_me"]
    bank = StaticPipelineBank(names, CameraParams.published("drone"))
    raw = torch.rand(2, 12, 16)
    assert [name for name, _ in bank.iter_views(raw)] == [
        "me_u_ga",
        "me_u_me",
        "me_s_me",
        "bi_s_me",
        "bi_s_ga",
    ]
    assert calls == ["me", "bi"]
    assert list(bank(raw)) == names


def test_chunked_views_equal_the_whole_batch(monkeypatch):
    """Without autograd the pipelines run a few images at a time on CPU, each view written into its
    output (and the luma filters as shifted multiply-adds instead of convolutions); the views are
    those of the whole batch in one pass (the autograd path), a short last chunk included, within
    the contract: the pre-gamma values (the tone curve inverted) within 1e-5."""
    camera = CameraParams.published("microscopy")
    raw = 0.05 + 0.9 * torch.rand(5, 12, 16)
    monkeypatch.setattr(steps, "_CPU_CHUNK_PIXELS", 2 * 12 * 16)
    assert steps.cpu_chunk(raw, steps._CPU_CHUNK_PIXELS) == 2
    bank = StaticPipelineBank("all", camera)
    chunked = bank(raw)
    whole = dict(bank.iter_views(raw.clone().requires_grad_()))
    for name in STATIC_PIPELINE_NAMES:
        pre_chunked, pre_whole = (views.double().pow(2.2) for views in (chunked[name], whole[name].detach()))
        assert (pre_chunked - pre_whole).abs().max() <= 1e-5, name
        torch.testing.assert_close(StaticPipeline(name, camera)(raw), chunked[name], rtol=0, atol=1e-6)
    twice = StaticPipelineBank(["ma_u_me", "ma_u_me"], camera)(raw)  # a view shared by two names
    assert torch.equal(twice["ma_u_me"], chunked["ma_u_me"])


def test_bank_forward_runs_every_pipeline_in_one_pass_per_chunk(monkeypatch):
    """``forward`` keeps every view, so each chunk goes through all the pipelines at once: the black
    level once per chunk (``iter_views`` yields a demosaic group at a time and computes it once per
    group), with the same views bit for bit."""
    monkeypatch.setattr(steps, "_CPU_CHUNK_PIXELS", 2 * 12 * 16)
    corrections = []
    correct = steps.black_level_correction
    monkeypatch.setattr(steps, "black_level_correction", lambda *a: corrections.append(1) or correct(*a))
    bank = StaticPipelineBank("all", CameraParams.published("microscopy"))
    raw = torch.rand(5, 12, 16)
    views = bank(raw)
    assert len(corrections) == 3  # chunks of 2, 2 and 1 images
    corrections.clear()
    streamed = dict(bank.iter_views(raw))
    assert len(corrections) == 3 * 3  # three demosaic groups
    for name in STATIC_PIPELINE_NAMES:
        assert torch.equal(views[name], streamed[name]), name


def _count_demosaics(monkeypatch) -> list[str]:
    calls = []
    for key, method in list(static.DEMOSAIC_METHODS.items()):
        monkeypatch.setitem(
            static.DEMOSAIC_METHODS, key, lambda *a, k=key, m=method, **kw: calls.append(k) or m(*a, **kw)
        )
    return calls


def test_separate_pipelines_on_one_batch_share_their_prefix(monkeypatch):
    """Twelve ``StaticPipeline`` calls in a row on one batch compute each demosaic once per chunk,
    as the bank does, and return the bank's views bit for bit (the same steps on the same chunks);
    calls in another order, or a call repeated, still give the same views."""
    monkeypatch.setattr(steps, "_CPU_CHUNK_PIXELS", 2 * 12 * 16)
    camera = CameraParams.published("microscopy")
    raw = torch.rand(5, 12, 16)
    bank = StaticPipelineBank("all", camera)(raw)
    calls = _count_demosaics(monkeypatch)
    for name in STATIC_PIPELINE_NAMES:
        assert torch.equal(StaticPipeline(name, camera)(raw), bank[name]), name
    assert calls == ["bi"] * 3 + ["ma"] * 3 + ["me"] * 3  # three chunks of 2, 2 and 1 images
    calls.clear()
    for name in reversed(STATIC_PIPELINE_NAMES):
        assert torch.equal(StaticPipeline(name, camera)(raw), bank[name]), name
    assert calls == ["ma"] * 3 + ["bi"] * 3  # the path ends at me_u_ga: its demosaic is reused
    calls.clear()
    for name in ("bi_s_me", "bi_s_me", "me_u_ga", "bi_s_me"):
        assert torch.equal(StaticPipeline(name, camera)(raw), bank[name]), name
    assert calls == ["me"] * 3 + ["bi"] * 3


def test_shared_prefix_is_never_stale(monkeypatch):
    """A call reuses the last call's intermediates only for equal images with the same camera and
    dtype: not after the images were rewritten in place through a numpy array that shares their
    memory (torch's version counter does not see that), not for another camera or dtype; and it
    lets them go once the input tensor is collected, or for inputs over the size cap."""
    import gc

    array = np.random.default_rng(0).random((2, 12, 16), dtype=np.float32)
    raw = torch.from_numpy(array)
    microscopy, drone = CameraParams.published("microscopy"), CameraParams.published("drone")
    first = StaticPipeline("ma_s_me", microscopy)(raw)
    array[:] = np.random.default_rng(1).random((2, 12, 16), dtype=np.float32)
    fresh = StaticPipelineBank(["ma_s_ga"], microscopy)(raw.clone())["ma_s_ga"]
    assert torch.equal(StaticPipeline("ma_s_ga", microscopy)(raw), fresh)
    assert not torch.equal(StaticPipeline("ma_s_me", microscopy)(raw), first)
    for camera in (drone, microscopy):
        expected = StaticPipelineBank(["ma_s_ga"], camera)(raw.clone())["ma_s_ga"]
        assert torch.equal(StaticPipeline("ma_s_ga", camera)(raw), expected)
    as_float64 = StaticPipeline("ma_s_ga", microscopy)(raw.double())
    assert as_float64.dtype == torch.float64

    paths = static._LAST_PREFIX.paths(raw, ("kept",))
    assert paths == [] and static._LAST_PREFIX.entry["images"] is not None
    StaticPipeline("bi_u_ga", microscopy)(raw)
    assert static._LAST_PREFIX.entry["paths"]
    del raw, array
    gc.collect()
    assert static._LAST_PREFIX.entry["images"] is None and static._LAST_PREFIX.entry["paths"] == []

    monkeypatch.setattr(static, "_REUSE_MAX_PIXELS", 2 * 12 * 16 - 1)
    calls = _count_demosaics(monkeypatch)
    raw = torch.rand(2, 12, 16)
    for name in ("bi_s_me", "bi_s_ga"):
        StaticPipeline(name, microscopy)(raw)
    assert calls == ["bi", "bi"] and static._LAST_PREFIX.entry["paths"] == []


def test_shared_prefix_is_not_used_under_autograd(monkeypatch):
    """With a gradient recorded every call runs its own steps (the graph must reach ``raw``)."""
    camera = CameraParams.published("drone")
    raw = torch.rand(2, 12, 16).requires_grad_()
    calls = _count_demosaics(monkeypatch)
    views = [StaticPipeline(name, camera)(raw) for name in ("me_s_me", "me_s_ga")]
    assert calls == ["me", "me"]
    torch.stack(views).sum().backward()
    assert raw.grad is not None and raw.grad.abs().sum() > 0


def test_numpy_backend_equals_reference(raw_images, cameras):
    """``backend="numpy"`` is the oracle itself, bitwise, for the pipeline, its stages and the bank."""
    camera = cameras("GRBG")["drone"]
    images = raw_images("GRBG")
    raw = torch.tensor(np.stack([images["coffee"][:16, :24], images["random"][:16, :24]]))
    bank = StaticPipelineBank("all", camera, backend="numpy")(raw)
    for name in STATIC_PIPELINE_NAMES:
        pipeline = StaticPipeline(name, camera, backend="numpy")
        views = pipeline(raw)
        assert views.shape == (2, 3, 16, 24) and views.dtype == raw.dtype
        stages = pipeline.forward_stages(raw)
        for b in range(2):
            expected = reference.process_stages(raw[b].numpy(), name, camera)
            np.testing.assert_array_equal(views[b].numpy().transpose(1, 2, 0), expected["gamma"])
            np.testing.assert_array_equal(bank[name][b].numpy().transpose(1, 2, 0), expected["gamma"])
            np.testing.assert_array_equal(stages["black_level"][b].numpy(), expected["black_level"])
            np.testing.assert_array_equal(
                stages["sharpen"][b].numpy().transpose(1, 2, 0), expected["sharpen"]
            )
        # and the torch backend agrees with it
        torch.testing.assert_close(StaticPipeline(name, camera)(raw), views, rtol=0, atol=1e-4)


# -- differentiability ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", STATIC_PIPELINE_NAMES)
def test_gradients_reach_the_raw_input(name):
    """loss = mean squared view; the gradient w.r.t. the raw mosaic is finite and non-zero."""
    for camera_name in ("identity", "microscopy", "drone"):
        raw = (0.05 + 0.9 * torch.rand(2, 12, 16)).requires_grad_()
        views = StaticPipeline(name, CameraParams.published(camera_name))(raw)
        views.square().mean().backward()
        assert raw.grad is not None, camera_name
        assert torch.isfinite(raw.grad).all(), camera_name
        assert raw.grad.abs().sum() > 0, camera_name


def test_bank_is_differentiable():
    raw = torch.rand(1, 8, 10).requires_grad_()
    views = StaticPipelineBank("all", CameraParams())(raw)
    torch.stack(list(views.values())).square().mean().backward()
    assert torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0


# -- devices --------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pipeline_runs_on_cuda():
    camera = CameraParams.published("drone")
    raw = torch.rand(2, 16, 20)
    for name in ("me_u_me", "bi_s_ga"):
        on_cpu = StaticPipeline(name, camera)(raw)
        pipeline = StaticPipeline(name, camera).to("cuda")
        on_gpu = pipeline(raw.cuda())
        assert on_gpu.device.type == "cuda"
        torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=0, atol=1e-4)
        stages = pipeline.forward_stages(raw.cuda())
        assert all(value.device.type == "cuda" for value in stages.values())


def test_forced_cpu_kernels_are_in_effect():
    """``make test-kernels`` reruns these tests with ``ATEN_CPU_CAPABILITY`` set: torch must obey it,
    or the rerun would silently test the fastest kernels again."""
    import os

    forced = os.environ.get("ATEN_CPU_CAPABILITY")
    if not forced:
        pytest.skip("ATEN_CPU_CAPABILITY is not set (the plain run)")
    assert torch.backends.cpu.get_cpu_capability() == forced.upper()
