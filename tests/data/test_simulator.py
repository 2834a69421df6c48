"""The simulated sensor (``sensor.SensorModel``) and the simulated datasets (``simulator``).

Physics: shot and read noise statistics, the colour filter array of every Bayer pattern, 12-bit
quantisation left-justified into 16 bits, saturation, black level, and camera parameters that
invert the sensor exactly. Files: determinism in the seed, incremental intensities, caching.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch

from raw2logit.data.layout import intensity_folder
from raw2logit.data.scenes import MICROSCOPY_CLASSES, render_aerial
from raw2logit.data.sensor import DRONE_CAMERA, MICROSCOPE, SensorModel
from raw2logit.data.simulator import _NOISE, _SCENE, _image_rng, simulate_drone, simulate_microscopy
from raw2logit.errors import InputError
from raw2logit.isp import BAYER_PATTERNS
from raw2logit.isp.black_level import black_level_correction
from raw2logit.isp.colour import colour_correction, white_balance

# Sites of the 2x2 block (row, col), read row by row, and which colour each pattern puts there:
# written out by hand as the oracle (colour-demosaicing's naming, R of RGGB at rows 0::2, cols 0::2).
SITES = ((0, 0), (0, 1), (1, 0), (1, 1))
SITE_COLOURS = {
    "RGGB": {"R": [(0, 0)], "G": [(0, 1), (1, 0)], "B": [(1, 1)]},
    "BGGR": {"B": [(0, 0)], "G": [(0, 1), (1, 0)], "R": [(1, 1)]},
    "GRBG": {"G": [(0, 0), (1, 1)], "R": [(0, 1)], "B": [(1, 0)]},
    "GBRG": {"G": [(0, 0), (1, 1)], "B": [(0, 1)], "R": [(1, 0)]},
}
SENSORS = {"microscope": MICROSCOPE, "drone_camera": DRONE_CAMERA}
# Flat colour patches (linear reflectance): white, mid grey, dark grey, saturated red, green, blue, skin.
PATCHES = (
    (1.0, 1.0, 1.0),
    (0.18, 0.18, 0.18),
    (0.05, 0.05, 0.05),
    (0.60, 0.08, 0.05),
    (0.10, 0.45, 0.12),
    (0.06, 0.12, 0.55),
    (0.45, 0.30, 0.22),
)


def flat(rgb, height=64, width=64) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, dtype=np.float64), (height, width, 3)).copy()


def site_electrons(sensor: SensorModel, counts: np.ndarray) -> list[np.ndarray]:
    """Electrons ((counts / justify - black) / gain) of the four sites, reading order."""
    native = counts.astype(np.float64) / sensor.justify
    return [
        (native[row::2, col::2] - black) / sensor.gain for (row, col), black in zip(SITES, sensor.black_level)
    ]


def expected_electrons(sensor: SensorModel, rgb, intensity: float) -> list[float]:
    """Expected electrons per site for a flat scene of reflectance ``rgb`` (the model's definition)."""
    response = np.asarray(sensor.colour_response) @ (np.asarray(rgb) * np.asarray(sensor.illuminant))
    white = np.asarray(sensor.colour_response) @ np.asarray(sensor.illuminant)
    per_channel = response * sensor.white_electrons / white.max() * intensity
    return [per_channel["RGB".index(colour)] for colour in sensor.pattern]


def channel_means(counts: np.ndarray, pattern: str) -> np.ndarray:
    """Mean of the mosaic over the sites of each colour: (3,) (R, G, B)."""
    return np.array(
        [np.mean([counts[r::2, c::2].mean() for r, c in SITE_COLOURS[pattern][colour]]) for colour in "RGB"]
    )


def develop_flat(counts: np.ndarray, sensor: SensorModel) -> np.ndarray:
    """Black level -> white balance -> colour correction of a flat patch, with ``camera_params()``.

    The mosaic is normalised by 2^16 - 1 and black-level corrected as the data models do; for a flat
    patch every site of a channel holds the same value, so the channel means stand in for demosaicing.
    """
    camera = sensor.camera_params().tensors(dtype=torch.float64)
    raw = torch.from_numpy(counts.astype(np.float64) / 65535.0)[None]
    corrected = black_level_correction(raw, camera["black_level"])[0].numpy()
    rgb = torch.from_numpy(channel_means(corrected, sensor.pattern)).view(1, 3, 1, 1)
    balanced = white_balance(rgb, camera["white_balance"])
    return colour_correction(balanced, camera["colour_matrix"]).view(3).numpy()


# --- noise -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sensor_name", SENSORS)
@pytest.mark.parametrize("intensity", [1.0, 0.1, 0.01])
def test_shot_and_read_noise_statistics(sensor_name, intensity):
    """Per site, electrons are Poisson(mean) + N(0, read_noise^2): variance = mean + read_noise^2."""
    sensor = SENSORS[sensor_name]
    grey = (0.5, 0.5, 0.5)
    counts = sensor.expose(flat(grey, 256, 256), intensity, np.random.default_rng(11))
    expected = expected_electrons(sensor, grey, intensity)
    ratios = []
    for electrons, mean in zip(site_electrons(sensor, counts), expected):
        # Quantisation adds (1 / gain)^2 / 12 e^2 (0.3 e^2 for the drone camera's 12-bit ADC).
        variance = mean + sensor.read_noise**2 + 1 / (12 * sensor.gain**2)
        assert electrons.mean() == pytest.approx(mean, rel=0.01, abs=0.2)
        ratios.append(electrons.var() / variance)
    print(f"{sensor_name} I={intensity}: var / (mean + read^2) per site {np.round(ratios, 4)}")
    # 16384 pixels per site: the variance estimate has a relative standard error of 1.1 %.
    np.testing.assert_allclose(ratios, 1.0, atol=0.05)


@pytest.mark.parametrize("sensor_name", SENSORS)
def test_lower_intensity_lowers_signal_and_snr_as_square_root(sensor_name):
    sensor = SENSORS[sensor_name]
    grey = (0.5, 0.5, 0.5)
    stats = {}
    for intensity in (1.0, 0.01):
        green = site_electrons(
            sensor, sensor.expose(flat(grey, 256, 256), intensity, np.random.default_rng(3))
        )
        green = green[sensor.pattern.index("G")]
        stats[intensity] = (green.mean(), green.mean() / green.std())
    (mean_high, snr_high), (mean_low, snr_low) = stats[1.0], stats[0.01]
    assert mean_low == pytest.approx(0.01 * mean_high, rel=0.02)
    assert snr_low < snr_high
    # Shot-noise limited: SNR = mean / sqrt(mean + read^2), about sqrt(100) = 10 times lower at 1 %.
    predicted = [m / np.sqrt(m + sensor.read_noise**2) for m in (mean_high, mean_low)]
    print(f"{sensor_name}: SNR {snr_high:.1f} -> {snr_low:.2f} (ratio {snr_high / snr_low:.2f})")
    assert snr_high / snr_low == pytest.approx(predicted[0] / predicted[1], rel=0.05)
    assert 8.0 < snr_high / snr_low < 12.0


def test_exposure_outside_unit_interval_is_refused():
    for intensity in (0.0, -0.5, 1.5):
        with pytest.raises(InputError, match="intensity"):
            MICROSCOPE.expose(flat((0.5, 0.5, 0.5), 4, 4), intensity, np.random.default_rng(0))


# --- colour filter array, quantisation, saturation, black level ------------------------------


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("colour", "RGB")
def test_bayer_cfa_lights_the_sites_the_pattern_names(pattern, colour):
    sensor = SensorModel(
        pattern=pattern,
        read_noise=0.0,
        psf_sigma=0.0,
        black_level=(0.0, 0.0, 0.0, 0.0),
        colour_response=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    )
    scene = flat(np.eye(3)["RGB".index(colour)], 8, 12)
    counts = sensor.expose(scene, 1.0, np.random.default_rng(0))
    lit = np.zeros((8, 12), dtype=bool)
    for row, col in SITE_COLOURS[pattern][colour]:
        lit[row::2, col::2] = True
    np.testing.assert_array_equal(counts > 0, lit)
    assert counts[lit].min() > 30000  # about white_electrons * gain, not a stray count


def test_twelve_bit_counts_are_left_justified_and_quantised():
    scene = np.random.default_rng(1).uniform(0.0, 1.0, size=(64, 64, 3))
    counts = DRONE_CAMERA.expose(scene, 1.0, np.random.default_rng(2))
    assert counts.dtype == np.uint16
    assert DRONE_CAMERA.justify == 16
    assert np.all(counts % 16 == 0)
    assert counts.max() <= 4095 * 16
    assert len(np.unique(counts)) > 200  # a real signal, not a constant


def test_saturation_clips_at_the_native_maximum():
    # Drone camera: full well 7700 e- * 0.528 DN/e- + 256 DN > 4095 DN, so the ADC saturates first.
    counts = DRONE_CAMERA.expose(flat((5.0, 5.0, 5.0), 16, 16), 1.0, np.random.default_rng(0))
    np.testing.assert_array_equal(counts, 4095 * 16)


def test_saturation_clips_at_full_well():
    # 30000 e- * 2 DN/e- + 100 DN = 60100 < 65535: the well fills before the 16-bit ADC saturates.
    sensor = replace(MICROSCOPE, psf_sigma=0.0)
    counts = sensor.expose(flat((20.0, 20.0, 20.0), 16, 16), 1.0, np.random.default_rng(0))
    np.testing.assert_array_equal(counts, round(sensor.full_well * sensor.gain + 100.0))


@pytest.mark.parametrize("sensor_name", SENSORS)
def test_dark_frame_shows_the_black_level_of_each_site(sensor_name):
    sensor = replace(SENSORS[sensor_name], black_level=(100.0, 140.0, 180.0, 220.0))
    counts = sensor.expose(np.zeros((128, 128, 3)), 1.0, np.random.default_rng(4))
    means = [counts[row::2, col::2].mean() for row, col in SITES]
    np.testing.assert_allclose(
        means, np.array(sensor.black_level) * sensor.justify, atol=0.1 * sensor.justify
    )


# --- camera parameters ------------------------------------------------------------------------


def noiseless(base: SensorModel, pattern: str, black_level=(100.0, 200.0, 300.0, 400.0)) -> SensorModel:
    """``base``'s colour response and illuminant on a sensor whose noise is negligible: no read
    noise, 10^9 electrons for white (shot noise 3e-5 relative), gain set to fill the ADC's range."""
    white_electrons = 1e9
    native_max = 2**base.bit_depth - 1
    return replace(
        base,
        pattern=pattern,
        read_noise=0.0,
        full_well=1.2e9,
        white_electrons=white_electrons,
        gain=0.9 * (native_max - max(black_level)) / white_electrons,
        black_level=black_level,
        psf_sigma=0.0,
    )


@pytest.mark.parametrize("sensor_name", SENSORS)
@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_camera_params_recover_the_scene_reflectance(sensor_name, pattern):
    sensor = noiseless(SENSORS[sensor_name], pattern, black_level=(100.0, 150.0, 200.0, 250.0))
    worst = 0.0
    for patch in PATCHES:
        counts = sensor.expose(flat(patch, 16, 16), 1.0, np.random.default_rng(0))
        recovered = develop_flat(counts, sensor)
        np.testing.assert_allclose(recovered, patch, rtol=0.01, atol=0.002)
        worst = max(worst, float(np.max(np.abs(recovered - patch) / np.asarray(patch))))
    print(f"{sensor_name} {pattern}: worst relative colour error {worst:.2e}")


@pytest.mark.parametrize("sensor_name", SENSORS)
def test_camera_params_of_the_simulated_sensors_recover_reflectance_on_average(sensor_name):
    """The real simulated sensors (noise, PSF, their black levels): the mean over a patch is exact."""
    sensor = SENSORS[sensor_name]
    worst = 0.0
    for patch in PATCHES[1:]:  # white would saturate nothing, but keep to the mid-tones
        counts = sensor.expose(flat(patch, 96, 96), 1.0, np.random.default_rng(5))
        recovered = develop_flat(counts, sensor)
        np.testing.assert_allclose(recovered, patch, rtol=0.01, atol=0.002)
        worst = max(worst, float(np.max(np.abs(recovered - patch) / np.asarray(patch))))
    print(f"{sensor_name}: worst relative colour error over patches {worst:.2e}")


@pytest.mark.parametrize("sensor_name", SENSORS)
def test_white_balance_makes_white_neutral(sensor_name):
    sensor = SENSORS[sensor_name]
    counts = sensor.expose(flat((1.0, 1.0, 1.0), 96, 96), 1.0, np.random.default_rng(6))
    camera = sensor.camera_params().tensors(dtype=torch.float64)
    raw = torch.from_numpy(counts.astype(np.float64) / 65535.0)[None]
    corrected = black_level_correction(raw, camera["black_level"])[0].numpy()
    rgb = channel_means(corrected, sensor.pattern)
    assert rgb.max() / rgb.min() > 1.04  # the illuminant and filters do tint the raw white
    balanced = white_balance(torch.from_numpy(rgb).view(1, 3, 1, 1), camera["white_balance"]).view(3).numpy()
    np.testing.assert_allclose(balanced / balanced[1], 1.0, atol=0.005)
    assert camera["white_balance"][1] == 1.0  # green is the reference channel


def test_camera_params_are_in_normalised_units():
    camera = DRONE_CAMERA.camera_params()
    # 256 native DN of a 12-bit ADC, left-justified: 4096 / 65535, as the Raw-Drone DNGs' 0.0625.
    np.testing.assert_allclose(camera.black_level, 4096 / 65535)
    assert camera.pattern == DRONE_CAMERA.pattern


# --- simulated datasets: determinism and caching -----------------------------------------------


def tree_bytes(folder) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "simulation.json"
    }


