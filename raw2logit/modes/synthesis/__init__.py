"""``mode=synthesis`` (paper §5.1): the cross-pipeline matrix with k-fold CV, next to Common Corruptions.

A task model is trained on each train data model's views and tested on the held-out fold as every
test data model processes it (``raw2logit.controls.synthesis``). Cells are kept in the results
store as they finish and shared by every run of the same experiment (whatever its
``synthesis.train`` or ``fold``), so a sweep can spread them over jobs.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from raw2logit.modes.common import (
    Context,
    announce_resume,
    device,
    finish_run,
    log,
    make_module_factory,
    make_trainer_factory,
    mode_run,
    results_store,
)
from raw2logit.names import CORRUPTION_NAMES, LIBRAW_ALGORITHMS, LIBRAW_PREFIX, STATIC_PIPELINE_NAMES

FOLDER = "synthesis"
# Rows and columns of the matrix: the 12 in the paper's order, then LibRaw's algorithms, then the rest.
PIPELINE_ORDER = (*STATIC_PIPELINE_NAMES, *(f"{LIBRAW_PREFIX}{name}" for name in LIBRAW_ALGORITHMS))
# Keys that do not change a cell's result: which cells this run asks for, and whether models are kept.
RESULTS_IGNORE = ("synthesis.train", "synthesis.save_models", "fold", "lambda")


def corruption_names(value) -> list[str]:
    """``all``, ``none`` or a list (checked by raw2logit.config) -> the corruption names."""
    from omegaconf import OmegaConf

    if value in (None, "none", []):
        return []
    if value == "all":
        return list(CORRUPTION_NAMES)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else [value]


def cell_record(results: Path, train: str, fold: int) -> Path:
    """Where a cell's MLflow child run is noted (beside the results, not among the cells)."""
    return results / "mlflow" / train / f"fold{fold}.json"


def open_cell(ctx: Context, results: Path, run_id, train: str, fold: int) -> str | None:
    """The cell's MLflow child run, opened before it trains (its training logs into it live); its id
    is noted beside the results at once, so a later run can complete what an interruption left."""
    from raw2logit.data.files import write_json_atomic

    if not ctx.tracker.enabled or run_id is None:
        return None
    record = noted_here(ctx, results, train, fold)
    if record and record.get("status") != "FINISHED":
        # An interrupted attempt at this cell: its half-logged run goes to the trash, so each cell
        # keeps one child run, the one that finished.
        ctx.tracker.discard(record.get("run_id"))
    child = ctx.tracker.start(f"{train} fold {fold}", {"train": train, "fold": fold}, parent=run_id,
                              tags={"raw2logit.train_pipeline": train, "raw2logit.fold": str(fold)})  # fmt: skip
    if child is not None:
        write_json_atomic(cell_record(results, train, fold),
                          {"run_id": child, "tracking_uri": ctx.tracker.uri, "status": "RUNNING"})  # fmt: skip
    return child


def noted_here(ctx: Context, results: Path, train: str, fold: int) -> dict:
    """The cell's note if its child run was noted in this MLflow store ({} if none, or another store's)."""
    note = cell_record(results, train, fold)
    record = json.loads(note.read_text()) if note.exists() else {}
    return record if record.get("tracking_uri") == ctx.tracker.uri else {}


def log_cell(ctx: Context, results: Path, run_id, cell: dict, example) -> None:
    """The cell's results in its MLflow child run (metrics, cell file, and the task model as an MLflow
    model), which then ends FINISHED; a child an interruption or a crash left unfinished is completed,
    one that was never opened (tracking was off or another store) is opened now."""
    from raw2logit.controls.synthesis import cell_path, model_file
    from raw2logit.data.files import write_json_atomic
    from raw2logit.runtime import deferred_interrupts
    from raw2logit.tasks.checkpoints import load_task_checkpoint

    tracker = ctx.tracker
    if not tracker.enabled or run_id is None:
        return
    train, fold = cell["train"], cell["fold"]
    note = cell_record(results, train, fold)
    record = noted_here(ctx, results, train, fold)  # noted in another store: log it here too
    if record.get("status") == "FINISHED":
        return
    with deferred_interrupts():
        child = record.get("run_id") if record and tracker.status(record["run_id"]) else None
        child = child or open_cell(ctx, results, run_id, train, fold)
        if child is None:
            return
        metrics = {f"test.{k}": v for k, v in cell["test"].items()}
        metrics.update({f"corruption.{k}": v for k, v in cell["corruptions"].items()})
        tracker.log_metrics(child, {**metrics, cell["metric"]: cell["clean"], "seconds": cell["seconds"]})
        tracker.log_artifact(child, cell_path(results, train, fold))
        model = model_file(results, train, fold)
        if model.exists():
            tracker.log_artifact(child, model, "model")  # what forensics.from_run=<run id> reads
            task_model, _, _ = load_task_checkpoint(model, ctx.dataset)
            tracker.log_model(child, task_model, example, model)  # ends the run FINISHED
        tracker.end(child)
        write_json_atomic(note, {"run_id": child, "tracking_uri": tracker.uri, "status": "FINISHED"})


