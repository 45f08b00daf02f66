"""Typed records of what DittoFS v0.29.0 reports, parsed from its JSON (shapes proven in tests/contract).

Unknown fields are ignored (DittoFS adds many we do not manage); absent optional fields take DittoFS's own
meaning (no ``uid`` = unset, no ``quota_bytes`` = no quota, ``null`` permissions = none).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from dittoctl.api.fileservice.types import StoreKind, share_name
from dittoctl.api.models import GO_PART, GO_UNIT_NS


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


class ApiUser(_Record):
    username: str
    role: str = "user"
    uid: int | None = None
    gid: int | None = None
    groups: tuple[str, ...] = ()
    enabled: bool = True
    must_change_password: bool = False


class ApiGroup(_Record):
    name: str
    gid: int | None = None


class ApiAdapter(_Record):
    type: str
    enabled: bool
    port: int
    running: bool = False


REMOTE_PROBE_HOLD = "about 3 minutes"
"""How long DittoFS v0.29.0's start waits on a remote store that does not answer its probe (``sync_health.go``,
168 s on the real node; DITTOFS_FACTS deviation 11)."""


class ApiStore(_Record):
    id: str
    name: str
    type: str
    config: dict[str, Any] = Field(default_factory=dict)
    status: dict[str, Any] = Field(default_factory=dict)  # {status: healthy|unhealthy|unknown}; S3: a bucket probe

    @property
    def healthy(self) -> bool | None:
        state = self.status.get("status")
        return None if state in (None, "unknown") else state == "healthy"


class ApiShare(_Record):
    id: str = ""
    name: str
    metadata_store_id: str
    local_block_store_id: str | None = None
    remote_block_store_id: str | None = None
    read_only: bool = False
    enabled: bool = True
    default_permission: str = "none"
    quota_bytes: str | None = None  # humanised by DittoFS ("10.00GiB"); absent = no quota
    used_bytes: int = 0


class ApiPermission(_Record):
    type: str
    name: str
    level: str


class ApiShareNfs(_Record):
    squash: str | None = None
    anonymous_uid: int | None = None
    anonymous_gid: int | None = None


class ApiSnapshotPolicy(_Record):
    share: str
    interval: str
    keep_last: int = 0
    ttl: str | None = None
    name_prefix: str = ""
    enabled: bool = True


# Built on first use, not at import: the operator is ready long before it reads any DittoFS.
_DEFERRED = ConfigDict(defer_build=True)
_USERS = TypeAdapter(list[ApiUser], config=_DEFERRED)
_GROUPS = TypeAdapter(list[ApiGroup], config=_DEFERRED)
_ADAPTERS = TypeAdapter(list[ApiAdapter], config=_DEFERRED)
_STORES = TypeAdapter(list[ApiStore], config=_DEFERRED)
_SHARES = TypeAdapter(list[ApiShare], config=_DEFERRED)
_PERMISSIONS = TypeAdapter(list[ApiPermission] | None, config=_DEFERRED)  # no grants is `null`, not `[]`
_POLICIES = TypeAdapter(list[ApiSnapshotPolicy], config=_DEFERRED)


@dataclass(frozen=True)
class ObservedShare:
    """A share with its store IDs mapped back to names and its per-share sub-objects (None = not read)."""

    name: str
    metadata_store: str | None
    local_store: str | None
    remote_store: str | None
    read_only: bool
    default_permission: str
    quota: str | None
    used_bytes: int
    nfs: ApiShareNfs | None = None
    permissions: Mapping[tuple[str, str], str] | None = None  # (principal, name) -> level
    enabled: bool = True  # POST /shares/{name}/disable by hand turns it off
    snapshots: int | None = None  # read only for an owned share that left the spec: DittoFS deletes them with it
    id: str = ""  # DittoFS's own: a share deleted and made again by hand under the name gets a new one


@dataclass(frozen=True)
class Observed:
    """The DittoFS state the planner compares against, keyed by name."""

    users: Mapping[str, ApiUser] = field(default_factory=dict)
    groups: Mapping[str, ApiGroup] = field(default_factory=dict)
    adapters: Mapping[str, ApiAdapter] = field(default_factory=dict)
    adapter_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    stores: Mapping[StoreKind, Mapping[str, ApiStore]] = field(default_factory=dict)
    shares: Mapping[str, ObservedShare] = field(default_factory=dict)
    snapshot_policies: Mapping[str, ApiSnapshotPolicy] = field(default_factory=dict)
    identity: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Identity-provider records by type, as ``GET /identity-providers/{type}/config`` shows them (passwords
    redacted); a type never configured is absent."""
    unread: frozenset[str] = frozenset()
    """The optional reads this pass skipped (``planner.Reads.skipped``): their kinds are unknown, not absent."""

    def store(self, kind: StoreKind, name: str) -> ApiStore | None:
        return self.stores.get(kind, {}).get(name)

    def remote_health(self, share: ObservedShare) -> bool | None:
        """DittoFS's own probe of the bucket ``share`` tiers to (None: no remote store, or its state unknown)."""
        remote = self.store(StoreKind.REMOTE, share.remote_store) if share.remote_store else None
        return remote.healthy if remote is not None else None


