"""Watch wiring: kopf streams the DittoServers, our own `Watch` streams their children, pods and Secrets;
all feed the cache and the work queue, and nothing here patches our objects.

Only a `@kopf.on.event` handler is used: it keeps no progress annotations and posts no events of its
own, so an unchanged DittoServer costs zero API writes. Reconciliation itself runs in our coalescing
queue (level-based, one pass per key at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import kopf

from dittoctl.api.conditions import EventReason
from dittoctl.api.kinds import CRD_NOT_SERVED, DITTOSERVERS, PODS, SECRETS, STATEFULSETS, Kind
from dittoctl.api.models import DittoServerSpec
from dittoctl.api.naming import INSTANCE_LABEL, Names, selector_string
from dittoctl.api.secrets import watched_secrets
from dittoctl.kube.events import EventRecorder
from dittoctl.kube.gateway import Gateway
from dittoctl.kube.heap import trimmer
from dittoctl.kube.logs import described, fields
from reconciler.cache import Cache, Key, key_of, version_of
from reconciler.context import Provisioning
from reconciler.owned import FOLLOWED_CHILDREN, SELECTOR, WATCHED_CHILDREN
from reconciler.queue import WorkQueue
from reconciler.reconcile import Reconciler
from reconciler.status import statefulset_news
from reconciler.watch import Watch

log = logging.getLogger("dittofs.handlers")
PRIME_RELIST_SECONDS = 10.0
SERVED_POLL = (0.5, 5.0)  # seconds between discovery checks while the DittoServer CRD is missing: first, most
CRD_MISSING = f"{CRD_NOT_SERVED}; the operator starts watching as soon as it is served"
TRIM_SECONDS = 2.0  # a settled operator's check is a counter comparison; a trim follows work within 2 s


# Whether a pass could read anything new from a child's update (old, new, the server's pods, whether the pass would
# report a status), for the kinds whose updates are mostly status that only the server's status derives from; any
# other kind's update is news.
News = Callable[[Mapping[str, Any] | None, Mapping[str, Any], Sequence[Mapping[str, Any]], bool], bool]
CHILD_NEWS: Mapping[Kind, News] = {STATEFULSETS: statefulset_news}


def watch_streams(namespaces: list[str] | None) -> int:
    """Connections the controller's watches hold open: one per streamed kind (the children, the optional kinds
    while served, pods, and two for Secrets: the operator's own and the others) and watched namespace."""
    return (len(WATCHED_CHILDREN) + len(FOLLOWED_CHILDREN) + 3) * max(1, len(namespaces or []))


