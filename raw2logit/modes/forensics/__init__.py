"""``mode=forensics`` (paper §5.2, Eq. 9): search θ of the data model for settings that break a frozen task model.

The task model comes from a checkpoint (``forensics.checkpoint``), from an MLflow run that logged one
(``forensics.from_run``), or is trained here once on the views at θ_stat (shared by every λ and
target of a sweep). A sweep over λ and θ groups ends with the forensic signature
(``assemble_sweep``): the "limitations of use" of the model.
"""

from __future__ import annotations

import json
from pathlib import Path

from raw2logit.errors import InputError
from raw2logit.modes.common import (
    Context,
    announce_resume,
    check_finite_result,
    device,
    finish_run,
    log,
    make_module_factory,
    make_trainer_factory,
    mode_run,
    results_key,
    results_store,
)

FOLDER = "forensics"
# Keys that do not change a search's result: the tolerance only shapes the sweep's signature.
RESULTS_IGNORE = ("forensics.tolerance",)
# The task model trained here depends on everything but the search itself.
TASK_MODEL_IGNORE = ("forensics", "lambda")


def checkpoint_from_run(ctx: Context, source: str) -> Path:
    """The task model checkpoint behind ``forensics.from_run``: a run id (the first ``.pt`` it logged),
    ``runs:/<run id>/<path>`` (that file, or the first ``.pt`` under that folder) or a logged or
    registered model, ``models:/<model id>`` or ``models:/<name>/<version>`` (the weights-only
    checkpoint raw2logit stores inside each task model it logs). Only that checkpoint is read:
    a model's pickle is never loaded."""
    import tempfile

    import mlflow

    def first_checkpoint(folder: Path) -> Path:
        found = sorted(folder.rglob("*.pt"))
        if not found:
            raise FileNotFoundError(f"no .pt file under {folder.name}")
        return found[0]

    try:
        target = Path(tempfile.mkdtemp(prefix="raw2logit-from-run-"))
        uri = source if source.startswith(("runs:/", "models:/")) else f"runs:/{source}/"
        with ctx.tracker._fluent():  # models:/ resolves through the registry of this store
            path = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))
        return first_checkpoint(path) if path.is_dir() else path
    except Exception as error:
        raise InputError(
            f"forensics.from_run={source}: no task model checkpoint (.pt) could be fetched from it "
            f"({type(error).__name__}); expected a run id, runs:/<run id>/<path> or models:/<model> of a "
            "synthesis cell's or forensics' task model."
        ) from None


def train_task_model(
    ctx: Context, data_model, raw, train_index, test_index, fold: int, path: Path, parent
) -> Path:
    """Train a task model on the data model's views (at its initial θ) of a training fold, in its own
    MLflow run below ``parent`` (logged live, with the held-out fold's metric after every epoch; the
    model ends it as an MLflow model)."""
    import torch
    from omegaconf import OmegaConf

    from raw2logit.controls.synthesis import train_cell
    from raw2logit.tasks.checkpoints import save_task_model

    cfg, dataset, tracker = ctx.cfg, ctx.dataset, ctx.tracker
    log(f"training the task model on {data_model.variant} views of fold {fold} ({len(train_index)} images)")
    with torch.no_grad():
        views, held_out = (torch.cat([data_model(raw[index[i : i + 64]].to(device(cfg))).cpu()
                                      for i in range(0, len(index), 64)]) for index in (train_index, test_index))  # fmt: skip
    with tracker.run(f"task model {data_model.variant} fold {fold}", {"fold": fold}, parent=parent,
                     tags={"raw2logit.train_pipeline": data_model.variant, "raw2logit.fold": str(fold)}) as run_id:  # fmt: skip
        module = train_cell(make_module_factory(cfg, dataset), make_trainer_factory(cfg, tracker), views,
                            dataset.targets[train_index], cfg.batch_size, cfg.seed + fold, "task model",
                            validation=(held_out, dataset.targets[test_index]), run_id=run_id)  # fmt: skip
        metadata = {"task_model": OmegaConf.to_container(cfg.task_model, resolve=True), "pipeline": data_model.variant,
                    "fold": fold, "task": dataset.task, "num_classes": dataset.num_classes}  # fmt: skip
        save_task_model(module.task_model, module.normalise.as_dict(), path, metadata)
        tracker.log_model(run_id, module.task_model, views[:1], path)
    return path


