"""Download, verify and unpack the published Raw-Microscopy and Raw-Drone datasets.

The datasets are Zenodo record 5235536 (DOI 10.5281/zenodo.5235536, CC-BY 4.0). Zenodo's REST API
serves the record as JSON with a ``files`` list (name, size, md5, download link); every file is
streamed to ``<name>.part``, resumed with an HTTP Range request after an interruption, checked
against its md5 and size, and only then renamed into place. Archives are unpacked into the data
root so that the loaders find::

    <root>/microscopy/images/raw_scale001 ... raw_scale100/*.tiff
    <root>/microscopy/labels/Ma190c_annotations.dat
    <root>/drone/images_full/raw_scale001 ... raw_scale100/*.dng (or 16-bit .tif)
    <root>/drone/masks_full/*.png

Standard library only; nothing here runs unless called (``scripts/download_datasets.py``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import json
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from raw2logit.errors import InputError

ZENODO_RECORD_URL = "https://zenodo.org/api/records/5235536"
DATASET_DOI = "10.5281/zenodo.5235536"
DATASET_LICENSE = "CC-BY 4.0"

DATASETS = ("microscopy", "drone")
DATASET_TITLES = {"microscopy": "Raw-Microscopy", "drone": "Raw-Drone"}
INTENSITY_FOLDERS = tuple(
    f"raw_scale{percent:03d}" for percent in (1, 5, 10, 25, 50, 75, 100)
)  # I_ratio 0.01 ... 1.0
MICROSCOPY_LABELS = "Ma190c_annotations.dat"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
DOWNLOADS_FOLDER = "downloads"

_USER_AGENT = "raw2logit-downloader (python urllib)"
_TRANSIENT_HTTP_CODES = {408, 425, 429, 500, 502, 503, 504}
Log = Callable[[str], None]


def _no_log(message: str) -> None:
    pass


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Zenodo record: its name, download URL, size in bytes and md5 hex digest."""

    name: str
    url: str
    size: int | None
    md5: str


@dataclass
class DownloadSummary:
    """What ``download_record`` did: per file ``(name, size, status)``, the archives unpacked, the layout."""

    record_url: str
    root: Path
    files: list[tuple[str, int | None, str]] = field(default_factory=list)
    unpacked: list[str] = field(default_factory=list)
    layout: LayoutReport | None = None

    def count(self, status: str) -> int:
        return sum(1 for _, _, file_status in self.files if file_status == status)


@dataclass(frozen=True)
class LayoutReport:
    """Which datasets the loaders will find under ``root``.

    Attributes:
        root: the data root that was checked.
        scales: dataset -> the ``raw_scale*`` folders that hold images (present datasets only).
        missing: dataset -> one sentence saying what is missing (absent datasets only).
    """

    root: Path
    scales: dict[str, tuple[str, ...]]
    missing: dict[str, str]

    @property
    def present(self) -> tuple[str, ...]:
        return tuple(name for name in DATASETS if name in self.scales)

    def require(self, *datasets: str) -> None:
        """Raise ``InputError`` with the first missing dataset's sentence (all datasets if none named)."""
        for name in datasets or DATASETS:
            if name in self.missing:
                raise InputError(self.missing[name])


def human_size(size: int | None) -> str:
    if size is None:
        return "unknown size"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _open(url: str, timeout: float, headers: dict[str, str] | None = None):
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, **(headers or {})})
    return urllib.request.urlopen(request, timeout=timeout)


# --------------------------------------------------------------------------------------------- record


