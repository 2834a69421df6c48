"""raw2logit.isp.filters and the luma filters built on it, against scipy and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from scipy.signal import convolve2d as scipy_convolve2d
from skimage.color import rgb2yuv, yuv2rgb
from skimage.filters import unsharp_mask as skimage_unsharp_mask
from torch.autograd import gradcheck

from raw2logit.errors import InputError
from raw2logit.isp import filters
from raw2logit.isp.colour import rgb_to_yuv, yuv_to_rgb
from raw2logit.isp.demosaic import lattice, menon2007
from raw2logit.isp.denoise import gaussian_denoise, gaussian_denoise_kernel, median_denoise
from raw2logit.isp.sharpen import SHARPEN_KERNEL, sharpen_filter, unsharp_mask

FLOAT32_ATOL = 1e-6  # one float32 filter on values in [0, 1]
FLOAT64_ATOL = 1e-12
# scipy.ndimage mode -> numpy.pad mode
NUMPY_PAD_MODES = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "constant": "constant"}
SCIPY_MODES = tuple(NUMPY_PAD_MODES)


def random_images(shape, seed=0):
    return np.random.default_rng(seed).random(shape)


def as_batch(image: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    """(H, W) array -> (1, 1, H, W) tensor."""
    return torch.from_numpy(image)[None, None].to(dtype)


# -- pad2d ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", SCIPY_MODES)
@pytest.mark.parametrize("height, width", [(1, 1), (1, 3), (2, 5), (4, 3), (6, 7)])
@pytest.mark.parametrize(
    "pad",
    [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 0, 3), (0, 3, 2, 0), (5, 7, 6, 9), (13, 2, 1, 17)],
    ids=lambda pad: "x".join(map(str, pad)),
)
def test_pad2d_matches_numpy_pad(mode, height, width, pad):
    """Every scipy boundary mode, pads narrower, as wide as and wider than the image, bitwise."""
    image = random_images((2, height, width))
    top, bottom, left, right = pad
    padded = filters.pad2d(torch.from_numpy(image), pad, mode).numpy()
    expected = np.pad(image, ((0, 0), (top, bottom), (left, right)), mode=NUMPY_PAD_MODES[mode])
    assert padded.shape == expected.shape
    np.testing.assert_array_equal(padded, expected)


@pytest.mark.parametrize("mode", ["reflect", "mirror"])
@pytest.mark.parametrize(
    "pad", [(1, 1, 1, 1), (2, 2, 2, 2), (0, 3, 2, 0)], ids=lambda pad: "x".join(map(str, pad))
)
def test_pad2d_with_a_cast_matches_numpy_pad(mode, pad):
    """Casting while padding (written into one new buffer) gives numpy's padding of the cast image."""
    image = random_images((2, 3, 6, 7), seed=5)
    top, bottom, left, right = pad
    expected = np.pad(
        image.astype(np.float32), ((0, 0), (0, 0), (top, bottom), (left, right)), NUMPY_PAD_MODES[mode]
    )
    result = filters.pad2d(torch.from_numpy(image), pad, mode, dtype=torch.float32)
    assert result.dtype == torch.float32
    np.testing.assert_array_equal(result.numpy(), expected)


def test_pad2d_keeps_leading_dimensions():
    x = torch.rand(2, 3, 4, 6)
    assert filters.pad2d(x, (1, 2, 3, 4), "reflect").shape == (2, 3, 7, 13)


def test_pad2d_unknown_mode_names_it():
    with pytest.raises(InputError, match=r"Unknown padding mode 'wrap'.*reflect, mirror, constant, nearest"):
        filters.pad2d(torch.rand(1, 4, 4), (1, 1, 1, 1), "wrap")


# -- Bayer sub-lattice filters (Menon 2007): bitwise equal to scipy.ndimage in float64 -------------

# The very taps and window Menon (2007) uses.
WEIGHTS_1D = {
    "menon_h0": menon2007.H_0,
    "menon_h1": menon2007.H_1,
}