def small_microscopy(root, **overrides):
    arguments = {"num_images": 12, "size": 32, "intensities": (1.0, 0.01), "seed": 1, **overrides}
    return simulate_microscopy(root, **arguments)


def test_microscopy_simulation_is_deterministic_in_the_seed(tmp_path):
    first = tree_bytes(small_microscopy(tmp_path / "a"))
    again = tree_bytes(small_microscopy(tmp_path / "b"))
    other = tree_bytes(small_microscopy(tmp_path / "c", seed=2))
    raws = [name for name in first if name.endswith(".tiff")]
    assert len(raws) == 24 and "labels/Ma190c_annotations.dat" in first and "camera.json" in first
    assert first == again
    assert set(other) == set(first)
    assert all(other[name] != first[name] for name in raws)


def test_each_intensity_has_its_own_child_seed(tmp_path):
    """An intensity simulated alone gives the bytes it has when simulated with others."""
    together = tree_bytes(small_microscopy(tmp_path / "together"))
    high = tree_bytes(small_microscopy(tmp_path / "high", intensities=(1.0,)))
    low = tree_bytes(small_microscopy(tmp_path / "low", intensities=(0.01,)))
    assert {**high, **low} == together
    # The two intensities are different exposures of the same scenes, not copies.
    name = "sim_00000.tiff"
    high = tifffile.imread(tmp_path / "together/microscopy/images/raw_scale100" / name).astype(float)
    low = tifffile.imread(tmp_path / "together/microscopy/images/raw_scale001" / name).astype(float)
    assert low.mean() < 0.05 * high.mean() + 200  # black level 100 DN plus 1 % of the signal
    assert np.corrcoef(high.ravel(), low.ravel())[0, 1] > 0.5


