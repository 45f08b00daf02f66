"""Polling until a condition holds: the one `eventually` of the test suites."""

from __future__ import annotations

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
