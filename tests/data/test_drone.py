"""``load_drone``: tiling of full captures (simulated and written here), the tile cache, bad files."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import tifffile
from PIL import Image

from raw2logit.data.drone import load_drone
from raw2logit.data.files import write_mask
from raw2logit.data.layout import DOI
from raw2logit.data.registry import sim_drone
from raw2logit.data.sensor import DRONE_CAMERA
from raw2logit.errors import InputError
from raw2logit.isp import CameraParams
from tests.dng import write_dng


def read_source(base, intensity_folder="raw_scale100"):
    """Capture stem -> (raw, mask) of the full captures, read without the loader."""
    captures = {}
    for path in sorted((base / "images_full" / intensity_folder).iterdir()):
        with Image.open(base / "masks_full" / f"{path.stem}.png") as mask:
            captures[path.stem] = (tifffile.imread(path), (np.asarray(mask) > 0).astype(np.uint8))
    return captures


def expected_tiles(captures: dict, tile: int):
    """The tiles the paper keeps: disjoint tile x tile squares, row by row, with a car pixel.

    Returns raws (n, tile, tile), masks (n, tile, tile), groups (n,) (capture rank among captures
    with tiles, captures in file-name order) and positions [(capture, row, col)].
    """
    raws, masks, groups, positions = [], [], [], []
    for stem in sorted(captures):
        raw, mask = captures[stem]
        height, width = raw.shape
        kept = 0
        for row in range(0, height // tile * tile, tile):
            for col in range(0, width // tile * tile, tile):
                crop = mask[row : row + tile, col : col + tile]
                if crop.any():
                    raws.append(raw[row : row + tile, col : col + tile])
                    masks.append(crop)
                    groups.append(len(set(groups)) if kept == 0 else groups[-1])
                    positions.append((stem, row, col))
                    kept += 1
    return np.stack(raws), np.stack(masks), np.asarray(groups), positions


def unique_raw(height, width, offset=0):
    """Counts that identify their pixel: tile contents reveal where a tile was cut."""
    return (np.arange(height * width, dtype=np.uint16).reshape(height, width) + offset).astype(np.uint16)


def car_mask(height, width, pixels):
    mask = np.zeros((height, width), dtype=np.uint8)
    for row, col in pixels:
        mask[row, col] = 1
    return mask


def cache_files(base):
    return [p for pattern in ("images_tiles_*", "masks_tiles_*") for p in base.glob(pattern)]


# --- tiling ----------------------------------------------------------------------------------


def test_simulated_captures_are_tiled_exactly(sim_drone_root):
    base = sim_drone_root / "drone"
    dataset = load_drone(sim_drone_root, intensity=1.0, tile_size=64)
    captures = read_source(base)
    raws, masks, groups, positions = expected_tiles(captures, 64)
    print(f"simulated drone: {len(positions)} of {3 * 2 * 3} tiles hold a car")
    assert len(positions) < 3 * 2 * 3  # some tiles hold no car and are dropped
    assert dataset.task == "segmentation" and dataset.classes == ["background", "car"]
    assert dataset.raw.dtype == np.uint16 and dataset.targets.dtype == np.uint8
    np.testing.assert_array_equal(dataset.raw, raws)
    np.testing.assert_array_equal(dataset.targets, masks)
    np.testing.assert_array_equal(dataset.groups, groups)
    assert len(set(dataset.names)) == len(dataset)
    assert dataset.white_level == 65535.0 and dataset.skipped == []


def test_hand_made_tiles_are_disjoint_row_major_squares_with_cars(drone_folder):
    # Capture a: 16 x 24 (2 x 3 tiles of 8); cars in tiles (0, 1), (1, 0) and (1, 2).
    # Capture b: 20 x 28 (2 x 3 whole tiles; the 4-pixel margins are cut off); a car in tile (0, 0)
    # and one in the bottom margin only, which makes no tile.
    base = drone_folder(
        {
            "a": (unique_raw(16, 24), car_mask(16, 24, [(3, 9), (12, 2), (15, 23)])),
            "b": (unique_raw(20, 28, offset=30000), car_mask(20, 28, [(0, 0), (18, 5)])),
        }
    )
    dataset = load_drone(base.parent, tile_size=8)
    positions = [("a", 0, 8), ("a", 8, 0), ("a", 8, 16), ("b", 0, 0)]
    assert len(dataset) == 4
    sources = {"a": unique_raw(16, 24), "b": unique_raw(20, 28, offset=30000)}
    car_pixels = [(3, 1), (4, 2), (7, 7), (0, 0)]  # each car pixel in its tile's coordinates
    for index, (stem, row, col) in enumerate(positions):
        np.testing.assert_array_equal(dataset.raw[index], sources[stem][row : row + 8, col : col + 8])
        np.testing.assert_array_equal(dataset.targets[index], car_mask(8, 8, [car_pixels[index]]))
        assert dataset.groups[index] == "ab".index(stem)


def test_tiles_are_cut_per_tile_size(sim_drone_root):
    small = load_drone(sim_drone_root, tile_size=32)
    raws, masks, groups, _ = expected_tiles(read_source(sim_drone_root / "drone"), 32)
    np.testing.assert_array_equal(small.raw, raws)
    np.testing.assert_array_equal(small.targets, masks)
    np.testing.assert_array_equal(small.groups, groups)
    assert load_drone(sim_drone_root, tile_size=64).raw.shape[1:] == (64, 64)


def test_mask_may_carry_a_suffix_after_the_capture_stem(drone_folder):
    base = drone_folder({"DJI_0001": (unique_raw(8, 8), car_mask(8, 8, [(1, 1)]))})
    (base / "masks_full" / "DJI_0001.png").rename(base / "masks_full" / "DJI_0001_mask.png")
    dataset = load_drone(base.parent, tile_size=8)
    np.testing.assert_array_equal(dataset.targets[0], car_mask(8, 8, [(1, 1)]))


def test_no_tile_with_a_car_is_an_input_error(drone_folder):
    base = drone_folder({"a": (unique_raw(16, 16), car_mask(16, 16, []))})
    with pytest.raises(InputError, match="No 8x8 tile with a car pixel"):
        load_drone(base.parent, tile_size=8)


# --- the tile cache --------------------------------------------------------------------------------


def test_tile_cache_is_written_once(sim_drone_root, age_files, file_times):
    base = sim_drone_root / "drone"
    first = load_drone(sim_drone_root, tile_size=64)
    manifests = list(base.glob("images_tiles_64/raw_scale100/manifest.json"))
    assert len(manifests) == 1
    for folder in cache_files(base):
        age_files(folder)
    before = {str(f): file_times(f) for f in cache_files(base)}
    second = load_drone(sim_drone_root, tile_size=64)
    assert {str(f): file_times(f) for f in cache_files(base)} == before
    np.testing.assert_array_equal(second.raw, first.raw)
    np.testing.assert_array_equal(second.targets, first.targets)
    np.testing.assert_array_equal(second.groups, first.groups)


def touch_later(path, seconds=7):
    """Move ``path``'s mtime on, as a later edit would (the cache stamps whole seconds)."""
    later = path.stat().st_mtime_ns + seconds * 10**9
    os.utime(path, ns=(later, later))


