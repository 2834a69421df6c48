"""Per-pixel colour stages: white balance, colour correction, RGB <-> YUV, gamma (Appendix A.1.1)."""

from __future__ import annotations

import torch

from raw2logit.isp.buffers import empty_output

# scikit-image's rgb2yuv matrix (ITU-R BT.601 luma); its inverse is computed in float64.
YUV_FROM_RGB = torch.tensor(
    (
        (0.299, 0.587, 0.114),
        (-0.14714119, -0.28886916, 0.43601035),
        (0.61497538, -0.51496512, -0.10001026),
    ),
    dtype=torch.float64,
)
RGB_FROM_YUV = torch.linalg.inv(YUV_FROM_RGB)
GAMMA_FLOOR = 1e-30
# yuv2rgb adds Y to every channel with weight 1 (to 2e-16): RGB = chroma + Y, where chroma is what U
# and V contribute. Sharpening and denoising change only Y, so the pipelines carry (Y, chroma).
assert torch.allclose(RGB_FROM_YUV[:, 0], torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-15)


def white_balance(rgb: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Per-channel gains ``wb_c * v_c``.

    Args:
        rgb: image of shape (B, 3, H, W).
        gains: (3,) gains for R, G and B.
    """
    return rgb * gains.to(rgb.dtype).view(1, 3, 1, 1)


def colour_transform(image: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 matrix to every pixel: ``v' = M v``.

    Args:
        image: image of shape (B, 3, H, W).
        matrix: (3, 3) matrix.
    """
    batch, channels, height, width = image.shape
    # A batched (3, 3) @ (3, H*W) product: contiguous output, several times faster than einsum.
    pixels = image.reshape(batch, channels, height * width)
    matrix = matrix.to(image.dtype)
    if torch.is_grad_enabled() and (image.requires_grad or matrix.requires_grad):
        return torch.matmul(matrix, pixels).view(batch, -1, height, width)
    out = empty_output((batch, matrix.shape[0], height, width), image.dtype, image.device)
    torch.matmul(matrix, pixels, out=out.view(batch, -1, height * width))
    return out


def colour_correction(rgb: torch.Tensor, colour_matrix: torch.Tensor) -> torch.Tensor:
    """Colour correction ``v' = M v`` with the camera's (3, 3) colour matrix; output is not clipped."""
    return colour_transform(rgb, colour_matrix)


def rgb_to_yuv(rgb: torch.Tensor) -> torch.Tensor:
    """RGB (B, 3, H, W) -> YUV, as ``skimage.color.rgb2yuv``."""
    return colour_transform(rgb, YUV_FROM_RGB.to(rgb.device))


def yuv_to_rgb(yuv: torch.Tensor) -> torch.Tensor:
    """YUV (B, 3, H, W) -> RGB, as ``skimage.color.yuv2rgb``."""
    return colour_transform(yuv, RGB_FROM_YUV.to(yuv.device))


def split_luma(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB (B, 3, H, W) -> (Y (B, 1, H, W), chroma (B, 3, H, W)) with ``RGB = chroma + Y``.

    Y is scikit-image's ``rgb2yuv`` luma; chroma equals ``yuv2rgb`` applied to (0, U, V). Filtering
    Y and adding it back is the reference's RGB -> YUV -> filter Y -> RGB, without converting U, V.
    """
    luma = colour_transform(rgb, YUV_FROM_RGB[:1].to(rgb.device))
    return luma, rgb - luma


def colour_to_luma(
    rgb: torch.Tensor, gains: torch.Tensor, colour_matrix: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``split_luma(colour_correction(white_balance(rgb, gains), colour_matrix))`` in one pass.

    All three are linear: M = colour_matrix @ diag(gains) gives the colour, its YUV luma row y = Y M
    and the chroma rows M - y, so one (4, 3) matrix product yields (Y, chroma), about 3x faster
    than the three stages apart. Equal to them to rounding.
    """
    matrix = colour_matrix * gains.view(1, 3).to(colour_matrix.dtype)
    luma_row = YUV_FROM_RGB[:1].to(matrix.device, matrix.dtype) @ matrix
    luma_chroma = colour_transform(rgb, torch.cat((luma_row, matrix - luma_row)))
    return luma_chroma[:, :1], luma_chroma[:, 1:]


def merge_luma(luma: torch.Tensor, chroma: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """(Y, chroma) -> RGB, the inverse of ``split_luma`` (written into ``out`` if given)."""
    return chroma + luma if out is None else torch.add(chroma, luma, out=out)


def gamma_correction(
    rgb: torch.Tensor, gamma: torch.Tensor | float = 2.2, in_place: bool = False
) -> torch.Tensor:
    """Clip to [0, 1], then raise to ``1 / gamma`` (Eq. 23-24).

    The lower clip is at 1e-30 rather than 0: ``x ** (1/gamma)`` has an infinite slope at zero
    (and ``log 0`` enters the gradient of a learnable gamma), and 1e-30 ** (1/2.2) = 2e-14 is
    zero for every purpose, so the output matches the reference and gradients stay finite.

    Args:
        rgb: image of shape (B, 3, H, W).
        gamma: positive float or (1,) tensor (may be an ``nn.Parameter``).
        in_place: overwrite ``rgb`` when no gradient is recorded (the pipelines pass a temporary).

    Returns:
        image of shape (B, 3, H, W) in [0, 1].
    """
    exponent = (1 / gamma).to(rgb.dtype) if isinstance(gamma, torch.Tensor) else 1 / gamma
    # 2 ** (log2(x) / gamma) is x ** (1 / gamma). On CPU torch vectorises exp2 but not exp or pow: the
    # chain costs 1.2 ns per value with exp2, 1.8 with exp, 1.9 as pow (one AVX-512 thread; AVX2 2.0
    # against 2.3), equally accurate (8e-8). Without autograd the chain runs in place.
    if torch.is_grad_enabled() and (
        rgb.requires_grad or (isinstance(gamma, torch.Tensor) and gamma.requires_grad)
    ):
        return torch.exp2(torch.log2(rgb.clamp(GAMMA_FLOOR, 1.0)) * exponent)
    clipped = rgb.clamp_(GAMMA_FLOOR, 1.0) if in_place else rgb.clamp(GAMMA_FLOOR, 1.0)
    return clipped.log2_().mul_(exponent).exp2_()


def srgb_encode(rgb: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1], then the sRGB transfer curve (IEC 61966-2-1), as camera JPEGs are encoded.

    An alternative to ``gamma_correction`` for data models fitted to a device's output images.
    """
    clipped = rgb.clamp(0.0, 1.0)
    curved = 1.055 * clipped.clamp_min(0.0031308).pow(1 / 2.4) - 0.055
    return torch.where(clipped <= 0.0031308, 12.92 * clipped, curved)
