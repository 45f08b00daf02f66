"""The work queue's retry rules, and the API errors it tells apart."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from dittoctl.kube.gateway import ApiError, NamespaceTerminating, _error
from reconciler.queue import WorkQueue

TERMINATING = ('configmaps "demo-config" is forbidden: unable to create new content in namespace apps because '
               "it is being terminated")


def status_body(status: int, message: str) -> bytes:
    return json.dumps({"kind": "Status", "message": message, "reason": "Forbidden", "code": status}).encode()


def test_a_write_into_a_terminating_namespace_is_its_own_error() -> None:
    assert isinstance(_error(403, "Forbidden", status_body(403, TERMINATING)), NamespaceTerminating)
    other = _error(403, "Forbidden", status_body(403, 'secrets is forbidden: User "x" cannot list resource "secrets"'))
    assert isinstance(other, ApiError) and not isinstance(other, NamespaceTerminating)
    assert other.status == 403 and "cannot list" in str(other)
    assert str(_error(502, "Bad Gateway", b"<html>not json</html>")) == "HTTP 502: Bad Gateway"


async def test_a_terminating_namespace_is_retried_quietly_other_failures_loudly(
        caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    done = asyncio.Event()

    async def worker(key: str) -> float | None:
        calls.append(key)
        if len(calls) == 1:
            raise NamespaceTerminating(403, TERMINATING)
        if len(calls) == 2:
            raise RuntimeError("boom")
        done.set()
        return None

    queue: WorkQueue[str] = WorkQueue(worker, concurrency=1, max_backoff=0.05)
    results: list[str] = []
    queue.on_result = lambda result, _seconds: results.append(result)
    caplog.set_level(logging.INFO, logger="dittofs.queue")
    queue.start()
    try:
        queue.add("apps/demo")
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await queue.stop()
    assert calls == ["apps/demo"] * 3 and results == ["requeue_after", "error", "success"]
    quiet, loud = (r for r in caplog.records if r.name == "dittofs.queue")
    assert quiet.levelno == logging.INFO and quiet.exc_info is None
    assert "namespace is being deleted" in quiet.getMessage()
    assert loud.levelno == logging.ERROR and loud.exc_info is not None


def test_retries_back_off_exponentially_per_key_up_to_the_cap() -> None:
    """SPEC §4: capped exponential backoff; one server's failures never slow another's retries."""
    async def never(key: str) -> None:
        return None

    queue: WorkQueue[str] = WorkQueue(never, max_backoff=60.0)
    delays = [queue._retry_after("a") for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert queue._retry_after("b") == 0.5
    queue.forget("a")  # a success (or a deleted server) starts over
    assert queue._retry_after("a") == 0.5
    # A server failing for a day (1440 passes at the cap) stays at the cap: 2 ** 1024 overflowed and took the
    # worker with it, one per drift tick, until nothing reconciled.
    for _ in range(2000):
        assert queue._retry_after("b") <= 60.0


async def test_a_failing_result_hook_does_not_take_the_worker() -> None:
    seen: list[str] = []
    done = asyncio.Event()

    async def worker(key: str) -> None:
        seen.append(key)
        if len(seen) == 2:
            done.set()

    def broken(result: str, seconds: float) -> None:
        raise ValueError("metric")

    queue: WorkQueue[str] = WorkQueue(worker, concurrency=1)
    queue.on_result = broken
    queue.start()
    try:
        queue.add("a")
        await asyncio.sleep(0.05)
        queue.add("b")
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await queue.stop()
    assert seen == ["a", "b"]


async def test_an_interrupt_stops_the_passes_in_flight_and_the_workers_go_on() -> None:
    """SPEC §8: a replica that lost the Lease writes nothing more. Its passes in flight are cancelled with their
    cleanup run and leave no result or retry behind; one that an event (or regained leadership) asked for again
    meanwhile runs again; the same workers then serve the next pass."""
    entered: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}
    cleaned: list[str] = []
    calls: list[str] = []

    async def worker(key: str) -> float | None:
        calls.append(key)
        if key in entered:
            entered[key].set()
            try:
                await asyncio.sleep(60)  # a write that is slow to answer
            finally:
                cleaned.append(key)
        return 5.0

    queue: WorkQueue[str] = WorkQueue(worker, concurrency=2)
    results: list[str] = []
    queue.on_result = lambda result, _seconds: results.append(result)
    queue.start()
    try:
        queue.add("a")
        queue.add("b")
        await asyncio.wait_for(asyncio.gather(entered["a"].wait(), entered["b"].wait()), 5)
        entered.clear()  # the re-run of "a" returns at once
        queue.add("a")  # an event during the pass
        queue.interrupt()
        for _ in range(100):
            if results:
                break
            await asyncio.sleep(0.01)
        assert sorted(cleaned) == ["a", "b"] and calls == ["a", "b", "a"], calls
        assert results == ["requeue_after"], "the interrupted passes report nothing, the re-run does"
        assert not queue._dirty and not queue._passes and not queue._interrupted and list(queue._timers) == ["a"]
        queue.add("c")
        for _ in range(100):
            if len(results) == 2:
                break
            await asyncio.sleep(0.01)
        assert calls == ["a", "b", "a", "c"] and results == ["requeue_after"] * 2
    finally:
        await queue.stop()


async def test_stopping_the_queue_mid_pass_stops_its_workers_and_a_pass_cancelled_from_within_is_retried() -> None:
    started = asyncio.Event()
    attempts: list[str] = []

    async def worker(key: str) -> float | None:
        attempts.append(key)
        if key == "inner" and len(attempts) == 1:
            raise asyncio.CancelledError  # e.g. a library's own timeout leaking out: not an interrupt
        started.set()
        await asyncio.sleep(60)
        return None

    queue: WorkQueue[str] = WorkQueue(worker, concurrency=1, max_backoff=0.01)
    results: list[str] = []
    queue.on_result = lambda result, _seconds: results.append(result)
    queue.start()
    tasks = list(queue._tasks)
    queue.add("inner")
    await asyncio.wait_for(started.wait(), 5)
    assert attempts == ["inner", "inner"] and results == ["error"], "retried, and the worker lived on"
    await asyncio.wait_for(queue.stop(), 5)  # the pass in flight does not hold the worker up
    assert all(task.cancelled() for task in tasks) and queue._tasks == []
