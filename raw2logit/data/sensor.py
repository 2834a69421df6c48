"""A physically modelled raw sensor: scene radiance -> optics -> colour filter array -> electrons -> counts.

    radiance (H, W, 3, linear)  --PSF-->  --camera colour response K-->  --Bayer CFA-->
    expected electrons  --Poisson shot noise + Gaussian read noise, full-well clip-->
    --gain (DN/e-), black level, quantisation to the ADC's bit depth, saturation-->
    --left-justified into 16 bits-->  raw counts (H, W) uint16

The data model that matches this sensor is exact, not fitted: with the per-channel camera
response ``c_w = K L`` to a white object under the illuminant ``L``, the white balance is
``c_w[G] / c_w`` and the colour matrix is the inverse of ``s diag(wb) K diag(L)`` (``s`` the
exposure in normalised counts), so black level -> white balance -> colour correction returns the
scene's linear reflectance at full exposure (paper Appendix A.1.1's data model, exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from raw2logit.errors import InputError
from raw2logit.isp.camera import CameraParams, check_pattern


@dataclass(frozen=True)
class SensorModel:
    """Physical description of a camera (all counts in the ADC's native bit depth unless noted).

    Attributes:
        pattern: Bayer layout of the colour filter array.
        bit_depth: ADC bits (12 for the drone's Sony IMX183, 16 for the PCO edge 5.5).
        gain: conversion gain in native DN per electron.
        full_well: electrons at which a pixel saturates.
        read_noise: Gaussian read noise, electrons RMS.
        black_level: offset added before quantisation, native DN, one per 2x2 site (reading order).
        psf_sigma: Gaussian optical point-spread function, pixels.
        colour_response: 3x3 matrix K, camera RGB = K @ radiance (crosstalk of the colour filters).
        illuminant: per-channel radiance of the light source (white balance is derived from it).
        white_electrons: expected electrons in the brightest camera channel for a white object
            at full exposure (I_ratio = 1), below full_well to keep headroom.
        name: label for logs.
    """

    pattern: str = "RGGB"
    bit_depth: int = 16
    gain: float = 2.0
    full_well: float = 30000.0
    read_noise: float = 1.5
    black_level: tuple[float, float, float, float] = (100.0, 100.0, 100.0, 100.0)
    psf_sigma: float = 1.0
    colour_response: tuple[tuple[float, float, float], ...] = (
        (0.80, 0.15, 0.05),
        (0.10, 0.80, 0.10),
        (0.03, 0.17, 0.80),
    )
    illuminant: tuple[float, float, float] = (1.0, 1.0, 1.0)
    white_electrons: float = 20000.0
    name: str = "sensor"

    def __post_init__(self):
        check_pattern(self.pattern)
        if not 8 <= self.bit_depth <= 16:
            raise InputError(f"Sensor bit depth must be between 8 and 16; got {self.bit_depth}.")
        if self.white_electrons > self.full_well:
            raise InputError(
                f"white_electrons ({self.white_electrons}) must not exceed full_well ({self.full_well})."
            )

    # -- derived quantities ---------------------------------------------------------------
    @property
    def justify(self) -> int:
        """Factor that left-justifies native counts into 16 bits (16 for a 12-bit ADC)."""
        return 2 ** (16 - self.bit_depth)

    @property
    def white_level(self) -> int:
        return 2**16 - 1

    @property
    def _white_response(self) -> np.ndarray:
        return np.asarray(self.colour_response) @ np.asarray(self.illuminant)

    @property
    def electrons_per_unit(self) -> float:
        """Expected electrons for camera response 1.0 at full exposure."""
        return self.white_electrons / float(self._white_response.max())

    def camera_params(self) -> CameraParams:
        """The data model's parameters that invert this sensor (see module docstring)."""
        response = np.asarray(self.colour_response, dtype=np.float64)
        white = self._white_response
        white_balance = white[1] / white
        scale = self.electrons_per_unit * self.gain * self.justify / self.white_level
        forward = scale * np.diag(white_balance) @ response @ np.diag(self.illuminant)
        return CameraParams(
            black_level=tuple(b * self.justify / self.white_level for b in self.black_level),
            white_balance=tuple(white_balance),
            colour_matrix=tuple(map(tuple, np.linalg.inv(forward))),
            pattern=self.pattern,
            name=self.name,
        )

    def binned(self, scale: float) -> SensorModel:
        """The same camera seen through pixels ``1 / scale`` times wider ((1/scale)² pixels averaged).

        What a world rendered at ``scale`` of the sensor's resolution needs to stay consistent:
        a coarse pixel collects the electrons of (1/scale)² sensor pixels (white level and full well
        times 1/scale², read noise added in quadrature: times 1/scale) and averages them (gain times
        scale², so a white object gives the same counts and ``camera_params()`` is unchanged); the
        noise relative to the signal falls by ``scale``. The average is quantised once, at the ADC's
        step (a true average of (1/scale)² readings is finer; this shows only in the darkest pixels
        at the lowest intensities). The PSF shrinks with the pixels and gains the box of the coarse
        pixel's aperture (variance (1 - scale²)/12 px², the sensor pixel's own aperture being part of
        the measured PSF).

        Args:
            scale: rendered pixels per sensor pixel along a side, in (0, 1]; 1 is the sensor itself.
        """
        if not 0 < scale <= 1:
            raise InputError(f"Simulation scale must lie in (0, 1]; got {scale}.")
        if scale == 1:
            return self
        area = scale**2
        return replace(
            self,
            gain=self.gain * area,
            full_well=self.full_well / area,
            read_noise=self.read_noise / scale,
            white_electrons=self.white_electrons / area,
            psf_sigma=float(np.sqrt((self.psf_sigma * scale) ** 2 + (1 - area) / 12)),
        )

    # -- image formation ------------------------------------------------------------------
    def expose(self, radiance: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
        """Raw counts for one scene.

        Args:
            radiance: (H, W, 3) linear scene radiance relative to a white object (reflectance
                times illuminant is applied here), H and W even.
            intensity: exposure ratio I_ratio in (0, 1]; lower means fewer photons, noisier.
            rng: random generator for shot and read noise.

        Returns:
            (H, W) uint16 raw counts, left-justified to 16 bits.
        """
        if not 0 < intensity <= 1:
            raise InputError(f"Exposure intensity must lie in (0, 1]; got {intensity}.")
        height, width, _ = radiance.shape
        light = radiance * np.asarray(self.illuminant)
        if self.psf_sigma > 0:
            light = ndimage.gaussian_filter(light, sigma=(self.psf_sigma, self.psf_sigma, 0), mode="reflect")
        camera = light @ np.asarray(self.colour_response).T
        mosaic = np.empty((height, width))
        offsets = np.empty((height, width))
        for site, (colour, (row, col)) in enumerate(zip(self.pattern, ((0, 0), (0, 1), (1, 0), (1, 1)))):
            mosaic[row::2, col::2] = camera[row::2, col::2, "RGB".index(colour)]
            offsets[row::2, col::2] = self.black_level[site]
        expected = np.clip(mosaic, 0, None) * self.electrons_per_unit * intensity
        electrons = rng.poisson(expected) + rng.normal(0.0, self.read_noise, size=expected.shape)
        electrons = np.clip(electrons, None, self.full_well)
        native_max = 2**self.bit_depth - 1
        counts = np.clip(np.round(electrons * self.gain + offsets), 0, native_max)
        return (counts * self.justify).astype(np.uint16)


# Sensor of the simulated bright-field microscope: 16-bit scientific CMOS (PCO edge 5.5 class:
# ~30 ke- full well, ~1.5 e- read noise), halogen lamp through 620/525/450 nm filters (little
# channel crosstalk, a warm source), 40x objective with a PSF of about one pixel.
MICROSCOPE = SensorModel(
    pattern="RGGB",
    bit_depth=16,
    gain=2.0,
    full_well=30000.0,
    read_noise=1.5,
    black_level=(100.0, 100.0, 100.0, 100.0),
    psf_sigma=0.8,
    colour_response=((0.90, 0.08, 0.02), (0.06, 0.88, 0.06), (0.02, 0.10, 0.88)),
    illuminant=(1.0, 0.78, 0.52),
    white_electrons=24000.0,
    name="sim_microscope",
)

# Sensor of the simulated drone camera: Sony IMX183 class, 12-bit ADC left-justified to 16 bits,
# 0.528 DN/e- at ISO 200 (8.448 DN/e- on the 16-bit values), black level 256 DN (0.0625 of the
# 16-bit range, as the Raw-Drone DNGs), PSF sigma 2.52 px, daylight, RGB filters with crosstalk.
DRONE_CAMERA = SensorModel(
    pattern="RGGB",
    bit_depth=12,
    gain=0.528,
    full_well=7700.0,
    read_noise=2.5,
    black_level=(256.0, 256.0, 256.0, 256.0),
    psf_sigma=2.52,
    colour_response=((0.72, 0.22, 0.06), (0.12, 0.74, 0.14), (0.04, 0.24, 0.72)),
    illuminant=(1.0, 1.0, 0.92),
    white_electrons=6500.0,
    name="sim_drone_camera",
)

SENSORS = {"microscope": MICROSCOPE, "drone_camera": DRONE_CAMERA}
