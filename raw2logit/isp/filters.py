"""Batched 2-D filtering with scipy.ndimage's boundary modes, exactly.

scipy and scikit-image (the paper's reference implementation) extend images with boundary modes
that torch's ``F.pad`` only partly offers: scipy's ``reflect`` (d c b a | a b c d | d c b a) has no
torch twin. Padding here is done by index arithmetic, which reproduces every mode exactly for any
image size (including pads wider than the image), and filtering by a grouped convolution with the
batch folded into the channels: on CPU that is about 20x faster than a single-channel ``conv2d``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from raw2logit.errors import InputError
from raw2logit.isp.buffers import MIN_HUGE_PAGE_BYTES, empty_output

PADDING_MODES = ("reflect", "mirror", "constant", "nearest")
_CPU_GROUP_MULTIPLE = 16
_CPU_MAX_GROUPS = 96
_MEDIAN_CPU_PIXELS = 2 * 256 * 256  # pixels per chunk of the median's passes on CPU


def cpu_chunk(x: torch.Tensor, pixels: int) -> int:
    """Images of ``x`` (B, ..., H, W) per chunk for cache-sized passes: about ``pixels`` pixels per
    chunk on CPU (at least one image), the whole batch elsewhere or when autograd records ``x``."""
    if x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
        return x.shape[0]
    return max(1, pixels // (x.shape[-2] * x.shape[-1]))


def _boundary_indices(size: int, before: int, after: int, mode: str, device) -> torch.Tensor:
    index = torch.arange(-before, size + after, device=device)
    if mode == "reflect":  # half-sample symmetric: d c b a | a b c d | d c b a
        period = 2 * size
        index = index % period
        return torch.where(index >= size, period - 1 - index, index)
    if mode == "mirror":  # whole-sample symmetric: d c b | a b c d | c b a
        if size == 1:
            return torch.zeros_like(index)
        period = 2 * size - 2
        index = index % period
        return torch.where(index >= size, period - index, index)
    if mode == "nearest":
        return index.clamp(0, size - 1)
    raise InputError(f"Unknown padding mode {mode!r}; expected one of {', '.join(PADDING_MODES)}.")


def pad2d(
    x: torch.Tensor, pad: tuple[int, int, int, int], mode: str = "reflect", dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Pad the last two dimensions as scipy.ndimage's boundary ``mode`` extends an image.

    Args:
        x: tensor of shape (*, H, W).
        pad: (top, bottom, left, right) widths.
        mode: ``reflect``, ``mirror``, ``constant`` (zeros) or ``nearest``, with scipy's meaning.
        dtype: dtype of the result (default ``x.dtype``).

    Returns:
        tensor of shape (*, H + top + bottom, W + left + right).
    """
    top, bottom, left, right = pad
    if mode == "reflect" and max(pad) <= 1 and x.dim() in (3, 4) and dtype in (None, x.dtype):
        if x.numel() * x.element_size() < MIN_HUGE_PAGE_BYTES:
            # scipy's reflect by one sample repeats the edge: torch's replicate, one kernel call
            # (the medians' pads: the bank 2-4 % faster, measured). Larger images are written into
            # a huge-page buffer by _pad_into.
            return F.pad(x, (left, right, top, bottom), mode="replicate")
    if not (torch.is_grad_enabled() and x.requires_grad) and mode in ("reflect", "mirror"):
        if max(top, bottom) < x.shape[-2] and max(left, right) < x.shape[-1]:
            return _pad_into(x, pad, mode, dtype or x.dtype)
    x = x if dtype is None else x.to(dtype)
    if mode == "constant":
        return F.pad(x, (left, right, top, bottom))
    if mode not in PADDING_MODES:
        raise InputError(f"Unknown padding mode {mode!r}; expected one of {', '.join(PADDING_MODES)}.")
    height, width = x.shape[-2:]
    narrow = max(top, bottom) < height and max(left, right) < width
    if x.dim() in (3, 4) and (mode == "nearest" or narrow):
        # torch's native pads write every value once, about 4x faster than concatenating flipped
        # slices. scipy's mirror is torch's reflect; scipy's reflect repeats the edge sample, so
        # it is torch's replicate with the strips beyond the first sample copied in flipped.
        padded = F.pad(x, (left, right, top, bottom), mode="reflect" if mode == "mirror" else "replicate")
        if mode == "reflect":
            _reflect_strips(padded, x, pad)
        return padded
    if top or bottom:
        x = _pad_dim(x, -2, top, bottom, mode)
    if left or right:
        x = _pad_dim(x, -1, left, right, mode)
    return x


