"""``RawDataset``: targets are checked once, when the dataset is built (the metrics do not check them)."""

from __future__ import annotations

import numpy as np
import pytest

from raw2logit.data.dataset import RawDataset
from raw2logit.isp import CameraParams


def build(task: str, targets, classes) -> RawDataset:
    count = len(targets)
    return RawDataset(raw=np.zeros((count, 4, 4), np.uint16), white_level=65535.0, targets=np.asarray(targets),
                      task=task, camera=CameraParams(), names=[f"image_{i}" for i in range(count)],
                      classes=classes)  # fmt: skip


def test_valid_targets_are_accepted():
    assert len(build("classification", np.array([0, 2, 1]), ["a", "b", "c"])) == 3
    assert len(build("segmentation", np.zeros((2, 4, 4), np.uint8) | np.eye(4, dtype=np.uint8), ["car"])) == 2
    assert len(build("segmentation", np.ones((1, 4, 4), bool), ["car"])) == 1


@pytest.mark.parametrize(
    "task, targets, classes, message",
    [
        ("classification", np.array([0, 3]), ["a", "b", "c"], r"integers in 0\.\.2 .*int64 values in 0\.\.3"),
        ("classification", np.array([-1, 0]), ["a", "b"], r"integers in 0\.\.1"),
        ("classification", np.array([0.0, 1.0]), ["a", "b"], r"float64"),
        (
            "segmentation",
            np.full((1, 4, 4), 255, np.uint8),
            ["car"],
            r"0 \(background\) or 1 .*0\.\.255|255\.\.255",
        ),
        ("segmentation", np.full((1, 4, 4), 0.5), ["car"], r"float64 values"),
    ],
)
def test_out_of_range_targets_are_refused_in_one_sentence(task, targets, classes, message):
    with pytest.raises(ValueError, match=message):
        build(task, targets, classes)
