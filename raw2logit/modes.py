"""The modes behind ``python run.py mode=...``: config -> plain arguments -> controls."""

from __future__ import annotations

import json
from pathlib import Path

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


def _names(value) -> list[str]:
    from omegaconf import OmegaConf

    return resolve_pipeline_names(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)


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


def synthesis_mode(ctx: Context) -> dict:
    """Drift synthesis: the cross-pipeline matrix with k-fold CV, next to Common Corruptions."""
    from raw2logit.controls.synthesis import assemble, cell_path, format_matrix, run_synthesis
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
    train_names, test_names = _names(cfg.synthesis.train), _names(cfg.synthesis.test)
    corruption_names = _corruption_names(cfg.synthesis.corruptions)
    results = Path(cfg.paths.results) / f"synthesis-{cfg.dataset.name}-{fingerprint(cfg, SYNTHESIS_KEYS)}"
    views = ViewCache(
        ctx.dataset, Path(cfg.paths.cache) / "views", cfg.data_model.backend, device(cfg), log=log
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
            ctx.tracker.end(child)

        cells = run_synthesis(
            dataset=ctx.dataset, views=views, train_names=train_names, test_names=test_names, folds=cfg.folds,
            fold=cfg.fold, seed=cfg.seed, severity=severity, corruption_names=corruption_names,
            make_module=make_module_factory(cfg, ctx.dataset), make_trainer=make_trainer_factory(cfg),
            batch_size=cfg.batch_size, results=results, save_models=cfg.synthesis.save_models, on_cell=on_cell, log=log,
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
    return summary