def test_noise_streams_differ_per_image_intensity_and_purpose():
    """Every image, intensity and purpose (scene, noise) draws from its own child seed."""
    draws = {
        key: _image_rng(0, *key).random(4).tobytes()
        for key in [(0, _NOISE, 1.0), (0, _NOISE, 0.01), (0, _NOISE, 0.05), (1, _NOISE, 1.0), (0, _SCENE)]
    }
    assert len(set(draws.values())) == len(draws)
    assert _image_rng(0, 0, _NOISE, 0.01).random(4).tobytes() == draws[(0, _NOISE, 0.01)]


def test_drone_simulation_is_deterministic_in_the_seed(tmp_path):
    arguments = {"num_captures": 2, "height": 64, "width": 96, "seed": 3}
    together = tree_bytes(simulate_drone(tmp_path / "a", intensities=(1.0, 0.01), **arguments))
    high = tree_bytes(simulate_drone(tmp_path / "b", intensities=(1.0,), **arguments))
    low = tree_bytes(simulate_drone(tmp_path / "c", intensities=(0.01,), **arguments))
    other = tree_bytes(simulate_drone(tmp_path / "d", intensities=(1.0, 0.01), **{**arguments, "seed": 4}))
    assert len([n for n in together if n.endswith(".tif")]) == 4
    assert len([n for n in together if n.startswith("masks_full")]) == 2
    assert {**high, **low} == together
    assert all(other[name] != together[name] for name in together if name.endswith((".tif", ".png")))


