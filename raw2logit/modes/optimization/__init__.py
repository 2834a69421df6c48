"""``mode=optimization`` (paper §5.3, Fig. 7, Table 2): the data model trained with the task model.

``data_model=parametrized`` with ``data_model.learn=true`` (learned θ) or ``false`` (θ frozen at
θ_stat), ``data_model=raw`` (the mosaic packed to half resolution, no ISP) or ``data_model=nn`` (a
small learned U-Net). Each fold is kept in the results store as it finishes; a sweep over settings
ends with their comparison (``assemble_sweep``).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from raw2logit.modes.common import (
    Context,
    announce_resume,
    finish_run,
    log,
    make_module_factory,
    make_trainer_factory,
    mode_run,
    results_store,
)

FOLDER = "optimization"
# Keys that do not change a fold's result: which folds this run asks for.
RESULTS_IGNORE = ("fold", "lambda")


def data_model_factory(cfg, dataset):
    """A function returning a fresh data model of the ``data_model`` group (trained in the step)."""
    from hydra.utils import instantiate

    spec = instantiate(cfg.data_model)
    return lambda: spec.build(dataset.camera)


def _fold(ctx: Context, results: Path, run_id, fold: int, setting: str, make_data_model, raw, splits) -> dict:
    """One fold: read from the results store, or trained, stored and logged."""
    from raw2logit.controls.optimization import mean_views_statistics, train_setting
    from raw2logit.controls.synthesis import Subset
    from raw2logit.data.files import write_json_atomic
    from raw2logit.runtime import deferred_interrupts

    cfg, dataset = ctx.cfg, ctx.dataset
    train_index, test_index = splits[fold]
    done = results / f"fold{fold}.json"
    if done.exists():
        log(f"{setting} fold {fold}: done in an earlier run, skipped")
        return json.loads(done.read_text())
    log(f"{setting} fold {fold}: training on {len(train_index)} raw images")
    normalisation = None
    if dataset.normalisation == "auto":
        normalisation = mean_views_statistics(make_data_model(), raw, train_index)
    base = make_module_factory(cfg, dataset, make_data_model)
    tags = {"raw2logit.fold": str(fold), "raw2logit.setting": setting}
    with ctx.tracker.run(f"{setting} fold {fold}", {"fold": fold}, parent=run_id, tags=tags) as child:
        outcome = train_setting(
            make_module=functools.partial(base, normalisation), make_trainer=make_trainer_factory(cfg, ctx.tracker),
            train_raw=Subset(raw, train_index), train_targets=dataset.targets[train_index],
            test_raw=Subset(raw, test_index), test_targets=dataset.targets[test_index], setting=setting,
            fold=fold, every=cfg.optimization.val_every, batch_size=cfg.batch_size, seed=cfg.seed + fold, log=log,
            run_id=child,
        )  # fmt: skip
        record = {"rows": outcome["rows"], "thetas": outcome["thetas"], "seconds": outcome["seconds"]}
        data_model = outcome["module"].data_model
        with deferred_interrupts():  # the fold's files and its record are written together
            if hasattr(data_model, "save_theta_json"):
                data_model.save_theta_json(results / f"theta_fold{fold}.json")
                ctx.tracker.log_artifact(child, results / f"theta_fold{fold}.json")
            write_json_atomic(done, record)
    return record


def run(ctx: Context) -> dict:
    """Drift optimization: data model and task model trained together (or the data model frozen)."""
    import pandas as pd
    import torch
    from hydra.utils import instantiate

    from raw2logit.controls.optimization import table2
    from raw2logit.data.dataset import RawInputs
    from raw2logit.data.splits import kfold_splits
    from raw2logit.locks import file_lock
    from raw2logit.report.figures import comparison_figure, curves_figure
    from raw2logit.tasks.task import Task

    cfg, dataset = ctx.cfg, ctx.dataset
    spec = instantiate(cfg.data_model)
    make_data_model = data_model_factory(cfg, dataset)
    setting = spec.describe(dataset.intensity)
    splits = kfold_splits(dataset, cfg.folds, cfg.seed)
    fold_ids = [cfg.fold] if cfg.fold is not None else list(range(cfg.folds))
    raw = RawInputs(dataset)
    results = results_store(cfg, FOLDER, RESULTS_IGNORE)
    folder = ctx.run_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    metric = Task.of(dataset).metric_name
    announce_resume(results, sum((results / f"fold{k}.json").exists() for k in fold_ids), len(fold_ids))
    with mode_run(ctx, f"optimization {setting}", results) as run_id:
        rows, thetas = [], {}
        for fold in fold_ids:
            with file_lock(results / f"fold{fold}.lock"):  # a parallel run of this config trains it once
                record = _fold(ctx, results, run_id, fold, setting, make_data_model, raw, splits)
            rows += record["rows"]
            thetas[fold] = record["thetas"]
            if (results / f"theta_fold{fold}.json").exists():
                (folder / f"theta_fold{fold}.json").write_text(
                    (results / f"theta_fold{fold}.json").read_text()
                )

        history = pd.DataFrame(rows, columns=["step", "setting", "fold", "metric"])
        history.to_csv(folder / "history.csv", index=False)
        curves_figure(history, metric, folder / "curves.png")
        shown = None
        sample = raw[splits[fold_ids[0]][1][:3]]
        if any(thetas.values()):
            (folder / "theta_history.json").write_text(json.dumps(thetas, indent=2))
            first = folder / f"theta_fold{fold_ids[0]}.json"
            (folder / "theta.json").write_text(first.read_text())
            # Sample views: the data model at its initial θ (frozen) against the learned one.
            shown = make_data_model().load_theta(json.loads(first.read_text())["theta"]).eval()
            with torch.no_grad():
                frozen_views, learned_views = make_data_model().eval()(sample).numpy(), shown(sample).numpy()
            comparison_figure([(dataset.names[i], a, b) for i, a, b in zip(splits[fold_ids[0]][1][:3], frozen_views, learned_views)],
                              ("frozen Φ(x, θ_stat)", "learned Φ(x, θ)"), folder / "samples.png")  # fmt: skip
        stats = table2(history)
        summary = {"mode": "optimization", "metric": metric, "setting": setting, "data_model": spec.name, "learn": spec.learn,
                   "intensity": dataset.intensity, "folds": fold_ids, "table2": stats}  # fmt: skip
        entry = stats[setting]
        log(f"\n{setting}: validation {metric} over steps and folds {entry['mean']:.3f} ± {entry['std']:.3f} "
            f"(final {entry['final_mean']:.3f} ± {entry['final_std']:.3f}); artifacts in {folder}")  # fmt: skip
        ctx.tracker.log_metrics(run_id, {"table2_mean": entry["mean"], "table2_std": entry["std"]})
        finish_run(ctx, run_id, summary, folder, shown, sample)
    return summary


def assemble_sweep(config, sweep_dir: Path) -> dict | None:
    """One table and figure over every optimization job of a sweep (paper Table 2, Fig. 7)."""
    import pandas as pd

    from raw2logit.controls.optimization import table2
    from raw2logit.report.figures import curves_figure

    frames = [pd.read_csv(p) for p in sorted(sweep_dir.glob("*/optimization/history.csv"))]
    if not frames:
        return None
    history = pd.concat(frames, ignore_index=True)
    folder = sweep_dir / FOLDER
    folder.mkdir(exist_ok=True)
    history.to_csv(folder / "history.csv", index=False)
    stats = table2(history)
    pd.DataFrame.from_dict(stats, orient="index").to_csv(folder / "comparison.csv", index_label="setting")
    summaries = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]
    metric = next((s["metric"] for s in summaries if "metric" in s), "metric")
    curves_figure(history, metric, folder / "comparison.png")
    log("\noptimization comparison (mean ± std of the validation metric over steps and folds):")
    for setting, entry in stats.items():
        log(f"  {setting:32s} {entry['mean']:.3f} ± {entry['std']:.3f}")
    return {"mode": "optimization", "sweep": True, "metric": metric, "table2": stats}