@pytest.mark.parametrize("size", [(8, 10), (2, 4), (6, 2)])
@pytest.mark.parametrize("weights", list(WEIGHTS_1D.values()), ids=list(WEIGHTS_1D))
def test_lattice_filter1d_bitwise_equal_scipy(weights, size):
    """Every site class of the sub-lattice filter equals scipy's full-resolution convolve1d exactly,
    tiny images (pads wider than the lattice) included: Menon's ties depend on it."""
    image = random_images((2, *size), seed=1)
    padded = lattice.pad(lattice.split(torch.from_numpy(image)), "mirror")
    for horizontal, axis in ((True, 2), (False, 1)):
        expected = ndi.convolve1d(image, weights, axis=axis, mode="mirror")
        for row, col in lattice.SITES:
            result = lattice.filter1d(padded, (row, col), weights, horizontal).numpy()
            np.testing.assert_array_equal(result, expected[:, row::2, col::2])


def test_lattice_filter1d_refuses_asymmetric_taps():
    padded = lattice.pad(lattice.split(torch.rand(1, 4, 4, dtype=torch.float64)), "mirror")
    with pytest.raises(ValueError, match="odd symmetric filter"):
        lattice.filter1d(padded, (0, 0), (0.1, 0.2, 0.7), True)


@pytest.mark.parametrize(
    "kernel", [menon2007.DECISION_WINDOW, menon2007.DECISION_WINDOW_T], ids=["window", "transposed"]
)
def test_lattice_convolve_sparse_bitwise_equal_scipy(kernel):
    image = random_images((2, 10, 12), seed=2)
    padded = lattice.pad(lattice.split(torch.from_numpy(image)), "constant")
    expected = ndi.convolve(image, np.array(kernel)[None], mode="constant")
    for row, col in lattice.SITES:
        result = lattice.convolve_sparse(padded, (row, col), kernel).numpy()
        np.testing.assert_array_equal(result, expected[:, row::2, col::2])


def test_lattice_split_merge_round_trip():
    image = torch.rand(3, 6, 8, dtype=torch.float64)
    assert torch.equal(lattice.merge(lattice.split(image)), image)


def test_lattice_split_casts_and_pads_with_zeros_in_one_copy():
    image = torch.rand(3, 6, 8, dtype=torch.float64)
    padded = lattice.split(image, torch.float32, zeros=1)
    expected = lattice.pad(lattice.split(image.float()), "constant")
    for site in lattice.SITES:
        assert padded[site].dtype == torch.float32 and torch.equal(padded[site], expected[site])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lattice_assemble_interleaved_writes_equal_strided_writes(dtype):
    """Without autograd the two sub-lattices of a row are written together (as a complex number's two
    parts); values are copied, not computed, so both ways give the same bits."""
    fields = [
        {site: torch.rand(2, 3, 4, dtype=dtype) for site in lattice.SITES},
        {
            (0, 0): torch.rand(2, 3, 4, dtype=dtype),
            (0, 1): None,
            (1, 0): None,
            (1, 1): torch.rand(2, 3, 4, dtype=dtype),
        },
    ]
    interleaved = lattice.assemble(fields)
    recorded = [
        {site: None if p is None else p.clone().requires_grad_() for site, p in f.items()} for f in fields
    ]
    strided = lattice.assemble(recorded)
    assert strided.requires_grad and torch.equal(interleaved, strided.detach())
    assert torch.equal(interleaved[:, 1, 0::2, 1::2], torch.zeros(2, 3, 4, dtype=dtype))


# -- dense 2-D filters ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", SCIPY_MODES)
@pytest.mark.parametrize("kernel_shape", [(3, 3), (5, 5), (1, 3), (5, 3)])
def test_correlate2d_matches_scipy(mode, kernel_shape):
    images = random_images((2, 3, 10, 12), seed=3)
    kernel = random_images(kernel_shape, seed=4) - 0.5
    x, k = torch.from_numpy(images), torch.from_numpy(kernel)
    correlated = filters.correlate2d(x, k, mode).numpy()
    for b in range(2):
        for c in range(3):
            expected = ndi.correlate(images[b, c], kernel, mode=mode)
            np.testing.assert_allclose(correlated[b, c], expected, rtol=0, atol=FLOAT64_ATOL)


def test_correlate2d_one_to_many_and_per_channel_kernels():
    """(K, kh, kw) kernels: C = 1 gives K filtered copies, C = K one kernel per channel."""
    images = random_images((2, 1, 6, 8), seed=5)
    kernels = random_images((4, 3, 3), seed=6)
    out = filters.correlate2d(torch.from_numpy(images), torch.from_numpy(kernels)).numpy()
    assert out.shape == (2, 4, 6, 8)
    for b in range(2):
        for k in range(4):
            np.testing.assert_allclose(
                out[b, k], ndi.correlate(images[b, 0], kernels[k]), rtol=0, atol=FLOAT64_ATOL
            )
    images = random_images((3, 4, 6, 8), seed=7)
    out = filters.correlate2d(torch.from_numpy(images), torch.from_numpy(kernels)).numpy()
    for b in range(3):
        for k in range(4):
            np.testing.assert_allclose(
                out[b, k], ndi.correlate(images[b, k], kernels[k]), rtol=0, atol=FLOAT64_ATOL
            )


