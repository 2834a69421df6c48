"""The package as pip installs it: every module imports in a fresh interpreter, and every third-party
module it imports (at the top of a module or inside a function) is a declared dependency.

No network and no install: the check reads pyproject.toml and the installed distributions' metadata.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "raw2logit"

IMPORT_EVERY_MODULE = """
import importlib, json, pkgutil, raw2logit
failed = {}
for module in pkgutil.walk_packages(raw2logit.__path__, "raw2logit."):
    try:
        importlib.import_module(module.name)
    except Exception as error:
        failed[module.name] = f"{type(error).__name__}: {error}"
print(json.dumps(failed))
"""


def imported_top_level_names(path: Path) -> set[str]:
    """Top-level names of every absolute import in a source file, function-level imports included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(line).name) for line in project["dependencies"]}


def test_every_module_imports_in_a_fresh_interpreter():
    done = subprocess.run([sys.executable, "-c", IMPORT_EVERY_MODULE], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {}


def test_every_third_party_import_is_a_declared_dependency():
    from importlib.metadata import packages_distributions

    providers = packages_distributions()  # top-level module name -> distributions that install it
    declared = declared_distributions()
    undeclared = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in imported_top_level_names(path):
            if name in sys.stdlib_module_names or name in ("__future__", "raw2logit"):
                continue
            distributions = {canonicalize_name(d) for d in providers.get(name, [])}
            if not distributions & declared:
                undeclared.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not undeclared, f"imported but not declared in pyproject.toml's dependencies: {undeclared}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    """The scan is not blind to the lazy imports this package uses everywhere."""
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    import cv2\n    from sklearn.model_selection import KFold\n")
    assert imported_top_level_names(source) == {"cv2", "sklearn"}
