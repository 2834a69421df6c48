"""Reading and writing image files, with errors that name the file, and the bad-file policy."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from raw2logit.errors import InputError
from raw2logit.names import BAD_FILE_POLICIES


class BadFiles:
    """The bad-file policy of every loader: raise on the first bad file (``"raise"``), or warn,
    skip it and keep its name (``"skip"``)."""

    def __init__(self, policy: str):
        if policy not in BAD_FILE_POLICIES:
            raise InputError(f"on_bad_file must be one of {', '.join(BAD_FILE_POLICIES)}; got {policy!r}.")
        self.policy = policy
        self.skipped: list[str] = []

    def reject(self, name: str, sentence: str) -> None:
        """A bad file: ``sentence`` names it and says what is wrong; ``name`` is what ``skipped`` keeps."""
        self._handle(name, sentence, f"Skipping {name}: {sentence}")

    def report(self, path: str | Path, problem: str) -> None:
        """A bad file at ``path``: the sentence is "<path> <problem>"."""
        self._handle(str(path), f"{path} {problem}", f"Skipping {path}: {problem}")

    def _handle(self, name: str, sentence: str, warning: str) -> None:
        if self.policy == "raise":
            raise InputError(
                f"{sentence.rstrip('.')} (on_bad_file='skip' skips such files; on the command line "
                "dataset.on_bad_file=skip)."
            )
        warnings.warn(warning, stacklevel=4)
        self.skipped.append(name)


def read_raw(path: Path) -> np.ndarray:
    """A raw Bayer mosaic as stored: 16-bit TIFF (one plane) or DNG (via rawpy), uint16 (H, W)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".dng":
            import rawpy

            with rawpy.imread(str(path)) as raw:
                image = raw.raw_image_visible.copy()
        else:
            import tifffile

            image = tifffile.imread(path)
    except Exception as error:  # any decoder failure means an unreadable or corrupt file
        raise InputError(f"{path} is not a readable raw image ({type(error).__name__}: {error}).") from None
    image = np.squeeze(image)
    if image.ndim != 2:
        raise InputError(f"{path} must hold one Bayer plane (H, W); it has shape {image.shape}.")
    if image.dtype != np.uint16:
        raise InputError(f"{path} must hold 16-bit unsigned raw counts; it holds {image.dtype}.")
    return image


def read_mask(path: Path) -> np.ndarray:
    """A binary mask (PNG or TIFF; any value > 0 is foreground) as uint8 (H, W)."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            mask = np.asarray(image)
    except Exception as error:
        raise InputError(f"{path} is not a readable mask image ({type(error).__name__}: {error}).") from None
    if mask.ndim == 3:
        mask = mask[..., :3].max(axis=-1)
    if mask.ndim != 2:
        raise InputError(f"{path} must be a single-channel mask; it has shape {mask.shape}.")
    return (mask > 0).astype(np.uint8)


def write_tiff(path: Path, image: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(path, image)


def write_mask(path: Path, mask: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray((mask > 0).astype(np.uint8) * 255).save(path)


def write_json_atomic(path: Path, payload) -> None:
    """Write JSON so that readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        json.dump(payload, stream, indent=2)
    # mkstemp creates the file readable by its owner only; results follow the umask like any file
    # (a team sharing a results store on a cluster reads each other's cells).
    os.chmod(temporary, 0o666 & ~current_umask())
    os.replace(temporary, path)


def current_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask
