"""What it takes to reproduce a run: seed, resolved config, package versions, git commit."""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from omegaconf import OmegaConf

PACKAGES = ("raw2logit", "torch", "torchvision", "numpy", "scipy", "scikit-image", "colour-demosaicing",
            "pytorch-lightning", "torchmetrics", "segmentation-models-pytorch", "hydra-core", "mlflow")  # fmt: skip


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the raw2logit checkout (with ``-dirty`` if it has uncommitted changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


@functools.cache
def source_hash(package: Path | None = None) -> str:
    """A hash of the package's own source (its ``.py`` files and templates): the code version that
    keys resumable results.

    It changes with any edit, committed or not (a git commit alone would miss uncommitted edits), so
    results computed by other code are never reused silently.
    """
    package = package or Path(__file__).resolve().parent
    digest = hashlib.sha1()
    for path in sorted(
        p for p in package.rglob("*") if p.suffix in (".py", ".j2") and "__pycache__" not in p.parts
    ):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def provenance(cfg) -> dict:
    return {
        "seed": cfg.get("seed"),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "packages": package_versions(),
        "git_commit": git_commit(),
        "source_hash": source_hash(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