def fetch_record(record_url: str = ZENODO_RECORD_URL, timeout: float = 60.0) -> list[RemoteFile]:
    """Read a Zenodo record's metadata and return its files.

    Accepts the current API (``key``, ``checksum: "md5:<hex>"``, ``links.self``) and the older one
    (``filename``, bare md5 ``checksum``, ``links.download``); relative links resolve against
    ``record_url``. Any URL (or ``file://`` path) serving the same JSON works.
    """
    try:
        with _open(record_url, timeout) as response:
            payload = response.read()
    except urllib.error.HTTPError as error:
        raise InputError(
            f"The record metadata at {record_url} answered HTTP {error.code} {error.reason}; "
            "expected the Zenodo record JSON."
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise InputError(
            f"Could not fetch the record metadata from {record_url} ({reason}); "
            "expected a reachable URL serving the Zenodo record JSON."
        ) from None
    try:
        record = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(
            f"The record metadata at {record_url} is not JSON; expected the Zenodo record JSON."
        ) from None

    entries = record.get("files") if isinstance(record, dict) else None
    if isinstance(entries, dict):  # InvenioRDM form: {"enabled": true, "entries": {name: entry} or [...]}
        entries = entries.get("entries")
        if isinstance(entries, dict):
            entries = list(entries.values())
    if not isinstance(entries, list) or not entries:
        raise InputError(
            f"The record metadata at {record_url} lists no files; expected a non-empty 'files' list."
        )
    return [_parse_entry(entry, record_url) for entry in entries]


def _parse_entry(entry: object, record_url: str) -> RemoteFile:
    if not isinstance(entry, dict):
        raise InputError(f"The record at {record_url} has a file entry {entry!r}; expected a JSON object.")
    name = entry.get("key") or entry.get("filename")
    if not isinstance(name, str) or not name:
        raise InputError(f"A file entry of the record at {record_url} has no 'key' or 'filename': {entry!r}.")
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise InputError(
            f"The record at {record_url} lists the file name {name!r}; expected a plain file name "
            "(no folders, not hidden)."
        )
    checksum = entry.get("checksum")
    if not isinstance(checksum, str) or not checksum:
        raise InputError(f"The record at {record_url} gives no checksum for {name}; expected 'md5:<hex>'.")
    algorithm, _, digest = checksum.rpartition(":")
    digest = digest.strip().lower()
    if (
        algorithm.lower() not in ("", "md5")
        or len(digest) != 32
        or any(c not in "0123456789abcdef" for c in digest)
    ):
        raise InputError(
            f"The record at {record_url} gives the checksum {checksum!r} for {name}; expected an md5 checksum."
        )
    links = entry.get("links") if isinstance(entry.get("links"), dict) else {}
    # Older API: 'self' is the file's metadata and 'download' its bytes; newer API: 'self' is the bytes.
    link = links.get("download") or links.get("content") or links.get("self")
    if not isinstance(link, str) or not link:
        raise InputError(
            f"The record at {record_url} gives no download link for {name}; expected links.self."
        )
    size = entry.get("size", entry.get("filesize"))
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise InputError(f"The record at {record_url} gives the size {size!r} for {name}; expected bytes.")
    return RemoteFile(name=name, url=urllib.parse.urljoin(record_url, link), size=size, md5=digest)


# ------------------------------------------------------------------------------------------- one file


class _TransientError(Exception):
    """A transfer that stopped early for reasons worth retrying (network, server overload)."""


def file_md5(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    url: str,
    destination: str | os.PathLike,
    expected_md5: str,
    expected_size: int | None = None,
    chunk_size: int = 1 << 20,
    retries: int = 3,
    timeout: float = 60.0,
    retry_wait: float = 2.0,
    log: Log = _no_log,
) -> str:
    """Download ``url`` to ``destination`` and verify it; returns ``"skipped"``, ``"resumed"`` or ``"downloaded"``.

    An existing destination with the expected md5 (and size) is kept without any request. Bytes go to
    ``<destination>.part``; a ``.part`` left by an earlier run (or a dropped connection) is continued
    with ``Range: bytes=<n>-``, and a server that answers 200 instead of 206 is read from the start.
    The file is renamed into place (``os.replace``) only after its md5 and size match, so the
    destination is never partial or corrupt. Network failures are retried ``retries`` times, resuming.

    Raises:
        InputError: the download failed after its retries (the ``.part`` is kept to resume later), or
            the bytes do not match the expected md5/size (the file and its ``.part`` are deleted).
    """
    destination = Path(destination)
    part = destination.with_name(destination.name + ".part")
    expected_md5 = expected_md5.lower()
    destination.parent.mkdir(parents=True, exist_ok=True)

    if destination.is_file():
        if (expected_size is None or destination.stat().st_size == expected_size) and file_md5(
            destination, chunk_size
        ) == expected_md5:
            part.unlink(missing_ok=True)
            return "skipped"
        log(f"{destination.name}: the existing file does not match its checksum; downloading it again")
        destination.unlink()

    resumed = False
    for restart in (False, True):
        for attempt in range(retries + 1):
            try:
                resumed |= _transfer(url, part, expected_size, chunk_size, timeout, log)
                break
            except _TransientError as error:
                if attempt == retries:
                    kept = _size(part)
                    advice = (
                        f"run again to resume from the {human_size(kept)} kept in {part}"
                        if kept
                        else "run again"
                    )
                    raise InputError(
                        f"Downloading {destination.name} from {url} failed after {retries + 1} attempt(s) "
                        f"({error}); check the connection and {advice}."
                    ) from None
                log(f"{destination.name}: {error}; retrying ({attempt + 1} of {retries})")
                time.sleep(retry_wait * 2**attempt)

        actual_size = part.stat().st_size
        actual_md5 = file_md5(part, chunk_size)
        if actual_md5 == expected_md5 and expected_size in (None, actual_size):
            os.replace(part, destination)
            return "resumed" if resumed else "downloaded"
        part.unlink()
        if resumed and not restart:
            # The kept prefix may come from another version of the file; one clean download decides.
            log(f"{destination.name}: the resumed download does not verify; downloading it from the start")
            resumed = False
            continue
        size_note = "" if expected_size is None else f" and {expected_size} bytes"
        raise InputError(
            f"{destination.name} from {url} failed verification: expected md5 {expected_md5}{size_note}, "
            f"got md5 {actual_md5} and {actual_size} bytes, so the download was deleted."
        )
    raise AssertionError("unreachable")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _transfer(
    url: str, part: Path, expected_size: int | None, chunk_size: int, timeout: float, log: Log
) -> bool:
    """Bring ``part`` to the end of the remote file; returns True when it continued existing bytes."""
    offset = _size(part)
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0
    if expected_size is not None and offset == expected_size:
        return offset > 0  # complete from an earlier run; verification decides

    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = _open(url, timeout, headers)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the server disagrees about our prefix: start over
            part.unlink()
            raise _TransientError("the server refused to resume (HTTP 416)") from None
        if error.code in _TRANSIENT_HTTP_CODES:
            raise _TransientError(f"HTTP {error.code} {error.reason}") from None
        raise InputError(
            f"Downloading {part.name.removesuffix('.part')} from {url} failed with HTTP {error.code} "
            f"{error.reason}; expected the file's bytes."
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        raise _TransientError(str(getattr(error, "reason", error))) from None

    with response:
        resuming = False
        if offset and response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            resuming = content_range.startswith(f"bytes {offset}-")
            if not resuming:
                part.unlink()
                raise _TransientError(f"the server resumed at the wrong place ({content_range!r})")
        elif offset:
            log(f"{part.name.removesuffix('.part')}: the server ignored the Range request; starting over")
        length = response.headers.get("Content-Length")
        total = offset + int(length) if resuming and length else int(length) if length else expected_size
        written = offset if resuming else 0
        next_report = _next_report(written, total)
        try:
            with open(part, "ab" if resuming else "wb") as handle:
                while chunk := _read(response, chunk_size, written):
                    handle.write(chunk)
                    written += len(chunk)
                    if total and written >= next_report and written < total:
                        log(
                            f"  {part.name.removesuffix('.part')}: {written / total:.0%} of {human_size(total)}"
                        )
                        next_report = _next_report(written, total)
                handle.flush()
                os.fsync(handle.fileno())  # the rename below must never expose unwritten bytes
        except OSError as error:  # the disk, not the network: retrying would not help
            raise InputError(
                f"Could not write {part} ({error.strerror or error}); expected a writable folder with free space."
            ) from None
    if total is not None and written < total:
        raise _TransientError(f"the connection closed after {written} of {total} bytes")
    return resuming


def _read(response, chunk_size: int, written: int) -> bytes:
    try:
        return response.read(chunk_size)
    except (OSError, http.client.HTTPException) as error:
        raise _TransientError(f"the connection broke after {written} bytes ({error})") from None


def _next_report(written: int, total: int | None) -> int:
    """Progress lines every 10 % of files above 50 MB."""
    if not total or total < 50_000_000:
        return 1 << 62
    step = total // 10
    return (written // step + 1) * step


# ------------------------------------------------------------------------------------------- unpacking


def is_archive(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _skip_member(name: str) -> bool:
    # macOS archivers add resource forks ('__MACOSX/', '._name') that the loaders would read as images.
    parts = PurePosixPath(name).parts
    return bool(parts) and (parts[0] == "__MACOSX" or parts[-1].startswith("._"))


def _check_member(archive: Path, name: str) -> None:
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    if (
        not normalised
        or normalised.startswith("/")
        or (len(normalised) > 1 and normalised[1] == ":")
        or ".." in path.parts
    ):
        raise InputError(
            f"The archive {archive} contains the member {name!r} that points outside the data root; "
            "expected relative paths only, so nothing was extracted."
        )


def unpack(archive: str | os.PathLike, root: str | os.PathLike) -> list[str]:
    """Extract a .zip/.tar(.gz/.bz2/.xz) archive into ``root``; returns the top-level entries it wrote.

    Every member path is checked before anything is written: absolute paths, ``..`` components and
    (in tars) links or device files raise ``InputError``. Members keep their paths, except that a
    ``microscopy/`` or ``drone/`` folder found one level down (``Raw-Drone/drone/...``) is moved up
    to ``root/drone``. Folders merge with what is already in ``root``; files of the same name are
    replaced. Extraction goes through a staging folder inside ``root``, removed at the end.
    """
    archive, root = Path(archive), Path(root)
    if not is_archive(archive):
        raise InputError(f"{archive} is not an archive; expected one of {', '.join(ARCHIVE_SUFFIXES)}.")
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".unpacking-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, staging)
        else:
            _extract_tar(archive, staging)
        staging.mkdir(exist_ok=True)
        return _place(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_unpack_archive = unpack  # ``download_record`` has a flag of the same name


def _extract_zip(archive: Path, staging: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [member for member in bundle.infolist() if not _skip_member(member.filename)]
            for member in members:
                _check_member(archive, member.filename)
            for member in members:
                bundle.extract(member, staging)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
        raise InputError(
            f"The archive {archive} is not a readable zip file ({error}); expected a valid zip."
        ) from None


def _extract_tar(archive: Path, staging: Path) -> None:
    try:
        with tarfile.open(archive) as bundle:
            members = [member for member in bundle.getmembers() if not _skip_member(member.name)]
            for member in members:
                _check_member(archive, member.name)
                if not (member.isfile() or member.isdir()):
                    raise InputError(
                        f"The archive {archive} contains {member.name!r}, which is a link or special file; "
                        "expected only files and folders, so nothing was extracted."
                    )
            staging.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):
                bundle.extractall(staging, members=members, filter="data")
            else:  # Python < 3.10.12/3.11.4: the checks above are the protection
                bundle.extractall(staging, members=members)
    except (tarfile.TarError, EOFError) as error:
        raise InputError(
            f"The archive {archive} is not a readable tar file ({error}); expected a valid tar."
        ) from None


def _place(staging: Path, root: Path) -> list[str]:
    placed: list[str] = []
    for top in sorted(staging.iterdir()):
        if top.name in DATASETS:
            _merge(top, root / top.name)
            placed.append(top.name)
            continue
        if top.is_dir():
            for name in DATASETS:
                if (top / name).is_dir():
                    _merge(top / name, root / name)
                    placed.append(name)
            if not any(top.iterdir()):
                top.rmdir()
                continue
        _merge(top, root / top.name)
        placed.append(top.name)
    return sorted(set(placed))


def _merge(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, merging folders and replacing files of the same name."""
    if not target.exists():
        os.replace(source, target)
    elif source.is_dir() and target.is_dir():
        for child in list(source.iterdir()):
            _merge(child, target / child.name)
        source.rmdir()
    elif source.is_file() and target.is_file():
        os.replace(source, target)
    else:
        raise InputError(
            f"Unpacking would replace {target} with a {'folder' if source.is_dir() else 'file'}; "
            "expected the same kind of entry, so move it away and run again."
        )


# -------------------------------------------------------------------------------------------- layout


def _images(folder: Path, suffixes: tuple[str, ...]) -> bool:
    return folder.is_dir() and any(path.suffix.lower() in suffixes for path in folder.iterdir())


def _scale_folders(images: Path, suffixes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in INTENSITY_FOLDERS if _images(images / name, suffixes))


def check_layout(root: str | os.PathLike) -> LayoutReport:
    """Report which datasets the loaders will find under ``root`` and, for the others, what is missing.

    A dataset counts as present when its labels (microscopy) or masks (drone) exist and at least one
    ``raw_scale*`` folder holds raw images; ``LayoutReport.scales`` lists those folders.
    """
    root = Path(root)
    scales: dict[str, tuple[str, ...]] = {}
    missing: dict[str, str] = {}
    expected_folders = f"{INTENSITY_FOLDERS[0]} ... {INTENSITY_FOLDERS[-1]}"

    microscopy = root / "microscopy"
    labels = microscopy / "labels" / MICROSCOPY_LABELS
    found = _scale_folders(microscopy / "images", (".tif", ".tiff"))
    if not microscopy.is_dir():
        missing["microscopy"] = f"Raw-Microscopy is missing: expected the folder {microscopy}."
    elif not found:
        missing["microscopy"] = (
            f"Raw-Microscopy is incomplete: expected .tiff images in {microscopy / 'images'}/{expected_folders}."
        )
    elif not labels.is_file():
        missing["microscopy"] = f"Raw-Microscopy is incomplete: expected the labels file {labels}."
    else:
        scales["microscopy"] = found

    drone = root / "drone"
    masks = drone / "masks_full"
    found = _scale_folders(drone / "images_full", (".dng", ".tif", ".tiff"))
    if not drone.is_dir():
        missing["drone"] = f"Raw-Drone is missing: expected the folder {drone}."
    elif not found:
        missing["drone"] = (
            f"Raw-Drone is incomplete: expected .dng or .tif images in {drone / 'images_full'}/{expected_folders}."
        )
    elif not _images(masks, (".png",)):
        missing["drone"] = f"Raw-Drone is incomplete: expected .png masks in {masks}."
    else:
        scales["drone"] = found
    return LayoutReport(root=root, scales=scales, missing=missing)


# ------------------------------------------------------------------------------------------- a record


def _select(files: list[RemoteFile], only: Sequence[str] | None, record_url: str) -> list[RemoteFile]:
    if not only:
        return files
    chosen = [remote for remote in files if any(fnmatch.fnmatch(remote.name, pattern) for pattern in only)]
    if not chosen:
        raise InputError(
            f"No file of the record at {record_url} matches {', '.join(only)}; "
            f"expected one of: {', '.join(remote.name for remote in files)}."
        )
    return chosen


def _unpacked_marker(downloads: Path, remote: RemoteFile) -> Path:
    return downloads / f".{remote.name}.unpacked.json"


def _already_unpacked(marker: Path, remote: RemoteFile, root: Path) -> bool:
    try:
        state = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return state.get("md5") == remote.md5 and all((root / name).exists() for name in state.get("entries", []))


def download_record(
    record_url: str = ZENODO_RECORD_URL,
    root: str | os.PathLike = "data",
    only: Iterable[str] | None = None,
    unpack: bool = True,
    log: Log = print,
    retries: int = 3,
    timeout: float = 60.0,
    retry_wait: float = 2.0,
) -> DownloadSummary:
    """Download every file of a record (or those matching the ``only`` globs) into ``root/downloads``.

    Files already there with the right md5 are skipped; archives are then unpacked into ``root``
    (once per archive version) and the layout is checked. Every file is attempted even when one
    fails; the failures are raised together at the end.

    Raises:
        InputError: the record cannot be read, nothing matches ``only``, or a file fails to download,
            verify or unpack (one sentence; several failures are joined).
    """
    root = Path(root)
    only = list(only) if only else None
    files = _select(fetch_record(record_url, timeout=timeout), only, record_url)
    downloads = root / DOWNLOADS_FOLDER
    summary = DownloadSummary(record_url=record_url, root=root)
    failures: list[str] = []
    log(f"{len(files)} file(s) from {record_url} into {downloads}")

    for remote in files:
        destination = downloads / remote.name
        log(f"{remote.name} ({human_size(remote.size)}) ...")
        try:
            status = download_file(
                remote.url,
                destination,
                remote.md5,
                remote.size,
                retries=retries,
                timeout=timeout,
                retry_wait=retry_wait,
                log=log,
            )
        except InputError as error:
            log(f"  FAILED: {error}")
            failures.append(str(error))
            summary.files.append((remote.name, remote.size, "failed"))
            continue
        summary.files.append((remote.name, remote.size, status))
        log(f"{remote.name}: {status}")

        if not (unpack and is_archive(remote.name)):
            continue
        marker = _unpacked_marker(downloads, remote)
        if status == "skipped" and _already_unpacked(marker, remote, root):
            log(f"{remote.name}: already unpacked")
            continue
        try:
            entries = _unpack_archive(destination, root)
        except InputError as error:
            log(f"  FAILED: {error}")
            failures.append(str(error))
            continue
        marker.write_text(json.dumps({"md5": remote.md5, "entries": entries}))
        summary.unpacked.append(remote.name)
        log(f"{remote.name}: unpacked into {root} ({', '.join(entries) or 'nothing'})")

    summary.layout = check_layout(root)
    if failures:
        if len(failures) == 1:
            raise InputError(failures[0])
        raise InputError(f"{len(failures)} files failed: " + " ".join(failures))
    return summary