def _pad_into(x: torch.Tensor, pad: tuple[int, int, int, int], mode: str, dtype: torch.dtype) -> torch.Tensor:
    """``reflect`` or ``mirror`` padding narrower than the image, cast to ``dtype`` on the way: the
    image is written once into a new buffer (``empty_output``, so without a page fault per 4 KiB
    in a process with glibc's default settings) and the strips are copied from it, so a cast
    costs no buffer of its own."""
    top, bottom, left, right = pad
    height, width = x.shape[-2:]
    padded = empty_output((*x.shape[:-2], height + top + bottom, width + left + right), dtype, x.device)
    rows, columns = slice(top, top + height), slice(left, left + width)
    padded[..., rows, columns] = x
    skip = 0 if mode == "reflect" else 1  # mirror does not repeat the edge sample
    end_row, end_column = top + height, left + width
    if left:
        padded[..., rows, :left] = padded[..., rows, left + skip : 2 * left + skip].flip(-1)
    if right:
        padded[..., rows, end_column:] = padded[
            ..., rows, end_column - right - skip : end_column - skip
        ].flip(-1)
    # Rows last, copied from rows already padded left and right, so the corners are right too.
    if top:
        padded[..., :top, :] = padded[..., top + skip : 2 * top + skip, :].flip(-2)
    if bottom:
        padded[..., end_row:, :] = padded[..., end_row - bottom - skip : end_row - skip, :].flip(-2)
    return padded


def _reflect_strips(padded: torch.Tensor, x: torch.Tensor, pad: tuple[int, int, int, int]) -> None:
    """Overwrite the replicate-padded strips of ``padded`` with scipy's reflect (d c b a | a b c d)."""
    top, bottom, left, right = pad
    height, width = x.shape[-2:]
    rows = slice(top, top + height)
    if left > 1:
        padded[..., rows, :left] = x[..., :, :left].flip(-1)
    if right > 1:
        padded[..., rows, left + width :] = x[..., :, width - right :].flip(-1)
    # Rows last, copied from rows already padded left and right, so the corners are right too.
    if top > 1:
        padded[..., :top, :] = padded[..., top : 2 * top, :].flip(-2)
    if bottom > 1:
        end = top + height
        padded[..., end:, :] = padded[..., end - bottom : end, :].flip(-2)


def _pad_dim(x: torch.Tensor, dim: int, before: int, after: int, mode: str) -> torch.Tensor:
    size = x.shape[dim]
    # Flipped edge slices are an order of magnitude faster than index_select on the last
    # dimension; index arithmetic covers the rest (pads wider than the image, ``nearest``).
    if mode == "reflect" and max(before, after) <= size:
        head = x.narrow(dim, 0, before).flip(dim)
        tail = x.narrow(dim, size - after, after).flip(dim)
        return torch.cat((head, x, tail), dim=dim)
    if mode == "mirror" and max(before, after) < size:
        head = x.narrow(dim, 1, before).flip(dim)
        tail = x.narrow(dim, size - 1 - after, after).flip(dim)
        return torch.cat((head, x, tail), dim=dim)
    return x.index_select(dim, _boundary_indices(size, before, after, mode, x.device))


