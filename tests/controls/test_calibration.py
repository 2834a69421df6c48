"""Data model calibration: pairs made by a known hidden data model are fitted back.

Scenes are 48x64 crops of scikit-image photographs (rich colours, texture, dark and bright
areas), taken to linear light, divided by the camera's white balance and put on a black
level before mosaicing. The hidden data models differ from the camera's own parameters in
every colour group, so the fit has to move all of them.

Variant ties: two variants differ only where the demosaic, the sharpening or the denoising
differ, i.e. at edges and texture. Every crop here holds plenty of both, so the hidden variant
is asserted exactly (its search loss is about half of the runner-up's or less).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from raw2logit.controls.calibration import (
    CalibrationPairs,
    effective_colour_matrix,
    fit,
    read_pairs,
    simulate_pairs,
)
from raw2logit.errors import InputError
from raw2logit.isp import STATIC_PIPELINE_NAMES, CameraParams, ParametrizedPipeline, bayer_masks
from raw2logit.isp.specs import build_data_model
from raw2logit.names import CALIBRATED_PREFIX
from tests.dng import write_dng as shared_write_dng

pytest.importorskip("rawpy")
pytest.importorskip("pidng.core")

HEIGHT, WIDTH = 48, 64
# (photograph, top, left) of each 48x64 crop.
CROPS = (
    ("astronaut", 40, 180),
    ("astronaut", 300, 380),
    ("coffee", 150, 250),
    ("coffee", 60, 380),
    ("chelsea", 100, 150),
    ("rocket", 250, 300),
)
COLOUR_MATRIX_DELTA = ((0.0, 0.08, -0.05), (-0.06, 0.0, 0.04), (0.03, -0.07, 0.0))
WHITE_BALANCE_SCALE = (1.15, 1.0, 0.85)
BLACK_LEVEL_OFFSET = 0.01
# Recovery tolerances: black level in normalised raw units; the effective colour matrix
# M @ diag(wb) relative to its largest entry (WB and M alone are not identifiable: only their
# product acts). Measured errors are about 10x smaller (see the report in the test names).
BLACK_LEVEL_TOLERANCE = 5e-4
COLOUR_TOLERANCE = 0.02
MIN_PSNR = 40.0


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread():
    """One torch thread: the images are tiny, and OpenMP's spin-waiting on a shared CPU makes
    two threads much slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def scene_raw(camera: CameraParams, crops=CROPS, scale: float = 0.85) -> np.ndarray:
    """(N, 48, 64) float32 mosaics of photograph crops as ``camera``'s sensor would record them."""
    from skimage import data

    masks = bayer_masks(camera.pattern, HEIGHT, WIDTH, dtype=torch.float64).numpy().transpose(1, 2, 0)
    black = np.array(camera.black_level).reshape(2, 2).repeat(HEIGHT // 2, 0).repeat(WIDTH // 2, 1)
    raws = []
    for name, top, left in crops:
        photo = getattr(data, name)()[top : top + HEIGHT, left : left + WIDTH, :3] / 255.0
        sensor_rgb = photo**2.2 / np.array(camera.white_balance)
        # A little above the black level, so that dark areas still say where black is.
        raw = black + 0.015 + scale * (sensor_rgb * masks).sum(axis=-1)
        raws.append(np.clip(raw, 0, 1).astype(np.float32))
    return np.stack(raws)


def perturbed_theta(camera: CameraParams) -> dict[str, list]:
    """The hidden device: black level +0.01, white balance scaled, off-diagonal colour changes."""
    return {
        "black_level": (np.array(camera.black_level) + BLACK_LEVEL_OFFSET).tolist(),
        "white_balance": (np.array(camera.white_balance) * WHITE_BALANCE_SCALE).tolist(),
        "colour_matrix": (np.array(camera.colour_matrix) + COLOUR_MATRIX_DELTA).tolist(),
    }


def recovery_errors(pipeline: ParametrizedPipeline, hidden: dict[str, list]) -> tuple[float, float]:
    """(max |black level error|, max |ΔM diag(wb)| / max |M diag(wb)|) against the hidden θ."""
    black_error = np.abs(np.array(pipeline.black_level.tolist()) - hidden["black_level"]).max()
    truth = np.array(hidden["colour_matrix"]) * np.array(hidden["white_balance"])[None, :]
    colour_error = np.abs(effective_colour_matrix(pipeline) - truth).max() / np.abs(truth).max()
    return float(black_error), float(colour_error)


def views_hwc(pipeline: ParametrizedPipeline, raw: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return pipeline(torch.from_numpy(raw)).permute(0, 2, 3, 1).numpy()


# --- recovery on simulated pairs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def me_s_ga_fit(_single_torch_thread):
    """me_s_ga (Menon, sharpening filter, Gaussian) with perturbed colour θ, fitted from all 12."""
    camera = CameraParams.published("drone")
    hidden = perturbed_theta(camera)
    raw = scene_raw(camera)
    rgb = simulate_pairs(raw, camera, "me_s_ga", hidden, tone_curve="srgb")
    messages = []
    result = fit(raw, rgb, camera, steps=200, search_steps=30, holdout=0.25, seed=0, log=messages.append)
    return result, hidden, raw, rgb, messages


def test_all_twelve_candidates_choose_the_hidden_variant(me_s_ga_fit):
    """The 12 variants in the paper's order, and Malvar's and Menon's also with the white balance first:
    the hidden device (the paper's order) is found, well ahead of the other finalist."""
    result, _, _, _, messages = me_s_ga_fit
    assert [row["variant"] for row in result.variants.values() if not row["white_balance_first"]] == list(
        STATIC_PIPELINE_NAMES
    )
    assert [label for label, row in result.variants.items() if row["white_balance_first"]] == [
        f"{name}+wb_first" for name in STATIC_PIPELINE_NAMES if not name.startswith("bi")
    ]
    assert (result.variant, result.label, result.pipeline.white_balance_first) == (
        "me_s_ga",
        "me_s_ga",
        False,
    )
    finalists = {
        name: row["train_loss"] for name, row in result.variants.items() if row["stage"] == "all groups"
    }
    assert "me_s_ga" in finalists and len(finalists) == 2
    assert finalists["me_s_ga"] < 0.7 * min(loss for name, loss in finalists.items() if name != "me_s_ga")
    assert any("chose me_s_ga " in message for message in messages)


def test_colour_parameters_are_recovered(me_s_ga_fit):
    result, hidden, _, _, _ = me_s_ga_fit
    black_error, colour_error = recovery_errors(result.pipeline, hidden)
    assert black_error < BLACK_LEVEL_TOLERANCE
    assert colour_error < COLOUR_TOLERANCE
    # The camera's own parameters are far off: the fit had to move them.
    initial = ParametrizedPipeline(result.initial_camera, variant="me_s_ga", tone_curve="srgb")
    assert recovery_errors(initial, hidden)[1] > 5 * COLOUR_TOLERANCE


def test_held_out_views_match_the_device(me_s_ga_fit):
    result, _, _, _, _ = me_s_ga_fit
    assert len(result.heldout_names) == 2 and result.evaluated_on == "held-out"
    assert not set(result.heldout_names) & set(result.train_names)
    assert result.psnr >= MIN_PSNR
    assert result.delta_e < 0.5
    assert result.initial_psnr < 30 < result.psnr


def test_export_reloads_and_reproduces_the_views_exactly(me_s_ga_fit, tmp_path):
    result, _, raw, _, _ = me_s_ga_fit
    paths = result.write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fit.json",
        "pipeline.json",
        "residuals.png",
        "variants.csv",
    ]
    fitted = views_hwc(result.pipeline, raw)
    for reloaded in (
        ParametrizedPipeline.from_theta_json(paths["pipeline"]),
        build_data_model(f"{CALIBRATED_PREFIX}{paths['pipeline']}"),
    ):
        assert reloaded.variant == "me_s_ga" and reloaded.tone_curve == "srgb"
        np.testing.assert_array_equal(views_hwc(reloaded, raw), fitted)

    document = json.loads(paths["pipeline"].read_text())
    assert set(document) == {"variant", "tone_curve", "white_balance_first", "theta", "camera"}
    summary = json.loads(paths["fit"].read_text())
    assert (summary["variant"], summary["white_balance_first"]) == ("me_s_ga", False)
    assert summary["metrics"]["psnr"] == pytest.approx(result.psnr)
    assert set(summary["variants"]) == set(result.variants) and len(result.variants) == 20
    assert set(summary["pairs"]) == set(result.heldout_names)
    for row in summary["pairs"].values():  # the fit improves on the camera's metadata on every pair
        assert row["psnr"] > row["initial_psnr"] and row["delta_e"] < row["initial_delta_e"]
    assert summary["demosaic_diagnosis"]["follows_device"] and "follows the device" in summary["demosaic"]
    assert summary["timing"]["steps"] > 0 and summary["timing"]["seconds_per_step"] > 0
    assert summary["theta"] == document["theta"]
    rows = paths["variants"].read_text().splitlines()
    assert rows[0] == (
        "candidate,variant,white_balance_first,stage,train_loss,heldout_psnr,heldout_delta_e,chosen"
    )
    assert len(rows) == 21 and next(row for row in rows[1:] if row.endswith(",1")).startswith("me_s_ga,")
    with Image.open(paths["residuals"]) as figure:
        assert figure.size[0] > 100


def test_ma_u_me_among_its_one_step_neighbours():
    """ma_u_me uses no kernel group (Malvar, unsharp masking, median): refinement fits colour only."""
    camera = CameraParams.published("drone")
    hidden = perturbed_theta(camera)
    raw = scene_raw(camera, CROPS[:5])
    rgb = simulate_pairs(raw, camera, "ma_u_me", hidden, tone_curve="srgb")
    candidates = ["bi_u_me", "ma_s_me", "ma_u_ga", "ma_u_me", "me_u_me"]
    result = fit(raw, rgb, camera, variants=candidates, steps=150, search_steps=30, seed=1, log=None)
    assert result.variant == "ma_u_me"
    black_error, colour_error = recovery_errors(result.pipeline, hidden)
    assert black_error < BLACK_LEVEL_TOLERANCE
    assert colour_error < COLOUR_TOLERANCE
    assert result.psnr >= MIN_PSNR


def test_power_tone_curve_learns_gamma():
    camera = CameraParams.published("drone")
    hidden = {**perturbed_theta(camera), "gamma": [1.8]}
    raw = scene_raw(camera, CROPS[:4])
    rgb = simulate_pairs(raw, camera, "bi_s_ga", hidden, tone_curve="power")
    result = fit(
        raw, rgb, camera, variants=["bi_s_ga"], tone_curve="power", steps=150, search_steps=50, log=None
    )
    assert "gamma" in result.pipeline.active_groups()
    assert float(result.pipeline.gamma.detach()) == pytest.approx(1.8, abs=0.03)
    assert result.psnr >= MIN_PSNR


def test_holdout_is_deterministic_in_the_seed():
    camera = CameraParams.published("identity")
    raw = scene_raw(camera, CROPS[:4])
    rgb = simulate_pairs(raw, camera, "bi_s_ga")
    runs = [
        fit(raw, rgb, camera, variants=["bi_s_ga"], steps=1, search_steps=1, seed=s, log=None) for s in (3, 3)
    ]
    assert runs[0].heldout_names == runs[1].heldout_names and len(runs[0].heldout_names) == 1
    assert sorted(runs[0].heldout_names + runs[0].train_names) == [f"pair{i}" for i in range(4)]


def test_zero_steps_keep_the_camera_and_patches_fit_crops():
    camera = CameraParams.published("drone")
    hidden = perturbed_theta(camera)
    raw = scene_raw(camera, CROPS[:3])
    rgb = simulate_pairs(raw, camera, "bi_s_ga", hidden)
    unchanged = fit(raw, rgb, camera, variants=["bi_s_ga"], steps=0, search_steps=0, log=None)
    assert unchanged.psnr == unchanged.initial_psnr
    assert unchanged.camera.colour_matrix == camera.colour_matrix
    patches = fit(raw, rgb, camera, variants=["bi_s_ga"], steps=60, search_steps=0, patch_size=24, log=None)
    assert patches.settings["patch_size"] == 24
    assert patches.psnr > patches.initial_psnr + 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variants": ["bi_s_xx"]}, "Unknown static pipeline"),
        ({"tone_curve": "log"}, "Unknown tone curve"),
        ({"holdout": 1.0}, "holdout must lie in"),
        ({"margin": 30}, "margin must lie in"),
        ({"patch_size": 15}, "patch_size must be even"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, message):
    camera = CameraParams.published("identity")
    raw = scene_raw(camera, CROPS[:2])
    rgb = simulate_pairs(raw, camera)
    with pytest.raises(InputError, match=message):
        fit(raw, rgb, camera, steps=1, log=None, **kwargs)
    with pytest.raises(InputError, match=r"pairs_rgb must have shape"):
        fit(raw, rgb[:, :-2], camera, steps=1, log=None)


# --- real files: DNG + processed images ----------------------------------------------------------

WHITE = 4095
SITE_BLACK = (100, 110, 120, 130)
NEUTRAL = (0.5, 1.0, 0.8)  # AsShotNeutral: white balance (2, 1, 1.25)


def write_dng(path, mosaic, neutral=NEUTRAL):
    """An uncompressed 16-bit RGGB DNG of a camera whose RGB is linear sRGB."""
    return shared_write_dng(path, mosaic, "RGGB", SITE_BLACK, WHITE, neutral, "srgb")


def dng_camera() -> CameraParams:
    """The camera parameters the DNGs written here carry (rawpy reads them back)."""
    return CameraParams(
        black_level=[b / WHITE for b in SITE_BLACK], white_balance=[1 / n for n in NEUTRAL], pattern="RGGB"
    )


def save_rgb(path, rgb: np.ndarray) -> None:
    """(H, W, 3) in [0, 1] -> 8-bit PNG/JPEG or 16-bit TIFF, by suffix."""
    if path.suffix == ".tif":
        import tifffile

        tifffile.imwrite(path, np.round(rgb * 65535).astype(np.uint16), photometric="rgb")
    else:
        Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(path, quality=98, subsampling=0)


@pytest.fixture(scope="module")
def device_folder(tmp_path_factory):
    """Four DNGs with device images (three PNG, one JPEG) from a hidden me_s_ga model."""
    folder = tmp_path_factory.mktemp("device")
    camera = dng_camera()
    mosaics = np.round(scene_raw(camera, CROPS[:4]) * WHITE).astype(np.uint16)
    raw = mosaics.astype(np.float32) / np.float32(WHITE)
    rgb = simulate_pairs(raw, camera, "me_s_ga", perturbed_theta(camera))
    for i, (mosaic, image) in enumerate(zip(mosaics, rgb)):
        write_dng(folder / f"shot{i}.dng", mosaic)
        save_rgb(folder / f"shot{i}.{'jpg' if i == 3 else 'png'}", image)
    return folder, raw, rgb


def test_read_pairs_reads_raws_images_and_camera(device_folder):
    folder, raw, rgb = device_folder
    (folder / "notes.txt").write_text("other files are ignored")
    pairs = read_pairs(folder)
    assert isinstance(pairs, CalibrationPairs)
    assert pairs.names == ["shot0", "shot1", "shot2", "shot3"] and pairs.bits == 8
    assert pairs.raw.shape == (4, HEIGHT, WIDTH) and pairs.rgb.shape == (4, HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(pairs.raw, raw)
    np.testing.assert_array_equal(pairs.rgb[:3], rgb[:3])  # PNG: lossless
    assert np.abs(pairs.rgb[3] - rgb[3]).mean() < 3 / 255  # JPEG: close
    expected = dng_camera()
    np.testing.assert_allclose(pairs.camera.black_level, expected.black_level, atol=1e-9)
    np.testing.assert_allclose(pairs.camera.white_balance, expected.white_balance, rtol=1e-5)
    np.testing.assert_allclose(pairs.camera.colour_matrix, np.eye(3), atol=1e-3)


def test_read_pairs_then_fit_end_to_end(device_folder, tmp_path):
    folder, _, _ = device_folder
    pairs = read_pairs(folder)
    result = fit(pairs.raw, pairs.rgb, pairs.camera, variants=["bi_s_ga", "me_s_ga"], steps=40,
                 search_steps=15, names=pairs.names, log=None)  # fmt: skip
    assert result.psnr > result.initial_psnr + 5
    assert set(result.heldout_names) <= set(pairs.names)
    paths = result.write(tmp_path)
    reloaded = build_data_model(CALIBRATED_PREFIX + str(paths["pipeline"]))
    np.testing.assert_array_equal(views_hwc(reloaded, pairs.raw), views_hwc(result.pipeline, pairs.raw))


def test_read_pairs_sixteen_bit_tiff(tmp_path):
    camera = dng_camera()
    mosaic = np.round(scene_raw(camera, CROPS[:1])[0] * WHITE).astype(np.uint16)
    rgb = simulate_pairs(mosaic.astype(np.float32) / WHITE, camera, quantise_bits=16)[0]
    write_dng(tmp_path / "a.dng", mosaic)
    save_rgb(tmp_path / "a.tif", rgb)
    pairs = read_pairs(tmp_path)
    assert pairs.bits == 16
    np.testing.assert_allclose(pairs.rgb[0], rgb, atol=1e-7)


def test_read_pairs_sixteen_bit_png(tmp_path):
    """Read exactly (16 bits per channel), written by an independent encoder (pypng)."""
    import png

    camera = dng_camera()
    mosaic = np.round(scene_raw(camera, CROPS[:1])[0] * WHITE).astype(np.uint16)
    rgb = simulate_pairs(mosaic.astype(np.float32) / WHITE, camera, quantise_bits=16)[0]
    write_dng(tmp_path / "a.dng", mosaic)
    height, width, _ = rgb.shape
    with (tmp_path / "a.png").open("wb") as stream:
        png.Writer(width, height, greyscale=False, bitdepth=16).write(
            stream, np.round(rgb * 65535).astype(np.uint16).reshape(height, width * 3)
        )
    pairs = read_pairs(tmp_path)
    assert pairs.bits == 16
    np.testing.assert_allclose(pairs.rgb[0], rgb, atol=1e-7)


def test_read_pairs_warns_when_white_balance_varies(tmp_path):
    camera = dng_camera()
    mosaics = np.round(scene_raw(camera, CROPS[:2]) * WHITE).astype(np.uint16)
    for i, (mosaic, neutral) in enumerate(zip(mosaics, (NEUTRAL, (0.6, 1.0, 0.7)))):
        write_dng(tmp_path / f"s{i}.dng", mosaic, neutral)
        save_rgb(tmp_path / f"s{i}.png", simulate_pairs(mosaic.astype(np.float32) / WHITE, camera)[0])
    with pytest.warns(UserWarning, match="as-shot white balance differs"):
        pairs = read_pairs(tmp_path)
    assert pairs.camera.white_balance == pytest.approx((2.0, 1.0, 1.25), rel=1e-5)
    assert pairs.cameras[1].white_balance == pytest.approx((1 / 0.6, 1.0, 1 / 0.7), rel=1e-5)


# --- bad files ------------------------------------------------------------------------------------


@pytest.fixture
def good_folder(tmp_path, device_folder):
    """A private copy of two good pairs, to be spoilt by the test."""
    source, _, _ = device_folder
    for name in ("shot0.dng", "shot0.png", "shot1.dng", "shot1.png"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    return tmp_path


def spoil(folder, kind: str) -> str:
    """Make one bad file of ``kind``; returns the name the error must give."""
    image = np.asarray(Image.open(folder / "shot0.png"))
    if kind == "cropped":  # a camera JPEG without the sensor's border
        Image.fromarray(image[4:-4, 4:-4]).save(folder / "bad.png")
    elif kind == "wrong_size":
        Image.fromarray(np.tile(image, (3, 3, 1))).save(folder / "bad.png")
    elif kind == "rotated":
        Image.fromarray(np.ascontiguousarray(image.transpose(1, 0, 2))).save(folder / "bad.png")
    elif kind == "grey":
        Image.fromarray(image[..., 0]).save(folder / "bad.png")
    elif kind == "unreadable_image":
        (folder / "bad.png").write_bytes(b"not a png")
    elif kind == "unreadable_raw":
        (folder / "bad.dng").write_bytes(b"not a dng")
        Image.fromarray(image).save(folder / "bad.png")
        return "bad.dng"
    elif kind == "image_without_raw":
        Image.fromarray(image).save(folder / "bad.jpg")
        return "bad.jpg"
    elif kind == "raw_without_image":
        (folder / "bad.dng").write_bytes((folder / "shot0.dng").read_bytes())
        return "bad.dng"
    if kind in ("cropped", "wrong_size", "rotated", "grey", "unreadable_image"):
        (folder / "bad.dng").write_bytes((folder / "shot0.dng").read_bytes())
        return "bad.png"
    raise AssertionError(kind)


BAD_FILES = {
    "cropped": r"is 40x56, 8 rows and 8 columns smaller than the raw.*DefaultCrop.*not resized",
    "wrong_size": r"is 144x192; expected 48x64 like the mosaic of bad\.dng",
    "rotated": r"is 64x48, i\.e\. rotated",
    "grey": r"is a grey-scale image",
    "unreadable_image": r"is not a readable image",
    "unreadable_raw": r"is not a readable DNG raw file",
    "image_without_raw": r"is a processed image without a raw file bad\.dng",
    "raw_without_image": r"needs exactly one processed image bad\.jpg/\.png/\.tif.*found none",
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_file_raises_naming_it(good_folder, kind):
    name = spoil(good_folder, kind)
    with pytest.raises(InputError, match=BAD_FILES[kind]) as error:
        read_pairs(good_folder)
    assert str(good_folder / name) in str(error.value)
    assert "on_bad_file='skip'" in str(error.value)


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_file_is_skipped_with_a_warning(good_folder, kind):
    name = spoil(good_folder, kind)
    stem_file = "bad.jpg" if kind == "image_without_raw" else "bad.dng"
    with pytest.warns(UserWarning, match=re.escape(f"Skipping {stem_file}")) as caught:
        pairs = read_pairs(good_folder, on_bad_file="skip")
    assert any(str(good_folder / name) in str(w.message) for w in caught)
    assert pairs.names == ["shot0", "shot1"] and len(pairs.raw) == 2
    assert pairs.skipped == [stem_file]


def test_two_images_for_one_raw_are_ambiguous(good_folder):
    Image.open(good_folder / "shot1.png").save(good_folder / "shot1.tif")
    with pytest.raises(
        InputError, match=r"shot1\.dng needs exactly one processed image.*shot1\.png, shot1\.tif"
    ):
        read_pairs(good_folder)


def test_hidden_files_are_ignored_and_duplicate_stems_rejected(good_folder):
    (good_folder / "._shot0.png").write_bytes(b"macOS resource fork")
    assert read_pairs(good_folder).names == ["shot0", "shot1"]
    (good_folder / "shot1.DNG").write_bytes((good_folder / "shot1.dng").read_bytes())
    with pytest.raises(InputError, match=r"shot1\.(dng|DNG) has the same stem as shot1\.(dng|DNG)"):
        read_pairs(good_folder)


def test_folder_problems(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_pairs(tmp_path / "missing")
    with pytest.raises(InputError, match="holds no DNG raws and no processed images"):
        read_pairs(tmp_path)
    with pytest.raises(InputError, match="on_bad_file must be one of"):
        read_pairs(tmp_path, on_bad_file="ignore")


# --- calibrated:<file> specs --------------------------------------------------------------------


def test_calibrated_specs_reject_bad_files(tmp_path):
    with pytest.raises(InputError, match="names no file"):
        build_data_model(CALIBRATED_PREFIX)
    with pytest.raises(InputError, match=r"device\.json does not exist"):
        build_data_model(f"{CALIBRATED_PREFIX}{tmp_path / 'device.json'}")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match=r"broken\.json is not readable JSON"):
        build_data_model(f"{CALIBRATED_PREFIX}{tmp_path / 'broken.json'}")
    (tmp_path / "odd.json").write_text(json.dumps({"theta": {}, "camera": {}, "variant": "xx_s_ga"}))
    with pytest.raises(InputError, match=r"odd\.json: Unknown static pipeline"):
        build_data_model(f"{CALIBRATED_PREFIX}{tmp_path / 'odd.json'}")
    (tmp_path / "list.json").write_text(json.dumps({"theta": [1, 2], "camera": {}}))
    with pytest.raises(InputError, match=r"list\.json: 'theta' and 'camera' must be JSON objects"):
        build_data_model(f"{CALIBRATED_PREFIX}{tmp_path / 'list.json'}")