def due_for_drift(servers: Iterable[Key], compared: Mapping[Key, float], *, since: float,
                  everything: bool = False) -> list[Key]:
    """The servers a drift tick queues: those no pass began comparing at or after ``since``."""
    return [key for key in servers if everything or compared.get(key, -math.inf) < since]


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
        self.reconciler.shared.requeue = self.reconciler.shared.service_lane.wake = self.queue.add
        self.drift_interval = drift_interval
        self._compared: dict[Key, float] = {}  # server -> when a pass since the last drift tick started
        self.active = asyncio.Event()  # set while this replica may reconcile (leader)
        self._watch_namespaces = namespaces
        selector = selector_string(SELECTOR)
        self.servers_known = asyncio.Event()  # kopf has delivered every DittoServer listed at the start
        # The Secrets the operator generates are listed, so that a restart reads their digests in pages and
        # does not GET two per server (659 GETs in 2 s at 300 servers, whose peak fragmented the heap for
        # good). A listed Secret no cached DittoServer references is dropped, so the listing waits for them.
        # Every other Secret in the cluster is only streamed from now on.
        secret_watches = [
            Watch(gateway, SECRETS, self.on_secret, namespaces=namespaces, label_selector=selector,
                  after=self.servers_known),
            Watch(gateway, SECRETS, self.on_secret, namespaces=namespaces, listing=False,
                  label_selector=selector_string(SELECTOR, negated=True), on_reset=self.on_secret_reset),
        ]
        self.watches = [
            *(self._child_watch(kind) for kind in WATCHED_CHILDREN),
            Watch(gateway, PODS, self.on_pod, namespaces=namespaces, label_selector=selector),
            *secret_watches,
        ]
        self.followed: dict[Kind, tuple[Watch, asyncio.Task[None]]] = {}
        """Optional kinds watched while their CRD is served (``_follow``)."""
        self.reconciler.discovery.on_change = self._follow
        self.namespaces: list[str | None] = list(namespaces or []) or [None]
        self.primed = asyncio.Event()  # every watch listed, and kopf has delivered every listed DittoServer
        self.crd_served = asyncio.Event()  # kopf may start: it resolves the DittoServer resource only once
        self.waiting: str | None = None  # why the caches cannot be warm yet (the CRD, a failed listing), for /readyz
        self._seen: set[Key] | None = set()  # DittoServers kopf delivered
        self._pending: set[Key] | None = None  # listed, not delivered yet
        self._caught_up = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.trim = trimmer()

    async def _work(self, key: Key) -> float | None:
        # No pass on a half-listed cache (a child not delivered yet looks absent; a Secret digest fetched
        # before the Secret watch runs could miss a rotation in between), and none competing for the CPU
        # with the first listings, which readiness waits for.
        await self.primed.wait()
        lane = self.reconciler.shared.service_lane
        if not self.active.is_set():
            lane.forget(key)  # slots set aside for this pass would stay taken: ``resume`` queues it afresh
            if key not in self.cache.servers:
                await self.reconciler.forget(key)  # gone while another replica led: nothing to write, only to free
            return None
        started = lane.wakes
        began = time.monotonic()
        try:
            after = await self.reconciler.reconcile(key)
            self._compared[key] = began
            return after
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The queue logs it and retries with backoff; the user sees it on the object (deduplicated).
            body = self.cache.server(key)
            if body is not None:
                await self.recorder.post(body, "Warning", EventReason.RECONCILE_FAILED,
                                         f"reconcile failed, retrying with backoff: {described(exc, 500)}"[:500])
            raise
        finally:
            lane.release(key, started)

    def start_background(self) -> None:
        """Every watch, the drift timer, the wait for the CRD, the memory trimmer and the cache prime: run on every
        replica (caches stay warm for a fast failover)."""
        self.queue.start()
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._until_served(), name="crd-served"),
                           asyncio.create_task(self._drift(), name="drift-timer"),
                           asyncio.create_task(self._release_memory(), name="release-memory"),
                           *(asyncio.create_task(w.run(), name=f"{w.kind.plural}-watch") for w in self.watches),
                           asyncio.create_task(self._prime(), name="cache-prime")]

    async def _release_memory(self, every: float = TRIM_SECONDS) -> None:
        """Once the passes stop after some work (a burst, a drift pass), hand the heap they freed back to the
        OS; a settled operator does nothing here."""
        trimmed = self.queue.passes
        while True:
            await asyncio.sleep(every)
            if self.queue.passes != trimmed and self.queue.idle:
                trimmed = self.queue.passes
                # What the last passes derived only helps passes that follow each other closely; settled, it
                # is ~3.5 MiB of builds nobody reads before the next drift pass rebuilds them anyway.
                self.reconciler.shared.forget()
                if self.trim is not None:
                    self.trim()

    def _child_watch(self, kind: Kind, on_gone: Callable[[], None] | None = None,
                     on_forbidden: Callable[[], None] | None = None) -> Watch:
        """The label-selected stream of one child kind into the cache."""
        return Watch(self.gateway, kind, functools.partial(self.on_child, kind), namespaces=self._watch_namespaces,
                     label_selector=selector_string(SELECTOR), on_gone=on_gone, on_forbidden=on_forbidden)

    def stale_watches(self) -> list[tuple[str, float]]:
        """(plural, seconds silent) of every stream that has gone quiet for too long."""
        return [(w.kind.plural, silent) for w in (*self.watches, *(w for w, _ in self.followed.values()))
                if (silent := w.stale_for()) is not None]

    def _follow(self, kind: Kind, served: bool) -> None:
        """Discovery changed its answer about an optional kind: watch it while it is served. Passes read its
        children from the cache once the watch has listed (``Shared.follows``), with a GET before; the watch
        ends by itself when a listing finds the CRD gone, and its cached children go with it."""
        if kind not in FOLLOWED_CHILDREN:
            return
        if served and kind not in self.followed:
            watch = self._child_watch(kind, on_gone=functools.partial(self.reconciler.discovery.forget, kind),
                                      on_forbidden=functools.partial(self._refused, kind))
            self.followed[kind] = (watch, asyncio.create_task(watch.run(), name=f"{kind.plural}-watch"))
            self.reconciler.shared.followed[kind] = watch.started
            log.info("%s served; watching them", kind.plural, extra=fields(kind=kind.kind))
        elif not served and kind in self.followed:
            self._unfollow(kind)
            log.info("%s no longer served; watch stopped", kind.plural, extra=fields(kind=kind.kind))

    def _refused(self, kind: Kind) -> None:
        """The operator may not list or watch an optional kind (a ClusterRole older than the chart's): passes
        read its objects with a GET each, as before these watches, instead of a watch retrying 403s forever."""
        if kind in self.followed:
            self._unfollow(kind)
            log.warning("%s: no permission to list and watch them; each pass reads them with a GET instead. Grant "
                        "list and watch on %s.%s (the chart's ClusterRole does) and restart the operator",
                        kind.plural, kind.plural, kind.group, extra=fields(kind=kind.kind))

    def _unfollow(self, kind: Kind) -> None:
        _, task = self.followed.pop(kind)
        task.cancel()
        del self.reconciler.shared.followed[kind]
        self.cache.drop_kind(kind)

    async def _until_served(self) -> None:
        """kopf resolves the DittoServer resource once, when it starts (its scanning is off: no cluster-wide CRD
        watch, and no RBAC for one). Started before the CRD, the process turned ready and never watched a
        DittoServer. So kopf and the first listing wait until discovery serves the CRD, and until then
        readiness says what is missing and how to fix it."""
        (delay, most), missed = SERVED_POLL, False
        while True:
            try:
                if await self.gateway.served(DITTOSERVERS):
                    break
                if not missed:
                    log.error(CRD_MISSING)
                missed = True
                self.waiting = CRD_MISSING
            except Exception as exc:
                error = described(exc)
                log.warning("discovery failed; retrying", extra=fields(error=error))
                self.waiting = f"discovery of the DittoServer API failed (retrying): {error}"
            await asyncio.sleep(delay)
            delay = min(delay * 2, most)
        if missed:
            log.info("DittoServer CRD served; starting to watch")
        self.waiting = None
        self.crd_served.set()

    async def _prime(self) -> None:
        """Readiness means "caches warm": every watch of ours has delivered its first listing, and kopf has
        delivered every DittoServer that exists (its ready flag rises before its watcher has listed
        anything). Only kopf writes the DittoServers into the cache (a listing of ours could be older than
        its events), so their names are listed and waited for. One deleted before kopf delivered it would be
        waited for forever, so a listing that is not caught up within ``PRIME_RELIST_SECONDS`` is taken
        again."""
        await self.crd_served.wait()
        backoff = 0.5
        while True:
            try:
                listings = await asyncio.gather(*(self.gateway.list_keys(DITTOSERVERS, namespace)
                                                  for namespace in self.namespaces))
            except Exception as exc:
                error = described(exc)
                log.warning("first listing failed; retrying", extra=fields(error=error))
                self.waiting = f"listing DittoServers failed (retrying): {error}"
                backoff = min(backoff * 2, 30.0)
                await asyncio.sleep(backoff)
                continue
            self.waiting = None
            self._pending = {key for keys in listings for key in keys} - (self._seen or set())
            self._caught_up.clear()
            if self._pending:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PRIME_RELIST_SECONDS):
                        await self._caught_up.wait()
            if not self._pending:
                break
        self._seen = self._pending = None  # stop recording: only the first listing matters
        self.servers_known.set()
        await asyncio.gather(*(w.started.wait() for w in self.watches))
        self.primed.set()
        log.info("caches warm", extra=fields(servers=len(self.cache.servers)))

    def _saw(self, key: Key) -> None:
        if self._seen is None:
            return
        self._seen.add(key)
        if self._pending is not None:
            self._pending.discard(key)
            if not self._pending:
                self._caught_up.set()

    def start(self) -> None:
        self.active.set()
        self.start_background()

    async def stop(self) -> None:
        tasks = [*self._tasks, *(task for _, task in self.followed.values())]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        await self.queue.stop()
        await self.reconciler.close()

    def resume(self) -> None:
        """Became leader: reconcile everything we know."""
        self.active.set()
        for key in list(self.cache.servers):
            self.queue.add(key)

    def pause(self) -> None:
        """Lost the lead: no pass starts, and those in flight stop (``WorkQueue.interrupt``)."""
        self.active.clear()
        self.queue.interrupt()

    async def _drift(self) -> None:
        """Every interval, a pass for each server that had none in the last half interval (kopf's ``idle``
        timers in spirit): any pass reads the same cache and DittoFS, so one that just ran for an event
        leaves nothing for the timer to find. In a burst the tick no longer adds a pass to every server busy
        anyway; settled, every server still gets one per interval (the timer's own passes start right after
        the tick), and none goes more than 1.5 intervals uncompared. A changed answer about the optional
        APIs queues them all."""
        while True:
            await asyncio.sleep(self.drift_interval)
            await self._forget_vanished()
            try:
                changed = await self.reconciler.discovery.refresh()
            except Exception:  # an odd discovery answer must not end the timer: nothing would notice
                log.exception("API discovery failed; the optional kinds stay as they were")
                changed = False
            compared, self._compared = self._compared, {}
            for key in due_for_drift(self.cache.servers, compared, since=time.monotonic() - self.drift_interval / 2,
                                     everything=changed):
                self.queue.add(key)

    async def _forget_vanished(self) -> None:
        """Drop the DittoServers a listing no longer has. kopf lists again after its watch expires (410) and
        sends what it finds, never a DELETED for what is gone: a server deleted meanwhile stayed in the cache,
        and each drift tick and lead taken re-applied its children under an owner that no longer exists. A
        server with an event since the listing began is kept (it may be a new one of that name)."""
        before = {key: self.cache.server_version(key) for key in self.cache.servers}
        try:
            listings = await asyncio.gather(*(self.gateway.list_keys(DITTOSERVERS, namespace)
                                              for namespace in self.namespaces))
        except Exception as exc:
            log.warning("listing DittoServers failed; kept the cache as it is", extra=fields(error=described(exc)))
            return
        present = {key for keys in listings for key in keys}
        for key in before.keys() - present:
            if self.cache.server_version(key) == before[key]:
                log.info("DittoServer gone without a delete event; forgotten",
                         extra=fields(namespace=key[0], name=key[1]))
                self._forget(key)

    def _forget(self, key: Key) -> None:
        self.cache.drop_server(key)
        self.queue.forget(key)
        self.reconciler.shared.service_lane.forget(key)
        # A pass that finds it gone frees its memory and DittoFS session (else they stayed, for its successor).
        self.queue.add(key)

    # -- watch events -------------------------------------------------------------------------------------
    def on_server(self, event_type: str | None, body: dict[str, Any]) -> None:
        key = key_of(body)
        self._saw(key)
        if self.cache.during_write(DITTOSERVERS, event_type, body):
            return  # a pass is writing it: decided there, once the response is in
        if event_type == "DELETED":
            # kopf runs a worker per uid: an earlier namesake's deletion may come after its successor's creation.
            cached = self.cache.server(key)
            uid = (body.get("metadata") or {}).get("uid")
            if cached is None or not uid or (cached.get("metadata") or {}).get("uid") in (uid, None):
                self._forget(key)
            return
        if _echo(self.cache.server_version(key), body):
            return  # the watch echoing our own write (already cached from its response)
        previous = self.cache.server(key)
        self.cache.put_server(body)
        if not _same_generation(previous, body):  # status and metadata events leave the references as they are
            try:
                spec = DittoServerSpec.model_validate(body.get("spec") or {})
                self.cache.set_refs(key, watched_secrets(spec, Names(key[1], key[0], "")))
            except ValueError:
                self.cache.set_refs(key, ())
        self.queue.add(key)

    def on_child(self, kind: Kind, event_type: str | None, body: dict[str, Any]) -> None:
        key = key_of(body)
        self.cache.saw(kind, body)
        if self.cache.during_write(kind, event_type, body):
            return  # a pass is writing it: its own write coming back before the response (decided there)
        instance = (body.get("metadata", {}).get("labels") or {}).get(INSTANCE_LABEL)
        if event_type == "DELETED":
            self.cache.drop_child(kind, key)
        elif _echo(self.cache.child_version(kind, *key), body):
            return  # the watch echoing our own write (already cached from its response)
        else:
            predicate = CHILD_NEWS.get(kind)
            news = True
            if predicate is not None and instance:
                reporting = not self._reports_later((key[0], instance))
                news = predicate(self.cache.child(kind, *key), body,
                                 self.cache.pods_of(key[0], instance) if reporting else (), reporting)
            self.cache.put_child(kind, body)
            if not news:
                return  # only its status moved, and nothing a pass derives from it
        if instance and (key[0], instance) in self.cache.servers:
            self.queue.add((key[0], instance))

    def on_pod(self, event_type: str | None, body: dict[str, Any]) -> None:
        if event_type == "DELETED":
            self.cache.drop_pod(body)
        elif not self.cache.put_pod(body):
            return  # nothing a pass reads changed (most of a starting pod's updates)
        instance = (body.get("metadata", {}).get("labels") or {}).get(INSTANCE_LABEL)
        key = (body.get("metadata", {}).get("namespace", ""), instance)
        if instance and key in self.cache.servers and not self._reports_later(key):
            self.queue.add(key)

    def _reports_later(self, key: Key) -> bool:
        """The server's last pass left Service writes for the lane and wrote no status: the pass its wake-up queues
        (or its retry) reads every pod and StatefulSet anew. What only its status derives from (pods, a
        StatefulSet's status) queues no pass before that one: in the 300 burst such passes deferred again and
        wrote nothing."""
        return key in self.reconciler.shared.service_lane.waiting

    def on_secret(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        namespace = str(body.get("metadata", {}).get("namespace", ""))
        self.cache.saw(SECRETS, body)
        for server in self.cache.secret_event(body, deleted=event_type == "DELETED"):
            self.queue.add((namespace, server))

    def on_secret_reset(self) -> None:
        self.cache.forget_secrets()
        for namespace, secret in list(self.cache.secret_refs):
            for server in self.cache.secret_refs.get((namespace, secret), ()):
                self.queue.add((namespace, server))


def _same_generation(cached: Mapping[str, Any] | None, body: Mapping[str, Any]) -> bool:
    """The same object at the same generation: its spec, which the Secret references derive from, is unchanged
    (parsing it again on every status event was 5 % of the operator's CPU in the 300 burst)."""
    if cached is None:
        return False
    old, new = cached.get("metadata") or {}, body.get("metadata") or {}
    return bool(new.get("generation")) and (old.get("uid"), old.get("generation")) == (new.get("uid"),
                                                                                       new.get("generation"))


def _echo(cached_version: str | None, body: Mapping[str, Any]) -> bool:
    """Same resourceVersion as the cached copy: nothing new (typically our own write coming back)."""
    return cached_version is not None and cached_version == version_of(body)


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


def register(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    """Attach the DittoServer handler of `controller` to a kopf registry (the other kinds are streamed by the
    controller's own watches)."""
    @kopf.on.event(DITTOSERVERS.group, DITTOSERVERS.version, DITTOSERVERS.plural, registry=registry)
    async def server_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.on_server(type, dict(body))
