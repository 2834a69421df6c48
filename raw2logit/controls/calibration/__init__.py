"""Data model calibration: fit the parametrized data model to a real device from paired images.

A device (a camera's own processing, a lab's acquisition software) turns each raw capture into
an RGB image through its own ISP. From pairs (DNG raw, the device's processed image of it),
``fit`` picks the static pipeline variant (demosaic, sharpen, denoise; Section 4.2.1) whose
structure matches the device best, then fits θ of a ``ParametrizedPipeline`` of that variant
(Appendix A.1.2) by gradient descent, so drift synthesis can emulate a named camera or lab.
The fitted model is written as a θ file (``ParametrizedPipeline.save_theta_json``) that
``raw2logit.isp.specs.build_data_model("calibrated:/path/to/device.json")`` reloads.

Colour space: a device's processed images are taken to be sRGB-encoded, as camera JPEGs and
raw-converter exports are: with ``tone_curve="srgb"`` the model ends in the sRGB transfer curve,
so its colour matrix maps white-balanced camera RGB to linear sRGB. ``tone_curve="power"``
instead ends in the paper's ``x ** (1/γ)`` with γ learned (devices with a plain gamma curve, or
to stay within the paper's data model). Colour differences (ΔE, CIEDE2000) are computed by
reading both images as sRGB (``skimage.color.rgb2lab``).

Loss: the device's output is 8-bit quantised and clipped, so the fit minimises a Charbonnier
loss ``sqrt(d² + s²) - s`` with ``s`` one 8-bit step (quadratic within a step, where the
target's rounding hides the truth; linear beyond, robust to compression artefacts), divided by
``s`` so that it reads as 8-bit steps, and ignores target values that are saturated
(>= 254/255) or black (<= 1/255): there the device clipped and the target no longer says
how far off the model is. Clipping acts per channel, so the mask is per channel too. A border
of ``margin`` pixels is left out of the loss and the metrics: devices handle image borders
in their own ways.

Degeneracies: white balance and colour matrix multiply (``M @ diag(wb)``), so only their product
is determined by the data (``effective_colour_matrix``); likewise the sharpen and denoise
kernels act in series on the luma, so only their combination is determined.
"""

from raw2logit.controls.calibration.fit import fit
from raw2logit.controls.calibration.metrics import image_metrics
from raw2logit.controls.calibration.optimise import calibration_loss
from raw2logit.controls.calibration.pairs import CalibrationPairs, read_pairs
from raw2logit.controls.calibration.result import CalibrationResult, effective_colour_matrix
from raw2logit.controls.calibration.simulate import quantise, simulate_pairs

__all__ = [
    "CalibrationPairs",
    "CalibrationResult",
    "calibration_loss",
    "effective_colour_matrix",
    "fit",
    "image_metrics",
    "quantise",
    "read_pairs",
    "simulate_pairs",
]
