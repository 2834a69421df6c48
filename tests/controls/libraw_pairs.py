"""Calibration pairs from a device nobody here wrote: DNGs of made-up cameras, processed by LibRaw.

Each made-up camera has a Bayer pattern, a bit depth, a black level, an AsShotNeutral and a
ColorMatrix1 (XYZ -> camera). Scenes are crops of scikit-image photographs taken to linear sRGB,
into the camera's RGB (the inverse of the colour matrix LibRaw derives from ColorMatrix1), times
AsShotNeutral (the camera's response to white), exposed, mosaiced, with shot and read noise, and
written as 16-bit DNGs with pidng (``tests/dng.py``). The device's images are LibRaw's own
processing of those files (rawpy ``postprocess``: camera white balance, sRGB, the BT.709 curve,
no auto-brightness, ``adjust_maximum_thr=0`` for a fixed device), saved as 8-bit PNGs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from raw2logit.data.dng import SRGB_TO_XYZ
from tests.dng import write_dng


@dataclass(frozen=True)
class MadeUpCamera:
    name: str
    pattern: str
    white: int
    black: tuple[int, int, int, int]  # per 2x2 site, reading order
    neutral: tuple[float, float, float]  # AsShotNeutral (R, G, B)
    xyz_to_camera: tuple[tuple[float, float, float], ...]  # ColorMatrix1 (D65)
    exposure: float = 0.8  # linear sRGB white -> this share of the range above black
    electrons: float = 20000.0  # full-range signal in electrons (shot noise)
    read_noise: float = 2.0  # in DN

    def camera_from_srgb(self) -> np.ndarray:
        """Linear sRGB -> white-balanced camera RGB, as LibRaw derives it (rows summing to 1)."""
        matrix = np.asarray(self.xyz_to_camera) @ SRGB_TO_XYZ
        return matrix / matrix.sum(axis=1, keepdims=True)


CAMERAS = {
    # 16-bit, black level 4096 as in issue 15's reproduction.
    "kestrel": MadeUpCamera(
        "kestrel",
        "RGGB",
        65535,
        (4096, 4096, 4096, 4096),
        (0.48, 1.0, 0.66),
        ((0.71, -0.13, -0.07), (-0.38, 1.17, 0.24), (-0.06, 0.17, 0.62)),
    ),
    # 14-bit, a per-site black level, another pattern and another colour response.
    "heron": MadeUpCamera(
        "heron",
        "BGGR",
        16383,
        (512, 520, 516, 508),
        (0.56, 1.0, 0.74),
        ((0.65, -0.09, -0.09), (-0.43, 1.22, 0.24), (-0.08, 0.19, 0.59)),
        exposure=0.85,
        read_noise=1.0,
    ),
}
# (photograph, top, left, downscale) of each crop: two per photograph, different for each camera.
CROPS = {
    "kestrel": (
        ("astronaut", 0, 140, 1),
        ("astronaut", 250, 200, 1),
        ("coffee", 100, 180, 1),
        ("coffee", 40, 340, 1),
        ("chelsea", 20, 60, 1),
        ("chelsea", 40, 190, 1),
        ("rocket", 150, 250, 1),
        ("rocket", 10, 20, 1),
        ("immunohistochemistry", 60, 200, 1),
        ("immunohistochemistry", 250, 10, 1),
        ("retina", 150, 160, 2),
        ("hubble_deep_field", 300, 400, 1),
    ),
    "heron": (
        ("astronaut", 60, 30, 1),
        ("astronaut", 256, 256, 1),
        ("coffee", 140, 40, 1),
        ("coffee", 120, 300, 1),
        ("chelsea", 0, 120, 1),
        ("rocket", 120, 60, 1),
        ("rocket", 170, 380, 1),
        ("immunohistochemistry", 200, 200, 1),
        ("retina", 400, 420, 2),
        ("retina", 100, 400, 2),
        ("hubble_deep_field", 500, 100, 1),
        ("colorwheel", 50, 60, 1),
    ),
}
CFA_CHANNEL = {"R": 0, "G": 1, "B": 2}


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    return np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)


def photograph_crop(name: str, top: int, left: int, downscale: int, size: int) -> np.ndarray:
    """(size, size, 3) float64 linear sRGB crop of a scikit-image photograph."""
    from skimage import data

    photo = getattr(data, name)()[..., :3].astype(np.float64) / 255.0
    if downscale > 1:  # box-filter downscale (the retina's 1411 px are blurry at full size)
        height, width = (s // downscale * downscale for s in photo.shape[:2])
        photo = photo[:height, :width].reshape(
            height // downscale, downscale, width // downscale, downscale, 3
        )
        photo = photo.mean(axis=(1, 3))
    crop = photo[top : top + size, left : left + size]
    if crop.shape[:2] != (size, size):
        raise ValueError(f"crop {name} at ({top}, {left}) is {crop.shape[:2]}; expected {size}x{size}")
    return srgb_decode(crop)


def mosaic_counts(camera: MadeUpCamera, linear_srgb: np.ndarray, seed: int) -> np.ndarray:
    """(H, W) uint16 raw counts of a linear sRGB scene as ``camera`` records it."""
    height, width, _ = linear_srgb.shape
    camera_rgb = linear_srgb @ camera.camera_from_srgb().T * np.asarray(camera.neutral)
    sites = np.array([CFA_CHANNEL[c] for c in camera.pattern]).reshape(2, 2)
    channel = np.tile(sites, (height // 2, width // 2))
    signal = np.clip(np.take_along_axis(camera_rgb, channel[..., None], axis=-1)[..., 0], 0, None)
    rng = np.random.default_rng(seed)
    electrons = rng.poisson(signal * camera.exposure * camera.electrons) / camera.electrons
    span = camera.white - np.asarray(camera.black, dtype=np.float64).reshape(2, 2)
    black = np.tile(np.asarray(camera.black, dtype=np.float64).reshape(2, 2), (height // 2, width // 2))
    counts = black + electrons * np.tile(span, (height // 2, width // 2))
    counts = counts + rng.normal(0, camera.read_noise, counts.shape)
    return np.clip(np.round(counts), 0, camera.white).astype(np.uint16)


def libraw_process(path: Path, algorithm: str = "AHD") -> np.ndarray:
    """LibRaw's processing of a DNG as the device: (H, W, 3) uint8 sRGB."""
    import rawpy

    with rawpy.imread(str(path)) as raw:
        return raw.postprocess(
            demosaic_algorithm=rawpy.DemosaicAlgorithm[algorithm],
            use_camera_wb=True,
            no_auto_bright=True,
            output_bps=8,
            output_color=rawpy.ColorSpace.sRGB,
            adjust_maximum_thr=0,
            user_flip=0,
        )


