"""The numpy reference behind the static pipelines' torch interface (``backend="numpy"``).

A bridge, kept apart from both sides: ``reference`` stays pure numpy (the oracle imports nothing
from the torch pipelines), ``static`` stays pure torch. Each image goes through
``reference.process`` one at a time in float64 on CPU; the views come back as a (B, 3, H, W)
tensor on the raw's device and dtype.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from raw2logit.isp import reference
from raw2logit.isp.camera import CameraParams


def _to_tensor(images: list, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(reference.to_chw_batch(images)).to(like.device, like.dtype)


def iter_views(
    raw: torch.Tensor, names: Sequence[str], camera: CameraParams
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, views (B, 3, H, W)) for each pipeline name, in the order given."""
    images = raw.detach().cpu().double().numpy()
    for name in names:
        yield name, _to_tensor([reference.process(image, name, camera) for image in images], raw)


def stages(raw: torch.Tensor, name: str, camera: CameraParams) -> dict[str, torch.Tensor]:
    """Stage name -> (B, 3, H, W) (the raw stage (B, H, W)), as ``StaticPipeline.forward_stages``."""
    per_image = [
        reference.process_stages(image, name, camera) for image in raw.detach().cpu().double().numpy()
    ]
    return {stage: _to_tensor([s[stage] for s in per_image], raw) for stage in per_image[0]}
