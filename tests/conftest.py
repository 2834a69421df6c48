"""Shared fixtures: small photographs mosaiced to raw, random raw, the paper's cameras per Bayer pattern.

Photographs come with scikit-image (no network). Each is cropped to 48x64, scaled to [0, 1],
mosaiced with ``bayer_masks`` and rounded to float32, so a float32 tensor and the float64 numpy
oracle see the very same raw values.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from raw2logit.isp import CameraParams, bayer_masks

# Top-left corners of 48x64 crops, chosen to mix texture, flat and saturated areas: the astronaut
# crop holds exactly black pixels and several hundred exact ties in Menon (2007)'s directional decision.
PHOTO_CROPS = {
    "astronaut": (400, 300),
    "coffee": (150, 250),
    "chelsea": (0, 0),
    "immunohistochemistry": (100, 300),
}
CROP_SIZE = (48, 64)
CAMERA_NAMES = ("identity", "microscopy", "drone")


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """(H, W, 3) image in [0, 1] -> (H, W) Bayer mosaic, float64 holding float32-representable values."""
    height, width, _ = rgb.shape
    masks = bayer_masks(pattern, height, width, dtype=torch.float64).numpy()
    raw = (rgb * masks.transpose(1, 2, 0)).sum(axis=-1)
    return raw.astype(np.float32).astype(np.float64)


@functools.cache
def photos() -> dict[str, np.ndarray]:
    """Name -> (48, 64, 3) float64 crop in [0, 1]."""
    from skimage import data

    height, width = CROP_SIZE
    crops = {}
    for name, (row, col) in PHOTO_CROPS.items():
        image = getattr(data, name)()[row : row + height, col : col + width, :3]
        crops[name] = image.astype(np.float64) / 255.0
    return crops


@functools.cache
def _raw_images(pattern: str) -> dict[str, np.ndarray]:
    images = {name: mosaic(rgb, pattern) for name, rgb in photos().items()}
    random = np.random.default_rng(sum(map(ord, pattern))).random(CROP_SIZE)
    images["random"] = random.astype(np.float32).astype(np.float64)
    for image in images.values():
        image.setflags(write=False)
    return images


def camera(name: str, pattern: str) -> CameraParams:
    """A published camera (``identity``, ``microscopy``, ``drone``) re-patterned to ``pattern``."""
    published = CameraParams.published(name)
    return CameraParams(
        published.black_level, published.white_balance, published.colour_matrix, pattern, name=name
    )


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread(request):
    """ISP tests run one torch thread: their images are tiny, so extra threads only add
    synchronisation, and on a shared CPU OpenMP's spin-waiting made them about 10x slower."""
    if "isp" not in request.path.parts:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mosaic_fn():
    """The mosaicing helper: ``mosaic_fn(rgb_hw3, pattern) -> raw_hw``."""
    return mosaic


@pytest.fixture(scope="session")
def photo_images() -> dict[str, np.ndarray]:
    """Name -> (48, 64, 3) photograph crop in [0, 1]."""
    return photos()


@pytest.fixture(scope="session")
def raw_images():
    """``raw_images(pattern)`` -> name -> (48, 64) read-only float64 mosaic (4 photographs + random)."""
    return _raw_images


@pytest.fixture(scope="session")
def cameras():
    """``cameras(pattern)`` -> name -> ``CameraParams`` (identity, microscopy, drone) with that pattern."""
    return lambda pattern: {name: camera(name, pattern) for name in CAMERA_NAMES}
