"""Chunks of a batch on CPU threads of their own, each running torch on one thread.

The static pipelines are a few thousand short passes per chunk of images. Split across OpenMP's
threads inside each pass (torch's default), two threads ran them only 1.5x faster than one on the
2-core development VM: every pass waits for both threads, and the passes that move memory rather
than compute gain little. Two chunks at once, each on a thread of its own with one OpenMP thread,
ran the bank of 12 pipelines 10-13 % faster than that (two threads, AVX2, measured in one process).

How a thread of ours gets one OpenMP thread: OpenMP keeps the thread count per thread, so each pool
thread sets its own to one when it starts (after ATen's lazy per-thread initialisation).
``torch.set_num_threads`` also records the count that threads starting later take, so once the
pool's threads are set that record is put back to the caller's count: torch's thread setting
outside the pool is what it was before. This relies on ATen's OpenMP backend (the one in PyTorch's
builds); with another backend the chunks run in turn, as they do for a caller on one torch thread.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

import torch

_LOCK = threading.Lock()
_POOL: dict = {"executor": None, "workers": 0}


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads do not exist there (work sent to them would wait
    forever), and the lock may have been held: start afresh."""
    global _LOCK
    _LOCK = threading.Lock()
    _POOL.update(executor=None, workers=0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


@functools.cache
def _openmp_backend() -> bool:
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _executor(workers: int) -> ThreadPoolExecutor:
    """The pool, with at least ``workers`` threads, each set to one OpenMP thread."""
    with _LOCK:
        if _POOL["workers"] >= workers:
            return _POOL["executor"]
        if _POOL["executor"] is not None:
            _POOL["executor"].shutdown(wait=True)
        caller_threads = torch.get_num_threads()
        started = threading.Barrier(workers + 1)

        def one_thread():
            # ATen sets a thread's count once, lazily, from the recorded one: have that happen now,
            # or it would happen at the first parallel pass, from the count put back below.
            torch.get_num_threads()
            torch.set_num_threads(1)
            started.wait()  # every pool thread takes exactly one of these

        executor = ThreadPoolExecutor(workers, thread_name_prefix="raw2logit-chunks")
        for _ in range(workers):
            executor.submit(one_thread)
        started.wait()
        torch.set_num_threads(caller_threads)  # the count threads starting later take, as it was
        _POOL.update(executor=executor, workers=workers)
        return executor


def run_in_threads(work: Callable[[int], None], chunks: Sequence[int], device: torch.device) -> None:
    """``work(chunk)`` for every chunk, without autograd: on CPU on as many threads of their own as
    the caller has torch threads (at most one per chunk), elsewhere or on one thread in turn."""
    workers = min(torch.get_num_threads(), len(chunks))
    if device.type != "cpu" or workers < 2 or not _openmp_backend():
        with torch.no_grad():
            for chunk in chunks:
                work(chunk)
        return

    def run(chunk):
        with torch.no_grad():  # autograd's mode is per thread
            work(chunk)

    executor = _executor(workers)
    futures = [executor.submit(run, chunk) for chunk in chunks]
    wait(futures)  # all of them, so that no chunk is still being written when an error is raised
    for future in futures:
        future.result()


@contextlib.contextmanager
def one_openmp_thread(device: torch.device) -> Iterator[None]:
    """The caller's own passes on CPU (input checks, comparisons) on one OpenMP thread.

    After a pass split across OpenMP's threads, libgomp's idle worker spin-waits for several ms (its
    default spin count) on a core that the chunk threads are about to use: twelve ``StaticPipeline``
    calls in a row, each checking and comparing its input first, ran 15 % slower for it (measured
    against this, alternating in one process). torch's thread count is put back on exit; a thread
    that starts meanwhile takes one thread (ATen records one count for threads starting later).
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2 or not _openmp_backend():  # no chunk threads follow
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
