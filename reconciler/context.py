"""What a reconcile phase may use: a small typed context instead of the whole Reconciler.

`Shared` lives as long as the controller (gateway, cache, events, discovery); `Pass` is one pass over
one DittoServer and carries what phases read and write: the object, its transition memory, whether it
is fresh, and the few I/O helpers every phase needs (observe a child, apply when different, write status).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from dittoctl.api.conditions import EventReason
from dittoctl.api.kinds import DITTOSERVERS, PERCONAPGCLUSTERS, Kind, kind_of
from dittoctl.api.models import DittoServer
from dittoctl.api.naming import CONSENT, DEFAULT_OPERATOR_NAMESPACE, owned_by
from dittoctl.kube.events import EventRecorder, EventType
from dittoctl.kube.gateway import ApiError, Conflict, Gateway, NotFound
from dittoctl.kube.logs import fields
from reconciler.cache import Cache, Key, Packed, version_of
from reconciler.compare import needs_apply, stamp_manifest
from reconciler.owned import FOLLOWED_CHILDREN
from reconciler.specs import Desired, RenderedConfig
from reconciler.status import merge_patch, status_changed

log = logging.getLogger("dittofs.reconciler")
Obj = dict[str, Any]
# Service writes in flight at most, operator-wide. The apiserver allocates ClusterIPs one at a time: in the 300
# burst a Service write took ~1 s however many were sent (4 s with 128 in flight), so beyond a few they only held
# the API connections, and the workers, that StatefulSets and status writes were waiting for. With 8 in flight
# Services went through faster too (36-59/s against 28/s).
SERVICE_WRITES = 8
LANE_RETRY = 30.0  # seconds: a deferred pass runs again by then even if no wake-up came (the lane wakes every
# waiting key in turn; at 5 s, ~330 passes of the 300 burst only found the lane still full and deferred again)


class Deferred(Exception):
    """A write that found its lane full: the pass goes on without it, and runs again when a slot frees."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name}")
        self.kind, self.name = kind, name


class Lane:
    """At most ``size`` writes of one kind in flight, operator-wide, and no pass waiting for a slot: waiting
    would hold a worker, and the new servers behind it would wait for their StatefulSets (the slowest part
    of a new server, pods and volumes, starts from it).

    A pass that finds the lane full leaves its key with the number of writes it deferred (``defer``). As writes
    leave, slots are set aside for the first key waiting until all of its writes fit, and it is woken (``wake``):
    its next pass writes them all instead of finding the lane full again. What that pass does not use goes back
    when it ends (``release``), whatever ended it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self.waiting: dict[Key, int] = {}  # insertion-ordered: first come, first woken
        self.held: dict[Key, tuple[int, int]] = {}  # key -> (slots set aside, number of the wake-up)
        self.wakes = 0
        self.wake: Callable[[Key], None] | None = None

    def enter(self, key: Key) -> bool:
        slots, woken = self.held.get(key, (0, 0))
        if slots:
            self.held[key] = (slots - 1, woken)
            return True
        # Newcomers do not pass a waiting key (without a wake-up, nobody waits).
        if self.free > 0 and (not self.waiting or self.wake is None):
            self.free -= 1
            return True
        return False

    def defer(self, key: Key, writes: int) -> None:
        """``key``'s pass left ``writes`` writes for later."""
        if self.wake is not None:
            self.waiting[key] = min(writes, self.size)
            self._hand_over()

    def leave(self) -> None:
        self.free += 1
        self._hand_over()

    def release(self, key: Key, started: int) -> None:
        """A pass for ``key`` ended that began when ``wakes`` was ``started``: slots set aside for it by an earlier
        wake-up and not used go back. Those of a later wake-up stay for the pass that wake-up queued."""
        slots, woken = self.held.get(key, (0, 0))
        if key in self.held and woken <= started:
            del self.held[key]
            self.free += slots
            self._hand_over()

    def forget(self, key: Key) -> None:
        """``key`` gets no pass (the server is gone, or the lead was lost): nothing waits or is held for it."""
        self.waiting.pop(key, None)
        self.release(key, self.wakes)

    def _hand_over(self) -> None:
        while self.waiting and self.wake is not None:
            key, wanted = next(iter(self.waiting.items()))
            if self.free < wanted:
                return
            del self.waiting[key]
            self.free -= wanted
            self.wakes += 1
            self.held[key] = (self.held.get(key, (0, 0))[0] + wanted, self.wakes)
            self.wake(key)


