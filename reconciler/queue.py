"""A coalescing work queue: one key is never reconciled twice at once, and a burst of watch events for
the same DittoServer collapses into one pass (controller-runtime's workqueue semantics)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from dittoctl.kube.gateway import NamespaceTerminating
from dittoctl.kube.logs import fields

K = TypeVar("K")
log = logging.getLogger("dittofs.queue")


class WorkQueue(Generic[K]):
    def __init__(self, worker: Callable[[K], Awaitable[float | None]], concurrency: int = 4,
                 max_backoff: float = 60.0) -> None:
        self._worker = worker
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._failures: dict[K, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._passes: dict[K, asyncio.Future[float | None]] = {}
        self._interrupted: set[K] = set()
        self._concurrency = concurrency
        self._max_backoff = max_backoff
        self.on_result: Callable[[str, float], None] | None = None
        self.passes = 0
        """Passes finished so far (any result)."""

    def add(self, key: K) -> None:
        if key in self._active:
            self._dirty.add(key)  # re-run once the current pass ends
            return
        if key in self._queued:
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._queued.add(key)
        self._queue.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        if key in self._queued or key in self._timers:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def interrupt(self) -> None:
        """Cancels the passes in flight, with no result and no retry (leadership lost: once the Lease expires
        another replica reconciles the same servers, so no pass of ours may go on writing; the next leader's
        first passes, ours included after a `Controller.resume`, redo them). The workers go on."""
        for key, running in self._passes.items():
            self._interrupted.add(key)
            running.cancel()

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing running (a key waiting on a retry timer is neither)."""
        return not self._queued and not self._active

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run(), name=f"reconcile-worker-{i}")
                           for i in range(self._concurrency)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _retry_after(self, key: K) -> float:
        """Exponential backoff per key: 0.5 s doubling up to the maximum."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        # The exponent is capped: 2 ** 1024 overflows a float, and a server failing for a day got there.
        return float(min(0.5 * 2 ** min(failures - 1, 32), self._max_backoff))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            started = loop.time()
            requeue: float | None = None
            running = self._passes[key] = asyncio.ensure_future(self._worker(key))
            try:
                requeue = await running
                self._failures.pop(key, None)
                result = "requeue_after" if requeue else "success"
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the queue is stopping (the pass was cancelled with its worker)
                if key in self._interrupted:
                    log.info("pass interrupted", extra=fields(key=str(key)))
                    result = ""  # no result, no retry; an event meanwhile (or `Controller.resume`) re-runs it below
                else:  # cancelled from within: a failure like any other
                    requeue = self._retry_after(key)
                    log.error("reconcile cancelled; retrying in %.1fs", requeue, extra=fields(key=str(key)))
                    result = "error"
            except NamespaceTerminating:
                # The namespace controller is deleting the server too; its deletion pass will run.
                requeue = self._retry_after(key)
                log.info("namespace is being deleted; retrying in %.1fs", requeue, extra=fields(key=str(key)))
                result = "requeue_after"
            except Exception:
                requeue = self._retry_after(key)
                log.exception("reconcile failed; retrying in %.1fs", requeue, extra=fields(key=str(key)))
                result = "error"
            finally:
                del self._passes[key]
                self._interrupted.discard(key)
                self._active.discard(key)
                self.passes += 1
            if self.on_result is not None and result:
                try:
                    self.on_result(result, loop.time() - started)
                except Exception:  # a metric must never take a worker with it
                    log.exception("recording a pass result failed")
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            elif requeue:
                self.add_after(key, requeue)