@pytest.mark.parametrize("shape", [(2, 3), (4, 3, 3)])
def test_correlate2d_bad_kernel_raises(shape):
    with pytest.raises(InputError, match=r"Kernel must have odd size.*got shape"):
        filters.correlate2d(torch.rand(1, 3, 6, 6), torch.rand(*shape))


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.7])
def test_gaussian_kernel_and_filter_match_scipy(sigma):
    radius = int(4.0 * sigma + 0.5)
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    np.testing.assert_allclose(  # to the last bit or two: the normalising sums add in different orders
        filters.gaussian_kernel1d(sigma).numpy(),
        ndi.gaussian_filter1d(impulse, sigma, mode="constant"),
        rtol=1e-15,
        atol=0,
    )
    images = random_images((2, 1, 9, 14), seed=8)
    out = filters.gaussian_filter2d(torch.from_numpy(images), sigma).numpy()
    for b in range(2):
        np.testing.assert_allclose(
            out[b, 0], ndi.gaussian_filter(images[b, 0], sigma), rtol=0, atol=FLOAT64_ATOL
        )


def test_median_filter3x3_equals_scipy_with_ties():
    """Quantised values (many ties) and distinct values: the median is one of the inputs, so bitwise."""
    rng = np.random.default_rng(9)
    for images in (np.round(rng.random((2, 3, 7, 9)) * 4) / 4, rng.random((2, 3, 7, 9))):
        for mode in SCIPY_MODES:
            out = filters.median_filter3x3(torch.from_numpy(images), mode).numpy()
            np.testing.assert_array_equal(out, ndi.median_filter(images, size=3, axes=(2, 3), mode=mode))


def test_median_filter3x3_in_place_chunks_equal_the_autograd_path(monkeypatch):
    """Without autograd on CPU the batch runs in place, a few images at a time (two per chunk here,
    so five leave a short last chunk); with autograd, one functional pass. Both equal scipy bitwise."""
    monkeypatch.setattr(filters, "_MEDIAN_CPU_PIXELS", 2 * 9 * 12)
    images = np.round(np.random.default_rng(11).random((5, 1, 9, 12)) * 8) / 8
    expected = ndi.median_filter(images, size=3, axes=(2, 3), mode="reflect")
    x = torch.from_numpy(images)
    np.testing.assert_array_equal(filters.median_filter3x3(x).numpy(), expected)
    x.requires_grad_(True)
    out = filters.median_filter3x3(x)
    np.testing.assert_array_equal(out.detach().numpy(), expected)
    out.sum().backward()
    # Each output picks one input: the gradient counts how often each pixel is picked.
    assert x.grad.sum().item() == pytest.approx(out.numel())


# -- the paper's luma filters (Appendix A.1.1), float64 and float32 ------------------------------


def luma_images(photo_images):
    """Luma planes of the photograph crops plus a random one, rounded to float32 values."""
    images = [rgb2yuv(rgb)[..., 0] for rgb in photo_images.values()]
    images.append(random_images((48, 64), seed=10))
    return [image.astype(np.float32).astype(np.float64) for image in images]


LUMA_FILTERS = {
    "sharpen_filter": (
        sharpen_filter,
        lambda y: scipy_convolve2d(y, np.array(SHARPEN_KERNEL), "same", boundary="fill", fillvalue=0),
    ),
    "unsharp_mask": (
        unsharp_mask,
        lambda y: skimage_unsharp_mask(y, radius=1, amount=1, preserve_range=True),
    ),
    "gaussian_denoise": (gaussian_denoise, lambda y: ndi.gaussian_filter(y, 0.5)),
    "median_denoise": (median_denoise, lambda y: ndi.median_filter(y, size=3)),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(LUMA_FILTERS))
