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
from raw2logit.names import (
    CALIBRATED_PREFIX,
    CORRUPTION_NAMES,
    STATIC_PIPELINE_NAMES,
    resolve_pipeline_names,
)

SYNTHESIS_KEYS = ["dataset", "data_model", "task_model", "trainer", "seed", "folds", "epochs", "batch_size", "lr",
                  "augment", "synthesis.test", "synthesis.severity", "synthesis.corruptions"]  # fmt: skip


def _names(value, calibrated: dict | None = None) -> list[str]:
    """Pipeline names from a config value: ``all``, static names, and ``calibrated:/path.json`` specs.

    A calibrated spec becomes the name ``calibrated:<file stem>``; ``calibrated`` collects name -> file.
    """
    from omegaconf import OmegaConf

    from raw2logit.controls.calibration import load_calibrated

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


def check_finite_result(result: dict, keys, what: str) -> None:
    """Nothing non-finite is stored as a finished result."""
    import math

    from raw2logit.errors import NonFiniteError

    bad = {key: result[key] for key in keys if not math.isfinite(float(result[key]))}
    if bad:
        raise NonFiniteError(f"The {what} ended with non-finite results {bad}; nothing is stored (check lambda and "
                             "the learning rates).")  # fmt: skip


def resumable_run(ctx: Context, results: Path, name: str):
    """A new MLflow run for this invocation; when the results store was used before, the run is tagged
    with the run it continues (``raw2logit.continues``). Runs are never reopened: each invocation's
    run holds what that invocation did, with its own start, end and parameters."""
    state = results / "mlflow_run.json"
    previous = json.loads(state.read_text()).get("run_id") if state.exists() else None
    tags = {"raw2logit.continues": previous} if previous else None
    return ctx.tracker.run(name, params=flat_params(ctx.cfg), parent=ctx.parent_run, tags=tags), state


def cell_record(results: Path, train: str, fold: int) -> Path:
    """Where a synthesis cell's MLflow child run is noted (beside the results, not among the cells)."""
    return results / "mlflow" / train / f"fold{fold}.json"


def log_cell(ctx: Context, results: Path, run_id, cell: dict) -> None:
    """The cell's MLflow child run (metrics, cell file, model), written once and completed later if an
    interruption or a crash left it unfinished: the child's id is noted before anything is logged."""
    from raw2logit.controls.synthesis import cell_path, model_file
    from raw2logit.data.files import write_json_atomic
    from raw2logit.runtime import deferred_interrupts

    tracker = ctx.tracker
    if not tracker.enabled or run_id is None:
        return
    train, fold = cell["train"], cell["fold"]
    note = cell_record(results, train, fold)
    record = json.loads(note.read_text()) if note.exists() else {}
    if record.get("tracking_uri") != tracker.uri:
        record = {}  # noted in another store: log it here too
    if record.get("status") == "FINISHED":
        return
    with deferred_interrupts():
        child = record.get("run_id") if record and tracker.status(record["run_id"]) else None
        if child is None:
            child = tracker.start(f"{train} fold {fold}", {"train": train, "fold": fold}, parent=run_id,
                                  tags={"raw2logit.train_pipeline": train, "raw2logit.fold": str(fold)})  # fmt: skip
            if child is None:
                return
            write_json_atomic(note, {"run_id": child, "tracking_uri": tracker.uri, "status": "RUNNING"})
        metrics = {f"test.{k}": v for k, v in cell["test"].items()}
        metrics.update({f"corruption.{k}": v for k, v in cell["corruptions"].items()})
        if not tracker.has_metrics(child):
            tracker.log_metrics(child, {**metrics, "clean": cell["clean"], "seconds": cell["seconds"]})
        tracker.log_artifact(child, cell_path(results, train, fold))
        tracker.log_artifact(child, model_file(results, train, fold), "model")
        tracker.end(child)
        write_json_atomic(note, {"run_id": child, "tracking_uri": tracker.uri, "status": "FINISHED"})


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

    from raw2logit.controls.synthesis import assemble, cell_path, format_matrix, run_synthesis
    from raw2logit.data.files import write_json_atomic
    from raw2logit.data.views import ViewCache
    from raw2logit.locks import file_lock

    cfg = ctx.cfg  # checked by raw2logit.config before the mode starts
    severity = cfg.synthesis.severity
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

        cells = run_synthesis(
            dataset=ctx.dataset, views=views, train_names=train_names, test_names=test_names, folds=cfg.folds,
            fold=cfg.fold, seed=cfg.seed, severity=severity, corruption_names=corruption_names,
            make_module=make_module_factory(cfg, ctx.dataset), make_trainer=make_trainer_factory(cfg),
            batch_size=cfg.batch_size, results=results, save_models=cfg.synthesis.save_models,
            on_cell=lambda cell: log_cell(ctx, results, run_id, cell), log=log,
            model_metadata={"task_model": OmegaConf.to_container(cfg.task_model, resolve=True), "dataset": cfg.dataset.name},
        )  # fmt: skip
        for cell in cells:  # records an earlier run left unfinished are completed now
            with file_lock(cell_path(results, cell["train"], cell["fold"]).with_suffix(".lock")):
                log_cell(ctx, results, run_id, cell)
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
    from raw2logit.isp import ParametrizedPipeline

    options = cfg.data_model
    theta_file = options.get("theta") if options.kind == "parametrized" else None
    if theta_file and str(theta_file).startswith(CALIBRATED_PREFIX):
        theta_file = str(theta_file)[len(CALIBRATED_PREFIX) :]
    if theta_file:
        return ParametrizedPipeline.from_theta_json(
            theta_file, bool(options.get("normalize_output", False)), camera
        )
    return ParametrizedPipeline(camera, bool(options.get("normalize_output", False)))


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

    from raw2logit.controls.synthesis import train_cell
    from raw2logit.tasks.checkpoints import save_task_model

    log(f"training the task model on {pipeline.variant} views of fold {fold} ({len(train_index)} images)")
    with torch.no_grad():
        views = torch.cat([pipeline(raw[train_index[i : i + 64]].to(device(cfg))).cpu()
                           for i in range(0, len(train_index), 64)])  # fmt: skip
    module = train_cell(make_module_factory(cfg, dataset), make_trainer_factory(cfg), views,
                        dataset.targets[train_index], cfg.batch_size, cfg.seed + fold, "task model")  # fmt: skip
    metadata = {"task_model": OmegaConf.to_container(cfg.task_model, resolve=True), "pipeline": pipeline.variant,
                "fold": fold, "task": dataset.task, "num_classes": dataset.num_classes}  # fmt: skip
    return save_task_model(module.task_model, module.normalise.as_dict(), path, metadata)