@dataclass(frozen=True)
class KeptFields:
    """PerconaPGCluster fields kept at a user's values, and what the server asked of them when reported."""

    generation: int
    paths: frozenset[str]
    asked: str
    """JSON of the server's values at ``paths`` (``values_at``): a new one is reported again."""


@dataclass
class Memory:
    """Per-server facts remembered between passes, so events are posted on transitions only."""

    uid: str = ""
    """The server they are about: a server re-created under the same name starts with nothing remembered."""
    digests: dict[tuple[str, str], str | None] = field(default_factory=dict)
    database_ready: bool | None = None
    percona_kept: KeptFields | None = None
    """The PerconaPGCluster fields a user's edit owns: applied at their live values while the server's
    generation stays, so a kept edit costs no write and no second `PerconaDriftDetected`; a new generation
    offers our values again and SSA says who still owns what."""
    invalid: str | None = None
    waiting: str | None = None
    """The missing Secrets last reported (one event per change)."""
    backups_seen: set[str] | None = None
    value_lengths: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict, repr=False)
    """(secret, key) -> (digest, length) of each bounded user value last checked (never the value)."""
    release_attempts: int = 0
    """Failed attempts to release the PerconaPGCluster while deleting: the retry's growing delay."""
    release_after: float = 0.0
    """`time.monotonic()` before which no release is attempted again: passes woken by events in between (the
    server's own status, the cluster's) must not turn the backoff back into a retry per event."""
    predecessor: bool = False
    """A Secret this server generates already existed: an earlier server of this name left it, and so likely
    its volumes too."""
    expanded: str | None = None
    """Volumes grown whose StatefulSet was orphan-deleted; its re-creation posts VolumesExpanded."""
    template_generation: int | None = None
    """The generation whose StatefulSet a pass last applied or found in place (None: not since this process
    started): a template change at that same generation is not the user's edit."""
    migrated: bool = False
    """The StatefulSet was orphan-deleted for an immutable field an operator upgrade changed: its re-creation
    posts no Created event."""
    optional: dict[str, frozenset[str]] = field(default_factory=dict)
    """Per optional kind (plural): the children this process applied (absent: unknown since start), so
    pruning costs no GET per pass."""
    fileservice: Any = None
    """The file-service phase's own memory (REST client with in-memory tokens, last outcome)."""
    rendered: tuple[tuple[str, int], RenderedConfig] | None = None
    """((uid, generation), config.yaml rendered for it): a few KiB kept for every server, so a drift pass
    does not emit YAML again (the full build is kept only for the last few servers, see ``Recent``)."""
    in_sync: tuple[Hashable, dict[tuple[str, str], str]] | None = None
    """(the inputs of the build, (kind plural, name) -> the resourceVersion of the child last found to hold
    it): an unchanged child is neither decoded nor compared again while both stay the same. Kept here, not
    with the build, because a 300 burst outruns ``Recent``: most passes rebuilt, and compared every child anew."""

    def marks(self, inputs: Hashable) -> dict[tuple[str, str], str]:
        """The children found in sync with the build of these inputs (none yet when the inputs changed)."""
        if self.in_sync is None or self.in_sync[0] != inputs:
            self.in_sync = (inputs, {})
        return self.in_sync[1]


@dataclass(frozen=True)
class Provisioning:
    """How the operator reaches DittoFS servers (SPEC §13.2)."""

    server_address: str = "service"
    """service: <name>-api.<ns>.svc (in cluster); pod: the pod IP (out-of-cluster runs, test beds)."""
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    """With server_address=pod: provision only pods whose IP is in one of these (empty: all)."""
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE
    """Where the operator runs: each server's NetworkPolicy always lets this namespace in."""


