"""Download, verify and unpack the published Raw-Microscopy and Raw-Drone datasets.

The datasets are Zenodo record 5235536 (DOI 10.5281/zenodo.5235536, CC-BY 4.0). Zenodo's REST API
serves the record as JSON with a ``files`` list (name, size, md5, download link); every file is
streamed to ``<name>.part``, resumed with an HTTP Range request after an interruption, checked
against its md5 and size, and only then renamed into place. Archives are unpacked into the data
root (``raw2logit.data.archives``) so that the loaders find (``raw2logit.data.layout``)::

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
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from raw2logit.data.archives import is_archive
from raw2logit.data.archives import unpack as unpack_archive  # download_record has a flag named unpack
from raw2logit.data.layout import ZENODO_RECORD_URL, LayoutReport, check_layout
from raw2logit.errors import InputError

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
            entries = unpack_archive(destination, root)
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
