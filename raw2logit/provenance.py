"""What it takes to reproduce a run: seed, resolved config, package versions, git commit."""

from __future__ import annotations

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


def provenance(cfg) -> dict:
    return {
        "seed": cfg.get("seed"),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "packages": package_versions(),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
