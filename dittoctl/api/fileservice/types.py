"""The declared file service, the observed DittoFS state and the calls between them (SPEC §13).

Plain frozen data only: the planner (``planner.py``) turns (declared, observed, owned, applied digests) into
``Call``s, and the one I/O layer (``dittoctl.kube.dittofs``) reads the observed state and executes the calls.
Secret values never live here: a declared secret is a ``SecretValue`` (an opaque reference the executor
resolves + the digest of the value), so a plan can be logged, compared and stored without leaking anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from dittoctl.api.models import AdapterType

Scalar = str | int | float | bool
Principal = Literal["user", "group"]
Level = Literal["none", "read", "read-write", "admin"]
OPERATOR_ACCOUNT = "dittofs-operator"
BOOTSTRAP_ADMIN = "admin"  # v0.29.0 always bootstraps literally `admin` (docs/DITTOFS_FACTS.md deviation 4)


def share_name(name: str) -> str:
    """DittoFS's canonical share name: exactly one leading ``/`` (``normalizeShareName``)."""
    return "/" + name.lstrip("/")


# ---------------------------------------------------------------------------------------------------------
# declared


@dataclass(frozen=True)
class SecretValue:
    """A secret the executor resolves by ``ref``; the planner sees only its digest."""

    ref: str
    digest: str = field(repr=False)


@dataclass(frozen=True)
class AdapterSpec:
    """``PUT /adapters/{type}`` fields plus settings in DittoFS's own units (durations are int seconds)."""

    type: AdapterType
    enabled: bool = True
    port: int | None = None
    settings: tuple[tuple[str, Scalar], ...] = ()


class StoreKind(StrEnum):
    METADATA = "metadata"
    LOCAL = "local"
    REMOTE = "remote"


@dataclass(frozen=True)
class StoreSpec:
    """A store; ``config`` holds plain keys, ``secrets`` the keys whose values come from Secrets (S3 keys,
    a PostgreSQL password): DittoFS redacts those on GET, so they are compared by digest only."""

    kind: StoreKind
    name: str
    type: str
    config: tuple[tuple[str, Scalar], ...] = ()
    secrets: tuple[tuple[str, SecretValue], ...] = ()


@dataclass(frozen=True)
class Grant:
    principal: Principal
    name: str
    level: Level


@dataclass(frozen=True)
class NfsOptions:
    """Per-share NFS options; ``None`` = leave DittoFS's value alone."""

    squash: str | None = None
    anonymous_uid: int | None = None
    anonymous_gid: int | None = None


@dataclass(frozen=True)
class SnapshotPolicySpec:
    interval: str  # Go duration or @hourly|@daily|@weekly
    keep_last: int = 0
    ttl: str | None = None
    name_prefix: str = ""
    enabled: bool = True


@dataclass(frozen=True)
class ShareSpec:
    name: str
    metadata_store: str = "default"
    local_store: str = "default"
    remote_store: str | None = None
    read_only: bool = False
    default_permission: Level = "none"
    quota_bytes: int | None = None
    nfs: NfsOptions | None = None
    permissions: tuple[Grant, ...] = ()
    snapshot_policy: SnapshotPolicySpec | None = None

    @property
    def key(self) -> str:
        return share_name(self.name)


@dataclass(frozen=True)
class UserSpec:
    name: str
    password: SecretValue | None = None
    uid: int | None = None
    gid: int | None = None
    groups: tuple[str, ...] = ()
    role: Literal["user", "admin"] = "user"


@dataclass(frozen=True)
class GroupSpec:
    name: str
    gid: int | None = None


IdentityType = Literal["ldap", "kerberos"]


@dataclass(frozen=True)
class IdentityProviderSpec:
    """The whole record DittoFS keeps for an identity provider (``PUT /identity-providers/{type}/config``
    replaces it), in its wire shape; the write-only password is ``secret``, sent at ``within.secret_key``."""

    type: IdentityType
    config: Mapping[str, Any] = field(hash=False)
    secret: SecretValue | None = None
    secret_key: str = ""
    within: str = ""
    restart: bool = False
    """DittoFS applies the record at its next start (Kerberos), not live (LDAP)."""
    durations: frozenset[str] = frozenset()
    """Keys compared as Go durations (DittoFS answers ``5m0s`` for ``5m``)."""


