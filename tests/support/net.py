"""Loopback ports."""

from __future__ import annotations

import socket

_HANDED: set[int] = set()
"""Every port this process handed out: a port probed free and released can be probed free again before its taker
binds it (a CI run lost a test to it: the SMB port drawn before dfs started became dfs's API port)."""


def free_port(host: str = "127.0.0.1", avoid: set[int] | None = None) -> int:
    """A TCP port that was free on ``host`` a moment ago, never handed out before by this process, and not in
    ``avoid`` (which it then joins).

    ``avoid`` lets one caller hand out several ports that must differ from ports reserved for others (another
    process, e.g. the test bed's) even though each was released right after the probe.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port in _HANDED or (avoid is not None and port in avoid):
            continue
        _HANDED.add(port)
        if avoid is not None:
            avoid.add(port)
        return port
