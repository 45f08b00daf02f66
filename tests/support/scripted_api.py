"""A loopback HTTPS server that answers with scripted raw HTTP responses, and a client of the Gateway's own
making pointed at it (``load_client``: its TLS, token and pool), for tests of what the Gateway does on the wire."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certs.selfsigned import new_ca
from dittoctl.kube.gateway import load_client
from tests.support.admission import write_pair

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def kubeconfig(tmp_path: Path, port: int = 6443) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG.replace("127.0.0.1:6443", f"127.0.0.1:{port}"))
    return path


def response(status: str, body: bytes = b"{}", headers: str = "") -> bytes:
    """One raw HTTP/1.1 answer, e.g. ``response("429 Too Many Requests", headers="Retry-After: 1\\r\\n")``."""
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@dataclass
class ScriptedApi:
    served: list[bytes] = field(default_factory=list)
    """The request line's path of every request, in order."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the client hung up a connection."""
    client: Any = None


@contextlib.asynccontextmanager
async def scripted_api(tmp_path: Path, answer: Callable[[int], bytes]) -> AsyncIterator[ScriptedApi]:
    """``answer(n)`` is the raw response to the n-th request (from 0); connections are kept alive."""
    ca = new_ca()
    write_pair(tmp_path, ca)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    api = ScriptedApi()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:  # keep-alive: one request after another, until the client hangs up
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                               if line.startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                api.served.append(head.split(b" ", 2)[1])
                writer.write(answer(len(api.served) - 1))
                await writer.drain()
        api.closed.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    api.client = await load_client(str(kubeconfig(tmp_path, port)))
    try:
        yield api
    finally:
        await api.client.close()
        server.close()