def test_luma_filters_match_reference(name, dtype, photo_images):
    """Known values, borders included: float64 to 1e-12, float32 to 1e-6."""
    torch_fn, reference_fn = LUMA_FILTERS[name]
    atol = FLOAT64_ATOL if dtype == torch.float64 else FLOAT32_ATOL
    for luma in luma_images(photo_images):
        out = torch_fn(as_batch(luma, dtype))
        assert out.shape == (1, 1, *luma.shape) and out.dtype == dtype
        np.testing.assert_allclose(out[0, 0].double().numpy(), reference_fn(luma), rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", ["sharpen_filter", "unsharp_mask", "gaussian_denoise"])
def test_luma_filters_without_autograd_equal_their_convolution(name, dtype, photo_images):
    """On CPU without autograd the fixed luma filters are shifted multiply-adds (separable where the
    filter is); recorded by autograd they are the convolution. Two code paths: to 1e-12 / 1e-6."""
    torch_fn, _ = LUMA_FILTERS[name]
    atol = FLOAT64_ATOL if dtype == torch.float64 else FLOAT32_ATOL
    for luma in luma_images(photo_images):
        image = as_batch(luma, dtype)
        recorded = torch_fn(image.clone().requires_grad_())
        assert recorded.requires_grad
        torch.testing.assert_close(torch_fn(image), recorded.detach(), rtol=0, atol=atol)


@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest", "constant"])
def test_correlate_separable_equals_correlate2d_with_the_outer_kernel(mode):
    images = torch.from_numpy(random_images((2, 3, 9, 11), seed=6))
    rows, columns = [0.1, -0.3, 0.5], [0.25, 0.5, -0.125, 0.5, 0.25]
    kernel = torch.outer(torch.tensor(columns, dtype=torch.float64), torch.tensor(rows, dtype=torch.float64))
    expected = filters.correlate2d(images, kernel, mode)
    torch.testing.assert_close(
        filters.correlate_separable(images, rows, columns, mode), expected, rtol=0, atol=1e-12
    )


def test_luma_filters_batched_equal_one_by_one():
    luma = torch.rand(3, 1, 10, 12, dtype=torch.float64)
    for torch_fn, _ in LUMA_FILTERS.values():
        batched = torch_fn(luma)
        for b in range(3):
            torch.testing.assert_close(batched[b : b + 1], torch_fn(luma[b : b + 1]), rtol=0, atol=1e-15)


def test_default_kernels_equal_explicit_kernels():
    luma = torch.rand(2, 1, 8, 10, dtype=torch.float64)
    torch.testing.assert_close(
        sharpen_filter(luma), sharpen_filter(luma, torch.tensor(SHARPEN_KERNEL, dtype=torch.float64))
    )
    torch.testing.assert_close(gaussian_denoise(luma), gaussian_denoise(luma, gaussian_denoise_kernel()))
    np.testing.assert_allclose(
        gaussian_denoise_kernel(dtype=torch.float64).sum().item(), 1.0, rtol=0, atol=1e-15
    )
    assert gaussian_denoise_kernel().shape == (5, 5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_rgb_yuv_match_skimage(dtype, photo_images):
    atol = FLOAT64_ATOL if dtype == torch.float64 else FLOAT32_ATOL
    images = [*photo_images.values(), random_images((48, 64, 3), seed=11) * 2 - 0.5]
    for rgb in images:
        rgb = rgb.astype(np.float32).astype(np.float64)
        batch = torch.from_numpy(rgb.transpose(2, 0, 1))[None].to(dtype)
        yuv = rgb_to_yuv(batch)
        np.testing.assert_allclose(
            yuv[0].double().numpy().transpose(1, 2, 0), rgb2yuv(rgb), rtol=0, atol=atol
        )
        yuv_reference = rgb2yuv(rgb).astype(np.float32).astype(np.float64)
        back = yuv_to_rgb(torch.from_numpy(yuv_reference.transpose(2, 0, 1))[None].to(dtype))
        np.testing.assert_allclose(
            back[0].double().numpy().transpose(1, 2, 0), yuv2rgb(yuv_reference), rtol=0, atol=atol
        )
        np.testing.assert_allclose(yuv_to_rgb(yuv).double(), batch.double(), rtol=0, atol=atol)


# -- differentiability of the filters --------------------------------------------------------------


@pytest.mark.parametrize("mode", SCIPY_MODES)
def test_correlate2d_and_pad2d_gradcheck(mode):
    x = torch.rand(1, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    kernel = torch.rand(3, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x, k: filters.correlate2d(x, k, mode), (x, kernel))
    assert gradcheck(lambda x: filters.pad2d(x, (3, 1, 0, 7), mode), (x,))