@dataclass(frozen=True)
class FileService:
    """Everything SPEC §13.1 declares, already defaulted (the lead maps the CRD onto this)."""

    operator: SecretValue | None = None  # the operator account's password; None = do not manage it
    adapters: tuple[AdapterSpec, ...] = ()
    stores: tuple[StoreSpec, ...] = ()
    shares: tuple[ShareSpec, ...] = ()
    users: tuple[UserSpec, ...] = ()
    groups: tuple[GroupSpec, ...] = ()
    identity: tuple[IdentityProviderSpec, ...] = ()
    operator_name: str = OPERATOR_ACCOUNT


# ---------------------------------------------------------------------------------------------------------
# ownership and calls


class Kind(StrEnum):
    """Object kinds in dependency order (creates run in this order, deletes in reverse)."""

    OPERATOR_ACCOUNT = "operator-account"
    GROUP = "group"
    USER = "user"
    IDENTITY_PROVIDER = "identity-provider"
    ADAPTER = "adapter"
    ADAPTER_SETTINGS = "adapter-settings"
    METADATA_STORE = "metadata-store"
    LOCAL_STORE = "local-store"
    REMOTE_STORE = "remote-store"
    SHARE = "share"
    SHARE_NFS = "share-nfs"
    PERMISSION = "permission"
    SNAPSHOT_POLICY = "snapshot-policy"


STORE_KINDS: Mapping[StoreKind, Kind] = {
    StoreKind.METADATA: Kind.METADATA_STORE, StoreKind.LOCAL: Kind.LOCAL_STORE, StoreKind.REMOTE: Kind.REMOTE_STORE,
}


class Op(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    SET_PASSWORD = "set-password"
    DELETE = "delete"


@dataclass(frozen=True, order=True)
class Ref:
    """One object the operator created; ``str(ref)`` is what ``status.provisioned`` keeps."""

    kind: Kind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> Ref:
        kind, _, name = text.partition(":")
        return cls(Kind(kind), name)


def permission_name(share: str, principal: str, name: str) -> str:
    return f"{share_name(share)}#{principal}:{name}"


@dataclass(frozen=True)
class SecretField:
    """Where the executor puts a resolved secret value: ``body[key]``, or ``body[within][key]`` (a store's
    ``config``, a Kerberos ``machine_account``)."""

    key: str
    secret: SecretValue
    within: str = ""
    label: str = ""  # the digest slot when it differs from ``key`` (a reset sends `new_password`)
    integer: bool = False  # sent as a JSON number: a Secret holds text, DittoFS ignores a string `port`

    @property
    def slot(self) -> str:
        return self.label or self.key


@dataclass(frozen=True)
class Call:
    """One REST call. ``body`` never holds a secret value; ``secrets`` says where they go.

    ``digest_key``s of the secrets are what ``Plan.digests_after`` records once the call succeeded.
    """

    op: Op
    kind: Kind
    name: str
    method: str
    path: str
    body: Mapping[str, Any] | None = field(default=None, compare=True, hash=False)
    secrets: tuple[SecretField, ...] = ()
    needs_restart: bool = False  # DittoFS persists it but applies it only at the next start (store configs)
    admin_first_login: bool = False  # a new/reset admin-role account must self-change its password once
    stamps: tuple[tuple[str, str], ...] = ()  # (slot, digest) recorded once it succeeded (a store's config)
    whole: bool = False  # the body is the whole record (a store's config): a secret not sent is gone from it
    follows_input: bool = False  # made for a changed Secret value or volume size, not for drift in DittoFS

    @property
    def ref(self) -> Ref:
        return Ref(self.kind, self.name)

    def __str__(self) -> str:
        return f"{self.op.value} {self.kind.value} {self.name} ({self.method} {self.path})"


def digest_key(ref: Ref, key: str) -> str:
    return f"{ref}/{key}"


class ProblemKind(StrEnum):
    IMMUTABLE = "Immutable"  # store type/path, a share's stores
    NOT_OWNED = "NotOwned"  # declared, but it exists and was made by hand
    RESERVED = "Reserved"  # admin / the operator account declared as a user
    MISSING_DEPENDENCY = "MissingDependency"  # a share names a store that is neither declared nor present
    IN_USE = "InUse"  # an owned store to prune is still used by a share we keep
    HOLDS_SNAPSHOTS = "HoldsSnapshots"  # an owned share to prune has snapshots, which DittoFS deletes with it


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    ref: Ref
    message: str

    def __str__(self) -> str:
        return f"{self.ref}: {self.message}"