# Bug: ``simulator._prepare`` compares the parameters read back from simulation.json (JSON lists) with
# the fresh ones (``asdict(sensor)`` holds tuples), so the record never matches: every call deletes
# the folder and regenerates it, dropping intensities generated earlier.


def test_microscopy_intensities_added_later_reproduce_the_same_bytes(tmp_path):
    together = tree_bytes(small_microscopy(tmp_path / "together"))
    small_microscopy(tmp_path / "apart", intensities=(1.0,))
    apart = tree_bytes(small_microscopy(tmp_path / "apart", intensities=(0.01,)))
    assert apart == together


def test_drone_intensities_added_later_reproduce_the_same_bytes(tmp_path):
    arguments = {"num_captures": 2, "height": 64, "width": 96, "seed": 3}
    together = tree_bytes(simulate_drone(tmp_path / "a", intensities=(1.0, 0.01), **arguments))
    simulate_drone(tmp_path / "b", intensities=(0.01,), **arguments)
    apart = tree_bytes(simulate_drone(tmp_path / "b", intensities=(1.0,), **arguments))
    assert apart == together


def test_pattern_changes_the_mosaic_and_the_camera(tmp_path):
    rggb = small_microscopy(tmp_path / "a", intensities=(1.0,))
    bggr = small_microscopy(tmp_path / "b", intensities=(1.0,), pattern="BGGR")
    assert '"pattern": "BGGR"' in (bggr / "camera.json").read_text()
    assert '"pattern": "RGGB"' in (rggb / "camera.json").read_text()
    name = "images/raw_scale100/sim_00000.tiff"
    assert (rggb / name).read_bytes() != (bggr / name).read_bytes()


