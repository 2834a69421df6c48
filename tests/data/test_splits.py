"""``kfold_splits``: stratified classification folds, grouped folds for tiles, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from raw2logit.data.dataset import RawDataset
from raw2logit.data.drone import load_drone
from raw2logit.data.splits import kfold_splits
from raw2logit.errors import InputError
from raw2logit.isp import CameraParams

CLASS_SIZES = (30, 18, 12, 7)  # 67 images, uneven classes


def dataset(task="classification", labels=None, groups=None, size=None) -> RawDataset:
    """A RawDataset of 2x2 zero mosaics with the given labels (or masks) and groups."""
    count = len(labels) if labels is not None else len(groups)
    targets = (
        np.asarray(labels, dtype=np.int64) if task == "classification" else np.zeros((count, 2, 2), np.uint8)
    )
    return RawDataset(
        raw=np.zeros((count, 2, 2), dtype=np.uint16),
        white_level=65535.0,
        targets=targets,
        task=task,
        camera=CameraParams(),
        names=[f"image_{i}" for i in range(count)],
        classes=[f"class_{c}" for c in range(int(targets.max()) + 1)]
        if task == "classification"
        else ["car"],
        groups=None if groups is None else np.asarray(groups, dtype=np.int64),
        name="toy",
    )


def shuffled_labels(sizes=CLASS_SIZES, seed=0) -> np.ndarray:
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return np.random.default_rng(seed).permutation(labels)


def tile_groups(seed=0, captures=12) -> np.ndarray:
    """Capture id per tile: 1 to 8 tiles per capture, tiles of a capture not adjacent."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.repeat(np.arange(captures), rng.integers(1, 9, size=captures)))


def assert_partition(splits, count, folds):
    assert len(splits) == folds
    tests = [test for _, test in splits]
    assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(count))  # disjoint, covering
    for train, test in splits:
        assert np.intersect1d(train, test).size == 0
        assert np.array_equal(np.union1d(train, test), np.arange(count))
        assert train.dtype.kind == "i" and np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)


def as_lists(splits):
    return [(train.tolist(), test.tolist()) for train, test in splits]


# --- classification ----------------------------------------------------------------------------


@pytest.mark.parametrize("folds", [2, 3, 5, 7])
def test_classification_folds_are_stratified_partitions(folds):
    labels = shuffled_labels()
    splits = kfold_splits(dataset(labels=labels), folds, seed=0)
    assert_partition(splits, len(labels), folds)
    for _, test in splits:
        counts = np.bincount(labels[test], minlength=len(CLASS_SIZES))
        np.testing.assert_array_less(np.abs(counts - np.array(CLASS_SIZES) / folds), 1.0 + 1e-9)


def test_five_folds_train_on_eighty_percent():
    labels = shuffled_labels()
    for train, _ in kfold_splits(dataset(labels=labels), 5, seed=3):
        assert abs(len(train) / len(labels) - 0.8) < 0.02


def test_splits_are_deterministic_in_the_seed():
    data = dataset(labels=shuffled_labels())
    assert as_lists(kfold_splits(data, 5, seed=1)) == as_lists(kfold_splits(data, 5, seed=1))
    assert as_lists(kfold_splits(data, 5, seed=1)) != as_lists(kfold_splits(data, 5, seed=2))
    grouped = dataset(task="segmentation", groups=tile_groups())
    assert as_lists(kfold_splits(grouped, 4, seed=1)) == as_lists(kfold_splits(grouped, 4, seed=1))
    assert as_lists(kfold_splits(grouped, 4, seed=1)) != as_lists(kfold_splits(grouped, 4, seed=2))


def test_folds_do_not_depend_on_the_image_contents():
    labels = shuffled_labels()
    plain = dataset(labels=labels)
    noisy = dataset(labels=labels)
    noisy.raw = np.random.default_rng(0).integers(0, 65535, size=noisy.raw.shape, dtype=np.uint16)
    assert as_lists(kfold_splits(plain, 5, seed=0)) == as_lists(kfold_splits(noisy, 5, seed=0))


