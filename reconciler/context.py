"""What a reconcile phase may use: a small typed context instead of the whole Reconciler.

`Shared` lives as long as the controller (gateway, cache, events, discovery); `Pass` is one pass over
one DittoServer and carries what phases read and write: the object, its transition memory, whether it
is fresh, and the few I/O helpers every phase needs (observe a child, apply when different, write status).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dittoctl.api.conditions import EventReason
from dittoctl.api.kinds import DITTOSERVERS, PERCONAPGCLUSTERS, Kind, kind_of
from dittoctl.kube.events import EventRecorder, EventType
from dittoctl.kube.gateway import ApiError, Gateway, NotFound
from dittoctl.kube.logs import fields
from reconciler.cache import Cache, Key
from reconciler.compare import needs_apply
from reconciler.status import status_changed

log = logging.getLogger("dittofs.reconciler")
Obj = dict[str, Any]


@dataclass
class Memory:
    """Per-server facts remembered between passes, so events are posted on transitions only."""

    digests: dict[tuple[str, str], str | None] = field(default_factory=dict)
    database_ready: bool | None = None
    invalid: str | None = None
    waiting: str | None = None
    """The missing Secrets last reported (one event per change)."""
    backups_seen: set[str] | None = None
    jwt_length: tuple[str, int] | None = None
    """(digest, length) of the user's JWT secret value last checked (never the value)."""
    fileservice: Any = None
    """The file-service phase's own memory (REST client with in-memory tokens, last outcome)."""


@dataclass(frozen=True)
class Provisioning:
    """How the operator reaches DittoFS servers (SPEC §13.2)."""

    server_address: str = "service"
    """service: <name>-api.<ns>.svc (in cluster); pod: the pod IP (out-of-cluster runs, test beds)."""
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    """With server_address=pod: provision only pods whose IP is in one of these (empty: all)."""


class Discovery:
    """Which optional APIs the cluster serves right now. Refreshed on a miss and by the drift timer, so a
    Percona CRD installed (or removed) after start is noticed without a restart."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.percona_served: bool | None = None

    async def refresh(self) -> None:
        try:
            self.percona_served = await self.gateway.served(PERCONAPGCLUSTERS)
        except ApiError:
            return

    async def percona(self) -> bool:
        """Served? Asks again unless the last answer was yes."""
        if self.percona_served is not True:
            await self.refresh()
        return bool(self.percona_served)


@dataclass
class Shared:
    """Everything that outlives one pass."""

    gateway: Gateway
    cache: Cache
    events: EventRecorder
    discovery: Discovery
    cleanup_timeout: float = 60.0
    provisioning: Provisioning = field(default_factory=Provisioning)


@dataclass
class Pass:
    """One pass over one DittoServer."""

    shared: Shared
    key: Key
    body: Mapping[str, Any]
    memory: Memory
    fresh: bool
    """No status yet: the server was never reconciled, so its children cannot exist yet either."""

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
    def generation(self) -> int:
        return int(self.body.get("metadata", {}).get("generation", 0))

    def current(self) -> Mapping[str, Any]:
        """The latest known version of the object (our own writes update the cache)."""
        return self.cache.servers.get(self.key, self.body)

    async def post(self, type_: EventType, reason: EventReason, message: str) -> None:
        await self.shared.events.post(self.current(), type_, reason, message)

    async def observed(self, kind: Kind, name: str) -> Obj | None:
        """A child from the cache, else one confirming GET (skipped for a fresh server: a killed run may
        have left a child, but applying it again is idempotent)."""
        cached = self.cache.child(kind, self.namespace, name)
        if cached is not None or self.fresh:
            return cached
        obj = await self.gw.get_or_none(kind, name, self.namespace)
        if obj is not None:
            self.cache.put_child(kind, obj)
        return obj

    async def apply(self, manifest: dict[str, Any], previous: Obj | None = None,
                    known: bool = False) -> tuple[bool, Obj | None]:
        """(written, previous): server-side apply only when the observed child differs from `manifest`.
        `known=True` means `previous` was already observed this pass."""
        kind = kind_of(manifest)
        name = manifest["metadata"]["name"]
        if not known:
            previous = await self.observed(kind, name)
        if not needs_apply(manifest, previous):
            return False, previous
        result = await self.gw.apply(manifest)
        self.cache.put_child(kind, result)
        log.info("applied %s", kind.kind, extra=fields(
            namespace=self.namespace, name=name, kind=kind.kind, action="create" if previous is None else "update"))
        return True, previous

    async def write_status(self, status: Mapping[str, Any]) -> None:
        """Merge-patches the status subresource when it differs from the last one written."""
        body = self.current()
        if not status_changed(body.get("status"), status):
            return
        try:
            result = await self.gw.merge_patch(DITTOSERVERS, self.name, {"status": dict(status)}, self.namespace,
                                               subresource="status")
        except NotFound:
            return
        self.cache.put_server(result)
        what = {"phase": status["phase"]} if "phase" in status else {"fields": ",".join(sorted(status))}
        log.info("status updated", extra=fields(namespace=self.namespace, name=self.name, **what))
