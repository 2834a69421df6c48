"""Static views computed once and kept on disk: every epoch, fold and test reads them from there.

The 12 views of an image are computed together (``StaticPipelineBank`` shares the common prefix)
in batches, quantised to 16 bits (step 1.5e-5, far below any effect on a task model) and written
to one ``.npy`` per pipeline, from which each batch is read back as it is needed. A view set is keyed
by a fingerprint of the raw data, the camera parameters, the pipeline and the backend, so a later run
on the same data reuses it. The full Raw-Microscopy's 12 x 940 views at 256 x 256 (4.4 GB) are never
in the process's memory at once: they stay in files (and the kernel's page cache).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from raw2logit.data.dataset import RawDataset
from raw2logit.errors import InputError, NonFiniteError
from raw2logit.isp import StaticPipelineBank, resolve_pipeline_names
from raw2logit.isp.specs import build_data_model, is_static, spec_digest, spec_name

CACHE_VERSION = 1
_SCALE = 65535.0


def dataset_fingerprint(dataset: RawDataset) -> str:
    """Hash of the raw counts, the white level and the camera parameters of a dataset."""
    digest = hashlib.sha1()
    digest.update(np.ascontiguousarray(dataset.raw).view(np.uint8))
    cameras = [dataset.camera] if dataset.cameras is None else dataset.cameras
    digest.update(json.dumps([c.to_dict() for c in cameras] + [dataset.white_level], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _quantise(views: torch.Tensor, name: str) -> np.ndarray:
    """16-bit views (``views`` is overwritten); a NaN or infinite value would quantise silently to
    0 or 1, so it stops the run."""
    # min and max are NaN if any value is, and infinite if any is: a tenth of isfinite's cost (whose
    # bool kernel is not vectorised), which had been 60 % of quantising.
    low, high = (float(value) for value in torch.aminmax(views))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise NonFiniteError(f"The data model {name} produced non-finite views (NaN or infinite values); check its "
                             "parameters (a calibrated or θ file with non-finite values, or a diverged fit).")  # fmt: skip
    return views.clamp_(0, 1).mul_(_SCALE).round_().to(torch.int32).cpu().numpy().astype(np.uint16)


def open_view_file(path: Path, shape: tuple[int, ...]) -> ViewFile:
    """A new uint16 ``.npy`` file of ``shape`` to write views into, its disk blocks reserved now.

    Reserving the blocks up front (``posix_fallocate``) turns a full disk into one sentence before
    any view is computed, instead of an error (or, for a memory map, a SIGBUS) halfway through.
    """
    needed = 2 * int(np.prod(shape)) + 128  # uint16 values and the .npy header
    try:
        layout = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=shape)
        offset = layout.offset  # the header's length: only the layout is taken, no page is touched
        del layout
        if hasattr(os, "posix_fallocate"):
            handle = os.open(path, os.O_RDWR)
            try:
                os.posix_fallocate(handle, 0, path.stat().st_size)
            finally:
                os.close(handle)
    except OSError as error:
        path.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        raise InputError(f"The view cache {path.parent} has no room for {path.name}: it needs "
                         f"{needed / 2**30:.2f} GiB and the disk has {free / 2**30:.2f} GiB free "
                         f"({error.strerror}); free space there or set paths.cache=<a folder on a larger disk>.") from None  # fmt: skip
    return ViewFile(path, shape, offset)


def _consecutive_runs(indices: np.ndarray):
    """(start, end) positions in ``indices`` of its runs of consecutive image indices."""
    start = 0
    while start < len(indices):
        end = start + 1
        while end < len(indices) and indices[end] == indices[end - 1] + 1:
            end += 1
        yield start, end
        start = end


class ViewFile:
    """Views being written into a ``.npy`` file: ``file[indices] = uint16 views``, then ``close()``.

    Written with positional writes, not through a memory map: a map keeps every page written through
    it in the process's resident set, and computing the 12 view sets of the full Raw-Microscopy
    (4.4 GB) counted 3.9 GB of them there (peak RSS 6.7 GB). Written this way the views are in the
    page cache only, which the kernel writes back and evicts as it needs.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], offset: int):
        self.path, self.shape = path, shape
        self._offset, self._image_bytes = offset, 2 * int(np.prod(shape[1:]))
        self._handle = os.open(path, os.O_WRONLY)

    def __setitem__(self, indices, views: np.ndarray) -> None:
        indices = np.asarray(indices).reshape(-1)
        views = np.ascontiguousarray(views, dtype=np.uint16).reshape(len(indices), *self.shape[1:])
        for start, end in _consecutive_runs(indices):  # one write per run of consecutive images
            data = memoryview(views[start:end]).cast("B")
            position = self._offset + int(indices[start]) * self._image_bytes
            while data:
                written = os.pwrite(self._handle, data, position)
                data, position = data[written:], position + written

    def close(self) -> None:
        """Write the file to disk and close it (a completed view file is then renamed into place)."""
        os.fsync(self._handle)
        os.close(self._handle)


