"""load_dng_folder on DNG files written here with pidng and read back through rawpy (LibRaw)."""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
import tifffile
from PIL import Image

from raw2logit.data.dng import SRGB_TO_XYZ, srgb_from_camera
from raw2logit.data.dng_folder import load_dng_folder
from raw2logit.errors import InputError
from tests.dng import CFA_CODES
from tests.dng import write_dng as shared_write_dng

pytest.importorskip("rawpy")
pytest.importorskip("pidng.core")
from pidng.dng import Tag

HEIGHT, WIDTH = 64, 96
SITE_BLACK = (100, 110, 120, 130)  # top-left, top-right, bottom-left, bottom-right


def write_dng(path, mosaic, pattern="RGGB", black=SITE_BLACK, white=4095, neutral=(0.5, 1.0, 0.8),
              xyz_to_camera="srgb", cfa=None, extra_tags=()):  # fmt: skip
    """This file's camera: 12-bit white level, per-site black levels, an sRGB-like colour matrix."""
    return shared_write_dng(path, mosaic, pattern, black, white, neutral, xyz_to_camera, cfa, extra_tags)


@contextmanager
def no_warnings():
    """Any warning fails the test: the metadata written is complete."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def random_mosaic(seed, shape=(HEIGHT, WIDTH)):
    mosaic = np.random.default_rng(seed).integers(0, 65536, size=shape, dtype=np.uint16)
    mosaic[0, 0], mosaic[-1, -1] = 0, 65535  # both ends of the 16-bit range
    return mosaic


def write_labels(path, rows):
    path.write_text("file,label\n" + "".join(f"{file},{label}\n" for file, label in rows))
    return path


def write_mask_png(path, mask):
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return path


def classification_folder(tmp_path, count=3):
    """``count`` DNGs img0..img{count-1} labelled 'b', 'a', 'b', ...; returns (root, csv, mosaics)."""
    root = tmp_path / "dng"
    root.mkdir()
    mosaics = [random_mosaic(i) for i in range(count)]
    for i, mosaic in enumerate(mosaics):
        write_dng(root / f"img{i}.dng", mosaic)
    labels = write_labels(tmp_path / "labels.csv", [(f"img{i}", "ab"[(i + 1) % 2]) for i in range(count)])
    return root, labels, mosaics


def segmentation_folder(tmp_path, count=2):
    """``count`` DNGs with PNG masks; returns (root, masks_dir, masks)."""
    root, masks_dir = tmp_path / "dng", tmp_path / "masks"
    root.mkdir()
    masks_dir.mkdir()
    masks = []
    for i in range(count):
        write_dng(root / f"img{i}.dng", random_mosaic(i))
        mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        mask[4 * i : 4 * i + 10, 20:40] = 1
        write_mask_png(masks_dir / f"img{i}.png", mask)
        masks.append(mask)
    return root, masks_dir, masks


# --- pixels, layout and camera metadata ----------------------------------------------------------


def test_pixels_round_trip_exactly(tmp_path):
    root, labels, mosaics = classification_folder(tmp_path)
    dataset = load_dng_folder(root, labels_csv=labels)
    assert dataset.raw.dtype == np.uint16
    assert dataset.raw.shape == (3, HEIGHT, WIDTH)
    for loaded, written in zip(dataset.raw, mosaics):
        np.testing.assert_array_equal(loaded, written)
    assert dataset.names == ["img0", "img1", "img2"]
    np.testing.assert_array_equal(dataset.groups, [0, 1, 2])
    assert dataset.white_level == 4095.0 and isinstance(dataset.white_level, float)
    assert dataset.skipped == []


@pytest.mark.parametrize("pattern", sorted(CFA_CODES))
def test_pattern_and_black_level_per_site(tmp_path, pattern):
    # LibRaw reports black levels per colour (R, G, B, G2); each 2x2 site must get its own back.
    root, labels, _ = classification_folder(tmp_path, count=1)
    write_dng(root / "img0.dng", random_mosaic(0), pattern=pattern, black=SITE_BLACK, white=4095)
    camera = load_dng_folder(root, labels_csv=labels).camera
    assert camera.pattern == pattern
    assert camera.black_level == pytest.approx([b / 4095 for b in SITE_BLACK], abs=1e-12)


def test_white_level_normalisation(tmp_path):
    root, labels, mosaics = classification_folder(tmp_path, count=1)
    write_dng(root / "img0.dng", mosaics[0], white=65535, black=(4096,) * 4)
    dataset = load_dng_folder(root, labels_csv=labels)
    assert dataset.white_level == 65535.0
    assert dataset.camera.black_level == pytest.approx([4096 / 65535] * 4)
    np.testing.assert_allclose(dataset.normalised().numpy()[0], mosaics[0] / 65535.0, atol=1e-7)


def test_missing_white_level_tag_means_full_16_bits(tmp_path):
    root, labels, _ = classification_folder(tmp_path, count=1)
    write_dng(root / "img0.dng", random_mosaic(0), white=None)
    assert load_dng_folder(root, labels_csv=labels).white_level == 65535.0


@pytest.mark.parametrize("neutral", [(0.5, 1.0, 0.8), (0.25, 0.5, 0.4)])
def test_as_shot_white_balance(tmp_path, neutral):
    # AsShotNeutral n is the camera's response to white: gains 1/n, scaled so green is 1.
    root, labels, _ = classification_folder(tmp_path, count=1)
    write_dng(root / "img0.dng", random_mosaic(0), neutral=neutral)
    assert load_dng_folder(root, labels_csv=labels).camera.white_balance == pytest.approx((2.0, 1.0, 1.25))


def _expected_srgb_from_camera(xyz_to_camera):
    """The recipe, written out independently: cam_from_srgb = xyz2cam @ srgb2xyz, rows to 1, invert."""
    camera_from_srgb = np.asarray(xyz_to_camera) @ SRGB_TO_XYZ
    return np.linalg.inv(camera_from_srgb / camera_from_srgb.sum(axis=1, keepdims=True))


@pytest.mark.parametrize(
    ("xyz_to_camera", "is_identity"),
    [
        # A camera whose RGB is linear sRGB: ColorMatrix = XYZ -> sRGB, so M is the identity.
        (np.linalg.inv(SRGB_TO_XYZ), True),
        # The same camera with per-channel sensitivities: row normalisation hands those to the
        # white balance, so M is still the identity.
        (np.diag([2.0, 1.0, 0.5]) @ np.linalg.inv(SRGB_TO_XYZ), True),
        # A generic, non-diagonal camera.
        (np.array([[0.5, 0.1, 0.2], [0.1, 0.6, 0.1], [0.05, 0.1, 0.7]]), False),
    ],
    ids=["srgb_camera", "scaled_srgb_camera", "generic_camera"],
)
def test_colour_matrix_maps_white_balanced_camera_rgb_to_srgb(tmp_path, xyz_to_camera, is_identity):
    root, labels, _ = classification_folder(tmp_path, count=1)
    write_dng(root / "img0.dng", random_mosaic(0), xyz_to_camera=xyz_to_camera)
    with no_warnings():
        matrix = np.array(load_dng_folder(root, labels_csv=labels).camera.colour_matrix)
    expected = _expected_srgb_from_camera(xyz_to_camera)
    # LibRaw stores the matrix in float32; the rationals written carry 1e-6.
    np.testing.assert_allclose(matrix, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(srgb_from_camera(xyz_to_camera), expected, atol=1e-12)
    # White-balanced camera white is sRGB white.
    np.testing.assert_allclose(matrix @ np.ones(3), np.ones(3), atol=1e-4)
    if is_identity:
        np.testing.assert_allclose(matrix, np.eye(3), atol=1e-4)


def test_metadata_fallbacks_warn(tmp_path):
    root, labels, _ = classification_folder(tmp_path, count=2)
    for i in range(2):
        write_dng(root / f"img{i}.dng", random_mosaic(i), neutral=None, xyz_to_camera=None)
    with pytest.warns(UserWarning) as record:
        dataset = load_dng_folder(root, labels_csv=labels)
    messages = " ".join(str(w.message) for w in record)
    assert "AsShotNeutral" in messages and "identity colour matrix" in messages
    assert "img0.dng, img1.dng" in messages  # one warning per kind, naming the files
    assert dataset.camera.white_balance == (1.0, 1.0, 1.0)
    assert dataset.camera.colour_matrix == ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def test_known_camera_without_colour_matrix_uses_libraw_table(tmp_path):
    import rawpy

    root, labels, _ = classification_folder(tmp_path, count=1)
    model = [(Tag.Make, "Canon"), (Tag.Model, "Canon EOS 5D Mark II")]
    path = write_dng(root / "img0.dng", random_mosaic(0), xyz_to_camera=None, extra_tags=model)
    with rawpy.imread(str(path)) as raw:
        table = np.array(raw.rgb_xyz_matrix[:3])
    if not table.any():
        pytest.skip("this LibRaw has no built-in matrix for the camera model")
    with pytest.warns(UserWarning, match="built-in matrix"):
        camera = load_dng_folder(root, labels_csv=labels).camera
    np.testing.assert_allclose(camera.colour_matrix, _expected_srgb_from_camera(table), atol=1e-9)


def test_visible_area_odd_size_and_default_crop(tmp_path):
    root, labels, _ = classification_folder(tmp_path, count=3)
    # Odd size: the last row and column are dropped so the mosaic stays whole 2x2 blocks.
    odd = random_mosaic(10, shape=(HEIGHT + 1, WIDTH + 1))
    write_dng(root / "img0.dng", odd)
    # ActiveArea (top, left, bottom, right): LibRaw returns only that; the CFA starts at its origin.
    framed = random_mosaic(11, shape=(HEIGHT + 4, WIDTH + 8))
    active = [(Tag.ActiveArea, [2, 4, HEIGHT + 2, WIDTH + 4])]
    write_dng(root / "img1.dng", framed, pattern="GBRG", extra_tags=active)
    # DefaultCrop is a rendering hint: the whole active area is kept.
    crop = [(Tag.DefaultCropOrigin, [2, 2]), (Tag.DefaultCropSize, [WIDTH - 4, HEIGHT - 4])]
    write_dng(root / "img2.dng", random_mosaic(12), extra_tags=crop)
    dataset = load_dng_folder(root, labels_csv=labels)
    np.testing.assert_array_equal(dataset.raw[0], odd[:HEIGHT, :WIDTH])
    np.testing.assert_array_equal(dataset.raw[1], framed[2 : HEIGHT + 2, 4 : WIDTH + 4])
    assert dataset.cameras[1].pattern == "GBRG"
    assert dataset.cameras[1].black_level == pytest.approx([b / 4095 for b in SITE_BLACK])
    np.testing.assert_array_equal(dataset.raw[2], random_mosaic(12))


def test_each_file_keeps_its_own_camera(tmp_path):
    root, labels, _ = classification_folder(tmp_path, count=2)
    write_dng(root / "img1.dng", random_mosaic(1), pattern="BGGR", neutral=(0.25, 1.0, 0.5))
    dataset = load_dng_folder(root, labels_csv=labels)
    assert [c.pattern for c in dataset.cameras] == ["RGGB", "BGGR"]
    assert dataset.camera == dataset.cameras[0]
    assert dataset.camera_of(1).white_balance == pytest.approx((4.0, 1.0, 2.0))


# --- targets -------------------------------------------------------------------------------------


def test_classification_labels_from_csv(tmp_path):
    root = tmp_path / "dng"
    root.mkdir()
    for name in ("c.dng", "A.DNG", "b.dng"):
        write_dng(root / name, random_mosaic(len(name) + ord(name[0])))
    (root / "notes.txt").write_text("not a raw file")
    labels = write_labels(tmp_path / "labels.csv", [("b.dng", "dog"), ("A", "cat"), ("c", "dog")])
    dataset = load_dng_folder(root, labels_csv=labels, name="pets")
    assert dataset.task == "classification" and dataset.name == "pets"
    assert dataset.names == ["A", "b", "c"]  # sorted by file name; upper-case suffix accepted
    assert dataset.classes == ["cat", "dog"]
    assert dataset.targets.dtype == np.int64
    np.testing.assert_array_equal(dataset.targets, [0, 1, 1])


def test_segmentation_masks_from_folder(tmp_path):
    root, masks_dir, masks = segmentation_folder(tmp_path, count=3)
    # A TIFF mask with values other than 0/255, and a mask of the visible size before the even crop.
    (masks_dir / "img1.png").unlink()
    tifffile.imwrite(masks_dir / "img1.tif", masks[1].astype(np.uint16) * 7)
    odd = random_mosaic(20, shape=(HEIGHT + 1, WIDTH + 1))
    write_dng(root / "img2.dng", odd)
    odd_mask = np.zeros((HEIGHT + 1, WIDTH + 1), dtype=np.uint8)
    odd_mask[-3:, -3:] = 1
    write_mask_png(masks_dir / "img2.png", odd_mask)
    dataset = load_dng_folder(root, masks_dir=masks_dir)
    assert dataset.task == "segmentation"
    assert dataset.targets.dtype == np.uint8 and dataset.targets.shape == (3, HEIGHT, WIDTH)
    np.testing.assert_array_equal(dataset.targets[0], masks[0])
    np.testing.assert_array_equal(dataset.targets[1], masks[1])
    np.testing.assert_array_equal(dataset.targets[2], odd_mask[:HEIGHT, :WIDTH])
    assert dataset.classes == ["background", "foreground"]


# --- bad input -----------------------------------------------------------------------------------


def _corrupt(tmp_path):
    root, labels, _ = classification_folder(tmp_path)
    (root / "img1.dng").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return {"labels_csv": labels}, root, "img1.dng"


def _truncated(tmp_path):
    root, labels, _ = classification_folder(tmp_path)
    whole = (root / "img2.dng").read_bytes()
    (root / "img2.dng").write_bytes(whole[: len(whole) // 2])
    return {"labels_csv": labels}, root, "img2.dng"


def _shape_mismatch(tmp_path):
    root, labels, _ = classification_folder(tmp_path)
    write_dng(root / "img1.dng", random_mosaic(1, shape=(HEIGHT, WIDTH - 2)))
    return {"labels_csv": labels}, root, "img1.dng"


def _white_level_mismatch(tmp_path):
    root, labels, _ = classification_folder(tmp_path)
    write_dng(root / "img1.dng", random_mosaic(1), white=16383)
    return {"labels_csv": labels}, root, "img1.dng"


def _x_trans(tmp_path):
    root, labels, _ = classification_folder(tmp_path)
    x_trans = [1, 1, 0, 1, 1, 2, 1, 1, 2, 1, 1, 0, 2, 0, 1, 0, 2, 1]
    x_trans += [1, 1, 2, 1, 1, 0, 1, 1, 0, 1, 1, 2, 0, 2, 1, 2, 0, 1]
    write_dng(root / "img1.dng", random_mosaic(1, shape=(60, 90)), cfa=((6, 6), x_trans))
    return {"labels_csv": labels}, root, "img1.dng"


def _four_colour(tmp_path):
    root, labels, _ = classification_folder(tmp_path)
    cmyg = [(Tag.CFAPlaneColor, [3, 4, 5, 1])]  # cyan, magenta, yellow, green
    write_dng(root / "img1.dng", random_mosaic(1), cfa=((2, 2), [0, 1, 2, 3]), extra_tags=cmyg)
    return {"labels_csv": labels}, root, "img1.dng"


def _file_without_label(tmp_path):
    root, labels, _ = classification_folder(tmp_path)
    write_dng(root / "extra.dng", random_mosaic(5))
    return {"labels_csv": labels}, root, "extra.dng"


def _empty_label(tmp_path):
    root, _, _ = classification_folder(tmp_path)
    labels = write_labels(tmp_path / "labels.csv", [("img0", "a"), ("img1", ""), ("img2", "b")])
    return {"labels_csv": labels}, root, "img1.dng"


def _label_row_without_file(tmp_path):
    root, _, _ = classification_folder(tmp_path)
    rows = [("img0", "a"), ("img1", "b"), ("img2", "a"), ("ghost.dng", "b")]
    return {"labels_csv": write_labels(tmp_path / "labels.csv", rows)}, root, "ghost.dng"


def _mask_missing(tmp_path):
    root, masks_dir, _ = segmentation_folder(tmp_path, count=3)
    (masks_dir / "img1.png").unlink()
    return {"masks_dir": masks_dir}, root, "img1.dng"


def _mask_without_image(tmp_path):
    root, masks_dir, masks = segmentation_folder(tmp_path, count=2)
    write_mask_png(masks_dir / "orphan.png", masks[0])
    return {"masks_dir": masks_dir}, root, "orphan.png"


def _mask_shape_mismatch(tmp_path):
    root, masks_dir, _ = segmentation_folder(tmp_path, count=2)
    write_mask_png(masks_dir / "img1.png", np.ones((HEIGHT // 2, WIDTH // 2), dtype=np.uint8))
    return {"masks_dir": masks_dir}, root, "img1.png"


def _mask_unreadable(tmp_path):
    root, masks_dir, _ = segmentation_folder(tmp_path, count=2)
    (masks_dir / "img0.png").write_bytes(b"not a png")
    return {"masks_dir": masks_dir}, root, "img0.png"


BAD_CASES = {
    "corrupt": _corrupt,
    "truncated": _truncated,
    "shape_mismatch": _shape_mismatch,
    "white_level_mismatch": _white_level_mismatch,
    "x_trans": _x_trans,
    "four_colour": _four_colour,
    "file_without_label": _file_without_label,
    "empty_label": _empty_label,
    "label_row_without_file": _label_row_without_file,
    "mask_missing": _mask_missing,
    "mask_without_image": _mask_without_image,
    "mask_shape_mismatch": _mask_shape_mismatch,
    "mask_unreadable": _mask_unreadable,
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_raises_naming_it(tmp_path, case):
    kwargs, root, bad_name = BAD_CASES[case](tmp_path)
    with pytest.raises(InputError, match=re.escape(bad_name)):
        load_dng_folder(root, **kwargs)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_skipped_with_warning(tmp_path, case):
    kwargs, root, bad_name = BAD_CASES[case](tmp_path)
    # A mask at fault drops its image, which is then recorded by the image's name.
    dropped = (
        bad_name.replace(".png", ".dng") if case in ("mask_shape_mismatch", "mask_unreadable") else bad_name
    )
    with pytest.warns(UserWarning) as record:
        dataset = load_dng_folder(root, on_bad_file="skip", **kwargs)
    assert [str(w.message).split(":")[0] for w in record] == [f"Skipping {dropped}"]
    assert bad_name in str(record[0].message)
    assert dataset.skipped == [dropped]
    assert dropped.rsplit(".", 1)[0] not in dataset.names
    assert len(dataset) == len(dataset.targets) == len(dataset.cameras) >= 1
    assert dataset.raw.shape[1:] == (HEIGHT, WIDTH)


def test_argument_errors(tmp_path):
    root, labels, _ = classification_folder(tmp_path, count=1)
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    with pytest.raises(InputError, match="exactly one of labels_csv"):
        load_dng_folder(root)
    with pytest.raises(InputError, match="exactly one of labels_csv"):
        load_dng_folder(root, labels_csv=labels, masks_dir=masks_dir)
    with pytest.raises(InputError, match="on_bad_file must be one of raise, skip; got 'ignore'"):
        load_dng_folder(root, labels_csv=labels, on_bad_file="ignore")
    with pytest.raises(InputError, match="missing"):
        load_dng_folder(tmp_path / "missing", labels_csv=labels)
    with pytest.raises(InputError, match=r"holds no \.dng files"):
        load_dng_folder(masks_dir, labels_csv=labels)
    with pytest.raises(InputError, match=r"labels\.csv must have the header columns 'file,label'"):
        (tmp_path / "labels.csv").write_text("name,class\nimg0,a\n")
        load_dng_folder(root, labels_csv=labels)


def test_all_files_skipped_is_an_error(tmp_path):
    root, labels, _ = classification_folder(tmp_path, count=1)
    (root / "img0.dng").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="img0.dng"), pytest.raises(InputError, match="no usable DNG files"):
        load_dng_folder(root, labels_csv=labels, on_bad_file="skip")
