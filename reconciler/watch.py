"""The watch streams the operator runs itself; kopf drives only the DittoServers.

kopf passes every event through its per-object machinery (a worker task, memory records, batching), which
was a fifth of the operator's CPU in the 300-server burst, spent on children and pods whose events only
need to land in the cache. A `Watch` lists (in pages), then streams from the listing's version with
bookmarks, handing each object to a callback and keeping nothing of it but its key and the labels that route
it (interned: an event that changes neither adds no object that outlives it, so a burst's freed memory is not
pinned by small survivors).

When the stream expires (410 Gone), events may have been missed: a listing watch lists again and reports
the objects that vanished as deleted; a version-only watch (other people's Secrets: thousands in a cluster,
almost none of them read by us, so never listed) calls `on_reset` instead. A watch whose listing is only
useful once something else is known (the operator's own Secrets: a listed Secret no DittoServer references
yet is dropped) waits for it with `after`.

A listing answered 404 means the API does not serve the kind (its CRD is not installed, or was deleted): a watch
of an optional kind (``on_gone``) then ends, and any other retries with backoff, never in a tight loop. One
refused (403) ends too when it can do without (``on_forbidden``: an optional kind, read with a GET instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from dittoctl.api.kinds import Kind
from dittoctl.api.naming import INSTANCE_LABEL
from dittoctl.kube.gateway import ApiError, Gateway, NotFound
from dittoctl.kube.logs import described, fields
from reconciler.cache import Key, key_of

log = logging.getLogger("dittofs.watch")
Handler = Callable[[str, dict[str, Any]], None]
WATCH_SECONDS = 290
# Objects per listing page. A page is decoded at once, and what outlives it (each object's cache entry) pins the
# memory it was decoded in: 50 instead of 250 took the RSS 10 s after a restart at 300 servers from 112 to 100 MiB.
PAGE = 50
# A healthy stream ends by itself every WATCH_SECONDS (the client gives up 30 s later), and a failing one is
# retried within 30 s: silence beyond that means the loop is stuck.
STALE_SECONDS = WATCH_SECONDS + 30 + 30 + 60


class Watch:
    """One kind, cluster-wide or one stream per watched namespace (the RBAC may be namespaced then)."""

    def __init__(self, gateway: Gateway, kind: Kind, on_event: Handler, *, namespaces: list[str] | None = None,
                 label_selector: str | None = None, listing: bool = True,
                 on_reset: Callable[[], None] | None = None,
                 after: asyncio.Event | None = None, on_gone: Callable[[], None] | None = None,
                 on_forbidden: Callable[[], None] | None = None) -> None:
        self.gw = gateway
        self.kind = kind
        self.on_event = on_event
        self.on_reset = on_reset
        self.listing = listing
        self.label_selector = label_selector
        self.kept_labels = (INSTANCE_LABEL,)
        """What a vanished object is reported with (its own labels are gone with it)."""
        self.after = after
        """Listing waits for this (None: lists at once)."""
        self.on_gone = on_gone
        """Called when a listing finds the kind not served; the watch then ends (None: it retries)."""
        self.on_forbidden = on_forbidden
        """Called when a listing is refused (403); the watch then ends (None: it retries)."""
        self.namespaces: list[str | None] = list(namespaces or []) or [None]
        self.started = asyncio.Event()
        """Every namespace listed (or, without listing, its current version taken)."""
        self.last_activity = time.monotonic()
        """Last (re)connect, event, bookmark or stream end; liveness fails when it is older than STALE."""
        self.error: str | None = None
        """Why the last attempt failed, until a listing succeeds (readiness names it)."""
        self._pending = set(self.namespaces)
        # namespace -> key -> kept labels of every object delivered and not deleted (listing watches only)
        self._known: dict[str | None, dict[Key, tuple[tuple[str, str], ...]]] = {}

    async def run(self) -> None:
        if self.after is not None:
            await self.after.wait()
            self.last_activity = time.monotonic()
        await asyncio.gather(*(self._run(namespace) for namespace in self.namespaces))

    def stale_for(self) -> float | None:
        """Seconds of silence beyond STALE_SECONDS, or None while the stream is alive. Waiting for ``after`` is
        not silence: what it waits for (the DittoServer CRD, kopf's first delivery) is readiness's to report,
        and a restart would not bring it sooner."""
        if self.after is not None and not self.after.is_set():
            return None
        silent = time.monotonic() - self.last_activity
        return silent if silent > STALE_SECONDS else None

    async def _list(self, namespace: str | None) -> str:
        """Delivers the current objects (and the vanished ones as deleted); returns the listing's version."""
        if not self.listing:
            async with contextlib.aclosing(self.gw.pages(self.kind, namespace, limit=1)) as pages:
                async for page in pages:
                    return str((page.get("metadata") or {}).get("resourceVersion") or "")
        version = ""
        known = self._known.get(namespace) or {}
        listed: dict[Key, tuple[tuple[str, str], ...]] = {}
        async for page in self.gw.pages(self.kind, namespace, label_selector=self.label_selector, limit=PAGE):
            version = str((page.get("metadata") or {}).get("resourceVersion") or version)
            for obj in page.get("items") or ():
                # A list's items carry no type of their own; what is compared with a manifest must.
                obj.setdefault("apiVersion", self.kind.api_version)
                obj.setdefault("kind", self.kind.kind)
                key, labels = self._kept(obj)
                old = known.get(key)
                listed[key] = old if old == labels else labels  # the one already kept, when equal
                self.on_event("ADDED", obj)
        for (ns, name), labels in known.items():
            if (ns, name) not in listed:
                self.on_event("DELETED", {"metadata": {"namespace": ns, "name": name, "labels": dict(labels)}})
        self._known[namespace] = listed
        return version

    def _kept(self, obj: Mapping[str, Any]) -> tuple[Key, tuple[tuple[str, str], ...]]:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        kept = tuple((name, sys.intern(str(labels[name]))) for name in self.kept_labels if name in labels)
        return key_of(obj), kept

    def _deliver(self, namespace: str | None, event_type: str, obj: dict[str, Any]) -> None:
        if self.listing:
            key, labels = self._kept(obj)
            known = self._known.setdefault(namespace, {})
            if event_type == "DELETED":
                known.pop(key, None)
            elif known.get(key) != labels:
                known[key] = labels
        self.on_event(event_type, obj)

    def _listed(self, namespace: str | None) -> None:
        self._pending.discard(namespace)
        if not self._pending:
            self.started.set()

    def _expired(self) -> None:
        """The resume version is too old: list again (what vanished meanwhile is delivered as DELETED)."""
        log.info("%s watch expired; listing again", self.kind.plural, extra=fields(kind=self.kind.kind))
        if self.on_reset is not None:
            self.on_reset()

    async def _run(self, namespace: str | None) -> None:
        version: str | None = None
        backoff = 0.5
        while True:
            try:
                if version is None:
                    version = await self._list(namespace)
                    self._listed(namespace)
                    self.error = None
                self.last_activity = time.monotonic()
                async for event in self.gw.watch(self.kind, version, timeout_seconds=WATCH_SECONDS,
                                                 namespace=namespace, label_selector=self.label_selector):
                    self.last_activity = time.monotonic()
                    event_type = str(event.get("type"))
                    obj = event.get("object") or {}
                    if event_type == "ERROR":  # 410: the version expired, listed again below
                        raise ApiError(int(obj.get("code") or 0), str(obj.get("message")))
                    backoff = 0.5  # the stream worked: a drop after this (a proxy's idle cut) is not a failing loop
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if event_type != "BOOKMARK":
                        self._deliver(namespace, event_type, obj)
                self.last_activity = time.monotonic()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except NotFound as exc:
                if version is not None:
                    version = None
                    self._expired()
                    continue
                if self.on_gone is not None:  # the listing itself: the kind is not served
                    log.info("%s not served; watch ended", self.kind.plural, extra=fields(kind=self.kind.kind))
                    self.on_gone()
                    return
                log.warning("%s not served; retrying", self.kind.plural, extra=fields(kind=self.kind.kind))
                self.error = described(exc)
                self.last_activity = time.monotonic()  # retrying is alive: `error` and readiness say what fails
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            except (ApiError, OSError, ValueError) as exc:
                if isinstance(exc, ApiError) and exc.status == 410 and version is not None:
                    version = None  # refused by an ERROR event or an HTTP status
                    self._expired()
                    continue
                if isinstance(exc, ApiError) and exc.status == 403 and version is None and self.on_forbidden:
                    self.on_forbidden()
                    return
                log.warning("%s watch interrupted; retrying", self.kind.plural,
                            extra=fields(kind=self.kind.kind, error=str(exc)[:200]))
                self.error = described(exc)
                self.last_activity = time.monotonic()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as exc:  # a defect (an odd event, a handler's bug): the stream must not end unnoticed
                log.exception("%s watch failed; retrying", self.kind.plural, extra=fields(kind=self.kind.kind))
                self.error = described(exc)
                self.last_activity = time.monotonic()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
