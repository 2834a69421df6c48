"""Chunks on threads of their own (raw2logit.isp.threads): the same views, torch's thread settings
left as they were, errors raised once every chunk has stopped."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from raw2logit.isp import CameraParams, StaticPipeline, StaticPipelineBank, static, steps, threads


@pytest.fixture
def two_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_chunks_on_threads_give_the_views_of_chunks_in_turn(two_torch_threads, monkeypatch):
    """With two torch threads the bank's chunks run on the pool's threads, each with one torch thread;
    on one torch thread they run in turn on the caller's. Every op then runs single-threaded on the
    same chunks: the views are equal bit for bit, and so are those of separate pipelines."""
    if not threads._openmp_backend():
        pytest.skip("ATen's parallel backend is not OpenMP: the chunks run in turn")
    monkeypatch.setattr(steps, "_CPU_CHUNK_PIXELS", 2 * 16 * 24)
    camera = CameraParams.published("drone")
    raw = torch.rand(7, 16, 24, generator=torch.Generator().manual_seed(0))
    seen = []
    for key, method in list(static.DEMOSAIC_METHODS.items()):
        monkeypatch.setitem(
            static.DEMOSAIC_METHODS,
            key,
            lambda *a, m=method, **kw: (
                seen.append((threading.current_thread().name, torch.get_num_threads())) or m(*a, **kw)
            ),
        )
    threaded = StaticPipelineBank("all", camera)(raw)
    assert len(seen) == 3 * 4  # three demosaics, four chunks (2, 2, 2 and 1 images)
    assert all(name.startswith("raw2logit-chunks") and count == 1 for name, count in seen), seen
    torch.set_num_threads(1)
    seen.clear()
    in_turn = StaticPipelineBank("all", camera)(raw)
    assert {name for name, _ in seen} == {threading.current_thread().name}
    for name, view in threaded.items():
        assert torch.equal(view, in_turn[name]), name
    torch.set_num_threads(2)
    assert torch.equal(StaticPipeline("me_u_ga", camera)(raw), in_turn["me_u_ga"])


def test_torch_thread_settings_are_left_as_they_were(two_torch_threads):
    """The caller keeps its thread count, and a thread started afterwards gets the caller's count, not
    the pool threads' one."""
    StaticPipelineBank("all", CameraParams())(torch.rand(9, 16, 16))
    assert torch.get_num_threads() == 2
    counts = []
    later = threading.Thread(target=lambda: counts.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert counts == [2]


def test_an_error_in_one_chunk_is_raised_after_every_chunk_stopped(two_torch_threads):
    if not threads._openmp_backend():
        pytest.skip("ATen's parallel backend is not OpenMP: the chunks run in turn")
    finished = []

    def work(chunk):
        if chunk == 0:
            raise ValueError("chunk 0 failed")
        threading.Event().wait(0.2)
        finished.append(chunk)

    with pytest.raises(ValueError, match="chunk 0 failed"):
        threads.run_in_threads(work, range(3), torch.device("cpu"))
    assert sorted(finished) == [1, 2]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_computes_views_with_a_pool_of_its_own(two_torch_threads, monkeypatch):
    """A process forked after the pool started (a DataLoader worker, say) has none of its threads:
    its own calls start a new pool instead of waiting forever for the parent's. (Five chunks, so both
    processes use the pool; the child's own thread then enters no OpenMP region, which GNU OpenMP
    cannot start again after a fork.)"""
    monkeypatch.setattr(steps, "_CPU_CHUNK_PIXELS", 2 * 16 * 16)
    camera = CameraParams()
    raw = torch.rand(9, 16, 16)
    expected = StaticPipelineBank("all", camera)(raw)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        try:
            views = StaticPipelineBank("all", camera)(raw)
            os._exit(0 if all(torch.equal(views[name], expected[name]) for name in expected) else 1)
        finally:
            os._exit(2)
    deadline = time.time() + 120
    while (done := os.waitpid(child, os.WNOHANG))[0] == 0:
        if time.time() > deadline:
            os.kill(child, 9)
            pytest.fail("the forked child waited for the parent's pool threads")
        threading.Event().wait(0.1)
    assert os.waitstatus_to_exitcode(done[1]) == 0


def test_the_callers_checks_run_on_one_openmp_thread(two_torch_threads, monkeypatch):
    """A pipeline's input check and prefix comparison run on one thread in the caller (an OpenMP pass
    would leave a spin-waiting worker on a core the chunk threads need); torch's count is put back,
    after an error too, and nothing changes on one thread or off the CPU."""
    if not threads._openmp_backend():
        pytest.skip("ATen's parallel backend is not OpenMP: no chunk threads, the count is left alone")
    counts = []
    check = static.check_raw
    monkeypatch.setattr(static, "check_raw", lambda raw: counts.append(torch.get_num_threads()) or check(raw))
    pipeline = StaticPipeline("bi_s_me", CameraParams.published("drone"))
    pipeline(torch.rand(2, 16, 24))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pipeline(torch.full((2, 16, 24), 2.0))
    StaticPipelineBank("all")(torch.rand(2, 16, 24))
    assert counts == [1, 1, 1]
    assert torch.get_num_threads() == 2
    with threads.one_openmp_thread(torch.device("meta")):
        assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    with threads.one_openmp_thread(torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 1
