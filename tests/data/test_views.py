"""The view cache's files: written image by image with positional writes, read back as ``.npy``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raw2logit.data.views import _quantise, open_view_file
from raw2logit.errors import NonFiniteError


def test_view_file_is_a_npy_file_written_in_any_order(tmp_path):
    """Runs of consecutive images in one write, others one by one, in any order: the file numpy reads
    back holds each image where it was written."""
    shape = (7, 3, 4, 6)
    expected = np.random.default_rng(0).integers(0, 65536, shape, dtype=np.uint16)
    views = open_view_file(tmp_path / "views.npy", shape)
    for indices in ([0, 1, 2], [6, 4], [3], [5]):
        views[indices] = expected[indices]
    views.close()
    assert np.array_equal(np.load(tmp_path / "views.npy"), expected)
    assert np.array_equal(np.load(tmp_path / "views.npy", mmap_mode="r")[4], expected[4])


def test_quantise_rounds_to_16_bits_and_refuses_non_finite_views():
    views = torch.tensor([-0.5, 0.0, 0.5, 1.0, 2.0, 1 / 65535 * 0.49, 1 / 65535 * 0.51]).view(1, 1, 1, 7)
    assert _quantise(views.clone(), "x").ravel().tolist() == [0, 0, 32768, 65535, 65535, 0, 1]
    for bad in (float("nan"), float("inf"), -float("inf")):
        broken = torch.zeros(2, 3, 4, 4)
        broken[1, 2, 3, 0] = bad
        with pytest.raises(NonFiniteError, match="non-finite views"):
            _quantise(broken, "x")
