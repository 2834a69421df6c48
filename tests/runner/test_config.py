"""Every config group option composes and every ``_target_`` instantiates (a broken config fails here)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.runner.conftest import CONF, compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


# What each task model is for: a new task model config must be added here ("both": a family that
# picks its network for the dataset's task).
TASK_MODEL_TASKS = {"small_cnn": "classification", "resnet18": "classification", "small_unet": "segmentation",
                    "unetpp": "segmentation", "small": "both", "paper": "both"}  # fmt: skip


@pytest.mark.parametrize("option", options("task_model"))
def test_task_models_instantiate_and_run(option):
    """Classifiers give one logit per class, segmenters one logit map per class at the input size;
    a family builds the one its task needs (through the builder the modes use)."""
    from raw2logit.modes.common import build_task_model
    from raw2logit.tasks.task import Task

    cfg = compose_config([f"task_model={option}"])
    tasks = (
        ("classification", "segmentation")
        if TASK_MODEL_TASKS[option] == "both"
        else (TASK_MODEL_TASKS[option],)
    )
    for task in tasks:
        model = build_task_model(cfg, Task(task, 3 if task == "classification" else 1)).eval()
        with torch.no_grad():
            out = model(torch.rand(2, 3, 64, 64))
        expected = {"classification": (2, 3), "segmentation": (2, 1, 64, 64)}[task]
        assert out.shape == expected, (option, task)


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


@pytest.mark.parametrize("option", options("data_model"))
def test_data_models_build_and_process_raw(option):
    """Each data model option instantiates (its ``_target_``) and builds the module the modes use, which
    turns raw into a 3-channel view."""
    from raw2logit.isp import CameraParams, StaticPipeline
    from raw2logit.names import DATA_MODEL_TARGETS

    cfg = compose_config([f"data_model={option}"])
    assert cfg.data_model._target_ == DATA_MODEL_TARGETS[option]
    spec = instantiate(cfg.data_model)
    camera = CameraParams.published("microscopy")
    module = (
        StaticPipeline("bi_s_me", camera, backend=spec.backend) if option == "static" else spec.build(camera)
    )
    with torch.no_grad():
        view = module(torch.rand(2, 16, 16))
    assert view.shape[:2] == (2, 3) and torch.isfinite(view).all(), option
    assert spec.in_step == (option != "static")


@pytest.mark.parametrize("option", options("trainer"))
def test_trainer_options_are_trainer_arguments(option):
    """Every key of a trainer option is an argument of Lightning's Trainer (a misspelt key fails here);
    the CPU trainer is built for real."""
    import inspect

    import pytorch_lightning as pl

    from raw2logit.modes.common import make_trainer_factory

    cfg = compose_config([f"trainer={option}"])
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    inspect.signature(pl.Trainer).bind(**{k: v for k, v in cfg.trainer.items() if not k.startswith("_")})
    if option == "cpu":
        trainer = make_trainer_factory(cfg)("test")
        assert trainer.max_epochs == cfg.epochs and trainer.accelerator.__class__.__name__ == "CPUAccelerator"


@pytest.mark.parametrize("option", options("tracking"))
def test_tracking_options_are_tracker_arguments(option):
    import inspect

    from raw2logit.tracking import Tracker

    cfg = compose_config([f"tracking={option}"])
    inspect.signature(Tracker).bind(**cfg.tracking)


@pytest.mark.parametrize("option", options("mode"))
def test_every_mode_option_is_a_mode_the_cli_runs(option):
    from raw2logit.names import MODES

    assert compose_config([f"mode={option}"]).mode == option and option in MODES


def test_datasets_do_not_choose_the_task_model():
    """The default task model family builds what each dataset's task needs; datasets name no model."""
    for dataset in ("sim_microscopy", "sim_drone", "microscopy", "drone", "dng_folder"):
        assert compose_config([f"dataset={dataset}"]).task_model._target_.endswith(".small")
    assert compose_config(["dataset=sim_drone", "task_model=unetpp"]).task_model._target_.endswith("unetpp")


def test_mode_options_live_in_their_mode():
    """Each mode's options exist only when that mode runs (conf/mode/<mode>.yaml)."""
    from raw2logit.names import MODES

    for mode in MODES:
        cfg = compose_config([f"mode={mode}"])
        assert [m for m in MODES if m in cfg] == [mode], mode


def test_smoke_experiment_shrinks_every_mode():
    from raw2logit.names import MODES

    for mode in MODES:
        cfg = compose_config(["experiment=smoke", f"mode={mode}"])
        assert (cfg.epochs, cfg.dataset.num_images, cfg.dataset.size) == (1, 36, 32)
    assert compose_config(["experiment=smoke", "mode=forensics"]).forensics.epochs == 1
    assert compose_config(["experiment=smoke", "mode=calibrate"]).calibrate.steps == 5


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