def test_second_identical_microscopy_simulation_rewrites_nothing(tmp_path, age_files, file_times):
    folder = small_microscopy(tmp_path)
    age_files(folder)
    before = file_times(folder)
    assert small_microscopy(tmp_path) == folder
    small_microscopy(tmp_path, intensities=(0.01,))  # a subset of what is there
    assert file_times(folder) == before


def test_second_identical_drone_simulation_rewrites_nothing(tmp_path, age_files, file_times):
    drone = simulate_drone(tmp_path, num_captures=1, height=64, width=96)
    age_files(drone)
    before = file_times(drone)
    simulate_drone(tmp_path, num_captures=1, height=64, width=96)
    assert file_times(drone) == before


def test_new_intensity_writes_only_its_folder(tmp_path, age_files, file_times):
    folder = small_microscopy(tmp_path, intensities=(1.0,))
    age_files(folder)
    before = file_times(folder)
    small_microscopy(tmp_path, intensities=(1.0, 0.1))
    after = file_times(folder)
    new = {name for name in after if name.startswith(f"images/{intensity_folder(0.1)}/")}
    assert len(new) == 12
    unchanged = {name: t for name, t in after.items() if name not in new and name != "simulation.json"}
    assert unchanged == {name: t for name, t in before.items() if name != "simulation.json"}


