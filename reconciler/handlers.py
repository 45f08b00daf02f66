"""kopf wiring: watch streams feed the cache and the work queue; kopf never patches our objects.

Only `@kopf.on.event` handlers are used: they keep no progress annotations and post no events of
their own, so an unchanged DittoServer costs zero API writes. Reconciliation itself runs in our
coalescing queue (level-based, one pass per key at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from dittoctl.api.conditions import EventReason
from dittoctl.api.kinds import DITTOSERVERS, PODS, Kind
from dittoctl.api.models import DittoServerSpec
from dittoctl.api.naming import INSTANCE_LABEL, Names, selector_string
from dittoctl.api.secrets import watched_secrets
from dittoctl.kube.events import EventRecorder
from dittoctl.kube.gateway import Gateway
from dittoctl.kube.logs import fields
from reconciler.cache import Cache, Key, key_of
from reconciler.context import Provisioning
from reconciler.owned import OBSERVED, SELECTOR, WATCHED_CHILDREN
from reconciler.queue import WorkQueue
from reconciler.reconcile import Reconciler
from reconciler.secret_watch import SecretWatch

log = logging.getLogger("dittofs.handlers")
PRIME_RELIST_SECONDS = 10.0


class Controller:
    """The reconciler half of the process: cache + queue + reconciler + drift timer."""

    def __init__(self, gateway: Gateway, *, workers: int = 8, drift_interval: float = 300.0,
                 cleanup_timeout: float = 60.0, namespaces: list[str] | None = None,
                 provisioning: Provisioning | None = None) -> None:
        self.gateway = gateway
        self.cache = Cache()
        self.recorder = EventRecorder(gateway)
        self.reconciler = Reconciler(gateway, self.cache, self.recorder, cleanup_timeout=cleanup_timeout,
                                     provisioning=provisioning)
        self.queue: WorkQueue[Key] = WorkQueue(self._work, concurrency=workers)
        self.drift_interval = drift_interval
        self.active = asyncio.Event()  # set while this replica may reconcile (leader)
        self.secret_watch = SecretWatch(gateway, self.on_secret, self.on_secret_reset, namespaces)
        self.namespaces: list[str | None] = list(namespaces or []) or [None]
        self.primed = asyncio.Event()  # kopf has delivered the first listing of every watched kind
        self._seen: set[tuple[str, str, str]] | None = set()  # (plural, namespace, name) kopf delivered
        self._pending: set[tuple[str, str, str]] | None = None  # listed, not delivered yet
        self._caught_up = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _work(self, key: Key) -> float | None:
        # No pass on a half-listed cache (a child not delivered yet looks absent), and none competing for
        # the CPU with kopf's first delivery of every object, which readiness waits for.
        await self.primed.wait()
        # Digests fetched before the Secret watch runs could miss a rotation in between.
        await self.secret_watch.started.wait()
        if not self.active.is_set():
            return None
        try:
            return await self.reconciler.reconcile(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The queue logs it and retries with backoff; the user sees it on the object (deduplicated).
            body = self.cache.servers.get(key)
            if body is not None:
                await self.recorder.post(body, "Warning", EventReason.RECONCILE_FAILED,
                                         f"reconcile failed, retrying with backoff: {type(exc).__name__}: {exc}"[:500])
            raise

    def start_background(self) -> None:
        """Drift timer and Secret watch: run on every replica (caches stay warm for a fast failover)."""
        self.queue.start()
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._drift(), name="drift-timer"),
                           asyncio.create_task(self.secret_watch.run(), name="secret-watch"),
                           asyncio.create_task(self._prime(), name="cache-prime")]

    async def _prime(self) -> None:
        """Readiness means "caches warm": kopf's ready flag rises before its watchers have listed anything,
        so list what exists (names only) and wait until kopf has delivered each listed object. Only kopf
        writes the cache (a listing of ours could be older than its events). An object deleted before kopf
        delivered it would be waited for forever, so a listing that is not caught up within
        ``PRIME_RELIST_SECONDS`` is taken again."""
        selector = selector_string(SELECTOR)
        kinds: list[tuple[Kind, str | None]] = [
            (DITTOSERVERS, None), *((k, selector) for k in WATCHED_CHILDREN), (PODS, selector)]
        backoff = 0.5
        while True:
            try:
                listings = await asyncio.gather(*(  # independent reads: one round trip, not six
                    self.gateway.list_keys(kind, namespace, label_selector=labels)
                    for namespace in self.namespaces for kind, labels in kinds))
            except Exception as exc:
                log.warning("first listing failed; retrying", extra=fields(error=f"{type(exc).__name__}: {exc}"[:200]))
                backoff = min(backoff * 2, 30.0)
                await asyncio.sleep(backoff)
                continue
            pairs = [pair for _ in self.namespaces for pair in kinds]
            self._pending = {(kind.plural, *key) for (kind, _labels), keys in zip(pairs, listings, strict=True)
                             for key in keys} - (self._seen or set())
            self._caught_up.clear()
            if self._pending:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PRIME_RELIST_SECONDS):
                        await self._caught_up.wait()
            if not self._pending:
                self._seen = self._pending = None  # stop recording: only the first listing matters
                self.primed.set()
                log.info("caches warm", extra=fields(servers=len(self.cache.servers)))
                return

    def _saw(self, plural: str, key: Key) -> None:
        if self._seen is None:
            return
        self._seen.add((plural, *key))
        if self._pending is not None:
            self._pending.discard((plural, *key))
            if not self._pending:
                self._caught_up.set()

    def start(self) -> None:
        self.active.set()
        self.start_background()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.queue.stop()

    def resume(self) -> None:
        """Became leader: reconcile everything we know."""
        self.active.set()
        for key in list(self.cache.servers):
            self.queue.add(key)

    async def _drift(self) -> None:
        while True:
            await asyncio.sleep(self.drift_interval)
            await self.reconciler.discovery.refresh()
            for key in list(self.cache.servers):
                self.queue.add(key)

    # -- watch events -------------------------------------------------------------------------------------
    def on_server(self, event_type: str | None, body: dict[str, Any]) -> None:
        key = key_of(body)
        self._saw(DITTOSERVERS.plural, key)
        if event_type == "DELETED":
            self.cache.drop_server(key)
            self.queue.forget(key)
            return
        if _echo(self.cache.servers.get(key), body):
            return  # the watch echoing our own write (already cached from its response)
        self.cache.put_server(body)
        try:
            spec = DittoServerSpec.model_validate(body.get("spec") or {})
            self.cache.set_refs(key, watched_secrets(spec, Names(key[1], key[0], "")))
        except ValueError:
            self.cache.set_refs(key, ())
        self.queue.add(key)

    def on_child(self, kind: Kind, event_type: str | None, body: dict[str, Any]) -> None:
        key = key_of(body)
        self._saw(kind.plural, key)
        if event_type == "DELETED":
            self.cache.drop_child(kind, key)
        elif _echo(self.cache.child(kind, *key), body):
            return
        else:
            self.cache.put_child(kind, body)
        instance = (body.get("metadata", {}).get("labels") or {}).get(INSTANCE_LABEL)
        if instance and (key[0], instance) in self.cache.servers:
            self.queue.add((key[0], instance))

    def on_pod(self, event_type: str | None, body: dict[str, Any]) -> None:
        self._saw(PODS.plural, key_of(body))
        if event_type == "DELETED":
            self.cache.drop_pod(body)
        else:
            self.cache.put_pod(body)
        instance = (body.get("metadata", {}).get("labels") or {}).get(INSTANCE_LABEL)
        namespace = body.get("metadata", {}).get("namespace", "")
        if instance and (namespace, instance) in self.cache.servers:
            self.queue.add((namespace, instance))

    def on_secret(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        namespace = str(body.get("metadata", {}).get("namespace", ""))
        for server in self.cache.secret_event(body, deleted=event_type == "DELETED"):
            self.queue.add((namespace, server))

    def on_secret_reset(self) -> None:
        self.cache.secrets.clear()
        for namespace, secret in list(self.cache.secret_refs):
            for server in self.cache.secret_refs.get((namespace, secret), ()):
                self.queue.add((namespace, server))


def _echo(cached: Mapping[str, Any] | None, body: Mapping[str, Any]) -> bool:
    """Same resourceVersion as the cached copy: nothing new (typically our own write coming back)."""
    if cached is None:
        return False
    version = (body.get("metadata") or {}).get("resourceVersion")
    return version is not None and version == (cached.get("metadata") or {}).get("resourceVersion")


class _NoDiffBase(kopf.DiffBaseStorage):
    """Only event handlers, so nothing is ever diffed: kopf would otherwise deep-copy every watched object
    into an "essence" per event (the largest share of its CPU in the 300 burst profile)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


