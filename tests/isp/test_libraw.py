"""LibRaw (rawpy) as a data model: the in-memory DNG, LibRaw's processing of it, specs and bad names."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from raw2logit.data.dng import read_dng
from raw2logit.errors import InputError
from raw2logit.isp import BAYER_PATTERNS, STATIC_PIPELINE_NAMES, CameraParams
from raw2logit.isp.libraw import LibRawPipeline, dng_bytes, dng_colour, libraw_process
from raw2logit.isp.specs import build_data_model, parse_specs, spec_digest, spec_name
from raw2logit.isp.tone import bt709_encode
from raw2logit.names import LIBRAW_ALGORITHMS, LIBRAW_GPL_PACKS, libraw_available_algorithms

rawpy = pytest.importorskip("rawpy")
CHANNEL = {"R": 0, "G": 1, "B": 2}


def camera_with(name: str, pattern: str) -> CameraParams:
    published = CameraParams.published(name)
    return CameraParams(
        published.black_level, published.white_balance, published.colour_matrix, pattern, name
    )


def photo_raw(camera: CameraParams, seed: int = 0) -> torch.Tensor:
    """(1, 32, 48) mosaic of a smooth colour scene above the black level."""
    generator = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:32, 0:48] / 48.0
    planes = [0.1 + 0.3 * np.sin(3 * rows + c) ** 2 + 0.2 * cols for c in range(3)]
    sites = np.array([CHANNEL[c] for c in camera.pattern]).reshape(2, 2)
    channel = np.tile(sites, (16, 24))
    mosaic = np.choose(channel, planes) + np.tile(np.reshape(camera.black_level, (2, 2)), (16, 24))
    mosaic += generator.normal(0, 0.002, mosaic.shape)
    return torch.tensor(np.clip(mosaic, 0, 1)[None], dtype=torch.float32)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("name", ["identity", "microscopy", "drone"])
def test_the_dng_carries_the_camera(tmp_path, name, pattern):
    """LibRaw reads back the pattern, the black level per site and the camera's effective colour map
    ``M diag(wb)`` (up to the scale LibRaw sets by its own white balance rules)."""
    camera = camera_with(name, pattern)
    counts = np.round(photo_raw(camera)[0].double().numpy() * 65535).astype(np.uint16)
    path = tmp_path / "shot.dng"
    path.write_bytes(dng_bytes(counts, camera))
    read = read_dng(path, defaultdict(list))
    np.testing.assert_array_equal(read.mosaic, counts)
    assert read.camera.pattern == pattern and read.white_level == 65535
    np.testing.assert_allclose(read.camera.black_level, camera.black_level, atol=1 / 65535)
    effective = np.array(camera.colour_matrix) * np.array(camera.white_balance)
    back = np.array(read.camera.colour_matrix) * np.array(read.camera.white_balance)
    np.testing.assert_allclose(back / back[1, 1], effective / effective[1, 1], atol=2e-4)


def test_equal_to_libraw_on_a_dng_written_by_pidng(tmp_path):
    """The in-memory DNG holds what an independent writer (pidng) writes: LibRaw's output is identical."""
    pytest.importorskip("pidng.core")
    from tests.dng import write_dng

    drone = camera_with("drone", "GRBG")  # whole-count black levels: pidng writes integers
    camera = CameraParams([round(b * 65535) / 65535 for b in drone.black_level], drone.white_balance,
                          drone.colour_matrix, "GRBG")  # fmt: skip
    raw = photo_raw(camera, seed=1)
    counts = np.round(raw[0].double().numpy() * 65535).astype(np.uint16)
    neutral, xyz_to_camera = dng_colour(camera)
    black = [b * 65535 for b in camera.black_level]
    path = write_dng(
        tmp_path / "pidng.dng", counts, "GRBG", [round(b) for b in black], 65535, neutral, xyz_to_camera
    )
    with rawpy.imread(str(path)) as opened:
        expected = opened.postprocess(demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD, use_camera_wb=True,
                                      no_auto_bright=True, output_bps=16, adjust_maximum_thr=0, user_flip=0)  # fmt: skip
    ours = LibRawPipeline("AHD", camera)(raw)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours * 65535, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["identity", "drone"])