def test_different_parameters_regenerate(tmp_path, age_files, file_times):
    folder = small_microscopy(tmp_path, intensities=(1.0,))
    old = tree_bytes(folder)
    age_files(folder)
    small_microscopy(tmp_path, intensities=(1.0,), seed=9)
    new_times = file_times(folder)
    assert all(t != 1_000_000_000 * 10**9 for t in new_times.values())
    assert tree_bytes(folder) != old
    small_microscopy(tmp_path, intensities=(1.0,), size=16)
    image = tifffile.imread(folder / "images/raw_scale100/sim_00000.tiff")
    assert image.shape == (16, 16)


@pytest.mark.parametrize("kind", ["microscopy", "drone"])
def test_folder_with_other_data_is_refused(tmp_path, kind):
    (tmp_path / kind).mkdir()
    (tmp_path / kind / "precious.txt").write_text("real data")
    with pytest.raises(InputError, match=r"simulation\.json"):
        if kind == "microscopy":
            small_microscopy(tmp_path)
        else:
            simulate_drone(tmp_path, num_captures=1, height=64, width=96)
    assert (tmp_path / kind / "precious.txt").read_text() == "real data"


def test_bad_simulation_arguments_are_refused(tmp_path):
    with pytest.raises(InputError, match="size"):
        simulate_microscopy(tmp_path, num_images=6, size=33)
    with pytest.raises(InputError, match="XYZ"):
        simulate_microscopy(tmp_path, num_images=6, classes=("LYT", "XYZ"))
    with pytest.raises(InputError, match=r"0\.3"):
        simulate_microscopy(tmp_path, num_images=6, intensities=(0.3,))
    with pytest.raises(InputError, match="even"):
        simulate_drone(tmp_path, num_captures=1, height=63, width=96)


def test_unknown_intensity_leaves_a_usable_folder(tmp_path):
    with pytest.raises(InputError, match=r"0\.3"):
        simulate_microscopy(tmp_path, num_images=6, size=16, intensities=(0.3,))
    folder = simulate_microscopy(tmp_path, num_images=6, size=16, intensities=(1.0,))
    assert len(list((folder / "images" / "raw_scale100").iterdir())) == 6


def test_simulated_labels_spread_evenly_over_the_classes(tmp_path):
    folder = simulate_microscopy(tmp_path, num_images=30, size=16)
    codes = [line.split()[1] for line in (folder / "labels/Ma190c_annotations.dat").read_text().splitlines()]
    assert sorted(set(codes)) == sorted(MICROSCOPY_CLASSES)
    assert all(codes.count(code) == 5 for code in MICROSCOPY_CLASSES)


def test_simulation_speed(tmp_path):
    start = time.perf_counter()
    simulate_microscopy(tmp_path, num_images=300, size=64)
    elapsed = time.perf_counter() - start
    print(f"simulate_microscopy(num_images=300, size=64): {elapsed:.2f} s")
    assert elapsed < 15.0


# --- the drone world at any scale --------------------------------------------------------------