def plan(ctx: Context):
    """The run's train and test specs (every spec once), and its view cache."""
    from raw2logit.data.views import ViewCache
    from raw2logit.isp.specs import parse_specs

    cfg = ctx.cfg
    train_specs, test_specs = parse_specs(cfg.synthesis.train), parse_specs(cfg.synthesis.test)
    specs = list(dict.fromkeys([*train_specs, *test_specs]))
    views = ViewCache(ctx.dataset, Path(cfg.paths.cache) / "views", cfg.data_model.backend, device(cfg), log=log,
                      specs=specs)  # fmt: skip
    return train_specs, test_specs, specs, views


def compute_cells(ctx: Context, results: Path, run_id, train_specs, test_specs, views, wait: bool = True,
                  progress_bar: bool | None = None):  # fmt: skip
    """The cells nobody else holds (then, with ``wait``, the others once free), each training into its
    MLflow child run of ``run_id``; the child of a cell cut short ends FAILED or KILLED. With helper
    processes, ``progress_bar=False``: every process prints plain lines (several bars would clash)."""
    from omegaconf import OmegaConf

    from raw2logit.controls.synthesis import run_synthesis
    from raw2logit.isp.specs import spec_name

    cfg = ctx.cfg
    example = views.views(spec_name(train_specs[0]))[[0]]  # the input example of the logged models
    open_cells = []

    def start_cell(train, fold):
        open_cells.append(open_cell(ctx, results, run_id, train, fold))
        return open_cells[-1]

    def finish_cell(cell):
        try:
            log_cell(ctx, results, run_id, cell, example)
        finally:  # an interruption deferred to the end of log_cell finds the child already FINISHED
            open_cells.pop()

    try:
        cells = run_synthesis(
            dataset=ctx.dataset, views=views, train_names=[spec_name(s) for s in train_specs],
            test_names=[spec_name(s) for s in test_specs], folds=cfg.folds, fold=cfg.fold, seed=cfg.seed,
            severity=cfg.synthesis.severity, corruption_names=corruption_names(cfg.synthesis.corruptions),
            make_module=make_module_factory(cfg, ctx.dataset),
            make_trainer=make_trainer_factory(cfg, ctx.tracker, progress_bar=progress_bar),
            batch_size=cfg.batch_size, results=results, save_models=cfg.synthesis.save_models,
            on_cell=finish_cell, on_cell_start=start_cell, log=log, wait=wait,
            model_metadata={"task_model": OmegaConf.to_container(cfg.task_model, resolve=True), "dataset": cfg.dataset.name},
        )  # fmt: skip
    except BaseException as error:  # the cell in training ends with the run (FAILED, or KILLED)
        for child in filter(None, open_cells):
            if isinstance(error, Exception):
                ctx.tracker.fail(child, error)
            else:
                ctx.tracker.end(child, "KILLED")
        raise
    return cells, example


def run(ctx: Context) -> dict:
    """Drift synthesis: the cross-pipeline matrix with k-fold CV, next to Common Corruptions."""
    from raw2logit.controls.synthesis import assemble, cell_path
    from raw2logit.data.files import write_json_atomic
    from raw2logit.isp.specs import build_data_model, spec_digest, spec_name
    from raw2logit.locks import file_lock

    cfg = ctx.cfg  # checked by raw2logit.config before the mode starts
    train_specs, test_specs, specs, views = plan(ctx)
    # A changed calibration file is a different experiment: its content is part of the results key.
    results = results_store(cfg, FOLDER, RESULTS_IGNORE, b"".join(spec_digest(spec) for spec in specs))
    folds = [cfg.fold] if cfg.fold is not None else list(range(cfg.folds))
    units = [cell_path(results, spec_name(s), k) for s in train_specs for k in folds]
    pending = sum(not path.exists() for path in units)
    announce_resume(results, len(units) - pending, len(units))
    with mode_run(ctx, f"synthesis {cfg.dataset.name}", results) as run_id:
        # The views first, on every torch thread; then the cells share the threads among their processes.
        views.ensure([spec_name(spec) for spec in specs])
        workers = resolve_workers(cfg, pending)
        with helpers(ctx, results, run_id, workers):
            cells, example = compute_cells(ctx, results, run_id, train_specs, test_specs, views,
                                           progress_bar=False if workers > 1 else None)  # fmt: skip
        for cell in cells:  # records an earlier run left unfinished are completed now
            with file_lock(cell_path(results, cell["train"], cell["fold"]).with_suffix(".lock")):
                log_cell(ctx, results, run_id, cell, example)
        for cell in cells:  # the run directory holds its own cells (a sweep assembles from them)
            write_json_atomic(cell_path(ctx.run_dir, cell["train"], cell["fold"]), cell)
        summary = assemble(cells, ctx.run_dir, PIPELINE_ORDER)
        summary["results_store"] = str(results)
        print_summary(summary, ctx.run_dir)
        isp, corrupted = summary["isp"], summary.get("corruptions", {})
        metrics = {"isp_train": isp["train"], "isp_test": isp["test"], "cc_train": corrupted.get("train"),
                   "cc_test": corrupted.get("test")}  # fmt: skip
        ctx.tracker.log_metrics(run_id, {k: v for k, v in metrics.items() if v is not None})
        sample = ctx.dataset.normalised(np.arange(min(3, len(ctx.dataset))))
        by_name = {spec_name(spec): spec for spec in specs}
        shown = build_data_model(by_name[summary["best_train_pipeline"]], ctx.dataset.camera)
        finish_run(ctx, run_id, summary, ctx.run_dir / FOLDER, shown, sample)
    return summary


