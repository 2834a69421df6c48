"""Unpacking downloaded archives (zip, tar in any compression) into the data root, safely:
members outside the archive's folder, links and special files are refused, and an archive is
unpacked into a staging folder first, so an interrupted unpack leaves nothing half-placed."""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from raw2logit.data.layout import DATASETS
from raw2logit.errors import InputError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


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
