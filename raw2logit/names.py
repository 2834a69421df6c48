"""The names a config may use, in one light module (no torch, no numpy).

The command line checks every name in the configuration against these lists before it imports
anything heavy, so a typo is reported at once. The modules that implement the names hold the
name -> implementation dicts and import their key lists from here (tests check they agree).
"""

from __future__ import annotations

from collections.abc import Iterable

from raw2logit.errors import InputError

MODES = ("synthesis", "forensics", "optimization", "calibrate")
TASKS = ("classification", "segmentation")
BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
BAD_FILE_POLICIES = ("raise", "skip")  # dataset.on_bad_file

# The paper's 12 static pipelines, demosaic_sharpen_denoise, in the paper's order.
STATIC_PIPELINE_NAMES = (
    "bi_s_me",
    "bi_s_ga",
    "bi_u_me",
    "bi_u_ga",
    "ma_s_me",
    "ma_s_ga",
    "ma_u_me",
    "ma_u_ga",
    "me_s_me",
    "me_s_ga",
    "me_u_me",
    "me_u_ga",
)
# A data model fitted by mode=calibrate, used wherever a pipeline name is: calibrated:/path/device.json
CALIBRATED_PREFIX = "calibrated:"
# LibRaw's own processing (rawpy) as a data model, wherever a pipeline name is: libraw:AHD
LIBRAW_PREFIX = "libraw:"
# rawpy's demosaic algorithms; the installed LibRaw may lack some (libraw_available_algorithms).
LIBRAW_ALGORITHMS = ("AHD", "DCB", "VNG", "PPG", "AAHD", "DHT", "LINEAR", "MODIFIED_AHD", "AFD", "VCD",
                     "VCD_MODIFIED_AHD", "LMMSE", "AMAZE")  # fmt: skip
# Those LibRaw builds only with its GPL demosaic packs (rawpy.flags DEMOSAIC_PACK_GPL2 / GPL3).
LIBRAW_GPL_PACKS = {"MODIFIED_AHD": "GPL2", "AFD": "GPL2", "VCD": "GPL2", "VCD_MODIFIED_AHD": "GPL2",
                    "LMMSE": "GPL2", "AMAZE": "GPL3"}  # fmt: skip
# synthesis.train / synthesis.test: the 12 static pipelines and every LibRaw algorithm installed.
ALL_WITH_LIBRAW = "all+libraw"

# θ groups of the parametrized data model; ``curve`` (the knots of a flexible tone curve) acts only with
# tone_curve="curve", ``gamma`` only with tone_curve="power".
THETA_GROUPS = (
    "black_level",
    "demosaic",
    "white_balance",
    "colour_matrix",
    "sharpen",
    "denoise",
    "gamma",
    "curve",
)
# power: the paper's x^(1/γ); srgb: the sRGB curve of device JPEGs; curve: monotone, per channel, learnable knots.
TONE_CURVES = ("power", "srgb", "curve")
# The options of the data_model config group and the class each builds (raw2logit.isp.specs).
DATA_MODEL_TARGETS = {
    "static": "raw2logit.isp.specs.StaticViews",
    "parametrized": "raw2logit.isp.specs.Parametrized",
    "raw": "raw2logit.isp.specs.PackedRaw",
    "nn": "raw2logit.isp.specs.LearnedUNet",
}
REGULARISERS = ("l2", "ssim")
CORRUPTION_NAMES = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "gaussian_blur",
    "zoom_blur",
    "contrast",
    "brightness",
    "saturate",
    "elastic_transform",
)


def parse_pipeline_name(name: str) -> tuple[str, str, str]:
    """Split a static pipeline name into (demosaic, sharpen, denoise); raise on unknown names."""
    if name not in STATIC_PIPELINE_NAMES:
        raise InputError(
            f"Unknown static pipeline {name!r}; expected one of {', '.join(STATIC_PIPELINE_NAMES)}."
        )
    demosaic, sharpen, denoise = name.split("_")
    return demosaic, sharpen, denoise


def resolve_pipeline_names(names: str | Iterable[str]) -> list[str]:
    """``"all"`` -> the 12 names in the paper's order; otherwise check each name."""
    if isinstance(names, str):
        names = STATIC_PIPELINE_NAMES if names == "all" else [names]
    names = list(names)
    for name in names:
        parse_pipeline_name(name)
    return names


def libraw_available_algorithms() -> list[str]:
    """The ``LIBRAW_ALGORITHMS`` the installed LibRaw supports (imports rawpy, which needs no torch)."""
    import rawpy

    return [name for name in LIBRAW_ALGORITHMS if rawpy.DemosaicAlgorithm[name].isSupported]


def libraw_algorithm(spec: str) -> str:
    """The LibRaw demosaic algorithm of a ``libraw:<algorithm>`` spec (any case), checked against the
    installed LibRaw; one sentence naming it and the available ones if it is unknown or missing."""
    name = spec[len(LIBRAW_PREFIX) :].strip().upper() if spec.startswith(LIBRAW_PREFIX) else spec.upper()
    if name in LIBRAW_ALGORITHMS:
        available = libraw_available_algorithms()
        if name in available:
            return name
        import rawpy

        version = ".".join(map(str, rawpy.libraw_version))
        pack = (
            f" (it needs LibRaw's {LIBRAW_GPL_PACKS[name]} demosaic pack)" if name in LIBRAW_GPL_PACKS else ""
        )
        raise InputError(f"LibRaw demosaic algorithm {name} is not in the installed LibRaw {version}{pack}; "
                         f"available: {', '.join(available)}.")  # fmt: skip
    raise InputError(f"{spec!r} names no LibRaw demosaic algorithm; expected {LIBRAW_PREFIX}<algorithm> with one of "
                     f"{', '.join(libraw_available_algorithms())} (those the installed LibRaw offers).")  # fmt: skip
