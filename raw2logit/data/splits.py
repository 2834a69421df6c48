"""Seeded k-fold cross-validation splits (scikit-learn's splitters).

Classification folds are stratified by class; images that share a source capture (tiles) stay
on one side of every split (grouped). Segmentation folds are grouped by capture.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold

from raw2logit.data.dataset import RawDataset
from raw2logit.errors import InputError


def kfold_splits(dataset: RawDataset, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, test indices) for each of ``folds`` folds, deterministic in ``seed``.

    Raises:
        InputError: fewer than 2 folds, or more folds than the data supports.
    """
    if not isinstance(folds, int) or folds < 2:
        raise InputError(f"folds must be an integer of at least 2 (k-fold cross-validation); got {folds!r}.")
    groups = np.asarray(dataset.groups)
    grouped = len(np.unique(groups)) < len(groups)
    if dataset.task == "classification":
        labels = np.asarray(dataset.targets)
        if len(np.unique(labels)) < 2:
            raise InputError(f"{dataset.name} has a single class ({dataset.classes[int(labels[0])]!r}) among its "
                             f"{len(labels)} images; a classifier needs at least two classes (check the labels).")  # fmt: skip
        smallest = np.bincount(labels).min(initial=len(labels)) if len(labels) else 0
        if grouped:
            unique = len(np.unique(groups))
            if folds > unique:
                raise InputError(
                    f"folds={folds} is more than the {unique} source captures of {dataset.name} "
                    "(images of one capture stay in one fold)."
                )
            splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        else:
            if folds > smallest:
                raise InputError(
                    f"folds={folds} is more than the {smallest} images of the smallest class in {dataset.name}."
                )
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        split = splitter.split(np.zeros(len(labels)), labels, groups if grouped else None)
    else:
        unique = len(np.unique(groups))
        if folds > unique:
            raise InputError(
                f"folds={folds} is more than the {unique} source captures of {dataset.name} "
                "(tiles of one capture stay in one fold)."
            )
        split = GroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(
            np.zeros(len(groups)), groups=groups
        )
    return [(np.sort(train), np.sort(test)) for train, test in split]
