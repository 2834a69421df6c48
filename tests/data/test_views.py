"""The view cache's files: written image by image with positional writes, read back as ``.npy``."""

from __future__ import annotations

import numpy as np

from raw2logit.data.views import open_view_file


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
