"""The modes behind ``python run.py mode=...``: config -> plain arguments -> controls."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np

from raw2logit.cli import (
    Context,
    fingerprint,
    flat_params,
    log,
    make_module_factory,
    make_trainer_factory,
    record_run,
)
from raw2logit.errors import InputError
from raw2logit.isp import STATIC_PIPELINE_NAMES, resolve_pipeline_names

SYNTHESIS_KEYS = ["dataset", "data_model", "task_model", "trainer", "seed", "folds", "epochs", "batch_size", "lr",
                  "augment", "synthesis.test", "synthesis.severity", "synthesis.corruptions"]  # fmt: skip


def _names(value, calibrated: dict | None = None) -> list[str]:
    """Pipeline names from a config value: ``all``, static names, and ``calibrated:/path.json`` specs.

    A calibrated spec becomes the name ``calibrated:<file stem>``; ``calibrated`` collects name -> file.
    """
    from omegaconf import OmegaConf

    from raw2logit.controls.calibration import CALIBRATED_PREFIX, load_calibrated

    value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    items = [value] if isinstance(value, str) else list(value)
    names = []
    for item in items:
        if isinstance(item, str) and item.startswith(CALIBRATED_PREFIX):
            load_calibrated(item)  # one clear sentence now if the file is missing or invalid
            path = Path(item[len(CALIBRATED_PREFIX) :]).expanduser().resolve()
            name = f"{CALIBRATED_PREFIX}{path.stem}"
            if calibrated is not None:
                calibrated[name] = path
            names.append(name)
        else:
            names += resolve_pipeline_names(item)
    return names


def _corruption_names(value) -> list[str]:
    from omegaconf import OmegaConf

    from raw2logit.controls.corruptions import CORRUPTION_NAMES

    if value in (None, "none", []):
        return []
    names = (
        list(CORRUPTION_NAMES)
        if value == "all"
        else OmegaConf.to_container(value)
        if OmegaConf.is_config(value)
        else [value]
    )
    unknown = [n for n in names if n not in CORRUPTION_NAMES]
    if unknown:
        raise InputError(f"Unknown corruption(s) {unknown} in synthesis.corruptions; expected 'all', 'none' or "
                         f"names among {', '.join(CORRUPTION_NAMES)}.")  # fmt: skip
    return names


def device(cfg) -> str:
    import torch

    return "cuda" if cfg.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"


def resumable_run(ctx: Context, results: Path, name: str):
    """The MLflow run of a results store: reopened when the store is resumed."""
    state = results / "mlflow_run.json"
    resume = json.loads(state.read_text()).get("run_id") if state.exists() else None
    if resume and ctx.tracker.status(resume) is None:
        resume = None  # the store was tracked elsewhere (another tracking URI)
    return ctx.tracker.run(name, params=flat_params(ctx.cfg), parent=ctx.parent_run, resume=resume), state


def finish_run(ctx: Context, run_id, pipeline=None, raw=None) -> None:
    """The stage-by-stage figure (paper Fig. 1) and the self-contained report.html of a run."""
    from raw2logit.report.html import write_report
    from raw2logit.report.stages import save_stage_figure

    try:
        if pipeline is not None and raw is not None:
            save_stage_figure(pipeline.cpu(), raw, ctx.run_dir / "stages.png", names=None)
            ctx.tracker.log_artifact(run_id, ctx.run_dir / "stages.png")
        report = write_report(ctx.run_dir)
        ctx.tracker.log_artifact(run_id, report)
        log(f"report: {report}")
    except Exception as error:  # a figure or report must never cost the run's results
        log(f"warning: report.html not written ({type(error).__name__}: {error})")


def synthesis_mode(ctx: Context) -> dict:
    """Drift synthesis: the cross-pipeline matrix with k-fold CV, next to Common Corruptions."""
    from omegaconf import OmegaConf

    from raw2logit.controls.synthesis import assemble, cell_path, format_matrix, model_file, run_synthesis
    from raw2logit.data.files import write_json_atomic
    from raw2logit.data.views import ViewCache

    cfg = ctx.cfg
    if cfg.data_model.kind != "static":
        raise InputError(
            f"mode=synthesis trains on the static pipelines; use data_model=static (got {cfg.data_model.kind})."
        )
    severity = cfg.synthesis.severity
    if not isinstance(severity, int) or not 1 <= severity <= 5:
        raise InputError(f"synthesis.severity must be an integer from 1 to 5; got {severity!r}.")
    calibrated: dict[str, Path] = {}
    train_names, test_names = _names(cfg.synthesis.train, calibrated), _names(cfg.synthesis.test, calibrated)
    corruption_names = _corruption_names(cfg.synthesis.corruptions)
    key = fingerprint(cfg, SYNTHESIS_KEYS)
    if calibrated:  # a changed calibration file is a different experiment
        digest = hashlib.sha1(b"".join(path.read_bytes() for path in calibrated.values())).hexdigest()
        key = f"{key}-{digest[:8]}"
    results = Path(cfg.paths.results) / f"synthesis-{cfg.dataset.name}-{key}"
    views = ViewCache(
        ctx.dataset,
        Path(cfg.paths.cache) / "views",
        cfg.data_model.backend,
        device(cfg),
        log=log,
        calibrated=calibrated,
    )
    run, state = resumable_run(ctx, results, f"synthesis {cfg.dataset.name}")
    with run as run_id:
        write_json_atomic(state, {"run_id": run_id})
        record_run(ctx, run_id)

        def on_cell(cell):
            child = ctx.tracker.start(f"{cell['train']} fold {cell['fold']}", {"train": cell["train"], "fold": cell["fold"]},
                                      parent=run_id)  # fmt: skip
            metrics = {f"test.{k}": v for k, v in cell["test"].items()}
            metrics.update({f"corruption.{k}": v for k, v in cell["corruptions"].items()})
            ctx.tracker.log_metrics(child, {**metrics, "clean": cell["clean"], "seconds": cell["seconds"]})
            ctx.tracker.log_artifact(child, cell_path(results, cell["train"], cell["fold"]))
            ctx.tracker.log_artifact(child, model_file(results, cell["train"], cell["fold"]), "model")
            ctx.tracker.end(child)

        cells = run_synthesis(
            dataset=ctx.dataset, views=views, train_names=train_names, test_names=test_names, folds=cfg.folds,
            fold=cfg.fold, seed=cfg.seed, severity=severity, corruption_names=corruption_names,
            make_module=make_module_factory(cfg, ctx.dataset), make_trainer=make_trainer_factory(cfg),
            batch_size=cfg.batch_size, results=results, save_models=cfg.synthesis.save_models, on_cell=on_cell, log=log,
            model_metadata={"task_model": OmegaConf.to_container(cfg.task_model, resolve=True), "dataset": cfg.dataset.name},
        )  # fmt: skip
        for cell in cells:  # the run directory holds its own cells (a sweep assembles from them)
            write_json_atomic(cell_path(ctx.run_dir, cell["train"], cell["fold"]), cell)
        summary = assemble(cells, ctx.run_dir, STATIC_PIPELINE_NAMES)
        summary["results_store"] = str(results)
        (ctx.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        log(
            f"\n{summary['metric']} (rows: train pipeline, columns: test pipeline, mean over folds {summary['folds']}):"
        )
        log(format_matrix(ctx.run_dir))
        isp = summary["isp"]
        if isp["change"] is not None:
            log(f"ISP drift: {isp['train']:.3f} -> {isp['test']:.3f} (train -> other test pipelines)")
        if "corruptions" in summary:
            cc = summary["corruptions"]
            log(f"Common Corruptions (severity {cc['severity']}): {cc['train']:.3f} -> {cc['test']:.3f}")
        log(
            f"best train pipeline: {summary['best_train_pipeline']}; artifacts in {ctx.run_dir / 'synthesis'}"
        )
        ctx.tracker.log_metrics(run_id, {k: v for k, v in {"isp_train": isp["train"], "isp_test": isp["test"],
                                                            **({"cc_train": summary["corruptions"]["train"],
                                                                "cc_test": summary["corruptions"]["test"]}
                                                               if "corruptions" in summary else {})}.items()
                                         if v is not None})  # fmt: skip
        ctx.tracker.log_artifacts(run_id, ctx.run_dir / "synthesis", "synthesis")
        ctx.tracker.log_artifact(run_id, ctx.run_dir / "summary.json")
        sample = ctx.dataset.normalised(np.arange(min(3, len(ctx.dataset))))
        shown = pipeline_module(summary["best_train_pipeline"], ctx.dataset.camera, calibrated)
        finish_run(ctx, run_id, shown, sample)
    return summary


# What decides the task model forensics trains when given none (shared by every λ and target).
TASK_MODEL_KEYS = ["dataset", "data_model", "task_model", "trainer", "seed", "folds", "fold", "epochs", "batch_size",
                   "lr", "augment"]  # fmt: skip
FORENSICS_KEYS = ["dataset", "data_model", "task_model", "trainer", "seed", "folds", "fold", "epochs", "batch_size",
                  "lr", "augment", "lambda", "forensics"]  # fmt: skip


def data_model_pipeline(cfg, camera):
    """The parametrized data model the config asks for, at its initial θ (θ_stat by default)."""
    from raw2logit.controls.calibration import CALIBRATED_PREFIX
    from raw2logit.isp import ParametrizedPipeline
    from raw2logit.isp.parametrized import load_theta_json

    options = cfg.data_model
    theta_file = options.get("theta") if options.kind == "parametrized" else None
    if theta_file and str(theta_file).startswith(CALIBRATED_PREFIX):
        theta_file = str(theta_file)[len(CALIBRATED_PREFIX) :]
    if theta_file:
        document = load_theta_json(theta_file)
        return ParametrizedPipeline(camera, options.get("normalize_output", False), document["theta"],
                                    document.get("variant", "bi_s_ga"), document.get("tone_curve", "power"))  # fmt: skip
    return ParametrizedPipeline(camera, bool(options.get("normalize_output", False)))


def load_task_checkpoint(path, dataset):
    """A task model saved by synthesis (or forensics): (model, normalisation, metadata)."""
    import torch

    from raw2logit.cli import instantiate_clean

    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"forensics.checkpoint={path} does not exist.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(
            f"{path} is not a readable task model checkpoint ({type(error).__name__})."
        ) from None
    missing = [k for k in ("state_dict", "task", "num_classes", "task_model") if k not in checkpoint]
    if missing:
        raise InputError(f"{path} is not a raw2logit task model checkpoint (it lacks {', '.join(missing)}).")
    if checkpoint["task"] != dataset.task or checkpoint["num_classes"] != dataset.num_classes:
        raise InputError(
            f"{path} holds a {checkpoint['task']} model with {checkpoint['num_classes']} classes, but "
            f"{dataset.name} is a {dataset.task} dataset with {dataset.num_classes} classes."
        )
    model = instantiate_clean(checkpoint["task_model"], num_classes=dataset.num_classes, in_channels=3)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise InputError(
            f"{path} does not fit the task model it names ({str(error).splitlines()[0]})."
        ) from None
    return model, checkpoint.get("normalisation"), {k: v for k, v in checkpoint.items() if k != "state_dict"}


def checkpoint_from_run(ctx: Context, run_id: str) -> Path:
    """Download the task model checkpoint (the ``.pt`` artifact) logged with an MLflow run."""
    import tempfile

    import mlflow
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=ctx.tracker.uri)
        pending, found = [""], []
        while pending and not found:
            for item in client.list_artifacts(run_id, pending.pop()):
                if item.is_dir:
                    pending.append(item.path)
                elif item.path.endswith(".pt"):
                    found.append(item.path)
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=found[0], dst_path=tempfile.mkdtemp(),
                                                   tracking_uri=ctx.tracker.uri)  # fmt: skip
        return Path(path)
    except Exception as error:
        raise InputError(
            f"forensics.from_run={run_id}: no task model checkpoint (.pt) could be fetched from that run "
            f"({type(error).__name__}); synthesis logs one with each train pipeline x fold run."
        ) from None


def train_task_model(cfg, dataset, pipeline, raw, train_index, fold: int, path: Path) -> Path:
    """Train a task model on the data model's views (at its initial θ) of a training fold."""
    import torch
    from omegaconf import OmegaConf

    from raw2logit.controls.synthesis import save_task_model, train_cell

    log(f"training the task model on {pipeline.variant} views of fold {fold} ({len(train_index)} images)")
    with torch.no_grad():
        views = torch.cat([pipeline(raw[train_index[i : i + 64]].to(device(cfg))).cpu()
                           for i in range(0, len(train_index), 64)])  # fmt: skip
    module = train_cell(make_module_factory(cfg, dataset), make_trainer_factory(cfg), views,
                        dataset.targets[train_index], cfg.batch_size, cfg.seed + fold, "task model")  # fmt: skip
    metadata = {"task_model": OmegaConf.to_container(cfg.task_model, resolve=True), "pipeline": pipeline.variant,
                "fold": fold, "task": dataset.task, "num_classes": dataset.num_classes}  # fmt: skip
    return save_task_model(module, path, metadata)


