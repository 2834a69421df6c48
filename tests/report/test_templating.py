"""The templates: one per mode next to its code, all found by the environment, all shipped as package data."""

from __future__ import annotations

import fnmatch
import importlib
from pathlib import Path

import tomllib

from raw2logit.names import MODES
from raw2logit.report.templating import environment, section_template

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "raw2logit"
TEMPLATE_SUFFIXES = (".j2", ".css")


def test_every_mode_builds_its_own_section():
    for mode in MODES:
        report = importlib.import_module(f"raw2logit.modes.{mode}.report")
        assert callable(report.section_context) and report.ANCHOR and report.TITLE and report.LABEL
        assert (PACKAGE / "modes" / mode / "report.html.j2").is_file()
        environment().get_template(section_template(mode))  # found and compiles


def test_templates_are_package_data():
    """A non-editable install ships every template: pyproject.toml's package-data globs cover them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(line.replace(" ", "").startswith("jinja2>=3.1") for line in project["project"]["dependencies"])
    patterns = project["tool"]["setuptools"]["package-data"]["raw2logit"]
    templates = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.suffix in TEMPLATE_SUFFIXES
    ]
    assert len(templates) >= len(MODES) + 3
    for template in templates:
        assert any(fnmatch.fnmatch(template, pattern) for pattern in patterns), template