class Discovery:
    """Which optional APIs the cluster serves right now. Refreshed on a miss and by the drift timer, so a
    CRD installed (or removed) after start (Percona, Prometheus Operator) is noticed without a restart. A
    "not served" is trusted for ``NEGATIVE_TTL`` seconds: asked on every pass, it was one discovery GET per
    pass per server without the Prometheus Operator (the largest of our phases in the 300 burst profile)."""

    OPTIONAL = FOLLOWED_CHILDREN
    NEGATIVE_TTL = 10.0

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.answers: dict[Kind, bool | None] = dict.fromkeys(self.OPTIONAL)
        self._asked: dict[Kind, float] = {}
        self.on_change: Callable[[Kind, bool], None] | None = None
        """Told each changed answer (the controller watches a kind while it is served)."""

    def _answer(self, kind: Kind, served: bool) -> None:
        before, self.answers[kind] = self.answers.get(kind), served
        if before != served and self.on_change is not None:
            self.on_change(kind, served)

    async def _ask(self, kind: Kind) -> bool:
        served = await self.gateway.served(kind)
        self._asked[kind] = time.monotonic()
        self._answer(kind, served)
        return served

    async def refresh(self) -> bool:
        """Asks again about every optional API; True when an answer changed."""
        before = dict(self.answers)
        results = await asyncio.gather(*(self._ask(kind) for kind in self.OPTIONAL), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, ApiError):
                raise result
        return self.answers != before

    async def serves(self, kind: Kind) -> bool:
        """Served? Asks again unless the last answer was yes, or a recent no."""
        answer = self.answers.get(kind)
        if answer is True or (answer is False and time.monotonic() - self._asked.get(kind, 0.0) < self.NEGATIVE_TTL):
            return answer
        try:
            return await self._ask(kind)
        except ApiError:
            return False

    def forget(self, kind: Kind) -> None:
        """The API said the kind is gone (a 404 on a write or a listing): ask again next time."""
        self._asked.pop(kind, None)
        self._answer(kind, False)

    @property
    def percona_served(self) -> bool | None:
        return self.answers[PERCONAPGCLUSTERS]

    async def percona(self) -> bool:
        return await self.serves(PERCONAPGCLUSTERS)


T = TypeVar("T")


