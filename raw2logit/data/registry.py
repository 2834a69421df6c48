"""Dataset builders named by the ``dataset`` config group (each config's ``_target_``).

Each returns a ``RawDataset``; the simulated ones generate their data first (once, cached). A file
lock beside the data serialises generation and tiling when parallel jobs start together.
"""

from __future__ import annotations

from pathlib import Path

from raw2logit.data.dataset import RawDataset
from raw2logit.data.drone import load_drone
from raw2logit.data.microscopy import load_microscopy
from raw2logit.data.simulator import scaled_size, simulate_drone, simulate_microscopy
from raw2logit.locks import file_lock


def _with(dataset: RawDataset, name: str, normalisation) -> RawDataset:
    dataset.name = name
    dataset.normalisation = normalisation if normalisation in (None, "auto") else dict(normalisation)
    return dataset


def _lock(root) -> file_lock:
    return file_lock(Path(root).expanduser() / ".raw2logit.lock")


def sim_microscopy(root, intensity=1.0, num_images=240, size=64, seed=0, pattern="RGGB", on_bad_file="raise",
                   name="sim_microscopy", normalisation=None) -> RawDataset:  # fmt: skip
    """Simulated leukocyte classification (see ``simulator.simulate_microscopy``)."""
    with _lock(root):
        simulate_microscopy(root, num_images=num_images, size=size, intensities=(intensity,), seed=seed,
                            pattern=pattern)  # fmt: skip
        # Simulated classes are balanced by construction: keep them all, even in tiny test sets.
        return _with(load_microscopy(root, intensity, on_bad_file, min_class_size=1), name, normalisation)


def sim_drone(root, intensity=1.0, num_images=6, height=1024, width=1536, scale=1.0, gsd_m=0.06, car_length_m=4.5,
              tile_size=256, seed=0, pattern="RGGB", on_bad_file="raise", name="sim_drone",
              normalisation=None) -> RawDataset:  # fmt: skip
    """Simulated car segmentation from tiled aerial captures (see ``simulator.simulate_drone``).

    ``height``, ``width`` and ``tile_size`` are sensor pixels at scale 1 (Raw-Drone's); the captures
    and the tiles are rendered and cut at ``scale`` of them.
    """
    with _lock(root):
        simulate_drone(root, num_captures=num_images, height=height, width=width, scale=scale, gsd_m=gsd_m,
                       car_length_m=car_length_m, intensities=(intensity,), seed=seed, pattern=pattern)  # fmt: skip
        dataset = load_drone(root, intensity, scaled_size(tile_size, scale), on_bad_file)
        return _with(dataset, name, normalisation)


def microscopy(root, intensity=1.0, on_bad_file="raise", name="microscopy", normalisation=None) -> RawDataset:
    """Raw-Microscopy from a local copy (``make data``)."""
    return _with(load_microscopy(root, intensity, on_bad_file), name, normalisation)


def drone(
    root, intensity=1.0, tile_size=256, on_bad_file="raise", name="drone", normalisation=None
) -> RawDataset:
    """Raw-Drone from a local copy (``make data``), tiled once and cached beside the data."""
    with _lock(root):
        return _with(load_drone(root, intensity, tile_size, on_bad_file), name, normalisation)


def dng_folder(root, labels_csv=None, masks_dir=None, on_bad_file="raise", name="dng_folder",
               normalisation=None) -> RawDataset:  # fmt: skip
    """A folder of the user's own DNG raws (camera parameters from each file's metadata)."""
    from raw2logit.data.dng_folder import load_dng_folder

    return _with(load_dng_folder(root, labels_csv, masks_dir, on_bad_file, name), name, normalisation)