class _NoProgress(kopf.ProgressStorage):
    """No handler progress to keep (event handlers are one-shot): no per-event deep copy to clear it."""

    def fetch(self, *, key: Any, body: kopf.Body) -> None:
        return None

    def store(self, *, key: Any, record: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        return None

    def purge(self, *, key: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        return None

    def touch(self, *, body: kopf.Body, patch: kopf.Patch, value: str | None) -> None:
        return None

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        return essence


def configure_persistence(settings: kopf.OperatorSettings) -> None:
    settings.persistence.diffbase_storage = _NoDiffBase()
    settings.persistence.progress_storage = _NoProgress()


def configure_watching(settings: kopf.OperatorSettings) -> None:
    """Server-side label selectors: kopf keeps a record per watched object, so only ours are watched."""
    selector = selector_string(SELECTOR)
    for kind in (*WATCHED_CHILDREN, *(o.kind for o in OBSERVED)):  # plurals are unique across our groups
        settings.watching.label_selectors[kind.plural] = selector


def register(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    """Attach the watch handlers of `controller` to a kopf registry: the DittoServers, every watched child
    kind of the registry (reconciler/owned.py), and the server pods."""
    @kopf.on.event(DITTOSERVERS.group, DITTOSERVERS.version, DITTOSERVERS.plural, registry=registry)
    async def server_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.on_server(type, dict(body))

    def child_handler(kind: Kind) -> Any:
        async def child_event(type: str | None, body: kopf.Body, **_: Any) -> None:
            controller.on_child(kind, type, dict(body))
        child_event.__name__ = f"{kind.plural}_event"
        return child_event

    for kind in WATCHED_CHILDREN:
        kopf.on.event(kind.group, kind.version, kind.plural, labels=SELECTOR, registry=registry,
                      id=f"{kind.plural}-watch")(child_handler(kind))

    @kopf.on.event(PODS.group, PODS.version, PODS.plural, labels=SELECTOR, registry=registry)
    async def pod_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.on_pod(type, dict(body))