def test_a_flat_white_patch_is_grey_on_the_bt709_curve(name):
    """sRGB white reflectance at exposure k: LibRaw outputs neutral grey BT.709(k / (1 - black))."""
    camera = camera_with(name, "RGGB")
    neutral, _ = dng_colour(camera)
    level = 0.2
    sites = [camera.black_level[i] + level * neutral[CHANNEL[c]] for i, c in enumerate(camera.pattern)]
    raw = torch.tensor(sites, dtype=torch.float32).view(2, 2).repeat(16, 16)[None]
    for algorithm in ("AHD", "LINEAR"):
        centre = LibRawPipeline(algorithm, camera)(raw)[0, :, 16, 16]
        expected = bt709_encode(torch.tensor(level / (1 - max(camera.black_level)), dtype=torch.float64))
        torch.testing.assert_close(centre.double(), expected.repeat(3), rtol=0, atol=2e-3)


def test_every_available_algorithm_runs_and_differs():
    camera = camera_with("drone", "RGGB")
    raw = photo_raw(camera, seed=2)
    available = libraw_available_algorithms()
    assert {"AHD", "DCB", "VNG", "PPG", "AAHD", "LINEAR"} <= set(available)
    views = {name: LibRawPipeline(name, camera)(raw) for name in available}
    for name, view in views.items():
        assert view.shape == (1, 3, 32, 48) and view.dtype == torch.float32, name
        assert 0 <= view.min() and view.max() <= 1, name
    assert not torch.equal(views["AHD"], views["LINEAR"])


def test_unknown_and_missing_algorithms_are_one_sentence():
    available = ", ".join(libraw_available_algorithms())
    with pytest.raises(InputError, match=rf"'libraw:FANCY' names no LibRaw demosaic algorithm;.*{available}"):
        LibRawPipeline("libraw:FANCY", CameraParams())
    missing = [name for name in LIBRAW_ALGORITHMS if name not in libraw_available_algorithms()]
    if not missing:
        pytest.skip("this LibRaw has every demosaic pack")
    name = missing[-1]
    pattern = (rf"^LibRaw demosaic algorithm {name} is not in the installed LibRaw [0-9.]+ \(it needs LibRaw's "
               rf"{LIBRAW_GPL_PACKS[name]} demosaic pack\); available: {available}\.$")  # fmt: skip
    with pytest.raises(InputError, match=pattern):
        parse_specs([f"libraw:{name.lower()}"])
    with pytest.raises(InputError, match=pattern):
        build_data_model(f"libraw:{name}", CameraParams())


def test_specs():
    available = libraw_available_algorithms()
    assert parse_specs("all+libraw") == [*STATIC_PIPELINE_NAMES, *(f"libraw:{a}" for a in available)]
    assert parse_specs(["bi_s_me", "libraw:ahd", "libraw: dcb"]) == ["bi_s_me", "libraw:AHD", "libraw:DCB"]
    assert spec_name("libraw:vng") == "libraw:VNG"
    assert spec_digest("libraw:AHD") != spec_digest("libraw:DCB") and spec_digest(
        "libraw:AHD"
    ) == spec_digest("libraw:ahd")
    model = build_data_model("libraw:PPG", CameraParams.published("drone"))
    assert isinstance(model, LibRawPipeline) and model.name == "libraw:PPG" and not model.training
    with pytest.raises(InputError, match="needs the dataset's camera parameters"):
        build_data_model("libraw:AHD")


def test_a_camera_libraw_cannot_represent_is_refused():
    odd = CameraParams(
        white_balance=(1.0, 1.0, 1.0), colour_matrix=((1, 0, 0), (0, 1, 0), (0, 2, 1)), name="odd"
    )
    with pytest.raises(
        InputError, match=r"Camera 'odd': sRGB white has the raw colour .* LibRaw needs a positive one"
    ):
        LibRawPipeline("AHD", odd)


def test_libraw_process_keeps_the_size():
    camera = camera_with("identity", "BGGR")
    counts = np.round(photo_raw(camera)[0].double().numpy() * 65535).astype(np.uint16)
    assert libraw_process(dng_bytes(counts, camera), "DCB").shape == (32, 48, 3)
