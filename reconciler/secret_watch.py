"""A Secret watch that keeps nothing per Secret.

kopf keeps a small memory record for every object it watches; for Secrets (thousands in a real
cluster, almost none of them ours) that grows with the cluster. This watch streams events, hands each
to the cache (which digests only referenced Secrets) and drops it. There is no initial listing: a
referenced Secret missing from the cache is fetched by a point GET, so only changes matter here. When
the watch expires (410 Gone) events may have been missed, so the digest cache is dropped and every
DittoServer that references a Secret is reconciled again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from dittoctl.api.kinds import SECRETS
from dittoctl.kube.gateway import ApiError, Gateway, NotFound
from dittoctl.kube.logs import fields

log = logging.getLogger("dittofs.secrets")
Handler = Callable[[str, dict[str, object]], None]
WATCH_SECONDS = 290
# A healthy stream ends by itself every WATCH_SECONDS (the client gives up 30 s later), and a failing one is
# retried within 30 s: silence beyond that means the loop is stuck.
STALE_SECONDS = WATCH_SECONDS + 30 + 30 + 60


class SecretWatch:
    """Cluster-wide, or one stream per watched namespace (the RBAC may be namespaced then)."""

    def __init__(self, gateway: Gateway, on_event: Handler, on_reset: Callable[[], None],
                 namespaces: list[str] | None = None) -> None:
        self.gw = gateway
        self.on_event = on_event
        self.on_reset = on_reset
        self.namespaces: list[str | None] = list(namespaces or []) or [None]
        self.started = asyncio.Event()
        self.last_activity = time.monotonic()
        """Last (re)connect, event, bookmark or stream end; liveness fails when it is older than STALE."""
        self._pending = set(self.namespaces)

    async def _current_version(self, namespace: str | None) -> str:
        listing = await self.gw._call("GET", SECRETS.path(namespace), query=[("limit", "1")])
        return str(listing.get("metadata", {}).get("resourceVersion", ""))

    async def run(self) -> None:
        await asyncio.gather(*(self._run(namespace) for namespace in self.namespaces))

    def stale_for(self) -> float | None:
        """Seconds of silence beyond STALE_SECONDS, or None while the stream is alive."""
        silent = time.monotonic() - self.last_activity
        return silent if silent > STALE_SECONDS else None

    def _listed(self, namespace: str | None) -> None:
        self._pending.discard(namespace)
        if not self._pending:
            self.started.set()

    async def _run(self, namespace: str | None) -> None:
        version: str | None = None
        backoff = 0.5
        while True:
            try:
                if version is None:
                    version = await self._current_version(namespace)
                    self._listed(namespace)
                self.last_activity = time.monotonic()
                async for event in self.gw.watch(SECRETS, version, timeout_seconds=WATCH_SECONDS,
                                                 namespace=namespace):
                    self.last_activity = time.monotonic()
                    kind = str(event.get("type"))
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise NotFound("watch expired")
                        raise ApiError(int(obj.get("code") or 0), str(obj.get("message")))
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if kind != "BOOKMARK":
                        self.on_event(kind, obj)
                self.last_activity = time.monotonic()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except NotFound:
                log.info("Secret watch expired; resynchronising referenced Secrets")
                version = None
                self.on_reset()
            except (ApiError, OSError, ValueError) as exc:
                log.warning("Secret watch interrupted; retrying", extra=fields(error=str(exc)[:200]))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
