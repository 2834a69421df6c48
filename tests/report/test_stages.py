"""The stage-by-stage figure (paper Fig. 1): what it shows, how it is scaled for display, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from raw2logit.errors import InputError
from raw2logit.isp import STAGE_NAMES, CameraParams, ParametrizedPipeline, StaticPipeline
from raw2logit.report.figures import display_border
from raw2logit.report.stages import describe_theta, display_stage, draw_stages, save_stage_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def title(fig) -> str:
    return fig.get_suptitle()


def test_stage_figure_of_a_run(synthesis_template):
    """The figure the synthesis run drew of its best static pipeline on three of its raw images."""
    width, height = png_size(synthesis_template / "stages.png")
    assert width > 1.5 * height > 0  # 8 stages side by side, 3 rows of square images


def test_stage_figure_says_which_theta_it_shows():
    camera = CameraParams.published("drone")
    raw = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    static = draw_stages(StaticPipeline("bi_s_me", camera), raw)
    assert "static data model bi_s_me" in title(static)
    pipeline = ParametrizedPipeline(camera, variant="ma_s_ga")
    assert describe_theta(pipeline).endswith("at θ_stat")
    assert "ma_s_ga" in title(draw_stages(pipeline, raw)) and "at θ_stat" in title(draw_stages(pipeline, raw))
    with torch.no_grad():
        pipeline.white_balance.mul_(1.5)
        pipeline.demosaic.add_(1.0)  # Malvar demosaics here: the bilinear kernels do not act
    changed = title(draw_stages(pipeline, raw))
    assert "θ differs from θ_stat in white_balance" in changed and "demosaic" not in changed
    shown = title(draw_stages(pipeline, raw, theta="adversarial θ~, λ=0.001"))
    assert "adversarial θ~, λ=0.001" in shown and "white_balance" not in shown


def test_display_scaling_excludes_the_border():
    """A bright frame of filter artifacts along the border does not set the display scale."""
    images = np.random.default_rng(0).uniform(0.0, 0.1, size=(2, 32, 32, 3))
    border = display_border(32, 32)
    assert border > 0
    framed = images.copy()
    framed[:, :border] = framed[:, -border:] = framed[:, :, :border] = framed[:, :, -border:] = 5.0
    inside = (slice(None), slice(border, -border), slice(border, -border))
    for stage in ("demosaic", "white_balance", "normalised"):
        shown = display_stage(stage, framed)[inside]
        assert shown.max() > 0.95, stage  # scaled by the interior: its bright end is bright
        np.testing.assert_allclose(shown, display_stage(stage, images)[inside])  # as without the frame
    # Scaled over the whole image, the frame would have left the interior at about 2% brightness.
    assert np.percentile(framed, 99) == 5.0


def test_stage_figure_parametrized_pipeline_keeps_its_state(tmp_path):
    pipeline = ParametrizedPipeline(CameraParams.published("drone"), normalise_output=True).train()
    raw = torch.rand(5, 16, 16, generator=torch.Generator().manual_seed(1))
    path = save_stage_figure(pipeline, raw, tmp_path / "stages.png", max_images=2)
    assert png_size(path)[0] > 0
    assert pipeline.training and int(pipeline.output_norm.num_batches_tracked) == 0


def test_stage_figure_rejects_an_unknown_stage(tmp_path):
    pipeline = StaticPipeline("ma_u_ga", CameraParams.published("identity"))
    with pytest.raises(InputError, match="not produced"):
        save_stage_figure(pipeline, torch.rand(1, 16, 16), tmp_path / "x.png", names=[*STAGE_NAMES, "tone"])
