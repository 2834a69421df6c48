"""The embedded raw data: simulated captures written in the published datasets' layout.

``simulate_microscopy`` and ``simulate_drone`` render scenes (``scenes``), expose them on a
physically modelled sensor (``sensor``) at the requested intensity levels, and write 16-bit
raws, labels or masks, and the sensor's ``camera.json`` exactly where the Raw-Microscopy and
Raw-Drone loaders look: the same loaders read real and simulated data. Everything is
deterministic in the seed: an image's scene and each intensity's noise come from their own
child seeds, so generating more intensities later reproduces the earlier ones bit for bit.
Results are cached: a folder is reused while its ``simulation.json`` matches the parameters.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from raw2logit.data.files import write_json_atomic, write_mask, write_tiff
from raw2logit.data.layout import (
    DRONE_IMAGES,
    DRONE_MASKS,
    LABELS_FILE,
    MICROSCOPY_IMAGES,
    MICROSCOPY_LABELS,
    intensity_folder,
)
from raw2logit.data.scenes import CAR_LENGTH_M, MICROSCOPY_CLASSES, render_aerial, render_blood_smear
from raw2logit.data.sensor import DRONE_CAMERA, MICROSCOPE, SensorModel
from raw2logit.errors import InputError

_SCENE, _NOISE = 0, 1


def _image_rng(seed: int, index: int, purpose: int, intensity: float = 0.0) -> np.random.Generator:
    return np.random.default_rng([seed, index, purpose, round(intensity * 100)])


def _sensor(sensor: SensorModel, pattern: str | None) -> SensorModel:
    if pattern is None or pattern == sensor.pattern:
        return sensor
    return SensorModel(**{**asdict(sensor), "pattern": pattern})


def _prepare(folder: Path, parameters: dict) -> tuple[bool, dict]:
    """Whether ``folder`` already holds a simulation with these parameters, and its record.

    A new folder gets its record (no intensity yet) before anything else is written, so that a
    first simulation that was interrupted is recognised as ours and redone, not refused as other data.
    """
    parameters = json.loads(json.dumps(parameters))  # tuples -> lists, as they come back from the file
    record_path = folder / "simulation.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("parameters") == parameters and record.get("intensities"):
            return True, record
        shutil.rmtree(folder)  # other parameters, or a first simulation cut short: regenerate from scratch
    elif folder.exists() and any(folder.iterdir()):
        raise InputError(
            f"Refusing to write simulated data into {folder}: it holds other data (no simulation.json)."
        )
    folder.mkdir(parents=True, exist_ok=True)
    record = {"parameters": parameters, "intensities": []}
    write_json_atomic(record_path, record)
    return False, record


def _write_levels(
    folder: Path,
    intensities: list[float],
    record: dict,
    record_path: Path,
    stems: list[str],
    suffix: str,
    raws,
) -> None:
    """Write one folder of raws per intensity under ``folder``, image by image.

    ``raws(index)`` yields ``(intensity, raw)`` for image ``index``, one per intensity, from one
    rendered scene: only one scene and its raws are in memory at a time (holding every float64
    scene of Raw-Microscopy's 940 images first took 2.3 GB). Each intensity folder is written in a
    temporary folder and renamed into place when complete, then entered in ``record`` (written to
    ``record_path``); an interrupted run leaves no partial folder behind.
    """
    staging = {
        intensity: Path(tempfile.mkdtemp(dir=folder, prefix=f".{intensity_folder(intensity)}-"))
        for intensity in intensities
    }
    try:
        for index, stem in enumerate(stems):
            for intensity, raw in raws(index):
                write_tiff(staging[intensity] / f"{stem}{suffix}", raw)
        for intensity, written in staging.items():
            target = folder / intensity_folder(intensity)
            if target.exists():
                shutil.rmtree(target)
            written.replace(target)
            record["intensities"].append(intensity_folder(intensity))
            write_json_atomic(record_path, record)
    finally:
        for written in staging.values():
            shutil.rmtree(written, ignore_errors=True)  # those not renamed into place


def simulate_microscopy(
    root: str | Path,
    num_images: int = 240,
    size: int = 64,
    intensities=(1.0,),
    seed: int = 0,
    pattern: str | None = None,
    classes=tuple(MICROSCOPY_CLASSES),
    sensor: SensorModel = MICROSCOPE,
    log=print,
) -> Path:
    """Simulated bright-field blood smears in the Raw-Microscopy layout under ``root/microscopy``.

    Args:
        root: dataset root (``dataset.root``).
        num_images: number of cells, spread evenly over ``classes``.
        size: image side in pixels (even).
        intensities: I_ratio levels to expose (each a ``raw_scaleXXX`` folder).
        seed: global seed.
        pattern: Bayer pattern, default the sensor's (RGGB).
        classes: class codes to draw from ``scenes.MICROSCOPY_CLASSES``.
        sensor: the ``SensorModel``.
        log: progress printer (one line when images are generated).

    Returns:
        the ``microscopy`` folder.
    """
    if size % 2 or size < 16:
        raise InputError(f"Simulated image size must be even and at least 16; got {size}.")
    unknown = sorted(set(classes) - set(MICROSCOPY_CLASSES))
    if unknown:
        raise InputError(
            f"Unknown simulated classes {unknown}; expected among {', '.join(MICROSCOPY_CLASSES)}."
        )
    for intensity in intensities:
        intensity_folder(intensity)  # validates before anything is written
    sensor = _sensor(sensor, pattern)
    folder = Path(root).expanduser() / "microscopy"
    parameters = {"num_images": num_images, "size": size, "seed": seed, "classes": list(classes),
                  "sensor": asdict(sensor), "version": 2}  # fmt: skip
    cached, record = _prepare(folder, parameters)
    order = np.random.default_rng([seed, 7]).permutation(np.arange(num_images) % len(classes))
    labels = [(f"sim_{i:05d}", classes[c]) for i, c in enumerate(order)]
    if not cached:
        (folder / MICROSCOPY_LABELS).mkdir(exist_ok=True)
        (folder / MICROSCOPY_LABELS / LABELS_FILE).write_text(
            "".join(f"{stem} {code}\n" for stem, code in labels)
        )
        write_json_atomic(folder / "camera.json", sensor.camera_params().to_dict())
    missing = [i for i in intensities if intensity_folder(i) not in record["intensities"]]
    if missing:
        log(
            f"simulating {num_images} microscopy images at intensity {', '.join(map(str, missing))} -> {folder}"
        )
        (folder / MICROSCOPY_IMAGES).mkdir(exist_ok=True)

        def raws(index):
            code = labels[index][1]
            scene = render_blood_smear(code, size, _image_rng(seed, index, _SCENE))
            for intensity in missing:
                yield intensity, sensor.expose(scene, intensity, _image_rng(seed, index, _NOISE, intensity))

        stems = [stem for stem, _ in labels]
        _write_levels(
            folder / MICROSCOPY_IMAGES, missing, record, folder / "simulation.json", stems, ".tiff", raws
        )
    return folder


def scaled_size(pixels: int, scale: float) -> int:
    """A length of ``pixels`` sensor pixels rendered at ``scale``, rounded to an even number (Bayer)."""
    return 2 * max(1, round(pixels * scale / 2))


def simulate_drone(
    root: str | Path,
    num_captures: int = 6,
    height: int = 1024,
    width: int = 1536,
    scale: float = 1.0,
    gsd_m: float = 0.06,
    car_length_m: float = CAR_LENGTH_M,
    intensities=(1.0,),
    seed: int = 0,
    pattern: str | None = None,
    sensor: SensorModel = DRONE_CAMERA,
    log=print,
) -> Path:
    """Simulated aerial captures with car masks in the Raw-Drone layout under ``root/drone``.

    The world is described at the sensor's resolution (scale 1: Raw-Drone's 6 cm ground sampling
    distance, cars ~75 px long, PSF σ 2.52 px) and rendered at ``scale`` of it: images of
    ``scale * height`` x ``scale * width`` pixels of ``gsd_m / scale`` metres, the same scene
    (layout drawn independently of the resolution), cars ``scale`` times as long in pixels, and the
    sensor binned alike (``SensorModel.binned``: PSF in pixels and noise scaled with the pixels). The
    scale and the rendered geometry are recorded in ``simulation.json``.

    Args:
        root: dataset root (``dataset.root``).
        num_captures: number of full captures (tiles are cut by the drone loader).
        height, width: capture size in sensor pixels at scale 1 (even).
        scale: rendered pixels per sensor pixel along a side, in (0, 1] (a CPU-sized world: 0.25).
        gsd_m: ground sampling distance of the sensor pixels, metres (Raw-Drone: 0.06).
        car_length_m: typical car length, metres.
        intensities, seed, pattern, sensor, log: as for ``simulate_microscopy``.

    Returns:
        the ``drone`` folder.
    """
    if height % 2 or width % 2 or height < 2 or width < 2:
        raise InputError(f"Simulated capture size must be even and positive; got {height}x{width}.")
    if not gsd_m > 0:
        raise InputError(f"Ground sampling distance gsd_m must be positive; got {gsd_m}.")
    if not car_length_m > 0:
        raise InputError(f"Car length car_length_m must be positive; got {car_length_m}.")
    for intensity in intensities:
        intensity_folder(intensity)  # validates before anything is written
    sensor = _sensor(sensor, pattern)
    rendered = sensor.binned(scale)  # validates the scale
    rows, cols = scaled_size(height, scale), scaled_size(width, scale)
    metres_per_pixel = gsd_m / scale
    folder = Path(root).expanduser() / "drone"
    parameters = {"num_captures": num_captures, "height": height, "width": width, "scale": scale, "gsd_m": gsd_m,
                  "car_length_m": car_length_m, "seed": seed, "sensor": asdict(sensor), "version": 2}  # fmt: skip
    cached, record = _prepare(folder, parameters)
    stems = [f"sim_capture_{i:03d}" for i in range(num_captures)]
    missing = [i for i in intensities if intensity_folder(i) not in record["intensities"]]
    if not cached or missing:
        log(
            f"simulating {num_captures} drone captures at intensity {', '.join(map(str, missing))} -> {folder}"
        )
        if not cached:
            (folder / DRONE_MASKS).mkdir(exist_ok=True)
            # The binned sensor develops exactly as the sensor itself: one camera at every scale.
            write_json_atomic(folder / "camera.json", sensor.camera_params().to_dict())
            record["rendered"] = {
                "scale": scale, "height": rows, "width": cols, "metres_per_pixel": metres_per_pixel,
                "car_length_px": car_length_m / metres_per_pixel, "psf_sigma_px": rendered.psf_sigma,
                "white_electrons": rendered.white_electrons, "read_noise_electrons": rendered.read_noise,
                "gain_dn_per_electron": rendered.gain,
            }  # fmt: skip
        (folder / DRONE_IMAGES).mkdir(exist_ok=True)

        def raws(index):
            scene, mask = render_aerial(
                rows, cols, metres_per_pixel, _image_rng(seed, index, _SCENE), car_length_m
            )
            if not cached:
                write_mask(folder / DRONE_MASKS / f"{stems[index]}.png", mask)
            for intensity in missing:
                yield intensity, rendered.expose(scene, intensity, _image_rng(seed, index, _NOISE, intensity))

        _write_levels(folder / DRONE_IMAGES, missing, record, folder / "simulation.json", stems, ".tif", raws)
    return folder
