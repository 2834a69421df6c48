"""Output buffers backed by huge pages where Linux offers them on request."""

from __future__ import annotations

import pytest
import torch

from raw2logit.isp import buffers


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 256, 256), (4, 1, 512, 513)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_output_is_an_ordinary_contiguous_tensor(shape, dtype):
    out = buffers.empty_output(shape, dtype, "cpu")
    assert out.shape == shape and out.dtype == dtype and out.is_contiguous()
    out.fill_(1.5)
    assert float(out.sum()) == 1.5 * out.numel()


def test_large_buffers_are_aligned_to_huge_pages_where_advised(monkeypatch):
    """With ``madvise`` at hand a large buffer starts on a 2 MiB boundary (so huge pages cover it whole)
    and the advice spans it; small buffers and systems without the advice get ``torch.empty``."""
    calls = []
    monkeypatch.setattr(
        buffers, "_madvise", lambda: lambda start, length, advice: calls.append((start, length))
    )
    out = buffers.empty_output((3, 1000, 1000), torch.float32, "cpu")
    assert out.data_ptr() % (2 * 2**20) == 0
    ((start, length),) = calls
    assert start == out.data_ptr() and length >= out.numel() * 4 and length % (2 * 2**20) == 0
    assert buffers.empty_output((10, 10), torch.float32, "cpu").storage_offset() == 0 and len(calls) == 1
    monkeypatch.setattr(buffers, "_madvise", lambda: None)
    assert buffers.empty_output((3, 1000, 1000), torch.float32, "cpu").storage_offset() == 0
