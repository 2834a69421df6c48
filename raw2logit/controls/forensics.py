"""Drift forensics (paper §5.2, Eq. 9): search the data model's parameters that break a frozen task model.

    minimise over θ~   λ ||V - V~||² - L(V~, Y),   V = Φ_para(x, θ_stat),  V~ = Φ_para(x, θ~)

||V - V~||² is the squared L2 norm of each image's difference (mean over the batch); with the
``ssim`` regulariser the distance term is 1 - SSIM(V, V~) instead (torchmetrics' SSIM), signed so
that it keeps V~ close to V. The task model is frozen: eval mode (BatchNorm statistics fixed) and
no gradient to its weights. Only the targeted θ groups move; the others stay bit-identical.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from raw2logit.errors import InputError, check_finite_loss
from raw2logit.isp import THETA_GROUPS, ParametrizedPipeline
from raw2logit.isp.parametrized import check_groups
from raw2logit.names import REGULARISERS
from raw2logit.tasks.task import Task
from raw2logit.training import DriftModule, Normalise

# Physically plausible ranges for the projection option, relative to θ_stat where marked:
# black level: absolute offset in [0, 0.25] of the white level; white balance: gains within
# [1/4, 4] times θ_stat's (same sign); colour matrix: entries within ±1 of θ_stat's; demosaic,
# sharpen and denoise kernels: entries within ±1 of θ_stat's; gamma in [1, 3]; tone curve knots within
# ±0.25 of θ_stat's (the curve stays monotone whatever its knots: raw2logit.isp.tone).
PLAUSIBLE = {
    "black_level": ("absolute", 0.0, 0.25),
    "white_balance": ("ratio", 0.25, 4.0),
    "colour_matrix": ("offset", -1.0, 1.0),
    "demosaic": ("offset", -1.0, 1.0),
    "sharpen": ("offset", -1.0, 1.0),
    "denoise": ("offset", -1.0, 1.0),
    "gamma": ("absolute", 1.0, 3.0),
    "curve": ("offset", -0.25, 0.25),
}


@torch.no_grad()
def project(data_model: ParametrizedPipeline, reference: dict[str, torch.Tensor]) -> None:
    """Clamp every θ group into its plausible range (``PLAUSIBLE``) around ``reference`` (θ_stat)."""
    for group, (kind, low, high) in PLAUSIBLE.items():
        parameter = getattr(data_model, group)
        base = reference[group].to(parameter)
        if kind == "absolute":
            parameter.clamp_(low, high)
        elif kind == "offset":
            parameter.copy_(torch.clamp(parameter, base + low, base + high))
        else:  # ratio, keeping the sign of θ_stat
            bounds = torch.stack((base * low, base * high))
            parameter.copy_(torch.clamp(parameter, bounds.min(0).values, bounds.max(0).values))


class ForensicsModule(pl.LightningModule):
    """Adversarial search over θ of a ``ParametrizedPipeline`` against a frozen task model.

    Args:
        data_model: the parametrized data model, at θ_stat; only its trainable groups move.
        task_model: the trained task network (frozen here).
        task: the ``Task`` (its loss here is Dice + BCE for segmentation, as the paper).
        lam: λ, the weight of the distance term (>= 0).
        regulariser: ``"l2"`` or ``"ssim"``.
        normalisation: the task model's input normalisation (``mean``, ``std``) or None.
        lr: Adam learning rate for θ.
        plausible: project θ into ``PLAUSIBLE`` after every step.
    """

    def __init__(self, data_model: ParametrizedPipeline, task_model: nn.Module, task: Task, lam: float,
                 regulariser: str = "l2", normalisation: dict | None = None, lr: float = 1e-3,
                 plausible: bool = False):  # fmt: skip
        super().__init__()
        if regulariser not in REGULARISERS:
            raise InputError(
                f"Unknown forensics.regulariser {regulariser!r}; expected one of {', '.join(REGULARISERS)}."
            )
        if not lam >= 0:
            raise InputError(f"lambda must be a non-negative number; got {lam!r}.")
        self.data_model = data_model
        self.reference = copy.deepcopy(data_model).requires_grad_(False)
        self.task_model = task_model.requires_grad_(False)
        self.normalise = Normalise(**(normalisation or {}))
        self.loss_fn = task.loss(with_bce=True)  # Dice + BCE for segmentation, as the paper
        self.task = task
        self.lam = lam
        self.regulariser = regulariser
        self.lr = lr
        self.plausible = plausible
        self._ssim = None

    def train(self, mode: bool = True):
        super().train(mode)
        self.task_model.eval()  # frozen: BatchNorm statistics stay as trained
        self.reference.eval()
        return self

    def distance(self, views: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if self.regulariser == "l2":
            return (views - reference).square().flatten(1).sum(1).mean()
        if self._ssim is None:
            from torchmetrics.image import StructuralSimilarityIndexMeasure

            self._ssim = StructuralSimilarityIndexMeasure(data_range=1.0).to(views.device)
        return 1.0 - self._ssim(views.clamp(0, 1), reference.clamp(0, 1))

    def training_step(self, batch, batch_index):
        raw, target = batch
        with torch.no_grad():
            reference = self.reference(raw)
        views = self.data_model(raw)
        logits = self.task.logits(self.task_model, self.normalise(views), target)
        task_loss = self.loss_fn(logits, target)
        distance = self.distance(views, reference)
        loss = self.lam * distance - task_loss
        check_finite_loss(loss, "forensic search loss", self.current_epoch, batch_index,
                          f"the search stops with nothing stored (lambda={self.lam:g}, forensics.lr={self.lr:g})")  # fmt: skip
        self.log_dict({"forensics_loss": loss, "task_loss": task_loss, "distance": distance}, on_epoch=True,
                      on_step=True, batch_size=len(raw))  # fmt: skip
        return loss

    def on_train_batch_end(self, outputs, batch, batch_index):
        if self.plausible:
            project(self.data_model, dict(self.reference.named_parameters()))

    def configure_optimizers(self):
        trainable = [p for p in self.data_model.parameters() if p.requires_grad]
        return torch.optim.Adam(trainable, lr=self.lr)


def frozen_module(
    task_model: nn.Module, data_model: nn.Module, task: Task, normalisation: dict | None
) -> DriftModule:
    """A ``DriftModule`` that evaluates ``task_model`` behind ``data_model`` (used for the metric)."""
    return DriftModule(
        task_model, task, data_model=data_model, normalisation=normalisation, augment=False
    ).eval()


@torch.no_grad()
def mean_distance(data_model: ParametrizedPipeline, reference: nn.Module, raw, batch_size: int = 64) -> float:
    """Mean per-image ||V - V~||² over a set of raw images (the paper's ℓ2)."""
    total, count = 0.0, 0
    for start in range(0, len(raw), batch_size):
        x = raw[np.arange(start, min(start + batch_size, len(raw)))]
        total += float((data_model(x) - reference(x)).square().flatten(1).sum(1).sum())
        count += len(x)
    return total / max(count, 1)


class SearchRecorder(pl.Callback):
    """Per epoch: held-out metric, ℓ2 and a θ snapshot (the points of the forensic signature)."""

    def __init__(self, evaluate_fn, log=print):
        self.evaluate_fn = evaluate_fn
        self.history: list[dict] = []
        self.printer = log

    def on_train_epoch_end(self, trainer, module):
        metric, distance = self.evaluate_fn()
        entry = {"epoch": trainer.current_epoch + 1, "metric": metric, "l2": distance,
                 "loss": float(trainer.callback_metrics.get("forensics_loss", float("nan"))),
                 "theta": module.data_model.theta_dict()}  # fmt: skip
        self.history.append(entry)
        if trainer.logger:  # the held-out metric and ℓ2 of the search, in its MLflow run
            name = module.task.metric_name
            trainer.logger.log_metrics(
                {f"search_{name}": metric, "search_l2": distance}, step=trainer.global_step
            )
        self.printer(
            f"  search epoch {entry['epoch']}/{trainer.max_epochs}: held-out {metric:.3f}, ℓ2 {distance:.4g}"
        )


def run_search(
    *,
    task_model: nn.Module,
    data_model: ParametrizedPipeline,
    task: Task,
    normalisation: dict | None,
    train_raw,
    train_targets: np.ndarray,
    test_raw,
    test_targets: np.ndarray,
    lam: float,
    target: str,
    regulariser: str,
    epochs: int,
    batch_size: int,
    lr: float,
    plausible: bool,
    make_trainer,
    seed: int,
    log=print,
    run_id: str | None = None,
) -> dict:
    """Run the adversarial search; returns the result record (see ``forensics/result.json``). With an
    MLflow ``run_id``, the search's loss, task loss and distance of every step and the held-out metric
    and ℓ2 of every epoch are logged into it as the search goes."""
    from raw2logit.controls.synthesis import batches
    from raw2logit.training import evaluate

    groups = check_groups(target)
    idle = [g for g in groups if g not in data_model.active_groups()] if target != "all" else []
    if idle:
        raise InputError(f"forensics.target={target} does not act on this data model (variant {data_model.variant}, "
                         f"tone curve {data_model.tone_curve}); acting groups: {', '.join(data_model.active_groups())}.")  # fmt: skip
    data_model.set_trainable(groups)
    theta_before = data_model.theta_dict()
    reference = copy.deepcopy(data_model).requires_grad_(False).eval()
    task_model.eval().requires_grad_(False)

    def measure():
        frozen = frozen_module(task_model, data_model, task, normalisation)
        with torch.no_grad():
            return evaluate(frozen, test_raw, test_targets, batch_size), mean_distance(
                data_model, reference, test_raw
            )

    metric_before, _ = measure()
    pl.seed_everything(seed, workers=True, verbose=False)
    module = ForensicsModule(data_model, task_model, task, lam, regulariser, normalisation, lr, plausible)
    recorder = SearchRecorder(measure, log)
    trainer = make_trainer(f"forensics λ={lam:g} target={target}", [recorder], run_id=run_id)
    start = time.perf_counter()
    trainer.fit(module, batches(train_raw, train_targets, batch_size, shuffle=True, seed=seed))
    metric_after, distance = measure()
    pixels = int(np.prod(test_raw[np.arange(1)].shape[1:])) * 3
    return {
        "lambda": lam,
        "target": target,
        "groups": groups,
        "regulariser": regulariser,
        "metric": task.metric_name,
        "metric_before": metric_before,
        "metric_after": metric_after,
        "metric_drop": metric_before - metric_after,
        "l2": distance,
        "l2_per_pixel": distance / pixels,
        "theta_before": theta_before,
        "theta_after": data_model.theta_dict(),
        "unchanged_groups": [g for g in THETA_GROUPS if g not in groups],
        "epochs": epochs,
        "plausible_projection": plausible,
        "history": recorder.history,
        "seconds": time.perf_counter() - start,
    }


def theta_deviation(theta: dict, reference: dict, group: str) -> float:
    """Largest absolute change of a θ group's entries."""
    return float(
        np.max(np.abs(np.asarray(theta[group], dtype=float) - np.asarray(reference[group], dtype=float)))
    )


def assemble_signature(results: list[dict], out_dir: Path, tolerance: float = 0.02) -> dict:
    """The forensic signature of a λ x target sweep: ``forensics/signature.{json,md,png}``.

    Per target: the metric and ℓ2 against λ. Groups are ranked by sensitivity, the least-squares
    slope of the metric drop against ℓ2 over their runs (drop per unit ℓ2). For every targeted
    group, the "limitations of use": the range of each θ entry over all search states whose
    held-out metric stayed within ``tolerance`` of the clean metric, and the smallest change of
    the group that cost more than the tolerance.
    """
    from raw2logit.report.figures import signature_figure

    if not results:
        raise InputError(f"No forensics results to assemble in {out_dir}.")
    metric = results[0]["metric"]
    by_target: dict[str, list[dict]] = {}
    for result in sorted(results, key=lambda r: r["lambda"]):
        by_target.setdefault(result["target"], []).append(result)
    curves, sensitivity, limits = {}, {}, {}
    for target, runs in by_target.items():
        curves[target] = [
            {k: r[k] for k in ("lambda", "metric_before", "metric_after", "metric_drop", "l2")} for r in runs
        ]
        l2 = np.array([r["l2"] for r in runs])
        drop = np.array([r["metric_drop"] for r in runs])
        sensitivity[target] = float((drop * l2).sum() / max((l2**2).sum(), 1e-30))
        if target == "all":
            continue
        clean = float(np.mean([r["metric_before"] for r in runs]))
        reference = runs[0]["theta_before"]
        states = [(h["theta"], h["metric"]) for r in runs for h in r["history"]] + [(reference, clean)]
        safe = [theta for theta, value in states if value >= clean - tolerance]
        unsafe = [
            (theta_deviation(theta, reference, target), value)
            for theta, value in states
            if value < clean - tolerance
        ]
        values = np.array([np.asarray(theta[target], dtype=float) for theta in safe])
        limits[target] = {
            "clean_metric": clean,
            "tolerance": tolerance,
            "theta_stat": reference[target],
            "safe_min": np.min(values, axis=0).tolist(),
            "safe_max": np.max(values, axis=0).tolist(),
            "largest_safe_change": max(theta_deviation(t, reference, target) for t in safe),
            "smallest_unsafe_change": min((d for d, _ in unsafe), default=None),
            "worst_metric": min(value for _, value in states),
        }
    ranking = sorted((t for t in sensitivity if t != "all"), key=lambda t: -sensitivity[t])
    signature = {"metric": metric, "tolerance": tolerance, "targets": curves, "sensitivity": sensitivity,
                 "ranking": ranking, "limitations_of_use": limits}  # fmt: skip
    folder = Path(out_dir) / "forensics"
    folder.mkdir(parents=True, exist_ok=True)
    import json

    (folder / "signature.json").write_text(json.dumps(signature, indent=2))
    (folder / "signature.md").write_text(signature_markdown(signature))
    signature_figure(by_target, metric, folder / "signature.png")
    return signature


def _fmt(values, digits=4) -> str:
    array = np.asarray(values, dtype=float)
    if array.size == 1:
        return f"{array.item():.{digits}g}"
    return "[" + ", ".join(f"{v:.{digits}g}" for v in array.ravel()) + "]"


def signature_markdown(signature: dict) -> str:
    """The signature as a document a model provider can hand to its users."""
    metric, tolerance = signature["metric"], signature["tolerance"]
    lines = ["# Forensic signature: limitations of use", "",
             f"Task metric: {metric}. Adversarial search over the data model's parameters (paper Eq. 9), "
             f"one run per λ and parameter group; tolerance {tolerance:g} below the clean {metric}.", "",
             "## Sensitivity (metric drop per unit ℓ2, higher is more dangerous)", "",
             "| rank | parameter group | drop per unit ℓ2 |", "|---|---|---|"]  # fmt: skip
    for rank, target in enumerate(signature["ranking"], start=1):
        lines.append(f"| {rank} | {target} | {signature['sensitivity'][target]:.4g} |")
    lines += ["", f"## {metric} and ℓ2 against λ", "", f"| target | λ | {metric} before | {metric} after | ℓ2 |",
              "|---|---|---|---|---|"]  # fmt: skip
    for target, runs in signature["targets"].items():
        for run in runs:
            lines.append(
                f"| {target} | {run['lambda']:g} | {run['metric_before']:.3f} | {run['metric_after']:.3f} | {run['l2']:.4g} |"
            )
    lines += ["", "## Ranges within which the model keeps its performance", ""]
    for target, limit in signature["limitations_of_use"].items():
        unsafe = limit["smallest_unsafe_change"]
        lines += [
            f"### {target}",
            f"- default (θ_stat): {_fmt(limit['theta_stat'])}",
            f"- tested safe range, per entry: min {_fmt(limit['safe_min'])}, max {_fmt(limit['safe_max'])}",
            f"- largest change that kept {metric} within {tolerance:g}: {limit['largest_safe_change']:.4g}",
            "- smallest change that did not: "
            + (f"{unsafe:.4g}" if unsafe is not None else "none found in the search"),
            f"- worst {metric} reached: {limit['worst_metric']:.3f} (clean {limit['clean_metric']:.3f})",
            "",
        ]
    return "\n".join(lines) + "\n"
