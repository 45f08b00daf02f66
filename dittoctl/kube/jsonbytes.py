"""JSON encoding for the wire and the logs: orjson, and the standard library where orjson refuses."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    try:
        return orjson.dumps(value, default=default)
    except TypeError:  # an integer beyond 64 bits, which orjson refuses
        return json.dumps(value, default=default).encode()