def write_libraw_pairs(folder: Path, camera: str = "kestrel", algorithms=("AHD",), size: int = 256,
                       count: int | None = None) -> dict[str, Path]:  # fmt: skip
    """Write DNGs of ``camera`` and, per LibRaw algorithm, a folder of DNG + PNG pairs.

    Returns:
        algorithm -> folder holding ``<stem>.dng`` and ``<stem>.png`` (the DNGs are shared, as copies).
    """
    spec = CAMERAS[camera]
    crops = CROPS[camera][:count]
    dngs = folder / f"{camera}-dng"
    dngs.mkdir(parents=True, exist_ok=True)
    for index, (photo, top, left, downscale) in enumerate(crops):
        scene = photograph_crop(photo, top, left, downscale, size)
        counts = mosaic_counts(spec, scene, seed=index)
        write_dng(dngs / f"{index:02d}-{photo}.dng", counts, spec.pattern, spec.black, spec.white, spec.neutral,
                  spec.xyz_to_camera)  # fmt: skip
    folders = {}
    for algorithm in algorithms:
        target = folder / f"{camera}-{algorithm}"
        target.mkdir(exist_ok=True)
        for dng in sorted(dngs.glob("*.dng")):
            (target / dng.name).write_bytes(dng.read_bytes())
            Image.fromarray(libraw_process(dng, algorithm)).save(target / f"{dng.stem}.png")
        folders[algorithm] = target
    return folders
