"""Reading a run directory's artifacts for the report: a missing optional file is left out, a malformed
one becomes a note on the page, never an exception."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 20 * 1024 * 1024
JSON_KINDS = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
              type(None): "null"}  # fmt: skip


@dataclass(frozen=True)
class EmbeddedImage:
    """A PNG ready for an ``<img>``: its ``data:`` URI, its path in the directory (alt), a caption."""

    uri: str
    name: str
    caption: str


class Artifacts:
    """The files of one run or sweep directory. Every reader returns None for a missing file and, for a
    malformed one, None plus a note (``notes``); ``shown`` holds the files the page already shows, so
    that no figure appears twice."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.notes: list[str] = []
        self.shown: set[Path] = set()

    def relative(self, path: Path) -> str:
        """``path`` relative to the directory (as the page names it)."""
        try:
            return str(path.relative_to(self.directory))
        except ValueError:
            return str(path)

    def note(self, path: Path | str, error: BaseException | str) -> None:
        name = self.relative(path) if isinstance(path, Path) else path
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.notes.append(f"{name} was skipped: {reason}")

    def mark_shown(self, relative: str | Path) -> None:
        """Record that the page shows ``relative``'s content (e.g. drawn again from its data)."""
        path = relative if isinstance(relative, Path) else self.directory / relative
        self.shown.add(path.resolve())

    def is_shown(self, path: Path) -> bool:
        return path.resolve() in self.shown

    def load(
        self, relative: str, reader: Callable[[Path], object], check: Callable[[object], None] | None = None
    ):
        """``reader(path)`` if the file exists and reads well (and passes ``check``), else None (with a
        note if it exists but is malformed)."""
        path = self.directory / relative
        if not path.is_file():
            return None
        try:
            value = reader(path)
            if check is not None:
                check(value)
            return value
        except Exception as error:
            self.note(path, error)
            return None

    def json(self, relative: str, expect: type | tuple[type, ...] = dict):
        """The parsed JSON document, if it is one of the ``expect`` kinds; else None."""
        kinds = expect if isinstance(expect, tuple) else (expect,)

        def check(value):
            if not isinstance(value, kinds):
                expected = " or ".join(JSON_KINDS.get(k, k.__name__) for k in kinds)
                found = JSON_KINDS.get(type(value), type(value).__name__)
                raise ValueError(f"expected a JSON {expected}, got {found}")

        return self.load(relative, lambda p: json.loads(p.read_text(encoding="utf-8")), check)

    def csv(self, relative: str, index: bool = True, required: Sequence[str] = ()) -> pd.DataFrame | None:
        """The CSV as a data frame (first column as index when ``index``), if it has rows and the
        ``required`` columns; else None."""

        def read(path):
            frame = pd.read_csv(path, index_col=0 if index else None)
            missing = [c for c in required if c not in frame.columns]
            if missing:
                raise ValueError(
                    f"missing column(s) {', '.join(missing)}; has {', '.join(map(str, frame.columns))}"
                )
            if frame.empty:
                raise ValueError("no rows")
            return frame

        return self.load(relative, read)

    def text(self, relative: str) -> str | None:
        return self.load(relative, lambda p: p.read_text(encoding="utf-8"))

    def image(self, relative: str | Path, caption: str | None = None) -> EmbeddedImage | None:
        """The PNG as an ``EmbeddedImage`` (a ``data:`` URI), marked as shown; None if absent, already
        shown, or unusable (with a note)."""
        path = relative if isinstance(relative, Path) else self.directory / relative
        if not path.is_file() or self.is_shown(path):
            return None
        self.mark_shown(path)
        try:
            data = path.read_bytes()
            if len(data) > MAX_PNG_BYTES:
                raise ValueError(f"{len(data)} bytes, more than the {MAX_PNG_BYTES} embedded at most")
            if not data.startswith(PNG_SIGNATURE):
                raise ValueError("not a PNG file")
        except Exception as error:
            self.note(path, error)
            return None
        name = self.relative(path)
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        return EmbeddedImage(uri, name, caption or name)

    def guarded(self, label: str, build: Callable[[], object]):
        """``build()``; an unexpected error costs that part of the page only (a note, and None)."""
        try:
            return build()
        except Exception as error:
            self.note(label, error)
            return None