def forensics_mode(ctx: Context) -> dict:
    """Drift forensics: adversarial search over θ against a frozen task model."""
    import torch

    from raw2logit.controls.forensics import REGULARIZERS, run_search
    from raw2logit.controls.synthesis import Subset
    from raw2logit.data.dataset import RawInputs
    from raw2logit.data.files import write_json_atomic
    from raw2logit.data.splits import kfold_splits
    from raw2logit.isp.parametrized import check_groups
    from raw2logit.locks import file_lock
    from raw2logit.report.figures import comparison_figure

    cfg, dataset = ctx.cfg, ctx.dataset
    options = cfg.forensics
    lam = cfg["lambda"]
    if not isinstance(lam, (int, float)) or lam < 0:
        raise InputError(f"lambda must be a non-negative number (the weight of ||V - V~||²); got {lam!r}.")
    if options.regularizer not in REGULARIZERS:
        raise InputError(
            f"Unknown forensics.regularizer {options.regularizer!r}; expected one of {', '.join(REGULARIZERS)}."
        )
    check_groups(options.target)
    raw = RawInputs(dataset)
    # The task model: a checkpoint, an MLflow run's checkpoint, or trained here on the views at θ_stat.
    source = options.checkpoint or (checkpoint_from_run(ctx, options.from_run) if options.from_run else None)
    checkpoint = load_task_checkpoint(source, dataset) if source else None
    fold = cfg.fold if cfg.fold is not None else 0
    if checkpoint is not None and checkpoint[2].get("fold") is not None:
        trained_fold = int(checkpoint[2]["fold"])
        if cfg.fold is not None and cfg.fold != trained_fold:
            raise InputError(f"{source} was trained on fold {trained_fold}, but fold={cfg.fold}: its held-out images "
                             f"would include its training images (leave fold unset, or fold={trained_fold}).")  # fmt: skip
        fold = trained_fold  # evaluate on the images this model never saw
    train_index, test_index = kfold_splits(dataset, cfg.folds, cfg.seed)[fold]
    results = (
        Path(cfg.paths.results) / f"forensics-{cfg.dataset.name}-{fingerprint(cfg, FORENSICS_KEYS)}-{fold}"
    )
    folder = ctx.run_dir / "forensics"
    folder.mkdir(parents=True, exist_ok=True)
    run, state = resumable_run(ctx, results, f"forensics λ={lam:g} {options.target}")
    with run as run_id:
        write_json_atomic(state, {"run_id": run_id})
        record_run(ctx, run_id)
        pipeline = data_model_pipeline(cfg, dataset.camera).to(device(cfg))
        trained = (
            Path(cfg.paths.results) / f"task-model-{cfg.dataset.name}-{fingerprint(cfg, TASK_MODEL_KEYS)}.pt"
        )
        if checkpoint is None:
            with file_lock(trained.with_suffix(".lock")):  # parallel λ jobs train it once
                if not trained.exists():
                    train_task_model(cfg, dataset, pipeline, raw, train_index, fold, trained)
            checkpoint = load_task_checkpoint(trained, dataset)
        task_model, normalisation, info = checkpoint
        ctx.tracker.log_params(run_id, {"task_model_source": str(source or trained)})
        if source is None:
            ctx.tracker.log_artifact(run_id, trained)

        result_file = results / "result.json"
        if result_file.exists():
            log(f"forensics result found in {results}: reused")
            result = json.loads(result_file.read_text())
            pipeline.load_theta(result["theta_after"])
        else:
            result = run_search(
                task_model=task_model.to(device(cfg)), pipeline=pipeline, task=dataset.task,
                num_classes=dataset.num_classes, normalisation=normalisation,
                train_raw=Subset(raw, train_index), train_targets=dataset.targets[train_index],
                test_raw=Subset(raw, test_index), test_targets=dataset.targets[test_index], lam=float(lam),
                target=options.target, regularizer=options.regularizer, epochs=options.epochs,
                batch_size=cfg.batch_size, lr=options.lr, plausible=options.plausible,
                make_trainer=make_trainer_factory(cfg, max_epochs=options.epochs), seed=cfg.seed, log=log,
            )  # fmt: skip
            result["task_model"] = {k: v for k, v in info.items() if k != "normalisation"}
            write_json_atomic(result_file, result)
        write_json_atomic(folder / "result.json", result)
        pipeline.save_theta_json(folder / "theta_adversarial.json")
        reference = data_model_pipeline(cfg, dataset.camera).to(pipeline.black_level.device)
        sample = raw[test_index[:3]].to(pipeline.black_level.device)
        with torch.no_grad():
            default_views, adversarial_views = reference(sample).cpu().numpy(), pipeline(sample).cpu().numpy()
        comparison_figure([(dataset.names[i], a, b) for i, a, b in zip(test_index[:3], default_views, adversarial_views)],
                          ("default Φ(x, θ_stat)", f"adversarial Φ(x, θ~), λ={lam:g}"), folder / "samples.png")  # fmt: skip
        summary = {"mode": "forensics", **{k: result[k] for k in ("lambda", "target", "regularizer", "metric",
                                                                     "metric_before", "metric_after", "l2")}}  # fmt: skip
        (ctx.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        log(f"\nforensics λ={lam:g} target={options.target}: {result['metric']} {result['metric_before']:.3f} -> "
            f"{result['metric_after']:.3f}, ℓ2 {result['l2']:.4g}; artifacts in {folder}")  # fmt: skip
        ctx.tracker.log_metrics(run_id, {"metric_before": result["metric_before"], "metric_after": result["metric_after"],
                                         "l2": result["l2"]})  # fmt: skip
        for entry in result["history"]:
            ctx.tracker.log_metrics(
                run_id, {"search_metric": entry["metric"], "search_l2": entry["l2"]}, step=entry["epoch"]
            )
        ctx.tracker.log_artifacts(run_id, folder, "forensics")
        ctx.tracker.log_artifact(run_id, ctx.run_dir / "summary.json")
        finish_run(ctx, run_id, pipeline, raw[test_index[:3]])
    return summary


OPTIMIZATION_KEYS = ["dataset", "data_model", "task_model", "trainer", "seed", "folds", "epochs", "batch_size", "lr",
                     "augment", "optimization"]  # fmt: skip


def processor_factory(cfg, dataset):
    """A function returning a fresh data model for ``mode=optimization`` (``data_model`` group)."""
    from raw2logit.controls.optimization import PROCESSORS, NNProcessor, RawPacking

    kind = cfg.data_model.kind
    if kind not in PROCESSORS:
        raise InputError(f"mode=optimization trains with a data model in the step; use data_model=parametrized, raw or nn "
                         f"(got {kind}).")  # fmt: skip
    camera = dataset.camera

    def make():
        if kind == "parametrized":
            pipeline = data_model_pipeline(cfg, camera)
            return pipeline.set_trainable("all" if cfg.data_model.learn else [])
        if kind == "raw":
            return RawPacking(camera.pattern)
        return NNProcessor(camera.pattern, cfg.data_model.get("width", 16))

    return make


def optimization_mode(ctx: Context) -> dict:
    """Drift optimization: data model and task model trained together (or the data model frozen)."""
    import pandas as pd
    import torch

    from raw2logit.controls.optimization import describe_setting, mean_views_statistics, table2, train_setting
    from raw2logit.controls.synthesis import Subset
    from raw2logit.data.dataset import RawInputs
    from raw2logit.data.files import write_json_atomic
    from raw2logit.data.splits import kfold_splits
    from raw2logit.report.figures import comparison_figure, curves_figure
    from raw2logit.training import METRIC_NAMES

    cfg, dataset = ctx.cfg, ctx.dataset
    make_processor = processor_factory(cfg, dataset)
    kind, learn = cfg.data_model.kind, bool(cfg.data_model.get("learn", False))
    setting = describe_setting(kind, learn, dataset.intensity)
    splits = kfold_splits(dataset, cfg.folds, cfg.seed)
    fold_ids = [cfg.fold] if cfg.fold is not None else list(range(cfg.folds))
    raw = RawInputs(dataset)
    results = (
        Path(cfg.paths.results) / f"optimization-{cfg.dataset.name}-{fingerprint(cfg, OPTIMIZATION_KEYS)}"
    )
    folder = ctx.run_dir / "optimization"
    folder.mkdir(parents=True, exist_ok=True)
    metric = METRIC_NAMES[dataset.task]
    run, state = resumable_run(ctx, results, f"optimization {setting}")
    with run as run_id:
        write_json_atomic(state, {"run_id": run_id})
        record_run(ctx, run_id)
        rows, thetas = [], {}
        for fold in fold_ids:
            train_index, test_index = splits[fold]
            done = results / f"fold{fold}.json"
            if done.exists():
                log(f"{setting} fold {fold}: done in an earlier run, skipped")
                record = json.loads(done.read_text())
            else:
                log(f"{setting} fold {fold}: training on {len(train_index)} raw images")
                normalisation = None
                if dataset.normalisation == "auto":
                    normalisation = mean_views_statistics(make_processor(), raw, train_index)
                base = make_module_factory(cfg, dataset, make_processor)
                outcome = train_setting(
                    make_module=functools.partial(base, normalisation), make_trainer=make_trainer_factory(cfg),
                    train_raw=Subset(raw, train_index), train_targets=dataset.targets[train_index],
                    test_raw=Subset(raw, test_index), test_targets=dataset.targets[test_index], setting=setting,
                    fold=fold, every=cfg.optimization.val_every, batch_size=cfg.batch_size, seed=cfg.seed + fold, log=log,
                )  # fmt: skip
                record = {"rows": outcome["rows"], "thetas": outcome["thetas"], "seconds": outcome["seconds"]}
                processor = outcome["module"].processor
                if hasattr(processor, "save_theta_json"):
                    processor.save_theta_json(results / f"theta_fold{fold}.json")
                write_json_atomic(done, record)
                for row in record["rows"]:
                    ctx.tracker.log_metrics(
                        run_id, {f"val_{metric}_fold{fold}": row["metric"]}, step=row["step"]
                    )
            rows += record["rows"]
            thetas[fold] = record["thetas"]
            if (results / f"theta_fold{fold}.json").exists():
                (folder / f"theta_fold{fold}.json").write_text(
                    (results / f"theta_fold{fold}.json").read_text()
                )

        history = pd.DataFrame(rows, columns=["step", "setting", "fold", "metric"])
        history.to_csv(folder / "history.csv", index=False)
        curves_figure(history, metric, folder / "curves.png")
        if any(thetas.values()):
            (folder / "theta_history.json").write_text(json.dumps(thetas, indent=2))
            first = folder / f"theta_fold{fold_ids[0]}.json"
            (folder / "theta.json").write_text(first.read_text())
            # Sample views: the data model at θ_stat (frozen) against the learned one.
            learned = data_model_pipeline(cfg, dataset.camera)
            learned.load_theta(json.loads(first.read_text())["theta"])
            sample = raw[splits[fold_ids[0]][1][:3]]
            with torch.no_grad():
                frozen_views = data_model_pipeline(cfg, dataset.camera)(sample).numpy()
                learned_views = learned(sample).numpy()
            comparison_figure([(dataset.names[i], a, b) for i, a, b in zip(splits[fold_ids[0]][1][:3], frozen_views, learned_views)],
                              ("frozen Φ(x, θ_stat)", "learned Φ(x, θ)"), folder / "samples.png")  # fmt: skip
        stats = table2(history)
        summary = {"mode": "optimization", "metric": metric, "setting": setting, "data_model": kind, "learn": learn,
                   "intensity": dataset.intensity, "folds": fold_ids, "table2": stats}  # fmt: skip
        (ctx.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        entry = stats[setting]
        log(f"\n{setting}: validation {metric} over steps and folds {entry['mean']:.3f} ± {entry['std']:.3f} "
            f"(final {entry['final_mean']:.3f} ± {entry['final_std']:.3f}); artifacts in {folder}")  # fmt: skip
        ctx.tracker.log_metrics(run_id, {"table2_mean": entry["mean"], "table2_std": entry["std"]})
        ctx.tracker.log_artifacts(run_id, folder, "optimization")
        ctx.tracker.log_artifact(run_id, ctx.run_dir / "summary.json")
        shown = data_model_pipeline(cfg, dataset.camera) if kind == "parametrized" else None
        if shown is not None and (folder / "theta.json").exists():
            shown.load_theta(json.loads((folder / "theta.json").read_text())["theta"])
        finish_run(ctx, run_id, shown, raw[splits[fold_ids[0]][1][:3]])
    return summary


def calibrate_mode(ctx: Context) -> dict:
    """Data model calibration: fit a data model to a device from paired raw and processed images."""
    import torch
    from omegaconf import OmegaConf

    from raw2logit.controls.calibration import CALIBRATED_PREFIX, fit, read_pairs, simulate_pairs
    from raw2logit.isp import STATIC_PIPELINE_NAMES

    cfg, options = ctx.cfg, ctx.cfg.calibrate
    if options.pairs:
        pairs = read_pairs(options.pairs, cfg.dataset.get("on_bad_file", "raise"))
        raw, rgb, camera, names = pairs.raw, pairs.rgb, pairs.camera, pairs.names
        source = f"{len(names)} pairs from {options.pairs}"
    else:  # a demonstration: the dataset's raw through a hidden, perturbed data model
        hidden = OmegaConf.to_container(options.hidden, resolve=True)
        count = min(int(options.num_pairs), len(ctx.dataset))
        raw = ctx.dataset.normalised(np.arange(count)).numpy()
        camera = ctx.dataset.camera
        overrides = {"black_level": (np.asarray(camera.black_level) + hidden["black_level_offset"]).tolist(),
                     "white_balance": (np.asarray(camera.white_balance) * np.asarray(hidden["white_balance_scale"])).tolist()}  # fmt: skip
        rgb = simulate_pairs(raw, camera, hidden["variant"], overrides, options.tone_curve, quantise_bits=8)
        names = ctx.dataset.names[:count]
        source = f"{count} simulated pairs (hidden data model {hidden['variant']}, 8-bit)"
    variants = STATIC_PIPELINE_NAMES if options.variants == "all" else _names(options.variants)
    log(f"calibrating on {source}; trying {len(variants)} variant(s)")
    with ctx.tracker.run(f"calibrate {Path(str(options.pairs or 'simulated')).name}", params=flat_params(cfg),
                         parent=ctx.parent_run) as run_id:  # fmt: skip
        record_run(ctx, run_id)
        result = fit(raw, rgb, camera, variants=list(variants), tone_curve=options.tone_curve, steps=options.steps,
                     lr=options.lr, holdout=options.holdout, seed=cfg.seed, log=log, patch_size=options.patch_size,
                     names=list(names), device=device(cfg))  # fmt: skip
        paths = result.write(ctx.run_dir)
        summary = {"mode": "calibrate", "source": source, "variant": result.variant, "psnr": result.psnr,
                   "delta_e": result.delta_e, "initial_psnr": result.initial_psnr,
                   "pipeline": str(paths["pipeline"]),
                   "use": f"synthesis.test=[all_static...,{CALIBRATED_PREFIX}{paths['pipeline']}]"}  # fmt: skip
        (ctx.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        log(f"\ncalibrated data model: {result.variant}, held-out PSNR {result.psnr:.1f} dB, mean ΔE2000 "
            f"{result.delta_e:.2f}\n  use it as a pipeline: {CALIBRATED_PREFIX}{paths['pipeline']}")  # fmt: skip
        ctx.tracker.log_metrics(run_id, {"psnr": result.psnr, "delta_e": result.delta_e})
        ctx.tracker.log_artifacts(run_id, ctx.run_dir / "calibration", "calibration")
        ctx.tracker.log_artifact(run_id, ctx.run_dir / "summary.json")
        finish_run(ctx, run_id, result.pipeline, torch.as_tensor(np.asarray(raw[:3]), dtype=torch.float32))
    return summary


def pipeline_module(name: str, camera, calibrated: dict | None = None):
    """A data model by name: one of the 12 static pipelines, or a calibrated one."""
    from raw2logit.controls.calibration import CALIBRATED_PREFIX, load_calibrated
    from raw2logit.isp import StaticPipeline

    if calibrated and name in calibrated:
        return load_calibrated(f"{CALIBRATED_PREFIX}{calibrated[name]}").eval()
    return StaticPipeline(name, camera)
