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


async def test_a_failure_is_raised_once_the_others_have_ended() -> None:
    """A pass whose NetworkPolicy apply failed left its StatefulSet apply running beside the retried pass; the
    StatefulSet apply is not cut short either (a refused sibling would have kept it from ever landing)."""
    finished: list[str] = []

    async def slow_write() -> None:
        await asyncio.sleep(0.05)
        finished.append("write")

    async def refused() -> None:
        await asyncio.sleep(0.01)
        raise NamespaceTerminating(403, "being terminated")

    with pytest.raises(NamespaceTerminating):  # the error itself, not a group: the queue tells errors apart
        await together(slow_write(), refused())
    assert finished == ["write"]


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


async def test_an_error_returned_as_a_value_is_a_result_not_a_failure() -> None:
    """apply_config_map returns the API's refusal (ConfigReady reports it); it must not fail the pass."""
    async def refusal() -> ValueError:
        return ValueError("quota")

    async def fine() -> int:
        return 1

    returned, one = await together(refusal(), fine())
    assert isinstance(returned, ValueError) and one == 1
