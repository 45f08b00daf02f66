"""Loopback ports."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1", avoid: set[int] | None = None) -> int:
    """A TCP port that was free on ``host`` a moment ago and is not in ``avoid`` (which it then joins).

    ``avoid`` lets one caller hand out several ports that must differ from each other (and from ports
    reserved for others) even though each was released right after the probe.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if avoid is None:
            return port
        if port not in avoid:
            avoid.add(port)
            return port
