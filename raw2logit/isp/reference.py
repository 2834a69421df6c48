"""The numpy twin of the static data models: the oracle for every torch stage.

Built directly on the libraries the paper used, exactly as Appendix A.1.1 specifies:
colour-demosaicing for demosaicing, scikit-image for RGB <-> YUV and unsharp masking, scipy for
the sharpening filter, Gaussian and median denoising. One (H, W) image at a time, float64.
"""

from __future__ import annotations

import numpy as np

from raw2logit.isp.camera import CameraParams, check_pattern
from raw2logit.isp.validation import check_raw_numpy
from raw2logit.names import parse_pipeline_name

# The paper's display gamma (Appendix A.1), written here again so the oracle takes nothing from the
# torch pipelines it checks.
GAMMA = 2.2

SHARPEN_KERNEL = np.array([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]])


def black_level_correction(raw: np.ndarray, black_level) -> np.ndarray:
    height, width = raw.shape
    return raw - np.tile(np.asarray(black_level, dtype=np.float64).reshape(2, 2), (height // 2, width // 2))


def demosaic(cfa: np.ndarray, method: str, pattern: str) -> np.ndarray:
    import colour_demosaicing  # slow to import (about 2 s): only when the reference runs

    check_pattern(pattern)
    functions = {
        "bi": colour_demosaicing.demosaicing_CFA_Bayer_bilinear,
        "ma": colour_demosaicing.demosaicing_CFA_Bayer_Malvar2004,
        "me": colour_demosaicing.demosaicing_CFA_Bayer_Menon2007,
    }
    return functions[method](cfa, pattern)


def white_balance(rgb: np.ndarray, gains) -> np.ndarray:
    return rgb * np.asarray(gains, dtype=np.float64)


def colour_correction(rgb: np.ndarray, colour_matrix) -> np.ndarray:
    return rgb @ np.asarray(colour_matrix, dtype=np.float64).T


def sharpen(luma: np.ndarray, method: str) -> np.ndarray:
    if method == "s":
        from scipy.signal import convolve2d

        return convolve2d(luma, SHARPEN_KERNEL, mode="same", boundary="fill", fillvalue=0)
    from skimage.filters import unsharp_mask

    return unsharp_mask(luma, radius=1.0, amount=1.0, preserve_range=True)


def denoise(luma: np.ndarray, method: str) -> np.ndarray:
    from scipy import ndimage

    if method == "ga":
        return ndimage.gaussian_filter(luma, sigma=0.5)
    return ndimage.median_filter(luma, size=3)


def filter_luma(rgb: np.ndarray, filter_fn) -> np.ndarray:
    """RGB -> YUV, filter Y, YUV -> RGB (scikit-image conversions)."""
    from skimage.color import rgb2yuv, yuv2rgb

    yuv = rgb2yuv(rgb)
    yuv[..., 0] = filter_fn(yuv[..., 0])
    return yuv2rgb(yuv)


def gamma_correction(rgb: np.ndarray, gamma: float = GAMMA) -> np.ndarray:
    return np.clip(rgb, 0.0, 1.0) ** (1.0 / gamma)


def process_stages(raw_hw: np.ndarray, name: str, camera: CameraParams) -> dict[str, np.ndarray]:
    """Every stage of static pipeline ``name`` on one raw image.

    Args:
        raw_hw: (H, W) mosaic in [0, 1], H and W even.
        name: static pipeline name, e.g. ``"bi_s_me"``.
        camera: the sensor's ``CameraParams``.

    Returns:
        stage name (``STAGE_NAMES``) -> float64 array, (H, W) for raw and black level, else (H, W, 3).
    """
    check_raw_numpy(raw_hw)
    demosaic_method, sharpen_method, denoise_method = parse_pipeline_name(name)
    stages = {"raw": np.asarray(raw_hw, dtype=np.float64)}
    stages["black_level"] = black_level_correction(stages["raw"], camera.black_level)
    stages["demosaic"] = demosaic(stages["black_level"], demosaic_method, camera.pattern)
    stages["white_balance"] = white_balance(stages["demosaic"], camera.white_balance)
    stages["colour_correction"] = colour_correction(stages["white_balance"], camera.colour_matrix)
    stages["sharpen"] = filter_luma(stages["colour_correction"], lambda y: sharpen(y, sharpen_method))
    stages["denoise"] = filter_luma(stages["sharpen"], lambda y: denoise(y, denoise_method))
    stages["gamma"] = gamma_correction(stages["denoise"])
    return stages


def process(raw_hw: np.ndarray, name: str, camera: CameraParams) -> np.ndarray:
    """Static pipeline ``name`` on one (H, W) raw image in [0, 1] -> (H, W, 3) float64 view in [0, 1]."""
    return process_stages(raw_hw, name, camera)["gamma"]


def to_chw_batch(images: list[np.ndarray]) -> np.ndarray:
    """Stack (H, W, 3) images as (B, 3, H, W), (H, W) images as (B, H, W)."""
    batch = np.stack(images)
    return batch.transpose(0, 3, 1, 2) if batch.ndim == 4 else batch