class Recent(Generic[T]):
    """What was derived for the last ``size`` servers reconciled, by key, valid while its inputs are equal.

    A new server's first passes follow each other closely (its StatefulSet and pods move), and parsing and
    building are pure but not free: rendering config.yaml alone was half of such a pass in the profile.
    Bounded, so memory does not grow with the number of servers (a full build is ~55 KiB)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[Key, tuple[Hashable, T]] = OrderedDict()

    def get(self, key: Key, inputs: Hashable) -> T | None:
        item = self._items.get(key)
        if item is None or item[0] != inputs:
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: Key, inputs: Hashable, value: T) -> T:
        self._items[key] = (inputs, value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def drop(self, key: Key) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()


@dataclass
class Shared:
    """Everything that outlives one pass."""

    gateway: Gateway
    cache: Cache
    events: EventRecorder
    discovery: Discovery
    cleanup_timeout: float = 60.0
    provisioning: Provisioning = field(default_factory=Provisioning)
    parsed: Recent[DittoServer] = field(default_factory=lambda: Recent(512))
    """The validated server by (uid, generation): the spec changes only with the generation. Room for a whole
    burst (a server's passes are tens of seconds apart in a 300 burst; with 64, nearly every pass validated again,
    5 % of its CPU): ~15 KiB each, dropped once the passes stop or a pass finds its server settled."""
    built: Recent[Desired] = field(default_factory=Recent)
    """The desired children by every input of the builders."""
    followed: dict[Kind, asyncio.Event] = field(default_factory=dict)
    """Optional kinds (``owned.FOLLOWED_CHILDREN``) watched now -> set once the watch has listed: from then on,
    their children are in the cache."""
    service_lane: Lane = field(default_factory=lambda: Lane(SERVICE_WRITES))
    """Entered for each Service write (see SERVICE_WRITES); the controller sets its ``wake``."""
    requeue: Callable[[Key], None] | None = None
    """Another pass for a server (the controller's queue): set by the controller."""

    def forget(self, key: Key | None = None) -> None:
        """Drops what passes derived (parsed spec, build) for one server, or for all."""
        for recent in (self.parsed, self.built):
            if key is None:
                recent.clear()
            else:
                recent.drop(key)

    def follows(self, kind: Kind) -> bool:
        """Is every child of this optional kind in the cache (its watch has listed)?"""
        listed = self.followed.get(kind)
        return listed is not None and listed.is_set()


@dataclass
class Pass:
    """One pass over one DittoServer."""

    shared: Shared
    key: Key
    body: Mapping[str, Any]
    memory: Memory
    fresh: bool
    """No status yet: the server was never reconciled, so its children cannot exist yet either."""
    desired: Desired | None = None
    """This pass's build, once made."""
    in_sync: dict[tuple[str, str], str] | None = None
    """The children found to hold this build, by version (``Memory.marks``); None: compare every child."""
    deferred: list[str] = field(default_factory=list)
    """Children whose write found its lane full: not written this pass (``Deferred``)."""
    unserved: bool = False
    """cert-manager is asked for but not served: the pass is repeated, as nothing it waits for sends an event."""
    _current: tuple[Packed, Obj] | None = field(default=None, repr=False)

    @property
    def gw(self) -> Gateway:
        return self.shared.gateway

    @property
    def cache(self) -> Cache:
        return self.shared.cache

    @property
    def namespace(self) -> str:
        return self.key[0]

    @property
    def name(self) -> str:
        return self.key[1]

    @property
    def uid(self) -> str:
        return str(self.body.get("metadata", {}).get("uid", ""))

    @property
    def generation(self) -> int:
        return int(self.body.get("metadata", {}).get("generation", 0))

    def current(self) -> Mapping[str, Any]:
        """The latest known version of the object (our own writes update the cache). Read only: it is decoded
        once per cached version, and a pass asks for it from most phases."""
        packed = self.cache.servers.get(self.key)
        if packed is None:
            return self.body
        if self._current is None or self._current[0] is not packed:
            self._current = (packed, packed.unpack())
        return self._current[1]

    async def post(self, type_: EventType, reason: EventReason, message: str) -> None:
        await self.shared.events.post(self.current(), type_, reason, message)

    async def observed(self, kind: Kind, name: str) -> Obj | None:
        """A child from the cache, else one confirming GET (skipped for a fresh server: a killed run may
        have left a child, but applying it again is idempotent)."""
        cached = self.cache.child(kind, self.namespace, name)
        if cached is not None or self.fresh:
            return cached
        return await self.confirm(kind, name)

    async def confirm(self, kind: Kind, name: str) -> Obj | None:
        """One GET of a child, cached; when the watch delivered that child meanwhile, the watch's copy instead
        (``Cache.child_answer``)."""
        with self.cache.read(kind, self.namespace, name) as read:
            return self.cache.child_answer(read, await self.gw.get_or_none(kind, name, self.namespace))

    async def optional_child(self, kind: Kind, name: str) -> Obj | None:
        """A child of an optional kind: from the cache once its watch has listed (a miss means absent), else one
        GET."""
        if self.shared.follows(kind):
            return self.cache.child(kind, self.namespace, name)
        return await self.gw.get_or_none(kind, name, self.namespace)

    async def apply(self, manifest: dict[str, Any], previous: Obj | None = None, known: bool = False, *,
                    lane: Lane | None = None) -> tuple[bool, Obj | None]:
        """(written, previous): server-side apply only when the observed child differs from `manifest`, which is
        stamped here (``stamp_manifest``) unless the child is known to hold it already;
        `previous` is the child before the write (when nothing was written, it may be None: an unchanged child
        is not even decoded).
        `known=True` means `previous` was already observed this pass. `lane`: entered for the write only; when
        it is full, `Deferred` is raised instead of waiting."""
        kind = kind_of(manifest)
        name = manifest["metadata"]["name"]
        packed = self.cache.packed_child(kind, self.namespace, name)
        in_sync = self.in_sync
        if in_sync is not None and packed is not None and packed.version is not None \
                and in_sync.get((kind.plural, name)) == packed.version:
            return False, None  # this very version already held this very build
        # Stamped only now: a build is remade for most passes of a burst (``Recent``), and a stamp digests the whole
        # manifest. A child known to hold the build needs none (a 300 burst took 7 515 digests instead of 10 185).
        stamp_manifest(manifest)
        if not known:
            previous = await self.observed(kind, name)
        if not needs_apply(manifest, previous):
            if in_sync is not None and packed is not None and packed.version is not None \
                    and packed.version == version_of(previous):
                in_sync[(kind.plural, name)] = packed.version
            return False, previous
        if lane is not None and not lane.enter(self.key):
            raise Deferred(kind.kind, name)
        try:
            await self.write(kind, name, self.gw.apply(manifest))
        finally:
            if lane is not None:
                lane.leave()
        log.info("applied %s", kind.kind, extra=fields(
            namespace=self.namespace, name=name, kind=kind.kind, action="create" if previous is None else "update"))
        return True, previous

    async def write(self, kind: Kind, name: str, request: Awaitable[Obj]) -> Obj:
        """Sends a write of a child or of this DittoServer and caches its response. The watch may deliver the
        write before the response: that echo queues no pass, anything else seen meanwhile queues one
        (``Cache.end_write``)."""
        self.cache.begin_write(kind, self.namespace, name)
        result: Obj | None = None
        try:
            result = await request
        finally:
            if self.cache.end_write(kind, self.namespace, name, result) and self.shared.requeue is not None:
                self.shared.requeue(self.key)
        return result

    async def prune(self, kind: Kind, name: str, current: Obj | None) -> bool:
        """Deletes an optional child this server owns and no longer wants (never one it does not own)."""
        if current is None or not owned_by(current, self.uid):
            return False
        with contextlib.suppress(NotFound):
            await self.gw.delete(kind, name, self.namespace)
        self.cache.drop_child(kind, (self.namespace, name))
        log.info("deleted obsolete %s", kind.kind, extra=fields(namespace=self.namespace, name=name, kind=kind.kind))
        return True

    def consents(self, annotation: str) -> bool:
        """The user's consent, given by setting ``annotation`` to "true" on the DittoServer."""
        return ((self.current().get("metadata") or {}).get("annotations") or {}).get(annotation) == CONSENT

    async def forget_consent(self, annotation: str) -> None:
        """Consent is used once: what it allowed is asked for again the next time (the next pass retries a
        removal that failed)."""
        path = "/metadata/annotations/" + annotation.replace("~", "~0").replace("/", "~1")
        try:
            await self.write(DITTOSERVERS, self.name, self.gw.json_patch(
                DITTOSERVERS, self.name, [{"op": "remove", "path": path}], self.namespace))
        except (ApiError, Conflict, NotFound) as exc:
            log.warning("could not remove the annotation", extra=fields(
                namespace=self.namespace, name=self.name, annotation=annotation, error=str(exc)[:300]))

    async def write_status(self, status: Mapping[str, Any]) -> None:
        """Merge-patches the status subresource when it differs from the last one written."""
        body = self.current()
        if not status_changed(body.get("status"), status):
            return
        try:
            await self.write(DITTOSERVERS, self.name, self.gw.merge_patch(
                DITTOSERVERS, self.name, {"status": merge_patch(body.get("status"), status)}, self.namespace,
                subresource="status"))
        except NotFound:
            return
        what = {"phase": status["phase"]} if "phase" in status else {"fields": ",".join(sorted(status))}
        log.info("status updated", extra=fields(namespace=self.namespace, name=self.name, **what))