def parse_users(raw: Any) -> dict[str, ApiUser]:
    return {u.username: u for u in _USERS.validate_python(raw or [])}


def parse_groups(raw: Any) -> dict[str, ApiGroup]:
    return {g.name: g for g in _GROUPS.validate_python(raw or [])}


def parse_adapters(raw: Any) -> dict[str, ApiAdapter]:
    return {a.type: a for a in _ADAPTERS.validate_python(raw or [])}


def parse_stores(raw: Any) -> dict[str, ApiStore]:
    return {s.name: s for s in _STORES.validate_python(raw or [])}


def parse_permissions(raw: Any) -> dict[tuple[str, str], str]:
    return {(p.type, p.name): p.level for p in _PERMISSIONS.validate_python(raw) or []}


def parse_share_nfs(raw: Any) -> ApiShareNfs:
    return ApiShareNfs.model_validate(raw)


def parse_snapshot_policies(raw: Any) -> dict[str, ApiSnapshotPolicy]:
    return {share_name(p.share): p for p in _POLICIES.validate_python(raw or [])}


def parse_shares(
    raw: Any,
    stores: Mapping[StoreKind, Mapping[str, ApiStore]],
    nfs: Mapping[str, ApiShareNfs] | None = None,
    permissions: Mapping[str, Mapping[tuple[str, str], str]] | None = None,
    snapshots: Mapping[str, int] | None = None,
) -> dict[str, ObservedShare]:
    """Shares with store IDs resolved to names (responses carry IDs, requests take names)."""
    ids = {kind: {s.id: s.name for s in by_name.values()} for kind, by_name in stores.items()}

    def name_of(kind: StoreKind, store_id: str | None) -> str | None:
        return None if store_id is None else ids.get(kind, {}).get(store_id, store_id)

    out: dict[str, ObservedShare] = {}
    for s in _SHARES.validate_python(raw or []):
        key = share_name(s.name)
        out[key] = ObservedShare(
            name=key,
            metadata_store=name_of(StoreKind.METADATA, s.metadata_store_id),
            local_store=name_of(StoreKind.LOCAL, s.local_block_store_id),
            remote_store=name_of(StoreKind.REMOTE, s.remote_block_store_id),
            read_only=s.read_only,
            default_permission=s.default_permission,
            quota=s.quota_bytes or None,
            used_bytes=s.used_bytes,
            nfs=(nfs or {}).get(key),
            permissions=(permissions or {}).get(key),
            enabled=s.enabled,
            snapshots=(snapshots or {}).get(key),
            id=s.id,
        )
    return out


# ---------------------------------------------------------------------------------------------------------
# value comparison helpers (DittoFS normalises what it stores)

_GO_UNITS = {unit: ns / 1e9 for unit, ns in GO_UNIT_NS.items()}  # seconds
_MACROS = {"@hourly": 3600.0, "@daily": 86400.0, "@weekly": 604800.0}


def duration_seconds(text: str) -> float | None:
    """A Go duration (``1h0m0s``, ``90m``) or a snapshot macro in seconds; None when unparseable."""
    text = text.strip()
    if text in _MACROS:
        return _MACROS[text]
    if text in ("0", ""):
        return 0.0
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    pos, total = 0, 0.0
    for m in GO_PART.finditer(body):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    return sign * total if pos == len(body) and pos else None


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]?i?B)?\s*$", re.IGNORECASE)
_BINARY = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40, "PIB": 1 << 50,
           "EIB": 1 << 60, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15, "EB": 10**18}


def quota_matches(observed: str | None, desired: int | None) -> bool:
    """DittoFS reports a quota rounded to 2 decimals of its unit ("1500" -> "1.46KiB"): equal within that."""
    if not desired:
        return not observed
    if not observed:
        return False
    m = _SIZE.match(observed)
    if m is None:
        return False
    unit = _BINARY.get((m.group(2) or "").upper())
    if unit is None:
        return False
    return abs(float(m.group(1)) * unit - desired) <= 0.005 * unit + 0.5


def same_values(observed: Any, desired: Any) -> bool:
    """Equality that tolerates DittoFS's list order (``groups``, ``blocked_operations``)."""
    if isinstance(observed, list | tuple) and isinstance(desired, list | tuple):
        return sorted(map(str, observed)) == sorted(map(str, desired))
    return bool(observed == desired)

