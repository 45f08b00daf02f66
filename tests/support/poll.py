"""Polling until a condition holds: the one `eventually` of the test suites, and `until` for async tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.3, what: str = "") -> T:
    """Poll until ``check`` returns a truthy value and return it; fail with the last value or exception."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
            last = value
            if value:
                return value
        except Exception as exc:  # the condition may raise until the object exists
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: last={last!r}")


async def until(check: Callable[[], object], timeout: float = 3.0) -> None:
    """Let the event loop run until ``check()`` is truthy (checked every 10 ms); fail after ``timeout``."""
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {timeout}s: {check}")
