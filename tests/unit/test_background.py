"""dittoctl.kube.background: the loop shape and `together`, the gather that leaves nothing running."""

from __future__ import annotations

import asyncio

import pytest

from dittoctl.kube.background import together
from dittoctl.kube.gateway import NamespaceTerminating


async def test_together_returns_every_result_in_order() -> None:
    async def value(v: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return v

    assert await together(value(1, 0.02), value(2, 0), value(3, 0.01)) == [1, 2, 3]
    assert await together() == []


async def test_a_failure_cancels_and_awaits_the_others_before_its_error_is_raised() -> None:
    """A pass whose NetworkPolicy apply failed left its StatefulSet apply running beside the retried pass."""
    finished: list[str] = []
    cancelled: list[str] = []

    async def slow_write() -> None:
        try:
            await asyncio.sleep(0.5)
            finished.append("write")
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # cleanup that takes a moment: awaited before the error is raised
            cancelled.append("write")
            raise

    async def refused() -> None:
        await asyncio.sleep(0.01)
        raise NamespaceTerminating(403, "being terminated")

    with pytest.raises(NamespaceTerminating):  # the error itself, not a group: the queue tells errors apart
        await together(slow_write(), refused())
    assert cancelled == ["write"] and finished == []
    await asyncio.sleep(0.6)
    assert finished == []


async def test_cancelling_the_caller_cancels_every_call() -> None:
    started, cancelled = asyncio.Event(), []

    async def call(name: str) -> None:
        started.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    outer = asyncio.ensure_future(together(call("a"), call("b")))
    await started.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert sorted(cancelled) == ["a", "b"]
