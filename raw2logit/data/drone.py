"""Raw-Drone (Zenodo 10.5281/zenodo.5235536): car segmentation from full-size raws, tiled.

Layout under the dataset root (the published one; the simulator writes the same)::

    drone/images_full/raw_scale001 ... raw_scale100/<capture>.dng (or 16-bit .tif)
    drone/masks_full/<capture>.png        (a mask's stem equals or starts with its capture's stem)
    drone/camera.json                     optional: CameraParams overriding the published ones

Full captures are cut into disjoint tile_size x tile_size tiles and the tiles holding at least
one car pixel are kept (548 for the published data at 256). Tiling runs once: the tiles are
cached beside the data, in the published tile layout (``images_tiles_<size>/raw_scaleXXX``,
``masks_tiles_<size>``), with a manifest naming their sources, and reused while those are unchanged.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from raw2logit.data.dataset import RawDataset
from raw2logit.data.files import BadFiles, read_mask, read_raw, write_json_atomic, write_mask, write_tiff
from raw2logit.data.layout import (
    DOI,
    DRONE_IMAGES,
    DRONE_MASK_SUFFIXES,
    DRONE_MASKS,
    DRONE_RAW_SUFFIXES,
    intensity_folder,
)
from raw2logit.data.microscopy import dataset_dir, load_camera
from raw2logit.errors import InputError
from raw2logit.isp.camera import CameraParams

CLASSES = ["background", "car"]


def _files(folder: Path, suffixes) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes) if folder.is_dir() else []


def pair_captures(image_folder: Path, mask_folder: Path, bad: BadFiles) -> list[tuple[Path, Path]]:
    """Match each full capture with its mask by file stem; unmatched files are bad files."""
    images = _files(image_folder, DRONE_RAW_SUFFIXES)
    masks = _files(mask_folder, DRONE_MASK_SUFFIXES)
    pairs, used = [], set()
    # A mask belongs to the capture with the longest stem that starts it ("cap1" must not take "cap10_mask").
    owner = {}
    for mask in masks:
        candidates = [image for image in images if mask.stem.startswith(image.stem)]
        if candidates:
            owner[mask] = max(candidates, key=lambda image: len(image.stem))
    for image in images:
        matches = sorted((m for m in masks if owner.get(m) == image), key=lambda m: m.stem != image.stem)
        if not matches:
            bad.report(image, f"has no mask in {mask_folder}")
            continue
        used.add(matches[0])
        pairs.append((image, matches[0]))
    for mask in masks:
        if mask not in used:
            bad.report(mask, f"is a mask without a capture in {image_folder}")
    return pairs


def tile_positions(height: int, width: int, tile: int) -> list[tuple[int, int]]:
    """Top-left corners of the disjoint tiles that fit, row by row."""
    return [(r, c) for r in range(0, height - tile + 1, tile) for c in range(0, width - tile + 1, tile)]


def _source_stamp(paths: list[Path]) -> list[list]:
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def build_tiles(base: Path, intensity: float, tile_size: int, on_bad_file: str) -> Path:
    """Tile the full captures of one intensity into the cache (once); return the tile image folder."""
    level = intensity_folder(intensity)
    image_dir = base / f"images_tiles_{tile_size}" / level
    mask_dir = base / f"masks_tiles_{tile_size}"
    manifest_path = image_dir / "manifest.json"
    bad = BadFiles(on_bad_file)
    if not (base / DRONE_IMAGES / level).is_dir():
        raise InputError(
            f"Expected the intensity folder {base / DRONE_IMAGES / level} for dataset.intensity={intensity}; "
            f"Raw-Drone comes from Zenodo (DOI {DOI})."
        )
    pairs = pair_captures(base / DRONE_IMAGES / level, base / DRONE_MASKS, bad)
    if not pairs:
        raise InputError(
            f"No capture with a mask found in {base / DRONE_IMAGES / level} and {base / DRONE_MASKS}; "
            f"Raw-Drone comes from Zenodo (DOI {DOI})."
        )
    stamp = {"tile_size": tile_size, "sources": _source_stamp([p for pair in pairs for p in pair])}
    if manifest_path.exists() and json.loads(manifest_path.read_text()).get("stamp") == stamp:
        return image_dir

    # Write into a temporary folder and move it in place: an interrupted tiling leaves no half cache.
    image_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=image_dir.parent, prefix=".tiling-"))
    mask_staging = staging / "masks"
    mask_staging.mkdir()
    tiles = []
    try:
        for image_path, mask_path in pairs:
            try:
                raw, mask = read_raw(image_path), read_mask(mask_path)
            except InputError as error:
                bad.report(image_path, str(error).removeprefix(f"{image_path} "))
                continue
            if raw.shape != mask.shape:
                bad.report(
                    mask_path, f"has shape {mask.shape} but its capture {image_path.name} has {raw.shape}"
                )
                continue
            for index, (row, col) in enumerate(tile_positions(*raw.shape, tile_size)):
                tile_mask = mask[row : row + tile_size, col : col + tile_size]
                if not tile_mask.any():
                    continue
                stem = (
                    f"{image_path.stem}_{index:05d}"  # named by capture: masks are shared by all intensities
                )
                write_tiff(staging / f"{stem}.tif", raw[row : row + tile_size, col : col + tile_size])
                write_mask(mask_staging / f"{stem}.png", tile_mask)
                tiles.append({"tile": stem, "capture": image_path.name, "row": row, "col": col})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not tiles:
        shutil.rmtree(staging)
        raise InputError(f"No {tile_size}x{tile_size} tile with a car pixel in the captures under {base}.")
    write_json_atomic(staging / "manifest.json", {"stamp": stamp, "tiles": tiles, "skipped": bad.skipped})
    mask_dir.mkdir(parents=True, exist_ok=True)
    for mask_file in mask_staging.iterdir():
        mask_file.replace(mask_dir / mask_file.name)
    mask_staging.rmdir()
    if image_dir.exists():
        shutil.rmtree(image_dir)
    staging.replace(image_dir)
    return image_dir


def load_drone(
    root: str | Path, intensity: float = 1.0, tile_size: int = 256, on_bad_file: str = "raise"
) -> RawDataset:
    """Load Raw-Drone (or data in its layout) as tiles at one intensity level.

    Args:
        root: folder holding ``drone/`` (or the ``drone`` folder itself).
        intensity: I_ratio, one of 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0.
        tile_size: tile side in pixels (even).
        on_bad_file: ``"raise"`` (default) or ``"skip"`` unreadable or unmatched files.

    Returns:
        ``RawDataset`` for segmentation; ``groups`` holds each tile's capture, so a split never
        puts tiles of one capture on both sides.
    """
    if tile_size < 2 or tile_size % 2:
        raise InputError(f"dataset.tile_size must be even and at least 2; got {tile_size}.")
    base = dataset_dir(
        root, "drone", DRONE_MASKS, f"Raw-Drone comes from Zenodo (DOI {DOI}); `make data` downloads it."
    )
    image_dir = build_tiles(base, intensity, tile_size, on_bad_file)
    manifest = json.loads((image_dir / "manifest.json").read_text())
    mask_dir = base / f"masks_tiles_{tile_size}"
    captures = sorted({t["capture"] for t in manifest["tiles"]})
    raws, masks, names, groups = [], [], [], []
    for tile in manifest["tiles"]:
        raws.append(read_raw(image_dir / f"{tile['tile']}.tif"))
        masks.append(read_mask(mask_dir / f"{tile['tile']}.png"))
        names.append(tile["tile"])
        groups.append(captures.index(tile["capture"]))
    return RawDataset(
        raw=np.stack(raws),
        white_level=65535.0,
        targets=np.stack(masks),
        task="segmentation",
        camera=load_camera(base, CameraParams.published("drone")),
        names=names,
        classes=list(CLASSES),
        groups=np.asarray(groups, dtype=np.int64),
        intensity=float(intensity),
        name="drone",
        skipped=list(manifest.get("skipped", [])),
    )
