"""Counting the connections an aiohttp client opens: keep-alive is proven by one connection, not by answers."""

from __future__ import annotations

from types import SimpleNamespace

import aiohttp


class Connections:
    """``trace`` goes into ``ClientSession(trace_configs=[...])``; ``opened`` counts the connections it made."""

    def __init__(self) -> None:
        self.opened = 0
        self.trace = aiohttp.TraceConfig()
        self.trace.on_connection_create_end.append(self._created)

    async def _created(self, session: aiohttp.ClientSession, context: SimpleNamespace,
                       params: aiohttp.TraceConnectionCreateEndParams) -> None:
        self.opened += 1