def correlate2d(x: torch.Tensor, kernel: torch.Tensor, mode: str = "reflect") -> torch.Tensor:
    """Correlate every image of a batch with odd-sized kernels, as ``scipy.ndimage.correlate``.

    Args:
        x: images of shape (B, C, H, W).
        kernel: (kh, kw) for one kernel on every channel, or (K, kh, kw) with K a multiple of C:
            input channel c feeds output channels c*K/C ... (c+1)*K/C - 1 (so C = 1 gives K
            filtered copies, C = K one kernel per channel).
        mode: boundary mode (see ``pad2d``).

    Returns:
        filtered images of shape (B, K, H, W) (K = C for a 2-D kernel), differentiable in ``x``
        and ``kernel``.
    """
    channels = x.shape[1]
    if kernel.dim() == 2:
        kernel = kernel.expand(channels, *kernel.shape)
    outputs, kh, kw = kernel.shape
    if kh % 2 == 0 or kw % 2 == 0 or outputs % channels:
        raise InputError(
            f"Kernel must have odd size and a multiple of {channels} filters, got shape {tuple(kernel.shape)}."
        )
    if mode == "constant":  # the convolution pads with zeros itself, without copying the batch
        return correlate_valid(x, kernel, zero_padding=(kh // 2, kw // 2))
    padded = pad2d(x, (kh // 2, kh // 2, kw // 2, kw // 2), mode)
    return correlate_valid(padded, kernel)


def correlate_valid(
    padded: torch.Tensor, kernel: torch.Tensor, zero_padding: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Correlate padded images with (K, kh, kw) kernels, keeping only fully covered outputs.

    Args:
        padded: (B, C, H', W') images; input channel c feeds kernels c*K/C ... (c+1)*K/C - 1.
        kernel: (K, kh, kw), K a multiple of C.
        zero_padding: (rows, columns) of zeros the convolution adds on each side first.

    Returns:
        (B, K, H' + 2 rows - kh + 1, W' + 2 columns - kw + 1).
    """
    batch, channels, height, width = padded.shape
    per_channel = kernel.shape[0] // channels
    if per_channel > 1:
        # Several outputs per channel in one depthwise call cost about 2x more than one call each.
        return torch.stack(
            [correlate_valid(padded[:, k // per_channel, None], kernel[k, None], zero_padding).squeeze(1)
             for k in range(kernel.shape[0])],
            dim=1,
        )  # fmt: skip
    weights = kernel.to(padded.dtype).repeat(batch, 1, 1)
    filtered = _depthwise(padded.reshape(batch * channels, height, width), weights, zero_padding)
    return filtered.view(batch, channels, *filtered.shape[-2:])


def _depthwise(images: torch.Tensor, kernels: torch.Tensor, zero_padding=(0, 0)) -> torch.Tensor:
    """(N, H', W') images, each with its own (kh, kw) kernel of ``kernels`` (N, kh, kw), as one
    depthwise convolution with the images as channels: on CPU about 20x faster than a
    convolution with one input channel.

    oneDNN's CPU depthwise kernels vectorise over 16 channels and slow down 3-4x per image once a
    call spans more than ~100 channels (at 256x256): on CPU the images go in chunks of at most
    96, a remainder rounded up to a multiple of 16 with zero images.
    """
    weights = kernels.unsqueeze(1)
    if images.device.type != "cpu":
        return F.conv2d(images.unsqueeze(0), weights, padding=zero_padding, groups=images.shape[0])[0]
    outputs = []
    for chunk, weight in zip(images.split(_CPU_MAX_GROUPS), weights.split(_CPU_MAX_GROUPS)):
        groups = chunk.shape[0]
        spare = -groups % _CPU_GROUP_MULTIPLE
        if spare:
            chunk = torch.cat((chunk, chunk.new_zeros(spare, *chunk.shape[1:])))
            weight = torch.cat((weight, weight.new_zeros(spare, *weight.shape[1:])))
        folded = F.conv2d(chunk.unsqueeze(0), weight, padding=zero_padding, groups=groups + spare)
        outputs.append(folded[0, :groups])
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def on_cpu_without_autograd(x: torch.Tensor) -> bool:
    """Whether ``x`` is a CPU tensor that autograd does not record: the case of the fast paths that
    write into buffers of their own."""
    return x.device.type == "cpu" and not (torch.is_grad_enabled() and x.requires_grad)


def correlate_separable(
    x: torch.Tensor, row_taps: list[float], column_taps: list[float], mode: str = "reflect"
) -> torch.Tensor:
    """``x`` (B, C, H, W) correlated with ``outer(column_taps, row_taps)`` (odd lengths), as
    ``correlate2d`` with that kernel computes it, but as two 1-D passes of shifted multiply-adds into
    buffers of its own (``empty_output``), without autograd.

    For the small fixed filters of the static pipelines on CPU this is as fast as oneDNN's depthwise
    convolution or faster (measured on 16 images of 256 x 256, one thread: the 5x5 Gaussian 1.3-1.6x,
    the 9x9 of unsharp masking even), and it allocates nothing that page-faults 4 KiB at a time.
    """
    batch, channels, height, width = x.shape
    rows, columns = len(column_taps) // 2, len(row_taps) // 2
    padded = pad2d(x, (rows, rows, columns, columns), mode)
    along_rows = empty_output((batch, channels, padded.shape[-2], width), x.dtype, x.device)
    torch.mul(padded[..., :width], row_taps[0], out=along_rows)
    for shift, tap in enumerate(row_taps[1:], start=1):
        along_rows.add_(padded[..., shift : shift + width], alpha=tap)
    del padded
    out = empty_output((batch, channels, height, width), x.dtype, x.device)
    torch.mul(along_rows[..., :height, :], column_taps[0], out=out)
    for shift, tap in enumerate(column_taps[1:], start=1):
        out.add_(along_rows[..., shift : shift + height, :], alpha=tap)
    return out


@functools.cache
def gaussian_taps(sigma: float, truncate: float = 4.0) -> tuple[float, ...]:
    """``gaussian_kernel1d`` as Python floats, computed once per sigma (for the shifted multiply-adds)."""
    return tuple(gaussian_kernel1d(sigma, truncate).tolist())


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype=torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ``int(truncate * sigma + 0.5)``, as scipy.ndimage builds it."""
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    phi = torch.exp(-0.5 / float(sigma) ** 2 * x**2)
    return (phi / phi.sum()).to(dtype)


def gaussian_filter2d(
    x: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "reflect"
) -> torch.Tensor:
    """Gaussian blur as ``scipy.ndimage.gaussian_filter``: separable, rows then columns.

    Args:
        x: images of shape (B, C, H, W).
        sigma: standard deviation in pixels; the kernel spans ``2 * int(truncate * sigma + 0.5) + 1`` taps.
    """
    taps = gaussian_kernel1d(sigma, truncate).to(x.device, x.dtype)
    radius = taps.numel() // 2
    # Padding both axes first and filtering with no further padding is scipy's rows-then-columns
    # exactly: filtering along one axis commutes with padding along the other. One pad, not two.
    padded = pad2d(x, (radius, radius, radius, radius), mode)
    rows = correlate_valid(padded, taps.view(1, -1, 1).expand(x.shape[1], -1, -1))
    return correlate_valid(rows, taps.view(1, 1, -1).expand(x.shape[1], -1, -1))


def median_filter3x3(x: torch.Tensor, mode: str = "reflect") -> torch.Tensor:
    """3x3 median, exactly as ``scipy.ndimage.median_filter(x, size=3, mode=mode)``.

    Sorting each column of three first, the median of nine is the median of (the largest column
    minimum, the median of the column medians, the smallest column maximum). That takes 18 min/max
    passes instead of sorting nine values per pixel (about 20x faster than ``unfold`` + ``median``),
    and is differentiable almost everywhere. Without autograd the passes run in place, on CPU on
    chunks of about two 256x256 images, so the intermediates stay in the cores' caches (about
    1.3x faster).

    Args:
        x: images of shape (B, ..., H, W).
    """
    if x.dim() < 3 or (torch.is_grad_enabled() and x.requires_grad):
        return _median9(pad2d(x, (1, 1, 1, 1), mode))
    out = empty_output(x.shape, x.dtype, x.device)
    images = cpu_chunk(x, _MEDIAN_CPU_PIXELS)
    for start in range(0, x.shape[0], images):
        chunk = slice(start, start + images)
        _median9(pad2d(x[chunk], (1, 1, 1, 1), mode), out=out[chunk])
    return out


def _median9(padded: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The median network on a padded batch; with ``out``, temporaries are overwritten in place
    and the result is written to ``out`` (no autograd)."""
    in_place = out is not None

    def pair(op, a, b, into):
        return op(a, b, out=into) if in_place else op(a, b)

    minimum, maximum = torch.minimum, torch.maximum
    height, width = padded.shape[-2] - 2, padded.shape[-1] - 2
    top, middle, bottom = (padded.narrow(-2, i, height) for i in range(3))
    low, high = minimum(top, middle), maximum(top, middle)
    column_max = maximum(high, bottom)
    column_median = pair(maximum, low, pair(minimum, high, bottom, high), high)
    column_min = pair(minimum, low, bottom, low)

    def columns(t):
        return (t.narrow(-1, j, width) for j in range(3))

    a, b, c = columns(column_min)
    largest_min = maximum(a, b)
    largest_min = pair(maximum, largest_min, c, largest_min)
    a, b, c = columns(column_max)
    smallest_max = minimum(a, b)
    smallest_max = pair(minimum, smallest_max, c, smallest_max)

    def median3(a, b, c, into=None):
        # max(min(a, b), min(max(a, b), c)); ``high`` is a fresh temporary, safe to overwrite
        low, high = minimum(a, b), maximum(a, b)
        high = pair(minimum, high, c, high)
        return pair(maximum, low, high, high if into is None else into)

    median_of_medians = median3(*columns(column_median))
    return median3(largest_min, median_of_medians, smallest_max, into=out)