def run(ctx: Context) -> dict:
    """Drift forensics: adversarial search over θ against a frozen task model."""
    import torch
    from hydra.utils import instantiate

    from raw2logit.controls.forensics import run_search
    from raw2logit.controls.synthesis import Subset
    from raw2logit.data.dataset import RawInputs
    from raw2logit.data.files import write_json_atomic
    from raw2logit.data.splits import kfold_splits
    from raw2logit.locks import file_lock
    from raw2logit.report.figures import comparison_figure
    from raw2logit.tasks.checkpoints import load_task_checkpoint
    from raw2logit.tasks.task import Task

    cfg, dataset = ctx.cfg, ctx.dataset
    options = cfg.forensics
    lam = cfg["lambda"]  # checked by raw2logit.config: finite, >= 0
    raw = RawInputs(dataset)
    # The task model: a checkpoint, an MLflow run's checkpoint, or trained here on the views at θ_stat.
    source = options.checkpoint or (checkpoint_from_run(ctx, options.from_run) if options.from_run else None)
    shown = (
        f"the checkpoint logged with MLflow run {options.from_run}"
        if source and not options.checkpoint
        else None
    )
    checkpoint = load_task_checkpoint(source, dataset, shown=shown) if source else None
    fold = cfg.fold if cfg.fold is not None else 0
    if checkpoint is not None and checkpoint[2].get("fold") is not None:
        trained_fold = int(checkpoint[2]["fold"])
        if cfg.fold is not None and cfg.fold != trained_fold:
            raise InputError(f"{shown or source} was trained on fold {trained_fold}, but fold={cfg.fold}: its held-out "
                             f"images would include its training images (leave fold unset, or fold={trained_fold}).")  # fmt: skip
        fold = trained_fold  # evaluate on the images this model never saw
    train_index, test_index = kfold_splits(dataset, cfg.folds, cfg.seed)[fold]
    store = results_store(cfg, FOLDER, RESULTS_IGNORE)
    results = store.with_name(f"{store.name}-{fold}")  # a checkpoint decides its own held-out fold
    folder = ctx.run_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    spec = instantiate(cfg.data_model)  # the parametrized data model (raw2logit.config checks it)

    def fresh_data_model():
        return spec.build(dataset.camera)

    announce_resume(results, int((results / "result.json").exists()), 1)
    tags = {"raw2logit.lambda": f"{lam:g}", "raw2logit.target": options.target, "raw2logit.fold": str(fold)}
    with mode_run(ctx, f"forensics λ={lam:g} {options.target}", results, tags) as run_id:
        data_model = fresh_data_model().to(device(cfg))
        trained = Path(cfg.paths.results) / (
            f"task-model-{cfg.dataset.name}-{results_key(cfg, FOLDER, TASK_MODEL_IGNORE)}.pt"
        )
        if checkpoint is None:
            with file_lock(trained.with_suffix(".lock")):  # parallel λ jobs train it once
                if not trained.exists():
                    train_task_model(ctx, data_model, raw, train_index, test_index, fold, trained, run_id)
            checkpoint = load_task_checkpoint(trained, dataset)
        task_model, normalisation, info = checkpoint
        ctx.tracker.log_params(run_id, {"task_model_source": str(options.from_run or source or trained)})
        if source is None:
            ctx.tracker.log_artifact(run_id, trained)

        result_file = results / "result.json"
        with file_lock(results / "result.lock"):  # a parallel run of this config searches once
            if result_file.exists():
                log(f"forensics result found in {results}: reused")
                result = json.loads(result_file.read_text())
                data_model.load_theta(result["theta_after"])
            else:
                result = run_search(
                    task_model=task_model.to(device(cfg)), data_model=data_model, task=Task.of(dataset),
                    normalisation=normalisation, train_raw=Subset(raw, train_index),
                    train_targets=dataset.targets[train_index], test_raw=Subset(raw, test_index),
                    test_targets=dataset.targets[test_index], lam=float(lam), target=options.target,
                    regulariser=options.regulariser, epochs=options.epochs, batch_size=cfg.batch_size, lr=options.lr,
                    plausible=options.plausible, seed=cfg.seed, log=log, run_id=run_id,
                    make_trainer=make_trainer_factory(cfg, ctx.tracker, max_epochs=options.epochs),
                )  # fmt: skip
                result["task_model"] = {k: v for k, v in info.items() if k != "normalisation"}
                check_finite_result(result, ("metric_before", "metric_after", "l2"), "forensic search")
                write_json_atomic(result_file, result)
        write_json_atomic(folder / "result.json", result)
        data_model.save_theta_json(folder / "theta_adversarial.json")
        reference = fresh_data_model().to(data_model.black_level.device)
        sample = raw[test_index[:3]].to(data_model.black_level.device)
        with torch.no_grad():
            default_views, adversarial_views = (
                reference(sample).cpu().numpy(),
                data_model(sample).cpu().numpy(),
            )
        comparison_figure([(dataset.names[i], a, b) for i, a, b in zip(test_index[:3], default_views, adversarial_views)],
                          ("default Φ(x, θ_stat)", f"adversarial Φ(x, θ~), λ={lam:g}"), folder / "samples.png")  # fmt: skip
        summary = {"mode": "forensics", **{k: result[k] for k in ("lambda", "target", "regulariser", "metric",
                                                                     "metric_before", "metric_after", "l2")}}  # fmt: skip
        log(f"\nforensics λ={lam:g} target={options.target}: {result['metric']} {result['metric_before']:.3f} -> "
            f"{result['metric_after']:.3f}, ℓ2 {result['l2']:.4g}; artifacts in {folder}")  # fmt: skip
        ctx.tracker.log_metrics(run_id, sweep_metrics(result))
        finish_run(ctx, run_id, summary, folder, data_model, raw[test_index[:3]])
    return summary


def sweep_metrics(result: dict) -> dict:
    """What a λ x θ-group sweep compares in the MLflow UI: the task's metric before and after the search
    (``accuracy_after``, ``iou_after``), ℓ2, λ and log10 λ (λ spans decades)."""
    import math

    metric, lam = result["metric"], result["lambda"]
    values = {f"{metric}_before": result["metric_before"], f"{metric}_after": result["metric_after"],
              f"{metric}_drop": result["metric_drop"], "l2": result["l2"], "lambda": lam}  # fmt: skip
    if lam > 0:
        values["log10_lambda"] = math.log10(lam)
    return values


def assemble_sweep(config, sweep_dir: Path) -> dict | None:
    """The forensic signature over every job's result (λ x θ group) of a multirun."""
    from raw2logit.controls.forensics import assemble_signature

    results = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/forensics/result.json"))]
    if not results:
        return None
    signature = assemble_signature(results, sweep_dir, config.forensics.tolerance)
    log(f"\nforensic signature of {len(results)} runs: {sweep_dir / FOLDER / 'signature.md'}")
    return {"mode": "forensics", "sweep": True, "runs": len(results), "metric": signature["metric"],
            "ranking": signature["ranking"], "sensitivity": signature["sensitivity"]}  # fmt: skip