def car_lengths(mask: np.ndarray, car_px: float) -> np.ndarray:
    """Lengths in pixels (extent along the principal axis) of the cars that stand alone in ``mask``.

    A component counts as one car if it keeps off the border and has a single car's area and
    aspect (0.85-1.2 car lengths long, 0.38-0.46 of that wide); touching cars are left out.
    """
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    height, width = mask.shape
    lengths = []
    for index in range(1, count + 1):
        rows, cols = np.nonzero(labels == index)
        if 0 in (rows.min(), cols.min()) or rows.max() + 1 == height or cols.max() + 1 == width:
            continue
        points = np.stack([rows, cols], axis=1).astype(float)
        points -= points.mean(axis=0)
        _, axes = np.linalg.eigh(np.cov(points.T))
        extent = np.ptp(points @ axes, axis=0) + 1  # (minor, major)
        if 0.25 * car_px**2 < len(rows) < 0.7 * car_px**2 and 0.3 < extent[0] / extent[1] < 0.55:
            lengths.append(extent[1])
    return np.asarray(lengths)


# One 46 m square of ground (seed 3 holds 8 cars that touch no other) at 6 cm (Raw-Drone), 24 cm
# (scale 1/4 of it) and 12 cm (a flight twice as high).
@pytest.mark.parametrize(("metres_per_pixel", "size"), [(0.06, 768), (0.24, 192), (0.12, 384)])
def test_simulated_cars_follow_the_ground_sampling_distance(metres_per_pixel, size):
    """A car is 4.5 m times 0.85-1.2 long: 75 px at 6 cm per pixel, 19 px at 24 cm, 38 px at 12 cm."""
    _, mask = render_aerial(size, size, metres_per_pixel, np.random.default_rng(3))
    car_px = 4.5 / metres_per_pixel
    lengths = car_lengths(mask, car_px)
    print(f"{metres_per_pixel} m/px: {len(lengths)} lone cars, lengths {np.round(np.sort(lengths), 1)} px")
    assert len(lengths) >= 5
    assert ((lengths > 0.85 * car_px - 1.5) & (lengths < 1.2 * car_px + 1.5)).all()
    assert np.median(lengths) == pytest.approx(1.025 * car_px, rel=0.1)


def test_one_world_at_two_scales_holds_the_same_cars():
    """The layout is drawn in ground units: a scene at 1/4 of the resolution holds the same cars."""
    _, fine = render_aerial(768, 768, 0.06, np.random.default_rng(3))
    _, coarse = render_aerial(192, 192, 0.24, np.random.default_rng(3))
    fine_area, coarse_area = fine.sum() * 0.06**2, coarse.sum() * 0.24**2  # m²
    assert coarse_area == pytest.approx(fine_area, rel=0.05)
    # A coarse pixel samples the centre of the 4 x 4 fine ones it stands for: where it says car, the
    # fine pixels mostly do too (all but those cut by an outline).
    block = fine.reshape(192, 4, 192, 4).mean(axis=(1, 3))
    assert (block[coarse.astype(bool)] > 0.5).mean() > 0.97


def test_binned_sensor_averages_the_noise_of_its_pixels():
    """At scale s a pixel averages 1/s² sensor pixels: same counts, noise times s, one camera."""
    sensor, binned = DRONE_CAMERA, DRONE_CAMERA.binned(0.25)
    grey = flat((0.4, 0.4, 0.4), 256, 256)
    counts = [s.expose(grey, 1.0, np.random.default_rng(2)).astype(float) for s in (sensor, binned)]
    for row, col in SITES:
        sites = [c[row::2, col::2] for c in counts]
        assert sites[1].mean() == pytest.approx(sites[0].mean(), rel=0.002)
        assert sites[1].std() == pytest.approx(0.25 * sites[0].std(), rel=0.05)
    np.testing.assert_allclose(
        np.asarray(binned.camera_params().colour_matrix),
        np.asarray(sensor.camera_params().colour_matrix),
        rtol=1e-12,
    )
    # The PSF shrinks with the pixels and gains the coarse pixel's aperture (a box of variance 1/12).
    assert binned.psf_sigma == pytest.approx(np.sqrt((2.52 * 0.25) ** 2 + (1 - 0.25**2) / 12))
    assert DRONE_CAMERA.binned(1.0) == DRONE_CAMERA
    for scale in (0.0, -0.5, 1.5):
        with pytest.raises(InputError, match=f"scale must lie in \\(0, 1\\]; got {scale}"):
            DRONE_CAMERA.binned(scale)