def forensics_mode(ctx: Context) -> dict:
    """Drift forensics: adversarial search over θ against a frozen task model."""
    import torch

    from raw2logit.controls.forensics import run_search
    from raw2logit.controls.synthesis import Subset
    from raw2logit.data.dataset import RawInputs
    from raw2logit.data.files import write_json_atomic
    from raw2logit.data.splits import kfold_splits
    from raw2logit.locks import file_lock
    from raw2logit.report.figures import comparison_figure
    from raw2logit.tasks.checkpoints import load_task_checkpoint

    cfg, dataset = ctx.cfg, ctx.dataset
    options = cfg.forensics
    lam = cfg["lambda"]  # checked by raw2logit.config: finite, >= 0
    raw = RawInputs(dataset)
    # The task model: a checkpoint, an MLflow run's checkpoint, or trained here on the views at θ_stat.
    source = options.checkpoint or (checkpoint_from_run(ctx, options.from_run) if options.from_run else None)
    shown = (
        f"the checkpoint logged with MLflow run {options.from_run}"
        if options.from_run and not options.checkpoint
        else None
    )
    checkpoint = load_task_checkpoint(source, dataset, shown=shown) if source else None
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
        with file_lock(results / "result.lock"):  # a parallel run of this config searches once
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
                check_finite_result(result, ("metric_before", "metric_after", "l2"), "forensic search")
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


def _optimization_fold(ctx: Context, results: Path, run_id, fold: int, setting: str, make_processor, raw,
                       splits) -> dict:  # fmt: skip
    """One fold of mode=optimization: read from the results store, or trained, stored and logged."""
    from raw2logit.controls.optimization import mean_views_statistics, train_setting
    from raw2logit.controls.synthesis import Subset
    from raw2logit.data.files import write_json_atomic
    from raw2logit.runtime import deferred_interrupts
    from raw2logit.training import METRIC_NAMES

    cfg, dataset = ctx.cfg, ctx.dataset
    train_index, test_index = splits[fold]
    done = results / f"fold{fold}.json"
    if done.exists():
        log(f"{setting} fold {fold}: done in an earlier run, skipped")
        return json.loads(done.read_text())
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
    metric = METRIC_NAMES[dataset.task]
    with deferred_interrupts():  # the fold's files and its record are written together
        if hasattr(processor, "save_theta_json"):
            processor.save_theta_json(results / f"theta_fold{fold}.json")
        write_json_atomic(done, record)
        for row in record["rows"]:
            ctx.tracker.log_metrics(run_id, {f"val_{metric}_fold{fold}": row["metric"]}, step=row["step"])
    return record


def optimization_mode(ctx: Context) -> dict:
    """Drift optimization: data model and task model trained together (or the data model frozen)."""
    import pandas as pd
    import torch

    from raw2logit.controls.optimization import describe_setting, table2
    from raw2logit.data.dataset import RawInputs
    from raw2logit.data.files import write_json_atomic
    from raw2logit.data.splits import kfold_splits
    from raw2logit.locks import file_lock
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
            with file_lock(results / f"fold{fold}.lock"):  # a parallel run of this config trains it once
                record = _optimization_fold(ctx, results, run_id, fold, setting, make_processor, raw, splits)
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

    from raw2logit.controls.calibration import fit, read_pairs, simulate_pairs

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
    from raw2logit.controls.calibration import load_calibrated
    from raw2logit.isp import StaticPipeline

    if calibrated and name in calibrated:
        return load_calibrated(f"{CALIBRATED_PREFIX}{calibrated[name]}").eval()
    return StaticPipeline(name, camera)