# -- helper processes (synthesis.workers) ---------------------------------------------------------------
# Cells are independent, and a small task model does not keep two cores busy from one process: on
# 2 cores, one process on 2 threads left about 30 % of the CPU idle (the optimiser step, the loss, the
# data batches and Lightning's loop run on one thread between the parallel convolutions). Two processes
# of one thread each did 1.46x the training work: 8.9 ms per image on 1 thread against 6.55 on 2.
# The helpers share the run's results store and take cells by its cell locks, as parallel jobs do.


AUTO_WORKERS_MAX = 8  # each process holds its own torch, Lightning and MLflow: ~0.8 GB of memory


def resolve_workers(cfg, pending: int | None = None) -> int:
    """How many processes compute the ``pending`` cells (any number when None): ``synthesis.workers``,
    or with ``auto`` one per torch thread on a CPU trainer, at most ``AUTO_WORKERS_MAX`` (one process
    for a GPU, or a multi-process trainer)."""
    import torch

    from raw2logit.config import is_distributed

    value = cfg.synthesis.get("workers", 1)
    if value == "auto":
        on_cpu = cfg.trainer.get("accelerator", "cpu") == "cpu" and not is_distributed(cfg.trainer)
        value = min(torch.get_num_threads(), AUTO_WORKERS_MAX) if on_cpu else 1
    return max(1, int(value) if pending is None else min(int(value), pending))


class Helpers:
    """The helper processes of a synthesis run, started with the run (``prestart``): while this process
    opens the MLflow store and reads the data, they import torch, Lightning and MLflow and read the same
    data, then wait for the order to compute cells (``helpers``), or are stopped (``close``)."""

    def __init__(self, cfg, run_dir: Path, count: int):
        import multiprocessing

        from omegaconf import OmegaConf

        config = OmegaConf.to_container(cfg, resolve=True)
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch or SQLite state
        self.processes, self.orders = [], []
        for _ in range(count):
            receive, send = spawn.Pipe(duplex=False)
            process = spawn.Process(target=cell_worker, args=(config, str(run_dir), receive))
            process.start()
            receive.close()
            self.processes.append(process)
            self.orders.append(send)

    def start(self, count: int, results: Path, run_id, threads: int) -> list:
        """Give ``count`` helpers the cells (the others stop); returns the processes that took them."""
        started = []
        for process, order in zip(self.processes[:count], self.orders[:count]):
            try:
                order.send((str(results), run_id, threads))
                started.append(process)
            except OSError:  # it ended already (e.g. bad input, which this process reports)
                pass
        self.close(self.processes[count:])
        return started

    def close(self, processes=None) -> None:
        """Stop helpers (all by default): a helper still starting up, or idle, ends at once; one training
        a cell ends its MLflow run KILLED (SIGTERM)."""
        processes = self.processes if processes is None else processes
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()


def prestart(cfg, run_dir: Path) -> Helpers | None:
    """The helper processes a synthesis with ``cfg`` can use, started now (None if it uses none)."""
    workers = resolve_workers(cfg)
    return Helpers(cfg, run_dir, workers - 1) if workers > 1 else None


