"""Shared fixtures of the raw-dataset tests: small simulated datasets and hand-written files.

Simulated data is generated once per session (it is deterministic); loaders that write a cache
beside the data (the drone tiler) get a private copy per test.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import tifffile

from raw2logit.data.files import write_mask
from raw2logit.data.layout import LABELS_FILE, intensity_folder
from raw2logit.data.simulator import simulate_drone, simulate_microscopy

# 6 simulated classes x 6 images: every class survives the "more than 4 images" filter.
SIM_MICROSCOPY = {"num_images": 36, "size": 32, "intensities": (0.01, 0.1, 1.0), "seed": 5}
# Three 512 x 768 captures rendered at scale 0.25: 128 x 192 pixels of 24 cm, cars ~19 px long.
SIM_DRONE = {"num_captures": 3, "height": 512, "width": 768, "scale": 0.25, "seed": 2}
OLD_TIME_NS = 1_000_000_000 * 10**9  # 2001: any rewrite afterwards moves a file's mtime


def _file_times(folder) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()
    }


def _age_files(folder) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(OLD_TIME_NS, OLD_TIME_NS))


@pytest.fixture(scope="session")
def file_times():
    """``file_times(folder)`` -> relative path -> mtime_ns of every file under ``folder``."""
    return _file_times


@pytest.fixture(scope="session")
def age_files():
    """``age_files(folder)`` sets every file under ``folder`` to an old mtime (``OLD_TIME_NS``), so
    that any rewrite afterwards is unmistakable even on a coarse-grained clock."""
    return _age_files


@pytest.fixture(scope="session")
def sim_microscopy_root(tmp_path_factory):
    """Dataset root holding ``microscopy/`` simulated at three intensities (read-only for tests)."""
    root = tmp_path_factory.mktemp("sim_microscopy")
    simulate_microscopy(root, **SIM_MICROSCOPY)
    return root


@pytest.fixture(scope="session")
def _sim_drone_source(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim_drone")
    simulate_drone(root, **SIM_DRONE)
    return root


@pytest.fixture
def sim_drone_root(_sim_drone_source, tmp_path):
    """A private copy of a dataset root holding simulated ``drone/`` captures (the tiler writes there)."""
    root = tmp_path / "sim_drone"
    shutil.copytree(_sim_drone_source, root)
    return root


@pytest.fixture
def microscopy_folder(tmp_path):
    """Factory writing a miniature Raw-Microscopy layout under ``tmp_path/root``.

    ``microscopy_folder(labels, intensities=(1.0,), shape=(8, 8))`` writes the labels file from
    ``labels`` (list of (stem, code)) and one 16-bit TIFF per stem and intensity whose counts are
    ``1000 * (index + 1) + round(100 * intensity)`` everywhere (index: position in ``labels``).
    Returns ``(root, {intensity: image folder})``.
    """

    def make(labels, intensities=(1.0,), shape=(8, 8)):
        base = tmp_path / "root" / "microscopy"
        (base / "labels").mkdir(parents=True)
        (base / "labels" / LABELS_FILE).write_text("".join(f"{stem} {code}\n" for stem, code in labels))
        folders = {}
        for intensity in intensities:
            folder = base / "images" / intensity_folder(intensity)
            folder.mkdir(parents=True)
            for index, (stem, _) in enumerate(labels):
                value = 1000 * (index + 1) + round(100 * intensity)
                tifffile.imwrite(folder / f"{stem}.tiff", np.full(shape, value, dtype=np.uint16))
            folders[intensity] = folder
        return tmp_path / "root", folders

    return make


@pytest.fixture
def drone_folder(tmp_path):
    """Factory writing a miniature Raw-Drone layout under ``tmp_path/root``.

    ``drone_folder({stem: (raw uint16 (H, W), mask (H, W))}, intensity=1.0)`` writes
    ``images_full/raw_scaleXXX/<stem>.tif`` and ``masks_full/<stem>.png``; returns the ``drone`` folder.
    """

    def make(captures, intensity=1.0):
        base = tmp_path / "root" / "drone"
        images = base / "images_full" / intensity_folder(intensity)
        images.mkdir(parents=True, exist_ok=True)
        (base / "masks_full").mkdir(exist_ok=True)
        for stem, (raw, mask) in captures.items():
            tifffile.imwrite(images / f"{stem}.tif", raw)
            write_mask(base / "masks_full" / f"{stem}.png", mask)
        return base

    return make
