"""``load_microscopy`` on simulated data and on miniature Raw-Microscopy layouts written here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from raw2logit.data.layout import DOI, LABELS_FILE, intensity_folder
from raw2logit.data.microscopy import load_microscopy
from raw2logit.data.registry import sim_microscopy
from raw2logit.data.sensor import MICROSCOPE
from raw2logit.errors import InputError
from raw2logit.isp import CameraParams

EXCLUDED = "Ma190c_lame3_zone13_composite_Mcropped_2"


def read_label_file(root) -> dict[str, str]:
    text = (root / "microscopy" / "labels" / LABELS_FILE).read_text()
    return dict(line.split() for line in text.splitlines() if line.strip())


# --- simulated data ------------------------------------------------------------------------------


def test_simulated_dataset_loads_with_its_labels(sim_microscopy_root):
    dataset = load_microscopy(sim_microscopy_root)
    labels = read_label_file(sim_microscopy_root)
    assert len(dataset) == 36
    assert dataset.task == "classification"
    assert dataset.classes == ["BAS", "EOS", "KSC", "LYT", "MON", "NGS"]
    assert dataset.raw.dtype == np.uint16 and dataset.raw.shape == (36, 32, 32)
    assert dataset.white_level == 65535.0
    assert sorted(dataset.names) == sorted(labels)
    assert [dataset.classes[t] for t in dataset.targets] == [labels[name] for name in dataset.names]
    assert np.bincount(dataset.targets).tolist() == [6] * 6
    assert dataset.groups.tolist() == list(range(36))


@pytest.mark.parametrize("intensity", [0.01, 0.1, 1.0])
def test_simulated_intensity_reads_its_folder(sim_microscopy_root, intensity):
    dataset = load_microscopy(sim_microscopy_root, intensity=intensity)
    folder = sim_microscopy_root / "microscopy" / "images" / intensity_folder(intensity)
    assert dataset.intensity == intensity
    for name, raw in zip(dataset.names, dataset.raw):
        np.testing.assert_array_equal(raw, tifffile.imread(folder / f"{name}.tiff"))


def test_simulated_intensities_scale_the_signal(sim_microscopy_root):
    black = MICROSCOPE.black_level[0]
    signal = {i: load_microscopy(sim_microscopy_root, i).raw.mean() - black for i in (0.01, 0.1, 1.0)}
    assert signal[0.1] == pytest.approx(0.1 * signal[1.0], rel=0.03)
    assert signal[0.01] == pytest.approx(0.01 * signal[1.0], rel=0.05)


def test_simulated_camera_json_overrides_the_published_camera(sim_microscopy_root):
    dataset = load_microscopy(sim_microscopy_root)
    assert dataset.camera == MICROSCOPE.camera_params()
    assert dataset.camera != CameraParams.published("microscopy")


def test_registry_builds_a_named_simulated_dataset(tmp_path):
    dataset = sim_microscopy(
        tmp_path, intensity=0.1, num_images=30, size=16, name="sim_microscopy_tiny", normalisation="auto"
    )
    assert dataset.name == "sim_microscopy_tiny"
    assert dataset.normalisation == "auto"
    assert dataset.intensity == 0.1 and len(dataset) == 30
    assert (tmp_path / "microscopy" / "images" / "raw_scale010").is_dir()
    explicit = sim_microscopy(
        tmp_path, intensity=0.1, num_images=30, size=16, normalisation={"mean": [0.5] * 3, "std": [0.2] * 3}
    )
    assert explicit.name == "sim_microscopy"
    assert explicit.normalisation == {"mean": [0.5] * 3, "std": [0.2] * 3}
    assert sim_microscopy(tmp_path, num_images=30, size=16).normalisation is None


# --- miniature layouts: labels, classes, exclusion, intensity, camera ------------------------------


def labelled(counts: dict[str, int]) -> list[tuple[str, str]]:
    """(stem, code) pairs, classes interleaved so that file order is not class order."""
    rows = [(f"{code.lower()}_{i}", code) for code, n in counts.items() for i in range(n)]
    return sorted(rows, key=lambda row: (int(row[0].split("_")[1]), row[1]), reverse=True)


def test_class_filter_keeps_classes_with_more_than_four_images(microscopy_folder):
    labels = labelled({"NGS": 6, "LYT": 5, "BAS": 4, "EOS": 1, "MON": 7})
    root, _ = microscopy_folder(labels)
    dataset = load_microscopy(root)
    assert dataset.classes == ["LYT", "MON", "NGS"]  # sorted codes; BAS (4) and EOS (1) dropped
    assert len(dataset) == 18
    expected = {stem: code for stem, code in labels}
    assert [dataset.classes[t] for t in dataset.targets] == [expected[n] for n in dataset.names]
    assert not any(name.startswith(("bas", "eos")) for name in dataset.names)
    # Labels-file order is kept and each image holds the counts written for its stem.
    order = [stem for stem, _ in labels]
    assert dataset.names == sorted(dataset.names, key=order.index)
    for name, raw in zip(dataset.names, dataset.raw):
        np.testing.assert_array_equal(raw, 1000 * (order.index(name) + 1) + 100)


def test_published_excluded_file_is_dropped(microscopy_folder):
    labels = [*labelled({"LYT": 5, "MON": 5}), (EXCLUDED, "LYT")]
    root, _ = microscopy_folder(labels)
    dataset = load_microscopy(root)
    assert EXCLUDED not in dataset.names
    assert len(dataset) == 10


def test_excluded_file_does_not_count_towards_its_class(microscopy_folder):
    # 4 LYT + the excluded one: the excluded file is removed first, so LYT has 4 images and is dropped.
    labels = [*labelled({"LYT": 4, "MON": 5}), (EXCLUDED, "LYT")]
    root, _ = microscopy_folder(labels)
    assert load_microscopy(root).classes == ["MON"]


@pytest.mark.parametrize("intensity", [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0])
def test_intensity_selects_its_folder(microscopy_folder, intensity):
    labels = labelled({"LYT": 5})
    root, _ = microscopy_folder(labels, intensities=(0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0))
    dataset = load_microscopy(root, intensity=intensity)
    assert dataset.intensity == intensity
    # Counts written: 1000 * (index + 1) + round(100 * intensity).
    np.testing.assert_array_equal(dataset.raw[:, 0, 0] % 1000, round(100 * intensity))


def test_intensity_folders_follow_the_published_names():
    names = {0.01: "001", 0.05: "005", 0.1: "010", 0.25: "025", 0.5: "050", 0.75: "075", 1.0: "100"}
    assert {i: intensity_folder(i) for i in names} == {i: f"raw_scale{n}" for i, n in names.items()}


def test_root_may_be_the_microscopy_folder_itself(microscopy_folder):
    root, _ = microscopy_folder(labelled({"LYT": 5}))
    assert load_microscopy(root / "microscopy").names == load_microscopy(root).names


def test_without_camera_json_the_published_camera_is_used(microscopy_folder):
    root, _ = microscopy_folder(labelled({"LYT": 5}))
    assert load_microscopy(root).camera == CameraParams.published("microscopy")


def test_camera_json_overrides_the_published_camera(microscopy_folder):
    root, _ = microscopy_folder(labelled({"LYT": 5}))
    camera = CameraParams(
        black_level=(0.01, 0.02, 0.03, 0.04),
        white_balance=(2.0, 1.0, 1.5),
        colour_matrix=((1.2, -0.1, -0.1), (-0.2, 1.4, -0.2), (0.0, -0.3, 1.3)),
        pattern="GBRG",
        name="mine",
    )
    (root / "microscopy" / "camera.json").write_text(json.dumps(camera.to_dict()))
    loaded = load_microscopy(root).camera
    assert loaded == camera and loaded.name == "mine"


def test_malformed_camera_json_is_an_input_error(microscopy_folder):
    root, _ = microscopy_folder(labelled({"LYT": 5}))
    (root / "microscopy" / "camera.json").write_text('{"white_balance": [1, 2]}')
    with pytest.raises(InputError, match=r"camera\.json"):
        load_microscopy(root)


# --- missing or malformed dataset root --------------------------------------------------------------


def test_missing_root_names_what_was_expected_and_the_doi(tmp_path):
    with pytest.raises(InputError) as error:
        load_microscopy(tmp_path / "nowhere")
    message = str(error.value)
    assert f"microscopy/labels/{LABELS_FILE}" in message
    assert "does not exist" in message and str(tmp_path / "nowhere") in message
    assert DOI in message


def test_root_with_other_contents_names_what_was_found(tmp_path):
    (tmp_path / "holiday_photos").mkdir()
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(InputError) as error:
        load_microscopy(tmp_path)
    message = str(error.value)
    assert f"microscopy/labels/{LABELS_FILE}" in message
    assert "holiday_photos" in message and "notes.txt" in message
    assert DOI in message


def test_unknown_intensity_is_an_input_error(microscopy_folder):
    root, _ = microscopy_folder(labelled({"LYT": 5}))
    with pytest.raises(InputError, match=r"0\.3"):
        load_microscopy(root, intensity=0.3)


def test_missing_intensity_folder_names_it(microscopy_folder):
    root, _ = microscopy_folder(labelled({"LYT": 5}), intensities=(1.0,))
    with pytest.raises(InputError) as error:
        load_microscopy(root, intensity=0.5)
    assert "raw_scale050" in str(error.value) and DOI in str(error.value)


def test_malformed_labels_line_names_the_file_and_line(microscopy_folder):
    root, _ = microscopy_folder(labelled({"LYT": 5}))
    labels = root / "microscopy" / "labels" / LABELS_FILE
    labels.write_text(labels.read_text() + "lyt_9 LYT extra\n")
    with pytest.raises(InputError, match=r"line 6"):
        load_microscopy(root, on_bad_file="skip")


def test_unknown_bad_file_policy_is_refused(microscopy_folder):
    root, _ = microscopy_folder(labelled({"LYT": 5}))
    with pytest.raises(InputError, match="on_bad_file"):
        load_microscopy(root, on_bad_file="ignore")


# --- bad files: raise names the file; skip warns, lists it and loads the rest -------------------------

GOOD = labelled({"LYT": 6, "MON": 6})
VICTIM = "mon_2"  # the file spoiled by each case (neither first nor last in the labels)


def spoil(kind: str, root, folder) -> str:
    """Spoil one file of a miniature dataset; return the name the error must mention."""
    path = folder / f"{VICTIM}.tiff"
    labels = root / "microscopy" / "labels" / LABELS_FILE
    if kind == "unreadable":
        path.write_bytes(np.random.default_rng(0).bytes(300))
    elif kind == "8-bit":
        tifffile.imwrite(path, np.full((8, 8), 7, dtype=np.uint8))
    elif kind == "float":
        tifffile.imwrite(path, np.full((8, 8), 0.5, dtype=np.float32))
    elif kind == "rgb":
        tifffile.imwrite(path, np.zeros((8, 8, 3), dtype=np.uint16))
    elif kind == "shape":
        tifffile.imwrite(path, np.zeros((10, 8), dtype=np.uint16))
    elif kind == "odd size":
        tifffile.imwrite(path, np.zeros((7, 9), dtype=np.uint16))
    elif kind == "missing":
        path.unlink()
    elif kind == "unknown class":
        labels.write_text(labels.read_text().replace(f"{VICTIM} MON", f"{VICTIM} XYZ"))
        return LABELS_FILE
    return path.name


BAD_KINDS = ["unreadable", "8-bit", "float", "rgb", "shape", "odd size", "missing", "unknown class"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_raises_naming_the_file(microscopy_folder, kind):
    root, folders = microscopy_folder(GOOD)
    name = spoil(kind, root, folders[1.0])
    with pytest.raises(InputError) as error:
        load_microscopy(root)
    assert name in str(error.value)
    assert "on_bad_file=skip" in str(error.value)


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_is_skipped_with_a_warning(microscopy_folder, kind):
    root, folders = microscopy_folder(GOOD)
    name = spoil(kind, root, folders[1.0])
    with pytest.warns(UserWarning, match="Skipping") as record:
        dataset = load_microscopy(root, on_bad_file="skip")
    assert any(name in str(w.message) for w in record)
    assert len(dataset.skipped) == 1 and dataset.skipped[0].endswith(name)
    assert VICTIM not in dataset.names
    assert len(dataset) == len(GOOD) - 1
    assert dataset.classes == ["LYT", "MON"]
    expected = {stem: code for stem, code in GOOD}
    assert [dataset.classes[t] for t in dataset.targets] == [expected[n] for n in dataset.names]


def test_odd_sized_images_are_bad_files(microscopy_folder):
    """All images 7 x 9: not a shape mismatch, yet no Bayer mosaic either."""
    root, _ = microscopy_folder(labelled({"LYT": 5}), shape=(7, 9))
    with pytest.raises(InputError, match=r"lyt_4\.tiff.*odd size"):
        load_microscopy(root)
    with pytest.warns(UserWarning, match="odd size"), pytest.raises(InputError, match="No usable images"):
        load_microscopy(root, on_bad_file="skip")


def test_only_bad_files_is_an_input_error(microscopy_folder):
    root, folders = microscopy_folder(labelled({"LYT": 5}))
    for path in folders[1.0].iterdir():
        path.write_bytes(b"not a tiff")
    with pytest.warns(UserWarning), pytest.raises(InputError, match="No usable images"):
        load_microscopy(root, on_bad_file="skip")


def test_wrong_shape_is_blamed_on_the_odd_one_out_even_when_listed_first(microscopy_folder):
    root, folders = microscopy_folder(GOOD)
    first = GOOD[0][0]
    tifffile.imwrite(folders[1.0] / f"{first}.tiff", np.zeros((10, 8), dtype=np.uint16))
    with pytest.raises(InputError) as error:
        load_microscopy(root)
    assert f"{first}.tiff" in str(error.value)