# --- grouped data --------------------------------------------------------------------------------


def assert_groups_on_one_side(splits, groups):
    for train, test in splits:
        assert np.intersect1d(groups[train], groups[test]).size == 0


@pytest.mark.parametrize("folds", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_segmentation_folds_keep_captures_together(folds, seed):
    groups = tile_groups(seed)
    splits = kfold_splits(dataset(task="segmentation", groups=groups), folds, seed=seed)
    assert_partition(splits, len(groups), folds)
    assert_groups_on_one_side(splits, groups)
    assert all(len(test) > 0 for _, test in splits)


def test_grouped_classification_keeps_groups_together_and_stratifies():
    # 20 groups of 3 images, each group one class: 10, 6 and 4 groups of classes 0, 1 and 2.
    group_class = np.repeat([0, 1, 2], [10, 6, 4])
    groups = np.random.default_rng(0).permutation(np.repeat(np.arange(20), 3))
    labels = group_class[groups]
    splits = kfold_splits(dataset(labels=labels, groups=groups), 4, seed=0)
    assert_partition(splits, len(labels), 4)
    assert_groups_on_one_side(splits, groups)
    for _, test in splits:
        groups_per_class = np.bincount(group_class[np.unique(groups[test])], minlength=3)
        np.testing.assert_array_less(np.abs(groups_per_class - np.array([10, 6, 4]) / 4), 1.0 + 1e-9)


def test_unique_groups_count_as_ungrouped():
    labels = shuffled_labels()
    plain = dataset(labels=labels)
    explicit = dataset(labels=labels, groups=np.arange(len(labels))[::-1])
    assert as_lists(kfold_splits(plain, 5, seed=0)) == as_lists(kfold_splits(explicit, 5, seed=0))


def test_tiles_of_a_loaded_drone_dataset_stay_with_their_capture(sim_drone_root):
    tiles = load_drone(sim_drone_root, tile_size=32)
    assert len(np.unique(tiles.groups)) == 3 < len(tiles)
    splits = kfold_splits(tiles, 3, seed=0)
    assert_partition(splits, len(tiles), 3)
    assert_groups_on_one_side(splits, tiles.groups)
    assert sorted(len(np.unique(tiles.groups[test])) for _, test in splits) == [1, 1, 1]


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("folds", [1, 0, -3, 2.5, "5", None])
def test_fewer_than_two_or_non_integer_folds_are_refused(folds):
    with pytest.raises(InputError, match="folds"):
        kfold_splits(dataset(labels=shuffled_labels()), folds, seed=0)


def test_more_folds_than_the_smallest_class_are_refused():
    labels = shuffled_labels()
    assert len(kfold_splits(dataset(labels=labels), 7, seed=0)) == 7  # smallest class: 7 images
    with pytest.raises(InputError, match=r"folds=8.*7 images of the smallest class.*toy"):
        kfold_splits(dataset(labels=labels), 8, seed=0)


def test_more_folds_than_captures_are_refused_for_segmentation():
    groups = tile_groups(captures=4)
    assert len(kfold_splits(dataset(task="segmentation", groups=groups), 4, seed=0)) == 4
    with pytest.raises(InputError, match=r"folds=5.*4 source captures"):
        kfold_splits(dataset(task="segmentation", groups=groups), 5, seed=0)


def test_more_folds_than_groups_are_refused_for_grouped_classification():
    groups = np.repeat(np.arange(3), 4)
    labels = np.tile([0, 1], 6)
    assert len(kfold_splits(dataset(labels=labels, groups=groups), 3, seed=0)) == 3
    with pytest.raises(InputError, match="folds=4"):
        kfold_splits(dataset(labels=labels, groups=groups), 4, seed=0)
