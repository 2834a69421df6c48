"""Figures for the README: simulated raw through the 12 static pipelines, and the sensor's noise.

python scripts/make_figures.py [--out docs]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from raw2logit.data.registry import sim_drone, sim_microscopy
from raw2logit.isp import STATIC_PIPELINE_NAMES, StaticPipelineBank


def pipelines_figure(out: Path) -> Path:
    with tempfile.TemporaryDirectory() as root:
        cells = sim_microscopy(root, num_images=12, size=128, seed=3)
        low = sim_microscopy(root, num_images=12, size=128, seed=3, intensity=0.05)
        drone = sim_drone(root, num_images=1, height=512, width=512, scale=0.5, seed=1)
        rows = [("microscopy", cells, 2), ("microscopy, I=0.05", low, 2), ("drone", drone, 0)]
        fig, axes = plt.subplots(len(rows), 13, figsize=(22, 5.6))
        for row, (label, dataset, index) in enumerate(rows):
            raw = dataset.normalised([index])
            views = StaticPipelineBank("all", dataset.camera)(raw)
            axes[row][0].imshow(raw[0].numpy(), cmap="gray")
            axes[row][0].set_title(f"raw ({label})", fontsize=8)
            scale = 1.0
            if dataset.intensity < 1:  # dark views: brighten for display, as the paper's Fig. 14
                scale = 1.0 / max(float(views["bi_s_me"].quantile(0.99)), 1e-3)
            for col, name in enumerate(STATIC_PIPELINE_NAMES, start=1):
                axes[row][col].imshow(np.clip(views[name][0].permute(1, 2, 0).numpy() * scale, 0, 1))
                axes[row][col].set_title(name.replace("_", ","), fontsize=8)
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(
            "Simulated raw sensor data (left: the Bayer mosaic) through the 12 static data models",
            fontsize=10,
        )
        fig.tight_layout()
        path = out / "sim_pipelines.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    print(pipelines_figure(out))


if __name__ == "__main__":
    main()