class ViewArray:
    """Views of one pipeline in its ``.npy`` file: index with image indices -> float32 tensor (n, 3, H, W).

    Read with positional reads, one per run of consecutive images, not through a memory map: as for
    ``ViewFile``, every page read through a map stays in the process's resident set, and a cell tested
    on all 12 view sets of the full Raw-Microscopy touched most of their 4.4 GB (peak RSS 3.85 GB).
    Read this way the views pass through the page cache only.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        shape, fortran, dtype = (), False, None
        with open(self.path, "rb") as file:
            try:
                version = np.lib.format.read_magic(file)
                read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_0", None)
                if read_header is not None:
                    shape, fortran, dtype = read_header(file)
            except ValueError:  # not a .npy file: refused below
                pass
            self._offset = file.tell()
        if dtype != np.uint16 or fortran or len(shape) != 4:
            raise InputError(f"{self.path} is not a view file (16-bit views of shape (N, 3, H, W)); delete "
                             "it and the run computes it again.")  # fmt: skip
        self.shape = tuple(shape)
        self._image_bytes = 2 * math.prod(shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        requested = np.asarray(index)
        indices = requested.reshape(-1).astype(np.int64)
        indices = np.where(indices < 0, indices + len(self), indices)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"image index out of range for {len(self)} views of {self.path.name}")
        out = np.empty((len(indices), *self.shape[1:]), dtype=np.uint16)
        with open(self.path, "rb", buffering=0) as file:
            for start, end in _consecutive_runs(indices):  # one read per run of consecutive images
                file.seek(self._offset + int(indices[start]) * self._image_bytes)
                buffer = memoryview(out[start:end]).cast("B")
                while buffer:
                    count = file.readinto(buffer)
                    if not count:
                        raise InputError(f"{self.path} ends before its last view; delete it and the run "
                                         "computes it again.")  # fmt: skip
                    buffer = buffer[count:]
        views = torch.from_numpy(out.astype(np.float32) / np.float32(_SCALE))
        return views.view(*requested.shape, *self.shape[1:])


class ViewCache:
    """Static views of a dataset under ``cache_dir``, computed on first use.

    Args:
        dataset: the raw dataset.
        cache_dir: root of the view cache (e.g. ``outputs/cache/views``).
        backend: ``"torch"`` or ``"numpy"`` (the reference implementation).
        device: where the torch pipelines run.
        batch_size: images per batch when computing.
        log: progress printer.
        specs: data models beyond the 12 static pipelines, as specs (``calibrated:<file>``,
            ``libraw:<algorithm>``; see ``raw2logit.isp.specs``); their views are named
            ``spec_name(spec)`` and cached under the digest of what they depend on (the file behind
            them; LibRaw's version and settings).
    """

    def __init__(self, dataset: RawDataset, cache_dir: str | Path, backend: str = "torch", device: str = "cpu",
                 batch_size: int = 32, log=print, specs=()):  # fmt: skip
        self.dataset = dataset
        self.specs = {spec_name(spec): spec for spec in specs if not is_static(spec)}
        self.backend = backend
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.log = log
        self.folder = (
            Path(cache_dir) / f"{dataset.name}-{dataset_fingerprint(dataset)}-{backend}-v{CACHE_VERSION}"
        )

    def path(self, name: str) -> Path:
        if name in self.specs:
            digest = spec_digest(self.specs[name]).hex()[:12]
            return self.folder / f"{name.replace(':', '-')}-{digest}.npy"
        return self.folder / f"{name}.npy"

    def _resolve(self, names) -> list[str]:
        names = [names] if isinstance(names, str) else list(names)
        return [n for n in names if n in self.specs] + resolve_pipeline_names(
            [n for n in names if n not in self.specs]
        )

    def ensure(self, names) -> None:
        """Compute the views of every pipeline in ``names`` that is not cached yet (in one pass)."""
        from raw2logit.locks import file_lock

        if all(self.path(n).exists() for n in self._resolve(names)):
            return
        with file_lock(self.folder.parent / f".{self.folder.name}.lock"):  # parallel jobs compute once
            missing = [n for n in self._resolve(names) if not self.path(n).exists()]
            self._compute([n for n in missing if n not in self.specs])
            for name in missing:
                if name in self.specs:
                    self._compute_spec(name)

    def _compute_spec(self, name: str) -> None:
        spec = self.specs[name]
        built = {}  # one data model per camera (a calibrated file keeps its own camera)
        self.folder.mkdir(parents=True, exist_ok=True)
        n, (height, width) = len(self.dataset), self.dataset.image_shape
        partial = self.path(name).with_suffix(".partial.npy")
        array = open_view_file(partial, (n, 3, height, width))
        self.log(f"computing the views of {name} ({spec}) -> {self.folder}")
        for indices, camera in self._batches():
            if camera not in built:
                built[camera] = build_data_model(spec, camera).to(self.device)
            with torch.no_grad():
                views = built[camera](self.dataset.normalised(indices).to(self.device))
            array[indices] = _quantise(views, name)
        array.close()
        os.replace(partial, self.path(name))

    def _compute(self, missing: list[str]) -> None:
        if not missing:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        n, (height, width) = len(self.dataset), self.dataset.image_shape
        partial = {name: self.path(name).with_suffix(".partial.npy") for name in missing}
        arrays = {name: open_view_file(partial[name], (n, 3, height, width)) for name in missing}
        self.log(
            f"computing {len(missing)} static view set(s) of {n} images ({self.backend}): {', '.join(missing)} -> {self.folder}"
        )
        for indices, camera in self._batches():
            bank = StaticPipelineBank(missing, camera, backend=self.backend).to(self.device)
            raw = self.dataset.normalised(indices).to(self.device)
            with torch.no_grad():
                for name, views in bank.iter_views(raw):
                    arrays[name][indices] = _quantise(views, name)
        for name in missing:  # complete files appear only once fully written
            arrays[name].close()
            os.replace(partial[name], self.path(name))

    def _batches(self):
        """Batches of image indices that share one camera."""
        dataset = self.dataset
        if dataset.cameras is None:
            groups = {dataset.camera: np.arange(len(dataset))}
        else:
            groups = {}
            for index, camera in enumerate(dataset.cameras):
                groups.setdefault(camera, []).append(index)
        for camera, indices in groups.items():
            indices = np.asarray(indices)
            for start in range(0, len(indices), self.batch_size):
                yield indices[start : start + self.batch_size], camera

    def views(self, name: str) -> ViewArray:
        """Views of pipeline ``name`` for the whole dataset (read from its file batch by batch)."""
        self.ensure([name])
        return ViewArray(self.path(name))
