"""A small async Kubernetes REST client for the benchmarks (aiohttp, keep-alive, client-cert auth).

The benchmarks need two things kubectl cannot give: hundreds of concurrent writes, and watch streams whose
events are stamped with the *arrival* time in this process (``time.perf_counter``), because
``lastTransitionTime`` has one-second resolution. Everything talks to the test bed on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

Obj = dict[str, Any]


class KubeError(Exception):
    """A non-2xx answer."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{method} {path}: HTTP {status}: {str(message)[:300]}")
        self.status = status
        self.body = body


def client_ssl(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


class Kube:
    """Async REST calls against one API server over a pool of keep-alive connections."""

    def __init__(self, base_url: str, ctx: ssl.SSLContext, *, limit: int = 32, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._ctx = ctx
        self._limit = limit
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ctx, limit=self._limit, keepalive_timeout=120)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, body: Any = None, *,
                      content_type: str = "application/json",
                      params: dict[str, str] | None = None) -> tuple[int, Any]:
        data: bytes | None = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with self.session.request(method, self.base_url + path, data=data, headers=headers,
                                        params=params, timeout=timeout) as resp:
            raw = await resp.read()
            if resp.content_type == "application/json":
                return resp.status, json.loads(raw or b"null")
            return resp.status, raw.decode("utf-8", "replace")

    async def create_namespace(self, name: str) -> None:
        await self.call("POST", "/api/v1/namespaces",
                        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, ok=(409,))

    async def delete_namespace(self, name: str, timeout: float) -> bool:
        """Deletes a namespace and waits until it is gone; False when it is still terminating at `timeout`."""
        await self.call("DELETE", f"/api/v1/namespaces/{name}", ok=(404,))
        deadline = time.perf_counter() + timeout
        while (await self.request("GET", f"/api/v1/namespaces/{name}"))[0] != 404:
            if time.perf_counter() > deadline:
                return False
            await asyncio.sleep(1.0)
        return True

    async def call(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (),
                   content_type: str = "application/json", params: dict[str, str] | None = None) -> Any:
        status, payload = await self.request(method, path, body, content_type=content_type, params=params)
        if 200 <= status < 300 or status in ok:
            return payload
        raise KubeError(method, path, status, payload)


@dataclass(frozen=True)
class WatchEvent:
    type: str
    obj: Obj
    arrived: float  # time.perf_counter() when the line was read


Handler = Callable[[WatchEvent], None]


class Watch:
    """One watch stream (list + watch from the list's resourceVersion), re-established on timeout.

    ``await start()`` returns once the initial list is done and the stream's response headers arrived,
    so nothing created after it is missed. ``handler`` runs on the loop for every event.
    """

    def __init__(self, kube: Kube, path: str, handler: Handler, *, label_selector: str | None = None) -> None:
        self.kube = kube
        self.path = path
        self.handler = handler
        self.label_selector = label_selector
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.errors: list[str] = []

    async def start(self, timeout: float = 30.0) -> None:
        params = {"labelSelector": self.label_selector} if self.label_selector else {}
        listed = await self.kube.call("GET", self.path, params=params)
        now = time.perf_counter()
        for item in listed.get("items") or []:
            self.handler(WatchEvent("ADDED", item, now))
        rv = str((listed.get("metadata") or {}).get("resourceVersion") or "")
        self._task = asyncio.create_task(self._run(rv), name=f"watch {self.path}")
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self, rv: str) -> None:
        while True:
            params = {"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": "600"}
            if rv:
                params["resourceVersion"] = rv
            if self.label_selector:
                params["labelSelector"] = self.label_selector
            try:
                timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
                async with self.kube.session.get(self.kube.base_url + self.path, params=params,
                                                 timeout=timeout) as resp:
                    if resp.status != 200:
                        self.errors.append(f"watch {self.path}: HTTP {resp.status}")
                        await asyncio.sleep(0.5)
                        continue
                    self._connected.set()
                    async for line in resp.content:
                        arrived = time.perf_counter()
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        kind = event.get("type", "")
                        if kind == "ERROR":  # e.g. 410 Gone: relist is the caller's business; restart fresh
                            self.errors.append(f"watch {self.path}: {obj.get('message')}")
                            rv = ""
                            break
                        rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                        if kind != "BOOKMARK":
                            self.handler(WatchEvent(kind, obj, arrived))
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                self.errors.append(f"watch {self.path}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2)


async def bounded_gather(limit: int, calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run the calls with at most ``limit`` in flight; exceptions are returned, not raised."""
    sem = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with sem:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)


def condition(obj: Obj, kind: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None


def server_ready(obj: Obj, kind: str = "Ready") -> bool:
    """Ready=True (or ``kind``=True) on a DittoServer, trusted only once observedGeneration caught up
    (SPEC §3.2)."""
    cond = condition(obj, kind)
    if cond is None or cond.get("status") != "True":
        return False
    generation = (obj.get("metadata") or {}).get("generation")
    observed = cond.get("observedGeneration", (obj.get("status") or {}).get("observedGeneration"))
    return generation is None or observed == generation


def pod_ready(obj: Obj) -> bool:
    cond = condition(obj, "Ready")
    return cond is not None and cond.get("status") == "True"
