"""The data models on an accelerator: parity with the numpy oracle and with the CPU, as on CPU.

Runs on the device named by ``RAW2LOGIT_TEST_DEVICE`` (``scripts/gpu_check.sh`` sets it; its
``--cpu-dry-run`` sets ``cpu``), else on CUDA where there is one; skipped otherwise. The oracle
criteria are those of ``test_static.py``; device against CPU is two code paths, so within the
contract's tolerance (``tolerance.assert_same_views``), never bit for bit.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from raw2logit.isp import (
    BAYER_PATTERNS,
    STATIC_PIPELINE_NAMES,
    ParametrizedPipeline,
    StaticPipeline,
    StaticPipelineBank,
    reference,
)
from tests.isp.tolerance import assert_same_views, gamma_aware_bound

DEVICE = os.environ.get("RAW2LOGIT_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no accelerator (or set RAW2LOGIT_TEST_DEVICE)")
PRE_GAMMA_ATOL = {torch.float32: 1e-4, torch.float64: 1e-12}
OUTPUT_ATOL = {torch.float32: 1e-4, torch.float64: 1e-9}
POWER_SLACK = {torch.float32: 1e-6, torch.float64: 1e-12}


class OnDevice(nn.Module):
    """A data model on ``DEVICE`` seen from the CPU: CPU raw in, CPU views and stages out."""

    def __init__(self, pipeline: nn.Module):
        super().__init__()
        self.pipeline = pipeline.to(DEVICE)

    def forward(self, raw):
        return self.pipeline(raw.to(DEVICE)).cpu()

    def forward_stages(self, raw):
        return {stage: value.cpu() for stage, value in self.pipeline.forward_stages(raw.to(DEVICE)).items()}


def hwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor[0].detach().double().cpu().numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("name", STATIC_PIPELINE_NAMES)
@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_static_pipeline_on_device_matches_reference(pattern, name, raw_images, cameras):
    """Every stage up to the gamma within 1e-4 (float32) / 1e-12 (float64) of the oracle, the view
    within the gamma-aware bound of that; photographs and random raw, three cameras."""
    for camera_name, camera in cameras(pattern).items():
        pipeline = StaticPipeline(name, camera).to(DEVICE)
        for image_name, raw in raw_images(pattern).items():
            expected = reference.process_stages(raw, name, camera)
            for dtype in (torch.float32, torch.float64):
                where = f"{DEVICE} {dtype} {camera_name} camera, {image_name} raw"
                stages = pipeline.forward_stages(torch.tensor(raw[None], dtype=dtype, device=DEVICE))
                assert stages["gamma"].device.type == torch.device(DEVICE).type
                pre = hwc(stages["denoise"])
                assert np.abs(pre - expected["denoise"]).max() <= PRE_GAMMA_ATOL[dtype], where
                error = np.abs(hwc(stages["gamma"]) - expected["gamma"])
                bound = gamma_aware_bound(pre, expected["denoise"], OUTPUT_ATOL[dtype], POWER_SLACK[dtype])
                assert np.all(error <= bound), f"{where}: worst excess {np.max(error - bound):.3g}"


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_device_equals_cpu_and_bank_equals_single_pipelines(pattern, raw_images, cameras):
    """Each pipeline on the device is the CPU's within the contract's tolerance, and the bank on the
    device yields each single pipeline's views (to 1e-6)."""
    images = raw_images(pattern)
    raw = torch.tensor(np.stack([images["astronaut"], images["random"]]), dtype=torch.float32)
    camera = cameras(pattern)["drone"]
    bank = StaticPipelineBank("all", camera).to(DEVICE)(raw.to(DEVICE))
    for name in STATIC_PIPELINE_NAMES:
        on_device = OnDevice(StaticPipeline(name, camera))
        assert_same_views(on_device, StaticPipeline(name, camera), raw, f"{name} on {DEVICE}")
        torch.testing.assert_close(bank[name].cpu(), on_device(raw), rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["bi_s_ga", "me_u_me"])
def test_parametrized_forward_and_backward_on_device_equal_cpu(variant, cameras):
    """At θ_stat the view matches the CPU's; after one loss.backward() every θ group's gradient
    matches the CPU's to float32 precision."""
    camera = cameras("RGGB")["microscopy"]
    raw = 0.05 + 0.9 * torch.rand(2, 16, 24, generator=torch.Generator().manual_seed(3))
    on_cpu = ParametrizedPipeline(camera, variant=variant)
    on_device = ParametrizedPipeline(camera, variant=variant).to(DEVICE)
    assert_same_views(OnDevice(on_device), on_cpu, raw, f"{variant} on {DEVICE}")
    on_cpu(raw).square().mean().backward()
    on_device(raw.to(DEVICE)).square().mean().backward()
    for group, parameter in on_cpu.theta().items():
        if parameter.grad is None:
            assert getattr(on_device, group).grad is None, group
            continue
        gradient = getattr(on_device, group).grad.cpu()
        torch.testing.assert_close(gradient, parameter.grad, rtol=1e-3, atol=1e-6, msg=group)
