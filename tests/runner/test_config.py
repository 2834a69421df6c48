"""Every config group option composes and every ``_target_`` instantiates (a broken config fails here)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.runner.conftest import CONF, compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("option", options("task_model"))
def test_task_models_instantiate_and_run(option):
    cfg = compose_config([f"task_model={option}"])
    model = instantiate(cfg.task_model, num_classes=3, in_channels=3).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape in ((2, 3), (2, 3, 64, 64)), option


@pytest.mark.parametrize("option", options("dataset"))
def test_dataset_configs_compose(option):
    cfg = compose_config([f"dataset={option}"])
    assert cfg.dataset.name == option and cfg.dataset._target_.startswith("raw2logit.data.registry.")
    if option in ("microscopy", "drone", "dng_folder"):
        assert OmegaConf.is_missing(cfg.dataset, "root")  # the user must say where the data is


def test_published_loaders_read_the_simulated_layout(tmp_path):
    """dataset=microscopy / dataset=drone read what the simulator wrote: one code path for both."""
    from raw2logit.isp import CameraParams

    sim = instantiate(
        compose_config(["dataset.num_images=30", "dataset.size=32", f"dataset.root={tmp_path}"]).dataset
    )
    real = instantiate(compose_config(["dataset=microscopy", f"dataset.root={tmp_path}"]).dataset)
    assert (real.raw == sim.raw).all() and (real.targets == sim.targets).all() and real.classes == sim.classes
    assert real.camera == sim.camera != CameraParams.published("microscopy")  # camera.json beside the data
    assert real.normalisation == {"mean": [0.91, 0.84, 0.94], "std": [0.08, 0.12, 0.05]}
    drone = ["dataset=sim_drone", "dataset.num_images=2", "dataset.height=512", "dataset.width=768",
             "dataset.scale=0.125", f"dataset.root={tmp_path}"]  # fmt: skip
    sim_drone = instantiate(compose_config(drone).dataset)
    real_drone = instantiate(
        compose_config(["dataset=drone", f"dataset.root={tmp_path}", "dataset.tile_size=32"]).dataset
    )
    assert (real_drone.raw == sim_drone.raw).all() and (real_drone.targets == sim_drone.targets).all()
    assert sim_drone.task == "segmentation" and set(sim_drone.groups) <= {0, 1}


@pytest.mark.parametrize(
    "option", options("data_model") + options("mode") + options("trainer") + options("tracking")
)
def test_other_groups_compose(option):
    group = next(
        g for g in ("data_model", "mode", "trainer", "tracking") if (CONF / g / f"{option}.yaml").exists()
    )
    cfg = compose_config([f"{group}={option}"])
    if group == "mode":
        assert cfg.mode == option


def test_segmentation_datasets_switch_the_task_model():
    assert compose_config(["dataset=sim_drone"]).task_model._target_.endswith("SmallUNet")
    assert compose_config(["dataset=drone"]).task_model._target_.endswith("unetpp")
    assert compose_config(["dataset=sim_drone", "task_model=unetpp"]).task_model._target_.endswith("unetpp")


@pytest.mark.parametrize(
    ("experiment", "dataset", "model", "batch", "lr"),
    [("paper_microscopy_synthesis", "microscopy", "resnet18", 128, 1e-4),
     ("paper_drone_synthesis", "drone", "unetpp", 12, 7.5e-5)],
)  # fmt: skip
def test_paper_experiments_follow_table_3(experiment, dataset, model, batch, lr):
    cfg = compose_config([f"experiment={experiment}"])
    assert (cfg.dataset.name, cfg.folds, cfg.epochs, cfg.batch_size, cfg.mode) == (
        dataset,
        5,
        100,
        batch,
        "synthesis",
    )
    assert (
        cfg.lr == pytest.approx(lr) and cfg.task_model._target_.endswith(model) and cfg.task_model.pretrained
    )
    assert cfg.dataset.normalisation.mean  # the paper's view normalisation


def test_launcher_presets_compose():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        local = compose(config_name="config", overrides=["hydra/launcher=local"], return_hydra_config=True)
    assert local.hydra.launcher._target_.endswith("JoblibLauncher") and local.hydra.launcher.n_jobs == 2