def test_tile_cache_is_rebuilt_when_a_capture_changes(sim_drone_root):
    base = sim_drone_root / "drone"
    load_drone(sim_drone_root, tile_size=64)
    capture = sorted((base / "images_full" / "raw_scale100").iterdir())[0]
    tifffile.imwrite(capture, tifffile.imread(capture) // 2)  # same size, new content
    touch_later(capture)
    dataset = load_drone(sim_drone_root, tile_size=64)
    raws, masks, _, _ = expected_tiles(read_source(base), 64)
    np.testing.assert_array_equal(dataset.raw, raws)
    np.testing.assert_array_equal(dataset.targets, masks)


def test_tile_cache_is_rebuilt_when_a_mask_changes(sim_drone_root):
    base = sim_drone_root / "drone"
    before = load_drone(sim_drone_root, tile_size=64)
    mask_path = sorted((base / "masks_full").iterdir())[0]
    with Image.open(mask_path) as image:
        mask = np.asarray(image) > 0
    mask[:64, :64] = False
    mask[70, 70] = True
    write_mask(mask_path, mask)
    touch_later(mask_path)
    dataset = load_drone(sim_drone_root, tile_size=64)
    raws, masks, groups, _ = expected_tiles(read_source(base), 64)
    np.testing.assert_array_equal(dataset.raw, raws)
    np.testing.assert_array_equal(dataset.targets, masks)
    np.testing.assert_array_equal(dataset.groups, groups)
    assert len(masks) != len(before) or not np.array_equal(masks, before.targets)  # the edit shows


def test_interrupted_tiling_leaves_no_cache(sim_drone_root):
    base = sim_drone_root / "drone"
    corrupt = sorted((base / "images_full" / "raw_scale100").iterdir())[1]
    corrupt.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(InputError, match=corrupt.name):
        load_drone(sim_drone_root, tile_size=64)
    assert list(base.glob("images_tiles_*/**/manifest.json")) == []
    # Tiling has no partial result to resume from: after repair the loader tiles afresh.
    tifffile.imwrite(corrupt, np.zeros((128, 192), dtype=np.uint16))
    dataset = load_drone(sim_drone_root, tile_size=64)
    np.testing.assert_array_equal(dataset.raw, expected_tiles(read_source(base), 64)[0])


def test_interrupted_tiling_leaves_no_staging_folder(sim_drone_root):
    base = sim_drone_root / "drone"
    corrupt = sorted((base / "images_full" / "raw_scale100").iterdir())[1]
    corrupt.write_bytes(b"not a tiff")
    with pytest.raises(InputError):
        load_drone(sim_drone_root, tile_size=64)
    assert list(base.glob("images_tiles_*/.tiling-*")) == []


def test_tile_masks_of_one_intensity_survive_tiling_another(drone_folder):
    mask_a = car_mask(8, 8, [(0, 0), (6, 6)])
    mask_b = car_mask(8, 8, [(1, 1)])
    mask_b[4:, 4:] = 1
    base = drone_folder({"a": (unique_raw(8, 8), mask_a), "b": (unique_raw(8, 8, 100), mask_b)})
    drone_folder({"b": (unique_raw(8, 8, 200), mask_b)}, intensity=0.01)
    high = load_drone(base.parent, intensity=1.0, tile_size=4)
    np.testing.assert_array_equal(high.targets[1], mask_a[4:, 4:])
    with pytest.warns(UserWarning, match="a.png"):
        load_drone(base.parent, intensity=0.01, tile_size=4, on_bad_file="skip")
    again = load_drone(base.parent, intensity=1.0, tile_size=4)
    np.testing.assert_array_equal(again.targets, high.targets)


# --- camera --------------------------------------------------------------------------------------


def test_simulated_camera_json_overrides_the_published_camera(sim_drone_root):
    dataset = load_drone(sim_drone_root, tile_size=64)
    assert dataset.camera == DRONE_CAMERA.camera_params()
    assert dataset.camera != CameraParams.published("drone")


def test_without_camera_json_the_published_camera_is_used(drone_folder):
    base = drone_folder({"a": (unique_raw(8, 8), car_mask(8, 8, [(1, 1)]))})
    assert load_drone(base.parent, tile_size=8).camera == CameraParams.published("drone")
    camera = CameraParams(black_level=(0.05,) * 4, white_balance=(2.0, 1.0, 1.6), pattern="BGGR", name="own")
    (base / "camera.json").write_text(json.dumps(camera.to_dict()))
    assert load_drone(base, tile_size=8).camera == camera  # the drone folder itself as root


def test_registry_builds_a_named_simulated_dataset(tmp_path):
    dataset = sim_drone(
        tmp_path, num_images=2, height=512, width=768, scale=0.25, seed=1, name="tiny", normalisation="auto"
    )
    assert dataset.name == "tiny" and dataset.normalisation == "auto"
    assert dataset.task == "segmentation" and dataset.raw.shape[1:] == (64, 64)
    assert set(dataset.groups.tolist()) <= {0, 1}
    assert sim_drone(tmp_path, num_images=2, height=512, width=768, scale=0.25, seed=1).name == "sim_drone"


# --- missing data and bad files ---------------------------------------------------------------------


def test_missing_root_names_what_was_expected_and_the_doi(tmp_path):
    with pytest.raises(InputError) as error:
        load_drone(tmp_path / "nowhere")
    assert "drone/masks_full" in str(error.value) and DOI in str(error.value)


def test_bad_arguments_are_input_errors(drone_folder):
    base = drone_folder({"a": (unique_raw(8, 8), car_mask(8, 8, [(1, 1)]))})
    with pytest.raises(InputError, match="tile_size"):
        load_drone(base.parent, tile_size=7)
    with pytest.raises(InputError, match=r"0\.3"):
        load_drone(base.parent, intensity=0.3, tile_size=8)
    with pytest.raises(InputError, match="raw_scale050"):
        load_drone(base.parent, intensity=0.5, tile_size=8)


def two_captures(drone_folder):
    return drone_folder(
        {
            "a": (unique_raw(16, 16), car_mask(16, 16, [(1, 1), (9, 9)])),
            "b": (unique_raw(16, 16, 1000), car_mask(16, 16, [(2, 10)])),
        }
    )


def spoil(kind: str, base) -> str:
    """Spoil a two-capture drone folder; return the file name the error must mention."""
    images = base / "images_full" / "raw_scale100"
    if kind == "capture without mask":
        tifffile.imwrite(images / "c.tif", unique_raw(16, 16))
        return "c.tif"
    if kind == "mask without capture":
        write_mask(base / "masks_full" / "z.png", car_mask(16, 16, [(0, 0)]))
        return "z.png"
    if kind == "mask of different shape":
        write_mask(base / "masks_full" / "b.png", car_mask(16, 12, [(2, 10)]))
        return "b.png"
    if kind == "corrupt capture":
        (images / "b.tif").write_bytes(np.random.default_rng(1).bytes(500))
        return "b.tif"
    if kind == "8-bit capture":
        tifffile.imwrite(images / "b.tif", np.zeros((16, 16), dtype=np.uint8))
        return "b.tif"
    raise AssertionError(kind)


BAD_KINDS = [
    "capture without mask",
    "mask without capture",
    "mask of different shape",
    "corrupt capture",
    "8-bit capture",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_raises_naming_the_file(drone_folder, kind):
    base = two_captures(drone_folder)
    name = spoil(kind, base)
    with pytest.raises(InputError) as error:
        load_drone(base.parent, tile_size=8)
    assert name in str(error.value)
    assert "on_bad_file=skip" in str(error.value)
    assert list(base.glob("images_tiles_*/**/manifest.json")) == []


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_is_skipped_with_a_warning(drone_folder, kind):
    base = two_captures(drone_folder)
    name = spoil(kind, base)
    with pytest.warns(UserWarning, match="Skipping") as record:
        dataset = load_drone(base.parent, tile_size=8, on_bad_file="skip")
    assert any(name in str(w.message) for w in record)
    assert [os.path.basename(path) for path in dataset.skipped] == [name]
    # Capture a's two car tiles load whatever happened to b; b's tile only if b is intact.
    np.testing.assert_array_equal(dataset.raw[0], unique_raw(16, 16)[:8, :8])
    np.testing.assert_array_equal(dataset.raw[1], unique_raw(16, 16)[8:, 8:])
    b_intact = kind in ("capture without mask", "mask without capture")
    assert len(dataset) == (3 if b_intact else 2)
    # The cache remembers what was skipped.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unmatched files are reported again; their warning is not the point
        again = load_drone(base.parent, tile_size=8, on_bad_file="skip")
    assert [os.path.basename(path) for path in again.skipped] == [name]


def test_masks_are_paired_with_the_longest_matching_capture_stem(drone_folder):
    base = drone_folder(
        {
            "cap1": (unique_raw(8, 8), car_mask(8, 8, [(1, 1)])),
            "cap10": (unique_raw(8, 8, 100), car_mask(8, 8, [(6, 6)])),
        }
    )
    for stem in ("cap1", "cap10"):
        (base / "masks_full" / f"{stem}.png").rename(base / "masks_full" / f"{stem}_mask.png")
    dataset = load_drone(base.parent, tile_size=8)
    np.testing.assert_array_equal(dataset.targets[0], car_mask(8, 8, [(1, 1)]))
    np.testing.assert_array_equal(dataset.targets[1], car_mask(8, 8, [(6, 6)]))


# --- DNG captures --------------------------------------------------------------------------------


def test_dng_captures_are_tiled(drone_folder):
    pytest.importorskip("rawpy")
    pytest.importorskip("pidng")
    base = drone_folder({})
    mosaic = np.random.default_rng(3).integers(0, 65536, size=(64, 96), dtype=np.uint16)
    write_dng(base / "images_full" / "raw_scale100" / "DJI_0007.DNG", mosaic)
    write_mask(base / "masks_full" / "DJI_0007.png", car_mask(64, 96, [(40, 70), (5, 5)]))
    dataset = load_drone(base.parent, tile_size=32)
    assert len(dataset) == 2
    np.testing.assert_array_equal(dataset.raw[0], mosaic[:32, :32])
    np.testing.assert_array_equal(dataset.raw[1], mosaic[32:, 64:])
