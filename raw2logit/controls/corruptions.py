"""Common Corruptions on batches of RGB images, in torch.

The ten corruptions of Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations" (ICLR 2019), that raw2logit relates to stages of the image signal
processing: noise (sensor), blur (optics, denoising), contrast, brightness and saturation (tone and
colour processing) and elastic warping (lens distortion). Severities and formulas follow the
``imagecorruptions`` package 1.1 (Michaelis et al. 2019, "Benchmarking Robustness in Object
Detection"), which corrupts one uint8 (H, W, 3) image at a time; here every corruption maps a float
batch to a float batch.

Differences from the package, all deliberate:

* No uint8 round trip: the package returns ``np.uint8(255 * out)`` (truncated), these functions
  return ``out`` itself, so they sit on average half a level (1/510) above the package.
* Random numbers come from ``torch.Generator`` (on CPU), not numpy's global state: the same seed
  reproduces the same batch here, but no seed reproduces the package's pixels, only its
  distributions. Every image of a batch gets its own draw, as when the package is called per image.
* Arithmetic is in the images' dtype (float32 usually) instead of float64: about 1e-6 relative.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from raw2logit.errors import InputError
from raw2logit.isp.filters import correlate2d, gaussian_filter2d, gaussian_kernel1d
from raw2logit.names import CORRUPTION_NAMES

Corruption = Callable[..., torch.Tensor]

# Per-severity constants (severity 1 ... 5) of imagecorruptions 1.1.
_GAUSSIAN_NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)
_SHOT_NOISE_PHOTONS = (60, 25, 12, 5, 3)  # photons at full scale: fewer is noisier
_IMPULSE_NOISE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
_SPECKLE_NOISE_STD = (0.15, 0.2, 0.35, 0.45, 0.6)
_GAUSSIAN_BLUR_SIGMA = (1, 2, 3, 4, 6)
# np.arange, as published, so that the factors (and the crop sizes derived from them) are the
# package's to the last bit.
_ZOOM_BLUR_FACTORS = tuple(
    tuple(float(factor) for factor in np.arange(1, stop, step))
    for stop, step in ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))
)
_CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)
_BRIGHTNESS_SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)
_SATURATE_SCALE_SHIFT = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))
_ELASTIC_ALPHA = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)
_ELASTIC_SIGMA_FRACTION = 0.01  # smoothing of the displacement noise, per side length
_ELASTIC_NOISE_FRACTION = 0.005  # half-width of the uniform displacement noise, of the height
_ELASTIC_TRUNCATE = 3.0


def _check_severity(severity: int) -> None:
    if isinstance(severity, bool) or not isinstance(severity, numbers.Integral) or not 1 <= severity <= 5:
        raise InputError(f"Severity must be an integer in 1, 2, 3, 4, 5; got {severity!r}.")


def _at_severity(constants: tuple, severity: int):
    _check_severity(severity)
    return constants[int(severity) - 1]


def _check_generator(generator: torch.Generator | None) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        where = generator.device if isinstance(generator, torch.Generator) else type(generator).__name__
        raise InputError(f"generator must be a CPU torch.Generator or None; got {where}.")


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    # Drawn on CPU whatever the images' device, so that one seed gives one result everywhere.
    _check_generator(generator)
    return torch.rand(shape, generator=generator).to(like.device, like.dtype)


def _normal(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    _check_generator(generator)
    return torch.randn(shape, generator=generator).to(like.device, like.dtype)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """Convert RGB to HSV with scikit-image's conventions (``skimage.color.rgb2hsv``).

    Grey pixels (max == min) get hue 0 and saturation 0; where two channels tie for the maximum,
    blue's formula wins over green's over red's (they agree there).

    Args:
        images: (B, 3, H, W) RGB in [0, 1].

    Returns:
        (B, 3, H, W) hue in [0, 1), saturation in [0, 1], value in [0, 1].
    """
    red, green, blue = images.unbind(1)
    value = images.amax(1)
    delta = value - images.amin(1)
    grey = delta == 0
    # A safe denominator keeps the unselected branches finite (no NaN in values or gradients).
    safe_delta = torch.where(grey, torch.ones_like(delta), delta)
    saturation = torch.where(grey, torch.zeros_like(delta), delta / torch.where(grey, 1, value))
    hue = torch.where(
        blue == value,
        4 + (red - green) / safe_delta,
        torch.where(green == value, 2 + (blue - red) / safe_delta, (green - blue) / safe_delta),
    )
    hue = torch.where(grey, torch.zeros_like(hue), torch.remainder(hue / 6, 1.0))
    return torch.stack((hue, saturation, value), 1)


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Convert HSV to RGB, the inverse of ``rgb_to_hsv`` (``skimage.color.hsv2rgb``).

    Uses the closed form ``c_n = v - v s clip(min(k, 4 - k), 0, 1)``, ``k = (n + 6 h) mod 6`` with
    n = 5, 3, 1 for red, green, blue, which equals scikit-image's six-sector table without a gather.

    Args:
        images: (B, 3, H, W) hue in [0, 1], saturation in [0, 1], value in [0, 1].

    Returns:
        (B, 3, H, W) RGB in [0, 1].
    """
    hue, saturation, value = images.unbind(1)
    offsets = torch.tensor([5.0, 3.0, 1.0], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    k = torch.remainder(offsets + 6 * hue.unsqueeze(1), 6.0)
    ramp = torch.minimum(k, 4 - k).clamp(0, 1)
    return value.unsqueeze(1) * (1 - saturation.unsqueeze(1) * ramp)


def gaussian_noise(
    images: torch.Tensor, severity: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Add white Gaussian noise of standard deviation 0.08 ... 0.38 (severity 1 ... 5), then clip.

    Args:
        images: (B, 3, H, W) RGB in [0, 1].
        severity: 1 ... 5.
        generator: CPU generator for the noise; None uses torch's default generator.

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    std = _at_severity(_GAUSSIAN_NOISE_STD, severity)
    return (images + std * _normal(images.shape, generator, images)).clamp(0, 1)


def shot_noise(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace every value by Poisson(x c) / c with c = 60 ... 3 photons at full scale, then clip.

    The Poisson draw runs on CPU (torch has no device-independent Poisson sampler), so images on
    another device make one round trip to the host.

    Args:
        images: (B, 3, H, W) RGB in [0, 1].
        severity: 1 ... 5.
        generator: CPU generator for the noise; None uses torch's default generator.

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    photons = _at_severity(_SHOT_NOISE_PHOTONS, severity)
    _check_generator(generator)
    rates = (images.detach() * photons).to("cpu", torch.float32)
    counts = torch.poisson(rates, generator=generator).to(images.device, images.dtype)
    return (counts / photons).clamp(0, 1)


def impulse_noise(
    images: torch.Tensor, severity: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Salt-and-pepper noise: each value independently becomes 0 or 1 (equally likely) with
    probability 0.03 ... 0.27 (``skimage.util.random_noise(mode="s&p")``).

    Args:
        images: (B, 3, H, W) RGB in [0, 1].
        severity: 1 ... 5.
        generator: CPU generator for the noise; None uses torch's default generator.

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    amount = _at_severity(_IMPULSE_NOISE_AMOUNT, severity)
    flip, salt = _uniform((2, *images.shape), generator, images).unbind(0)
    # Salt or pepper as the value itself, so that no boolean-to-float cast breaks the dtype.
    impulse = (salt < 0.5).to(images.dtype)
    return torch.where(flip < amount, impulse, images)


def speckle_noise(
    images: torch.Tensor, severity: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Multiplicative Gaussian noise x (1 + n), n of standard deviation 0.15 ... 0.6, then clip.

    Args:
        images: (B, 3, H, W) RGB in [0, 1].
        severity: 1 ... 5.
        generator: CPU generator for the noise; None uses torch's default generator.

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    std = _at_severity(_SPECKLE_NOISE_STD, severity)
    return (images + images * std * _normal(images.shape, generator, images)).clamp(0, 1)


def gaussian_blur(
    images: torch.Tensor, severity: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gaussian blur of sigma 1, 2, 3, 4, 6 pixels (``skimage.filters.gaussian``: edge pixels
    repeated, kernel truncated at 4 sigma). Deterministic: ``generator`` is ignored.

    Args:
        images: (B, 3, H, W) RGB in [0, 1].
        severity: 1 ... 5.
        generator: unused; accepted so that every corruption has one signature.

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    sigma = _at_severity(_GAUSSIAN_BLUR_SIGMA, severity)
    return gaussian_filter2d(images, sigma, truncate=4.0, mode="nearest").clamp(0, 1)


def _clipped_zoom(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Magnify the centre by ``factor`` back to (H, W), as the package's ``clipped_zoom``.

    The package crops ceil(side / factor) pixels, offset (side - crop) // 2, resamples them to
    round(crop * factor) with ``scipy.ndimage.zoom(order=1)`` and keeps the first H rows and W
    columns. scipy's zoom maps the first and last samples onto each other, which is exactly
    bilinear interpolation with ``align_corners=True``.
    """
    height, width = images.shape[-2:]
    crop_height, crop_width = math.ceil(height / factor), math.ceil(width / factor)
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    crop = images[..., top : top + crop_height, left : left + crop_width]
    # Python's round, as scipy sizes its output (round half to even).
    size = (round(crop_height * factor), round(crop_width * factor))
    zoomed = F.interpolate(crop, size=size, mode="bilinear", align_corners=True)
    return zoomed[..., :height, :width]


def zoom_blur(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Average the image with centre zooms by 1.00 ... 1.10 (severity 1) up to 1.00 ... 1.30
    (severity 5), as a camera zooming during the exposure. Deterministic: ``generator`` is ignored.

    Args:
        images: (B, 3, H, W) RGB in [0, 1].
        severity: 1 ... 5.
        generator: unused; accepted so that every corruption has one signature.

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    factors = _at_severity(_ZOOM_BLUR_FACTORS, severity)
    total = images.clone()
    for factor in factors:
        total = total + _clipped_zoom(images, factor)
    return (total / (len(factors) + 1)).clamp(0, 1)


def contrast(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each channel's deviations from its image mean by 0.4 ... 0.05, then clip.
    Deterministic: ``generator`` is ignored.

    Args:
        images: (B, 3, H, W) RGB in [0, 1].
        severity: 1 ... 5.
        generator: unused; accepted so that every corruption has one signature.

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    factor = _at_severity(_CONTRAST_FACTOR, severity)
    means = images.mean(dim=(-2, -1), keepdim=True)
    return ((images - means) * factor + means).clamp(0, 1)


def brightness(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add 0.1 ... 0.5 to the HSV value (clipped to 1), keeping hue and saturation.
    Deterministic: ``generator`` is ignored.

    Args:
        images: (B, 3, H, W) RGB in [0, 1].
        severity: 1 ... 5.
        generator: unused; accepted so that every corruption has one signature.

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    shift = _at_severity(_BRIGHTNESS_SHIFT, severity)
    hue, saturation, value = rgb_to_hsv(images).unbind(1)
    hsv = torch.stack((hue, saturation, (value + shift).clamp(0, 1)), 1)
    return hsv_to_rgb(hsv).clamp(0, 1)


def saturate(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Map the HSV saturation s to clip(s a + b) with (a, b) = (0.3, 0), (0.1, 0), (2, 0), (5, 0.1),
    (20, 0.2). As published, grey pixels have hue 0, so severities 4 and 5 tint them red.
    Deterministic: ``generator`` is ignored.

    Args:
        images: (B, 3, H, W) RGB in [0, 1].
        severity: 1 ... 5.
        generator: unused; accepted so that every corruption has one signature.

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    scale, shift = _at_severity(_SATURATE_SCALE_SHIFT, severity)
    hue, saturation, value = rgb_to_hsv(images).unbind(1)
    hsv = torch.stack((hue, (saturation * scale + shift).clamp(0, 1), value), 1)
    return hsv_to_rgb(hsv).clamp(0, 1)


def _elastic_displacement(
    batch: int, height: int, width: int, severity: int, generator: torch.Generator | None, like: torch.Tensor
) -> torch.Tensor:
    """Random smooth displacement fields (B, 2, H, W), (dy, dx) in pixels, as the package draws them.

    Uniform noise in +-0.005 H (H for both axes, as published), smoothed by a Gaussian of sigma
    0.01 H down the columns and 0.01 W along the rows (truncated at 3 sigma, half-sample symmetric
    edges) and scaled by alpha = 12.5 ... 30.
    """
    alpha = _at_severity(_ELASTIC_ALPHA, severity)
    half_width = _ELASTIC_NOISE_FRACTION * height
    noise = (2 * _uniform((batch, 2, height, width), generator, like) - 1) * half_width
    column_kernel = gaussian_kernel1d(_ELASTIC_SIGMA_FRACTION * height, _ELASTIC_TRUNCATE)
    row_kernel = gaussian_kernel1d(_ELASTIC_SIGMA_FRACTION * width, _ELASTIC_TRUNCATE)
    smooth = correlate2d(noise, column_kernel.view(-1, 1).to(like.device), mode="reflect")
    smooth = correlate2d(smooth, row_kernel.view(1, -1).to(like.device), mode="reflect")
    return alpha * smooth


def _remap(images: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Sample ``images`` at (row + dy, column + dx), bilinearly, edges half-sample symmetric.

    This is ``scipy.ndimage.map_coordinates(order=1, mode="reflect")``: reflecting a coordinate
    about the outer pixel edge (-0.5 and size - 0.5) and clamping it to the pixel centres gives the
    same values as interpolating the symmetrically extended image, which is what ``grid_sample``
    does with ``padding_mode="reflection", align_corners=False``.

    Args:
        images: (B, C, H, W).
        displacement: (B, 2, H, W) row and column offsets in pixels.
    """
    height, width = images.shape[-2:]
    rows = torch.arange(height, device=images.device, dtype=images.dtype).view(1, height, 1)
    columns = torch.arange(width, device=images.device, dtype=images.dtype).view(1, 1, width)
    # grid_sample's coordinates with align_corners=False: -1 and 1 are the outer pixel edges.
    y = (rows + displacement[:, 0] + 0.5) * (2 / height) - 1
    x = (columns + displacement[:, 1] + 0.5) * (2 / width) - 1
    grid = torch.stack((x, y), dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def elastic_transform(
    images: torch.Tensor, severity: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Warp each image by its own random smooth displacement field.

    As in imagecorruptions 1.1 (a side-length-relative variant of Simard et al. 2003): uniform
    noise of half-width 0.005 H, Gaussian-smoothed with sigma 0.01 (H, W), scaled by 12.5 ... 30,
    sampled bilinearly with reflected edges. That package has no random affine step (the original
    ImageNet-C code for 224-pixel images does); neither does this function. Noise and smoothing
    both scale with the side, so the displacement per axis has a standard deviation of about
    1.0 ... 2.5 pixels (severity 1 ... 5) for square images of any size, times roughly
    sqrt(H / W) for other shapes.

    Args:
        images: (B, 3, H, W) RGB in [0, 1].
        severity: 1 ... 5.
        generator: CPU generator for the displacement noise; None uses torch's default generator.

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    batch, _, height, width = images.shape
    displacement = _elastic_displacement(batch, height, width, severity, generator, images)
    return _remap(images, displacement).clamp(0, 1)


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "zoom_blur": zoom_blur,
    "contrast": contrast,
    "brightness": brightness,
    "saturate": saturate,
    "elastic_transform": elastic_transform,
}


def check_images(images: torch.Tensor) -> None:
    """Raise ``InputError`` unless ``images`` is a finite float (B, 3, H, W) tensor in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise InputError(f"Images must be a torch.Tensor of shape (B, 3, H, W); got {type(images).__name__}.")
    if images.dim() != 4 or images.shape[1] != 3 or 0 in images.shape:
        raise InputError(f"Images must have shape (B, 3, H, W) with B, H, W > 0; got {tuple(images.shape)}.")
    if not images.is_floating_point():
        raise InputError(f"Images must be a floating-point tensor in [0, 1]; got dtype {images.dtype}.")
    low, high = (float(v) for v in torch.aminmax(images.detach()))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError("Images contain NaN or Inf values; expected finite values in [0, 1].")
    if low < 0 or high > 1:
        raise InputError(f"Image values must lie in [0, 1]; got values in [{low:.6g}, {high:.6g}].")


def corrupt(
    images: torch.Tensor, name: str, severity: int = 3, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply the named Common Corruption to a batch, after checking every argument.

    Args:
        images: (B, 3, H, W) float RGB in [0, 1], on any device.
        name: one of ``CORRUPTION_NAMES``.
        severity: 1 ... 5.
        generator: CPU ``torch.Generator`` for the random corruptions (the same seed gives the same
            output); None uses torch's default generator. The deterministic ones ignore it.

    Returns:
        (B, 3, H, W) in [0, 1], same dtype and device as ``images``.
    """
    if not isinstance(name, str) or name not in CORRUPTIONS:
        raise InputError(f"Unknown corruption {name!r}; expected one of {', '.join(CORRUPTION_NAMES)}.")
    _check_severity(severity)
    _check_generator(generator)
    check_images(images)
    return CORRUPTIONS[name](images, int(severity), generator)