@contextmanager
def helpers(ctx: Context, results: Path, run_id, workers: int):
    """``workers - 1`` of the run's helper processes computing cells beside this one, each on its share of
    the torch threads. The block ends once every cell is done (this process waits for the cells a helper
    holds), so helpers still running then have nothing left and are stopped, as on an interruption or
    error (SIGTERM: a helper ends the MLflow run of a cell it trains KILLED)."""
    import torch

    prestarted = ctx.helpers or Helpers(ctx.cfg, ctx.run_dir, workers - 1 if workers > 1 else 0)
    threads = torch.get_num_threads()
    share = max(1, threads // workers)
    processes = prestarted.start(workers - 1, results, run_id, share)
    if not processes:
        yield
        return
    log(f"cells computed by {workers} processes of {share} torch thread(s) each (synthesis.workers): this one "
        f"and helper{'s' if workers > 2 else ''} {', '.join(str(p.pid) for p in processes)}")  # fmt: skip
    torch.set_num_threads(share)
    failed = []
    try:
        yield
        failed = [p for p in processes if p.exitcode]  # ended on their own with an error
    finally:
        torch.set_num_threads(threads)
        prestarted.close(processes)
    for process in failed:  # the cells it left were computed here
        log(f"warning: helper process {process.pid} ended with status {process.exitcode}")


def cell_worker(config: dict, run_dir: str, orders) -> None:
    """A helper process of a synthesis run: the same data, views and MLflow store, the cells nobody holds.

    It prepares what the cells need, then waits for its order on ``orders``: the results store, the
    run's MLflow run and its torch threads. It prints to the run's console and job log. On an error it
    says so in one line and ends; the run computes the cells left (and reports the error, should it
    recur there).
    """
    import os
    import signal
    import sys

    from raw2logit.errors import InputError
    from raw2logit.runtime import idle_threads_sleep, request_interrupt

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_interrupt)
    try:
        idle_threads_sleep()
        import torch
        from omegaconf import OmegaConf

        from raw2logit.cli import _quiet_libraries
        from raw2logit.modes.common import build_dataset, build_tracker
        from raw2logit.runtime import console_log, keep_freed_memory

        cfg = OmegaConf.create(config)
        with console_log(Path(run_dir) / "run.log"):
            keep_freed_memory()
            _quiet_libraries()
            ctx = Context(cfg, Path(run_dir), build_dataset(cfg), build_tracker(cfg))
            train_specs, test_specs, _, views = plan(ctx)
            results, run_id, threads = orders.recv()
            torch.set_num_threads(threads)
            compute_cells(
                ctx, Path(results), run_id, train_specs, test_specs, views, wait=False, progress_bar=False
            )
    except (KeyboardInterrupt, EOFError):  # stopped, or the run ended before it had cells to give
        sys.exit(130)
    except InputError:  # bad input: the run meets it too, and says it in its one sentence
        sys.exit(2)
    except Exception as error:  # told in one line; the run computes the cell itself
        print(f"helper process {os.getpid()}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        # Done, or stopping: the run's SIGTERM from here on ends this process quietly. Raised as a
        # KeyboardInterrupt in the interpreter's exit handlers, it printed a traceback on the console
        # at the end of a normal run.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def print_summary(summary: dict, directory: Path) -> None:
    """The matrix and the headline changes, as the paper reports them."""
    from raw2logit.controls.synthesis import format_matrix

    log(
        f"\n{summary['metric']} (rows: train pipeline, columns: test pipeline, mean over folds {summary['folds']}):"
    )
    log(format_matrix(directory))
    isp = summary["isp"]
    if isp["change"] is not None:
        log(f"ISP drift: {isp['train']:.3f} -> {isp['test']:.3f} (train -> other test pipelines)")
    if summary.get("libraw", {}).get("test") is not None:
        real = summary["libraw"]
        names = ", ".join(name[len(LIBRAW_PREFIX) :] for name in real["algorithms"])
        own = f"{real['train']:.3f} -> " if real["train"] is not None else ""
        log(f"LibRaw (a real-world ISP: {names}): {own}{real['test']:.3f} (train -> LibRaw's views)")
    if "corruptions" in summary:
        cc = summary["corruptions"]
        log(f"Common Corruptions (severity {cc['severity']}): {cc['train']:.3f} -> {cc['test']:.3f}")
    log(f"best train pipeline: {summary['best_train_pipeline']}; artifacts in {directory / FOLDER}")


def assemble_sweep(config, sweep_dir: Path) -> dict | None:
    """The matrix over every job's cells of a multirun (jobs may each run one train pipeline or fold)."""
    from raw2logit.controls.synthesis import assemble, format_matrix, load_cells

    cells = load_cells(sweep_dir)
    if not cells:
        return None
    summary = assemble(cells, sweep_dir, PIPELINE_ORDER)
    log(f"\nsweep matrix ({summary['cells']} cells from {sweep_dir}):\n{format_matrix(sweep_dir)}")
    return summary
