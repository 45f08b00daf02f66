"""The one shape of a long-lived loop: started once, cancelled and awaited on stop, never leaked."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


class Background:
    """A named task around `body`; `start()` twice runs it once, `stop()` before `start()` is a no-op."""

    def __init__(self, name: str, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.name = name
        self._body = body
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._body(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def together(*calls: Awaitable[Any]) -> list[Any]:
    """``asyncio.gather``, except that the first call's error is raised only once every other call has ended: a
    failed pass leaves no write of its own in flight when the next pass starts (gather raised at once and left
    them running). The others run to their end (a StatefulSet apply, an expansion's orphan delete are not cut
    short by a refused NetworkPolicy); cancelling the caller (the Lease lost, the process stopping) cancels
    them all, and waits for them too."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        await asyncio.gather(*tasks, return_exceptions=True)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    # Asked of each task, not of the results: a call may return an error as its value (a refused ConfigMap).
    for task in tasks:
        if task.cancelled():
            raise asyncio.CancelledError()
        if (error := task.exception()) is not None:
            raise error
    return [task.result() for task in tasks]