def test_drone_simulation_records_its_scale(tmp_path):
    """simulation.json states the scale and what it made of the world: pixels, car length, PSF, noise."""
    folder = simulate_drone(tmp_path, num_captures=1, height=512, width=768, scale=0.25)
    record = json.loads((folder / "simulation.json").read_text())
    assert record["parameters"]["scale"] == 0.25 and record["parameters"]["gsd_m"] == 0.06
    rendered = record["rendered"]
    assert (rendered["height"], rendered["width"], rendered["metres_per_pixel"]) == (128, 192, 0.24)
    assert rendered["car_length_px"] == pytest.approx(18.75)
    assert rendered["psf_sigma_px"] == pytest.approx(DRONE_CAMERA.binned(0.25).psf_sigma)
    assert rendered["read_noise_electrons"] == pytest.approx(4 * DRONE_CAMERA.read_noise)
    assert tifffile.imread(folder / "images_full/raw_scale100/sim_capture_000.tif").shape == (128, 192)
    with pytest.raises(InputError, match="gsd_m"):
        simulate_drone(tmp_path / "other", num_captures=1, height=512, width=768, gsd_m=0)


@pytest.mark.parametrize("kind", ["microscopy", "drone"])
def test_simulation_holds_one_scene_at_a_time(tmp_path, monkeypatch, kind):
    # Raw-Microscopy's 940 float64 scenes held together took 2.3 GB: each scene is exposed at every
    # intensity and written before the next one is rendered.
    import weakref

    from raw2logit.data import simulator

    alive = [0]
    most = []

    class Scene(np.ndarray):  # weakly referenceable, unlike a plain ndarray
        pass

    def tracked(render):
        def wrapper(*args, **kwargs):
            result = render(*args, **kwargs)
            scene = (result[0] if kind == "drone" else result).view(Scene)
            alive[0] += 1
            weakref.finalize(scene, lambda: alive.__setitem__(0, alive[0] - 1))
            most.append(alive[0])
            return (scene, result[1]) if kind == "drone" else scene

        return wrapper

    if kind == "microscopy":
        monkeypatch.setattr(simulator, "render_blood_smear", tracked(simulator.render_blood_smear))
        small_microscopy(tmp_path)
    else:
        monkeypatch.setattr(simulator, "render_aerial", tracked(simulator.render_aerial))
        simulate_drone(tmp_path, num_captures=3, height=64, width=96, intensities=(1.0, 0.01))
    assert len(most) == (12 if kind == "microscopy" else 3)
    assert max(most) == 1


def test_interrupted_simulation_leaves_no_partial_folder_and_is_redone(tmp_path, monkeypatch):
    from raw2logit.data import simulator

    expected = tree_bytes(small_microscopy(tmp_path / "whole"))
    rendered = []

    def failing(*args, **kwargs):
        rendered.append(1)
        if len(rendered) == 7:
            raise KeyboardInterrupt
        return render(*args, **kwargs)

    render = simulator.render_blood_smear
    monkeypatch.setattr(simulator, "render_blood_smear", failing)
    with pytest.raises(KeyboardInterrupt):
        small_microscopy(tmp_path / "cut")
    folder = tmp_path / "cut" / "microscopy"
    assert [p.name for p in (folder / "images").iterdir()] == []  # no partial intensity folder
    assert json.loads((folder / "simulation.json").read_text())["intensities"] == []
    monkeypatch.setattr(simulator, "render_blood_smear", render)
    assert tree_bytes(small_microscopy(tmp_path / "cut")) == expected
