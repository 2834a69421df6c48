"""The view cache's files: written image by image with positional writes, read back as ``.npy``, and
read batch by batch with positional reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from raw2logit.data.views import _SCALE, ViewArray, _quantise, open_view_file
from raw2logit.errors import InputError, NonFiniteError


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


def test_view_array_reads_any_indices_as_numpy_indexes_the_file(tmp_path):
    """Sorted runs, shuffled and repeated indices, negative ones, a scalar and an empty batch read what
    numpy's indexing of the file gives; an index out of range, a file of another kind or one cut short
    is refused in one sentence."""
    shape = (9, 3, 4, 6)
    stored = np.random.default_rng(1).integers(0, 65536, shape, dtype=np.uint16)
    np.save(tmp_path / "views.npy", stored)
    views = ViewArray(tmp_path / "views.npy")
    assert len(views) == 9
    for index in ([0, 1, 2, 3], [8, 2, 2, 5, 6], [-1, 0], np.array([4, 5, 7]), 3, []):
        expected = torch.from_numpy(
            stored[np.asarray(index, dtype=np.int64)].astype(np.float32) / np.float32(_SCALE)
        )
        assert torch.equal(views[index], expected), index
    with pytest.raises(IndexError, match="out of range"):
        views[[2, 9]]
    np.save(tmp_path / "floats.npy", stored.astype(np.float32))
    (tmp_path / "text.npy").write_text("not a .npy file")
    for other in ("floats.npy", "text.npy"):
        with pytest.raises(InputError, match="is not a view file"):
            ViewArray(tmp_path / other)
    data = (tmp_path / "views.npy").read_bytes()
    (tmp_path / "views.npy").write_bytes(data[: len(data) - 10])
    with pytest.raises(InputError, match="ends before its last view"):
        ViewArray(tmp_path / "views.npy")[[7, 8]]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssFile from Linux's /proc")
def test_reading_views_keeps_no_file_pages_in_the_resident_set(tmp_path):
    """Every view of a 96 MB view file read batch by batch: the process's file-backed resident memory
    grows by far less than the file (through a memory map it grew by all of it)."""

    def resident_file_pages() -> int:
        line = next(
            line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("RssFile")
        )
        return int(line.split()[1]) * 1024

    shape = (128, 3, 256, 512)  # 96 MiB of 16-bit views
    views = open_view_file(tmp_path / "views.npy", shape)
    for start in range(0, 128, 32):
        views[np.arange(start, start + 32)] = np.full((32, *shape[1:]), start, dtype=np.uint16)
    views.close()
    before = resident_file_pages()
    array = ViewArray(tmp_path / "views.npy")
    total = sum(float(array[np.arange(start, start + 16)][:, 0, 0, 0].sum()) for start in range(0, 128, 16))
    grown = resident_file_pages() - before
    assert total == pytest.approx(sum(image // 32 * 32 for image in range(128)) / _SCALE)
    assert grown < 16 * 2**20, f"reading views kept {grown / 2**20:.0f} MiB of file pages resident"
