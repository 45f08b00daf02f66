"""The `DittoServer` API (dittofs.dittofs.com/v1alpha1) as pydantic v2 models.

One source of truth: the CRD schema, the webhook, the reconciler and `dittoctl validate` all read these
classes. Attribute docstrings become schema descriptions (read by `dittoctl.api.crd` when it generates the CRD),
so `kubectl explain` shows them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any, Literal, get_args, overload

from croniter import croniter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from dittoctl.api.kinds import DITTOSERVERS
from dittoctl.api.quantity import parse_quantity

GROUP = DITTOSERVERS.group
VERSION = DITTOSERVERS.version
API_VERSION = DITTOSERVERS.api_version
KIND = DITTOSERVERS.kind
PLURAL = DITTOSERVERS.plural
SINGULAR = "dittoserver"
SHORT_NAMES = ("ditto", "dittofs")
CATEGORIES = ("dittofs",)

DEFAULT_IMAGE = "marmos91c/dittofs:v0.29.0"
DEFAULT_CONTENT_SIZE = "5Gi"
LOCAL_STORE_SHARE = Decimal("0.8")  # of the content volume, an fs local store's default cap (LocalStoreSpec.max_size)
MIB = 1 << 20
SHUTDOWN_TIMEOUT_SECONDS = 30
PRESTOP_SECONDS = 5
# preStop + DittoFS's worst-case graceful shutdown (3 stages x shutdown_timeout) + a buffer.
DEFAULT_GRACE_SECONDS = PRESTOP_SECONDS + 3 * SHUTDOWN_TIMEOUT_SECONDS + 10
MIN_GRACE_SECONDS = 36
# The startup probe's budget. SPEC §4.6's 150 s is what DittoFS needs with no data: it answers its first probe
# only after reading back every record its local stores keep on the content volume (measured: ~3 s per GiB at
# 330 MiB/s, 51 s per GiB at 20 MiB/s), and a start cut short begins again from the first record, so the server
# would never come back. An hour (CloudNativePG's default for PostgreSQL's own replay) reads ~175 GiB at 50 MiB/s.
# Not derived from contentSize: an expansion would then change the pod template and restart the pod.
STARTUP_PERIOD_SECONDS = 5
DEFAULT_STARTUP_SECONDS = 3600
MIN_STARTUP_SECONDS = 30
MAX_STARTUP_SECONDS = 7 * 24 * 3600
# List bounds: a CEL rule on an item's field is costed per item, so the schema can explain a mistyped quota, size or
# interval in words only inside a bounded list (dittoctl.api.crd._humane).
MAX_SHARES = 1000
MAX_STORES = 64

# Go's time.ParseDuration grammar (unsigned), written once: validation, the CRD's pattern and parsing share it.
GO_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_GO_UNIT = "|".join(GO_UNIT_NS)  # "ms" before "m": the alternation takes the first that matches
_GO_TERMS = rf"([0-9]+(\.[0-9]+)?({_GO_UNIT}))+"
_GO_DURATION = re.compile(rf"^{_GO_TERMS}$")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_SECRET_KEY = r"^[-._a-zA-Z0-9]+$"


def _check_quantity(value: str) -> str:
    if parse_quantity(value) <= 0:
        raise ValueError("must be a positive quantity")
    return value


@functools.lru_cache(maxsize=512)
def _is_cron(value: str) -> bool:
    # croniter's check costs ~0.1 ms and every parse checks two schedules (defaults included): memoize it,
    # or it dominates the webhook's latency.
    # L, W and # are croniter's extensions: the Kubernetes CronJob parser Percona's schedules go through has none.
    return len(value.split()) == 5 and not re.search(r"[LW#]", value) and bool(croniter.is_valid(value))


def _check_cron(value: str) -> str:
    if not _is_cron(value):
        raise ValueError(f"{value!r} is not a 5-field cron expression (e.g. '0 2 * * *')")
    return value


GO_PART = re.compile(rf"(\d+(?:\.\d*)?|\.\d+)({_GO_UNIT})")  # one term of a Go duration, as Go writes it
GO_MAX_NS = (1 << 63) - 1  # Go's time.Duration: a longer one fails DittoFS's config (a crash loop) or its API


def go_duration_ns(value: str) -> Fraction:
    return sum((Fraction(num) * GO_UNIT_NS[unit] for num, unit in GO_PART.findall(value)), Fraction(0))


def _check_duration(value: str) -> str:
    if not _GO_DURATION.match(value):
        raise ValueError(f"{value!r} is not a duration like '15m', '168h' or '1h30m'")
    if go_duration_ns(value) > GO_MAX_NS:
        raise ValueError(f"{value!r} is longer than the longest duration DittoFS can read (2562047h)")
    return value


METRICS_PATH_PATTERN = r"^/[A-Za-z0-9._~/-]*$"
# The Prometheus Operator's own Duration: whole numbers, units in this order (its CRD refuses "1.5m").
PROMETHEUS_DURATION_PATTERN = (r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
                               r"(([0-9]+)ms)?)$")
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# Human wording of each pattern: the webhook's errors and the CRD's own CEL messages (what `kubectl apply`
# prints when the schema rejects a value before the webhook sees it) both use it.
PATTERN_MESSAGES = {
    QUANTITY_PATTERN: "must be a Kubernetes quantity such as 1Gi, 500Mi or 10G",
    DNS_SUBDOMAIN_PATTERN: "must be a lower-case DNS name (a-z, 0-9, '-' and '.')",
    _SECRET_KEY: "must be a Secret key (letters, digits, '-', '_' and '.')",
    _IDENTIFIER.pattern: "must be a lower-case SQL identifier (a-z, 0-9, '_'; not starting with a digit)",
    _GO_DURATION.pattern: "must be a duration such as 15m, 168h or 1h30m",
    r"^/": "must be an absolute path starting with '/'",
    PROMETHEUS_DURATION_PATTERN: "must be a Prometheus duration such as 30s, 1m or 1m30s (whole numbers; units "
                                 "y, w, d, h, m, s, ms in that order)",
    METRICS_PATH_PATTERN: "must be a URL path such as /metrics (letters, digits and - . _ ~ /): DittoFS registers it "
                          "as a Go HTTP route, and any other character stops it at start",
    r"^[0-9]+\.[0-9]+\.[0-9]+$": "must be a version such as 2.8.0",
}
Quantity = Annotated[
    str,
    Field(pattern=QUANTITY_PATTERN),
    AfterValidator(_check_quantity),
]
Cron = Annotated[str, Field(min_length=9), AfterValidator(_check_cron)]
Duration = Annotated[str, Field(pattern=_GO_DURATION.pattern), AfterValidator(_check_duration)]
PrometheusDuration = Annotated[str, Field(pattern=PROMETHEUS_DURATION_PATTERN, min_length=1)]
Port = Annotated[int, Field(ge=1, le=65535)]
ResourceName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
SecretKey = Annotated[str, Field(min_length=1, max_length=253, pattern=_SECRET_KEY)]
Identifier = Annotated[str, Field(pattern=_IDENTIFIER.pattern)]
StringMap = dict[str, str]
MAX_NESTING = 32  # far beyond any Kubernetes shape (an affinity is ~10 deep); the operator's JSON stops at 254


def _check_nesting(value: dict[str, Any]) -> dict[str, Any]:
    """Iterative, so a deep object costs no recursion: the limit keeps it from every recursive step after."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ValueError(f"nests deeper than {MAX_NESTING} levels; no Kubernetes field needs that: flatten it")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return value


# Lists of named entries are maps to server-side apply: two managers (Argo CD and a team's `kubectl apply
# --server-side`) each own their entries, instead of the last applier replacing the whole list.
NAMED_LIST: dict[str, Any] = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}

# Kubernetes shapes passed through untouched; the apiserver keeps them as written.
KubeObject = Annotated[dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}),
                       AfterValidator(_check_nesting)]


class ApiModel(BaseModel):
    """Base: camelCase on the wire, unknown fields rejected (typos must not pass silently)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        defer_build=True,
    )


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: ResourceName
    """Name of the referenced object."""


class SecretKeyRef(ApiModel):
    """A key of a Secret in the DittoServer's namespace."""

    name: ResourceName
    """Secret name."""
    key: SecretKey
    """Key inside the Secret."""


class StorageSpec(ApiModel):
    """PersistentVolumeClaims of the server. Sizes can grow when the StorageClass allows volume expansion
    (the PVCs are resized around the running pod; a grown contentSize rolls it once when an fs local store keeps
    its default cap), never shrink; the class is immutable."""

    metadata_size: Quantity
    """Size of the `metadata` volume, mounted at /data/store/metadata (required)."""
    content_size: Quantity | None = None
    """Size of the `content` volume (block store and its write-ahead log), mounted at /data/store/block.
    Defaults to 5Gi (or to the deprecated cacheSize when only that is set)."""
    control_plane_size: Quantity = "1Gi"
    """Size of the `controlplane` volume holding the SQLite control-plane database."""
    cache_size: Quantity | None = None
    """Deprecated: DittoFS >= 0.9 has no disk cache. Accepted as contentSize when that is unset."""
    storage_class_name: ResourceName | None = None
    """StorageClass of all server PVCs; the cluster default when unset."""

    @property
    def effective_content_size(self) -> str:
        return self.content_size or self.cache_size or DEFAULT_CONTENT_SIZE


CONTROL_PLANE_ROOT = "/data/controlplane"  # the control-plane volume's mount: the SQLite database lives below it


class SqliteSpec(ApiModel):
    """Embedded SQLite control-plane database."""

    path: str = Field(f"{CONTROL_PLANE_ROOT}/controlplane.db", pattern=r"^/")
    """Path of the database file in the pod: under /data/controlplane/, the control-plane volume (the webhook
    refuses any other path: DittoFS could not create it, or it would not persist)."""


class PostgresSecretRef(ApiModel):
    """Secret holding the connection to an external PostgreSQL server."""

    name: ResourceName
    """Secret name."""
    host_key: SecretKey = "host"
    """Key holding the host name."""
    port_key: SecretKey = "port"
    """Key holding the port."""
    database_key: SecretKey = "database"
    """Key holding the database name."""
    user_key: SecretKey = "user"
    """Key holding the user name."""
    password_key: SecretKey = "password"
    """Key holding the password."""
    ssl_mode_key: SecretKey = "sslmode"
    """Key holding the sslmode (disable, require, verify-full, ...)."""


class DatabaseSpec(ApiModel):
    """The control-plane database of DittoFS."""

    type: Literal["sqlite", "postgres"] = "sqlite"
    """Backend. A postgresSecretRef (or Percona) makes the server use PostgreSQL regardless."""
    sqlite: SqliteSpec = Field(default_factory=SqliteSpec)
    """SQLite settings."""
    postgres_secret_ref: PostgresSecretRef | None = None
    """External PostgreSQL connection Secret."""


class BackupSpec(ApiModel):
    """pgBackRest backups of the Percona cluster to S3."""

    enabled: bool = False
    """Turn backups on. Off is sent explicitly: Percona treats a missing value as on."""
    bucket: str | None = None
    """S3 bucket (required when enabled)."""
    endpoint: str | None = None
    """S3 endpoint URL (required when enabled)."""
    region: str = "eu-west-1"
    """S3 region."""
    credentials_secret_ref: LocalObjectReference | None = None
    """Secret with pgBackRest S3 credentials."""
    full_schedule: Cron = "0 2 * * *"
    """Cron schedule of full backups."""
    incr_schedule: Cron = "0 * * * *"
    """Cron schedule of incremental backups."""
    retention_days: int = Field(7, ge=1)
    """Days to keep full backups (time-based pgBackRest retention)."""


class PerconaSpec(ApiModel):
    """A PerconaPGCluster (Percona Operator for PostgreSQL) as the control-plane database."""

    enabled: bool = False
    """Create and use a PerconaPGCluster named <name>-postgres."""
    delete_with_server: bool = False
    """Delete the database with the DittoServer. Default: orphan (keep) it."""
    replicas: int = Field(1, ge=1, le=5)
    """PostgreSQL instances."""
    storage_size: Quantity = "10Gi"
    """Size of each instance's data volume."""
    storage_class_name: ResourceName | None = None
    """StorageClass of the data volumes."""
    database_name: Identifier = "dittofs"
    """Database created for DittoFS (lower-case SQL identifier)."""
    postgres_version: int = Field(16, ge=12, le=18)
    """PostgreSQL major version."""
    cr_version: str = Field("2.8.0", pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    """Percona CR version, pinned on purpose."""
    image: str | None = None
    """PostgreSQL image; needed unless the Percona operator sets RELATED_IMAGE_*."""
    backup: BackupSpec = Field(default_factory=BackupSpec)
    """Backups."""


class S3CredentialsRef(ApiModel):
    """Secret with S3 credentials for DittoFS block stores."""

    secret_name: ResourceName
    """Secret name."""
    access_key_id_key: SecretKey = "accessKeyId"
    """Key holding the access key id."""
    secret_access_key_key: SecretKey = "secretAccessKey"
    """Key holding the secret access key."""
    endpoint_key: SecretKey = "endpoint"
    """Key holding an optional endpoint URL, used by the remote stores that take these credentials and declare no
    endpoint (without the key: AWS)."""


class S3Spec(ApiModel):
    """S3 access for DittoFS block stores (stores themselves are managed over the DittoFS API)."""

    credentials_secret_ref: S3CredentialsRef | None = None
    """Credentials Secret."""
    region: str = "eu-west-1"
    """Region."""
    bucket: str | None = Field(None, min_length=3, max_length=63)
    """Default bucket of the remote stores; immutable for those that use it."""


AdapterType = Literal["nfs", "smb"]
NfsVersion = Literal["3", "4.0", "4.1"]
SmbDialect = Literal["SMB2.0", "SMB2.1", "SMB3.0", "SMB3.0.2", "SMB3.1.1"]
NFS_VERSIONS: tuple[str, ...] = get_args(NfsVersion)  # oldest first: min/max comparisons use this order
SMB_DIALECTS: tuple[str, ...] = get_args(SmbDialect)


class NfsSettings(ApiModel):
    """NFS settings applied live over the REST API (unset: DittoFS's value is left alone)."""

    min_version: NfsVersion | None = None
    """Lowest NFS version served: 3, 4.0 or 4.1."""
    max_version: NfsVersion | None = None
    """Highest NFS version served: 3, 4.0 or 4.1."""
    lease_time: Duration | None = None
    """NFSv4 lease time, 10s to 1h (DittoFS default 90s)."""
    grace_period: Duration | None = None
    """NFSv4 grace period after a restart, 10s to 1h (DittoFS default 90s)."""
    max_connections: int | None = Field(None, ge=0, le=100000)
    """Connection limit; 0 = unlimited."""


class SmbSettings(ApiModel):
    """SMB settings applied live over the REST API (unset: DittoFS's value is left alone)."""

    min_dialect: SmbDialect | None = None
    """Lowest dialect: SMB2.0, SMB2.1, SMB3.0, SMB3.0.2 or SMB3.1.1."""
    max_dialect: SmbDialect | None = None
    """Highest dialect."""
    signing: Literal["disabled", "enabled", "required"] | None = None
    """Message signing."""
    enable_encryption: bool | None = None
    """SMB3 encryption."""
    session_timeout: Duration | None = None
    """Idle session timeout, 1m to 24h (DittoFS default 15m)."""


class AdapterSpec(ApiModel):
    """A file protocol adapter, configured live over the REST API (a port change moves the listener without
    restarting the pod)."""

    enabled: bool
    """Serve this protocol."""
    port: Port
    """Port the adapter listens on (below 1024: the pod gets the safe sysctl net.ipv4.ip_unprivileged_port_start)."""


class NfsAdapter(AdapterSpec):
    """NFS adapter."""

    enabled: bool = True
    """Serve NFS."""
    port: Port = 12049
    """NFS port (DittoFS default 12049)."""
    settings: NfsSettings = Field(default_factory=NfsSettings)
    """NFS settings."""


class SmbAdapter(AdapterSpec):
    """SMB adapter."""

    enabled: bool = False
    """Serve SMB."""
    port: Port = 1445
    """SMB port (DittoFS seeds 1445)."""
    settings: SmbSettings = Field(default_factory=SmbSettings)
    """SMB settings."""


class AdaptersSpec(ApiModel):
    """File protocol adapters."""

    nfs: NfsAdapter = Field(default_factory=NfsAdapter)
    """NFS."""
    smb: SmbAdapter = Field(default_factory=SmbAdapter)
    """SMB."""

    def by_type(self) -> tuple[tuple[AdapterType, NfsAdapter | SmbAdapter], ...]:
        """Both adapters under their DittoFS type names, in a fixed order."""
        return (("nfs", self.nfs), ("smb", self.smb))

    def enabled(self) -> tuple[tuple[AdapterType, NfsAdapter | SmbAdapter], ...]:
        return tuple((kind, a) for kind, a in self.by_type() if a.enabled)


_STORE_NAME = r"^[a-zA-Z0-9_][-a-zA-Z0-9_.]{0,63}$"
SNAPSHOT_INTERVAL = rf"^(@hourly|@daily|@weekly|{_GO_TERMS})$"
PATTERN_MESSAGES[_STORE_NAME] = "must be a name of letters, digits, '-', '_' and '.' (at most 64)"
PATTERN_MESSAGES[r"^/[^\s]*$"] = "must be an absolute path starting with '/' (no spaces)"
PATTERN_MESSAGES[r"^https?://"] = "must be a URL starting with http:// or https://"


def _check_interval(value: str) -> str:
    return value if value.startswith("@") else _check_duration(value)


PATTERN_MESSAGES[SNAPSHOT_INTERVAL] = "must be a duration such as 6h or 30m, or @hourly, @daily, @weekly"
PATTERN_MESSAGES[r"^[A-Za-z0-9_-]{0,64}$"] = "must be at most 64 letters, digits, '-' and '_'"
StoreName = Annotated[str, Field(pattern=_STORE_NAME)]
DEFAULT_STORE = "default"  # the store every share uses unless it names another
METADATA_ROOT = "/data/store/metadata"  # the metadata volume's mount: badger stores live below it
BLOCK_ROOT = "/data/store/block"  # the content volume's mount: fs block stores live below it
METADATA_PATH = f"{METADATA_ROOT}/badger"  # the default metadata store's directory
BLOCK_PATH = f"{BLOCK_ROOT}/blocks"  # the default local block store's directory
DataPath = Annotated[str, Field(pattern=r"^/[^\s]*$", max_length=1024)]


class MetadataStoreSpec(ApiModel):
    """A DittoFS metadata store. Its type and path are immutable."""

    name: StoreName
    """Store name shares refer to."""
    type: Literal["badger", "postgres", "memory"] = "badger"
    """badger (on the metadata volume), postgres, or memory (lost at every restart)."""
    path: DataPath | None = None
    """badger directory under /data/store/metadata (default /data/store/metadata/<name>; for the store named
    default, /data/store/metadata/badger)."""
    postgres_secret_ref: PostgresSecretRef | None = None
    """postgres: Secret with host, port, database, user, password and sslmode (keys as in
    database.postgresSecretRef)."""

    @property
    def effective_path(self) -> str | None:
        """The badger directory in use, declared or default; None for a store without one."""
        if self.type != "badger":
            return None
        return self.path or (METADATA_PATH if self.name == DEFAULT_STORE else f"{METADATA_ROOT}/{self.name}")


class LocalStoreSpec(ApiModel):
    """A DittoFS local block store. Its type and path are immutable."""

    name: StoreName
    """Store name shares refer to."""
    type: Literal["fs", "memory"] = "fs"
    """fs (on the content volume) or memory (lost at every restart)."""
    path: DataPath | None = None
    """fs directory under /data/store/block (default /data/store/block/<name>; for the store named default,
    /data/store/block/blocks)."""
    max_size: Quantity | None = None
    """The most each share on this store keeps on the content volume (e.g. 4Gi): a share backed by a remote
    store evicts blocks already uploaded beyond it, a local-only share refuses writes. Unset, for an fs store:
    80 % of storage.contentSize (DittoFS's own default ignores the volume: 10 GiB per remote-backed share, a
    quarter of the pod's memory limit per local-only one). Changing it restarts the pod once."""

    @property
    def effective_path(self) -> str | None:
        """The fs directory in use, declared or default; None for a store without one."""
        if self.type != "fs":
            return None
        return self.path or (BLOCK_PATH if self.name == DEFAULT_STORE else f"{BLOCK_ROOT}/{self.name}")

    def effective_max_size(self, content_size: str, capacity: int | None = None) -> int | None:
        """The cap sent to DittoFS, in bytes: declared, or for an fs store a share of the content volume that
        leaves room for what DittoFS does not count (segments being written, indexes, snapshots). ``capacity``:
        the volume's size as its PVC reports it, smaller than declared while an expansion is under way (a cap
        above the filesystem is what failed writes). At least 1 MiB: 0 is DittoFS's "no limit"."""
        if self.max_size is not None:
            return int(parse_quantity(self.max_size))
        if self.type != "fs":
            return None
        size = parse_quantity(content_size)
        if capacity is not None and capacity < size:
            size = Decimal(capacity)
        return max(MIB, int(size * LOCAL_STORE_SHARE) // MIB * MIB)


class RemoteStoreCredentials(ApiModel):
    """Secret with the S3 access key pair, copied into the store's config over the REST API."""

    name: ResourceName
    """Secret name."""
    access_key_id_key: SecretKey = "accessKeyId"
    """Key holding the access key id."""
    secret_access_key_key: SecretKey = "secretAccessKey"
    """Key holding the secret access key."""


REMOTE_LOCATION_KEYS = ("bucket", "prefix")
"""A remote store's immutable keys, the same in the CRD and in DittoFS's store config."""


class RemoteStoreSpec(ApiModel):
    """A DittoFS remote (S3) block store. A change of its config or credentials restarts the pod (DittoFS
    applies store config only at start)."""

    name: StoreName
    """Store name shares refer to."""
    type: Literal["s3"] = "s3"
    """s3."""
    bucket: str | None = Field(None, min_length=3, max_length=63)
    """Bucket (default spec.s3.bucket). Immutable: the store's blocks are there."""
    region: str | None = None
    """Region (default spec.s3.region)."""
    endpoint: str | None = Field(None, pattern=r"^https?://")
    """Endpoint URL of an S3-compatible service (MinIO, Ceph...); unset: AWS."""
    prefix: str | None = None
    """Key prefix inside the bucket. Immutable."""
    force_path_style: bool | None = None
    """Path-style addressing (DittoFS turns it on when endpoint is set)."""
    allow_private_endpoint: bool = False
    """Allow an endpoint on a loopback or private address (in-cluster MinIO); DittoFS refuses it otherwise."""
    credentials_secret_ref: RemoteStoreCredentials | None = None
    """Access key pair (default spec.s3.credentialsSecretRef)."""

    def effective_bucket(self, s3: S3Spec | None) -> str | None:
        """The bucket in use, declared or spec.s3's; None when neither is set (admission refuses that)."""
        return self.bucket or (s3.bucket if s3 else None)

    def location(self, s3: S3Spec | None) -> dict[str, str | None]:
        """Where its blocks are (``REMOTE_LOCATION_KEYS``): immutable, or DittoFS would look for blocks already
        evicted from local disk where they are not."""
        return {"bucket": self.effective_bucket(s3), "prefix": self.prefix or None}

    def effective_region(self, s3: S3Spec | None) -> str:
        """The region in use: declared, else spec.s3's, else DittoFS's own default."""
        return self.region or (s3.region if s3 else None) or "us-east-1"


StoreList = Literal["metadata", "local", "remote"]
STORE_LISTS: tuple[StoreList, ...] = ("metadata", "local", "remote")


class StoresSpec(ApiModel):
    """DittoFS stores, provisioned over the REST API. Unset lists get one store named default."""

    metadata: list[MetadataStoreSpec] | None = Field(None, max_length=MAX_STORES, json_schema_extra=NAMED_LIST)
    """Metadata stores; unset: default = badger at /data/store/metadata/badger."""
    local: list[LocalStoreSpec] | None = Field(None, max_length=MAX_STORES, json_schema_extra=NAMED_LIST)
    """Local block stores; unset: default = fs at /data/store/block/blocks."""
    remote: list[RemoteStoreSpec] = Field(default_factory=list, max_length=MAX_STORES,
                                          json_schema_extra=NAMED_LIST)
    """Remote (S3) block stores."""

    @overload
    def served(self, kind: Literal["metadata"]) -> Sequence[MetadataStoreSpec]: ...
    @overload
    def served(self, kind: Literal["local"]) -> Sequence[LocalStoreSpec]: ...
    @overload
    def served(self, kind: StoreList) -> Sequence[MetadataStoreSpec | LocalStoreSpec | RemoteStoreSpec]: ...
    def served(self, kind: StoreList) -> Sequence[MetadataStoreSpec | LocalStoreSpec | RemoteStoreSpec]:
        """The stores of ``kind`` the server has: the declared ones, or for an unset list the implicit default."""
        if kind == "remote":
            return self.remote
        if kind == "metadata":
            return [MetadataStoreSpec(name=DEFAULT_STORE)] if self.metadata is None else self.metadata
        return [LocalStoreSpec(name=DEFAULT_STORE)] if self.local is None else self.local


class IssuerRef(ApiModel):
    """A cert-manager issuer."""

    name: ResourceName
    """Issuer name."""
    kind: Literal["Issuer", "ClusterIssuer"] = "Issuer"
    """Issuer (in the DittoServer's namespace) or ClusterIssuer."""
    group: str = "cert-manager.io"
    """API group of the issuer (external issuers have their own)."""


class CertificateSpec(ApiModel):
    """Ask the operator to request the certificates from cert-manager (needs cert-manager's CRDs)."""

    issuer_ref: IssuerRef
    """Who signs them."""
    duration: Duration | None = None
    """Certificate lifetime (cert-manager's default 2160h)."""
    renew_before: Duration | None = None
    """Renew this long before expiry (cert-manager's default: a third of the duration)."""


class ControlPlaneTlsSpec(ApiModel):
    """HTTPS for the REST API from a kubernetes.io/tls Secret (tls.crt, tls.key, optional ca.crt), mounted into
    the pod. DittoFS reloads rotated files by itself, so a renewal restarts nothing."""

    secret_name: ResourceName
    """Secret with tls.crt and tls.key (e.g. one cert-manager keeps renewed); its certificate must name
    <name>-api.<namespace>.svc. With ca.crt, the operator trusts that CA for its own calls."""
    min_version: Literal["1.2", "1.3"] | None = None
    """Lowest TLS version (DittoFS default 1.2)."""
    client_ca_secret_name: ResourceName | None = None
    """Mutual TLS: a Secret whose ca.crt signs the only client certificates the API accepts. The kubelet
    cannot present one, so the probes become TCP checks."""
    operator_client_secret_name: ResourceName | None = None
    """With clientCaSecretName: a kubernetes.io/tls Secret (tls.crt, tls.key) signed by that CA, which the
    operator presents (so mutual TLS never locks the operator out)."""
    certificate: CertificateSpec | None = None
    """Have the operator request a cert-manager Certificate <name>-api into secretName (and, with mutual
    TLS, <name>-operator-client into operatorClientSecretName) instead of providing the Secrets yourself."""


class ControlPlaneSpec(ApiModel):
    """REST API and health endpoints."""

    port: Port = 8080
    """API port."""
    tls: ControlPlaneTlsSpec | None = None
    """Serve the API over HTTPS (probes and the operator follow)."""


class ServiceMonitorSpec(ApiModel):
    """A ServiceMonitor for the <name>-metrics Service (only when monitoring.coreos.com/v1 is served; the
    operator notices the CRD arriving or leaving without a restart)."""

    enabled: bool = True
    """Create it whenever metrics are enabled and the CRD is served."""
    labels: StringMap = Field(default_factory=dict)
    """Extra labels, e.g. the one your Prometheus selects ServiceMonitors by (release: prometheus)."""
    interval: PrometheusDuration | None = None
    """Scrape interval, e.g. 30s or 1m30s (unset: Prometheus's default)."""


class MetricsSpec(ApiModel):
    """Prometheus metrics of the server."""

    enabled: bool = False
    """Serve metrics and create the <name>-metrics Service."""
    port: Port = 9090
    """Metrics port."""
    path: str = Field("/metrics", pattern=METRICS_PATH_PATTERN, max_length=253)
    """Metrics path."""
    service_monitor: ServiceMonitorSpec = Field(default_factory=ServiceMonitorSpec)
    """Prometheus Operator ServiceMonitor, created while metrics are enabled and the CRD is served."""


class NetworkPeer(ApiModel):
    """One allowed source: a CIDR, or pods by labels and/or namespaces by labels (both: those pods in those
    namespaces). An empty label map matches everything of its kind."""

    cidr: str | None = Field(None, pattern=r"^[0-9a-fA-F.:]+/[0-9]{1,3}$")
    """IPv4 or IPv6 CIDR, e.g. 10.20.0.0/16."""
    except_cidrs: list[str] = Field(default_factory=list)
    """CIDRs inside cidr that are not allowed."""
    namespaces: StringMap | None = None
    """Namespace labels, e.g. kubernetes.io/metadata.name: apps ({}: every namespace)."""
    pods: StringMap | None = None
    """Pod labels ({}: every pod; without namespaces: pods in the DittoServer's namespace)."""


class NetworkPolicySpec(ApiModel):
    """The <name>-ingress NetworkPolicy: which sources may reach the server's pod. The operator's namespace
    can always reach the API and the file ports, so a policy can never cut the operator off."""

    enabled: bool = True
    """Create the policy (false: none, every source can reach every port)."""
    api_from: list[NetworkPeer] = Field(default_factory=list)
    """Who else may reach the REST API (it is admin-capable: nobody else by default)."""
    metrics_from: list[NetworkPeer] | None = None
    """Who may scrape metrics; unset: any source."""
    file_clients: list[NetworkPeer] | None = None
    """Who may use NFS and SMB; unset: any source; []: nobody but the operator's health check."""


class JwtSpec(ApiModel):
    """JWT signing of API tokens."""

    secret_ref: SecretKeyRef | None = None
    """Signing secret (>= 32 chars). Generated as <name>-jwt when unset."""
    access_token_duration: Duration = "15m"
    """Lifetime of access tokens."""
    refresh_token_duration: Duration = "168h"
    """Lifetime of refresh tokens."""


class AdminSpec(ApiModel):
    """The bootstrap administrator."""

    username: str = Field("admin", min_length=1)
    """Administrator user name: always admin (DittoFS v0.29.0 bootstraps no other; the webhook refuses another)."""
    password_secret_ref: SecretKeyRef | None = None
    """Initial password. Generated as <name>-admin-bootstrap-credentials when unset; used at first boot."""


_LDAP_URL = r"^ldaps?://[^\s/]+/?$"
_LDAP_ATTRIBUTE = r"^[A-Za-z][A-Za-z0-9-]*$"
_REALM = r"^[^@/\s]*$"
_NETBIOS = r"^[^.@/\s]*$"
_PRINCIPAL = r"^[^@\s]+(@[^@/\s]+)?$"
PATTERN_MESSAGES.update({
    _LDAP_URL: "must be ldaps://host[:port] or ldap://host[:port]",
    _LDAP_ATTRIBUTE: "must be an LDAP attribute name (a letter, then letters, digits or '-')",
    _REALM: "must not contain '@', '/' or spaces",
    _NETBIOS: "must be a single label (no '.', '@', '/' or spaces)",
    _PRINCIPAL: "must be a principal such as nfs/files.example.com@EXAMPLE.COM",
})


class LdapSpec(ApiModel):
    """An LDAP / Active Directory identity provider. DittoFS seeds it from the config at first boot and keeps
    it in its database; the operator converges later edits and bind-password rotations over the REST API,
    which DittoFS applies live."""

    url: str = Field(pattern=_LDAP_URL)
    """Directory URL: ldaps://dc.example.com:636 (preferred) or ldap://dc.example.com:389 with startTLS."""
    start_tls: bool = False
    """Upgrade an ldap:// connection with StartTLS (ignored for ldaps://)."""
    allow_plaintext: bool = False
    """Explicitly allow binding over unencrypted ldap:// without StartTLS (lab use only)."""
    base_dn: str = Field(min_length=1)
    """Search base, e.g. DC=example,DC=com."""
    bind_dn: str = Field(min_length=1)
    """Service account the server binds as before searching."""
    bind_password_secret_ref: SecretKeyRef
    """The service account's password (a rotation is applied live, without a restart)."""
    user_attribute: str = Field("sAMAccountName", pattern=_LDAP_ATTRIBUTE)
    """Attribute matched against the user name."""
    realm: str = Field("", pattern=_REALM)
    """Expected AD realm, e.g. EXAMPLE.COM (matches user@REALM principals)."""
    id_mapping: Literal["rfc2307", "rid"] = "rfc2307"
    """How uid/gid are derived: rfc2307 (uidNumber/gidNumber attributes) or rid (from the SID, like
    Samba's idmap_rid)."""
    nested_groups: bool = False
    """Resolve nested group memberships (AD LDAP_MATCHING_RULE_IN_CHAIN)."""
    timeout: Duration = "10s"
    """Bound on each directory operation (dial, bind, search)."""
    max_group_results: int = Field(200, ge=1)
    """Cap on the groups resolved for one user."""
    ca_secret_ref: SecretKeyRef | None = None
    """CA bundle (PEM) that signs the directory's certificate; unset: the image's system roots."""
    tls_min_version: Literal["1.2", "1.3"] = "1.2"
    """Lowest TLS version for the directory connection."""


class MachineAccountSpec(ApiModel):
    """An AD machine account for NTLM pass-through (NETLOGON) over SMB."""

    account_name: str = Field(min_length=1)
    """The computer account, e.g. DITTOFS$."""
    secret_ref: SecretKeyRef
    """The machine account's password (a rotation is applied live)."""
    dc_addresses: list[str] = Field(default_factory=list)
    """Domain controllers (host or host:port); unset: discovered through DNS."""


class KerberosSpec(ApiModel):
    """Kerberos (RPCSEC_GSS for NFS, SPNEGO for SMB). The keytab and krb5.conf are mounted from Secrets: a
    rotated keytab is reloaded by DittoFS (within a minute), a rotated krb5.conf restarts the pod. DittoFS
    keeps the other fields in its database after the first boot, so a change is sent over the REST API and
    applied by a restart."""

    service_principal: str = Field(min_length=1, pattern=_PRINCIPAL)
    """The server's principal, e.g. nfs/files.example.com@EXAMPLE.COM."""
    keytab_secret_ref: SecretKeyRef
    """The keytab holding the service principal's keys."""
    krb5_conf_secret_ref: SecretKeyRef
    """The krb5.conf (realms, KDCs); DittoFS cannot start Kerberos without one."""
    realm: str = Field("", pattern=_REALM)
    """Default realm, e.g. EXAMPLE.COM."""
    netbios_domain: str = Field("", pattern=_NETBIOS)
    """NetBIOS domain for SMB, e.g. EXAMPLE."""
    dns_domain: str = Field("", pattern=_REALM)
    """DNS domain for SMB, e.g. example.com."""
    max_clock_skew: Duration = "5m"
    """Tolerated clock skew."""
    context_ttl: Duration = "8h"
    """Lifetime of an established GSS context."""
    max_contexts: int = Field(10000, ge=1)
    """Cap on concurrent GSS contexts."""
    machine_account: MachineAccountSpec | None = None
    """NTLM pass-through through an AD machine account."""


class IdentitySpec(ApiModel):
    """Authentication settings."""

    jwt: JwtSpec = Field(default_factory=JwtSpec)
    """JWT settings."""
    admin: AdminSpec = Field(default_factory=AdminSpec)
    """Administrator."""
    ldap: LdapSpec | None = None
    """LDAP / Active Directory identity provider."""
    kerberos: KerberosSpec | None = None
    """Kerberos authentication."""


class LoggingSpec(ApiModel):
    """Server logging."""

    level: Literal["DEBUG", "INFO", "WARN", "ERROR"] = "INFO"
    """Log level."""
    format: Literal["json", "text"] = "json"
    """Log format."""


class ServiceSpec(ApiModel):
    """The <name>-file and <name>-api Services."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Service type. ClusterIP by default: the API is admin-capable."""
    annotations: StringMap = Field(default_factory=dict)
    """Annotations of the <name>-api and <name>-file Services (not the headless or the metrics one)."""
    load_balancer_source_ranges: list[str] = Field(default_factory=list)
    """CIDRs allowed to reach a LoadBalancer."""


AccessLevel = Literal["none", "read", "read-write", "admin"]
DEFAULT_SHARE = "/export"
AccountName = StoreName  # DittoFS names users, groups and stores alike


class SharePermission(ApiModel):
    """A grant on a share to one declared user or group (set exactly one of them)."""

    user: AccountName | None = None
    """A user declared in spec.users."""
    group: AccountName | None = None
    """A group declared in spec.groups."""
    level: AccessLevel
    """Access level: none, read, read-write or admin."""


class ShareNfsOptions(ApiModel):
    """Per-share NFS export options (unset: DittoFS's value is left alone)."""

    squash: Literal["none", "root_to_admin", "root_to_guest", "all_to_admin", "all_to_guest"] | None = None
    """Identity squashing (DittoFS default root_to_guest)."""
    anonymous_uid: int | None = Field(None, ge=0, le=4294967295, alias="anonymousUID")
    """uid squashed identities map to."""
    anonymous_gid: int | None = Field(None, ge=0, le=4294967295, alias="anonymousGID")
    """gid squashed identities map to."""


class SnapshotPolicySpec(ApiModel):
    """Scheduled snapshots of a share."""

    interval: Annotated[str, Field(pattern=SNAPSHOT_INTERVAL), AfterValidator(_check_interval)]
    """Go duration (e.g. 6h) or @hourly, @daily, @weekly."""
    keep_last: int = Field(0, ge=0, le=100000)
    """Scheduled snapshots kept (0: keep all within ttl). DittoFS prunes as it starts a new one, counting only
    finished ones, so keepLast + 1 exist between runs."""
    ttl: Duration | None = None
    """Age after which snapshots are removed."""
    name_prefix: str = Field("", pattern=r"^[A-Za-z0-9_-]{0,64}$")
    """Prefix of snapshot names."""
    enabled: bool = True
    """Run the schedule."""


class FileShareSpec(ApiModel):
    """A share served over NFS (and SMB when enabled), provisioned over the DittoFS REST API."""

    name: str = Field(pattern=r"^/[^\s]*$", min_length=2, max_length=255)
    """Share path clients mount, e.g. /export (no trailing "/": DittoFS would keep /export/ apart). Over SMB
    only a lower-case name of one segment can be reached (DittoFS v0.29.0 looks SMB shares up so)."""
    metadata_store: StoreName = "default"
    """Metadata store (stores.metadata). Immutable."""
    local_block_store: StoreName = "default"
    """Local block store (stores.local). Immutable."""
    remote_block_store: StoreName | None = None
    """Remote block store (stores.remote) the blocks are tiered to. Immutable."""
    read_only: bool = False
    """Serve the share read-only. Setting it rolls the pod once (DittoFS enforces it from its next start); it
    cannot go back to false (DittoFS keeps refusing the share's writes): declare a new share instead."""
    default_permission: AccessLevel = "none"
    """Access of clients without a grant (NFS unknown uids, anonymous SMB). DittoFS's default is none."""
    quota: Quantity | None = None
    """Size limit (e.g. 10Gi): writes to the share fail with "no space" once they would take its metadata store
    beyond it. DittoFS v0.29.0 counts every share on that store, so a limit of the share's own needs a metadata
    store of its own. Unset: none."""
    nfs: ShareNfsOptions | None = None
    """NFS export options."""
    permissions: list[SharePermission] = Field(default_factory=list)
    """Grants to declared users and groups."""
    snapshot_policy: SnapshotPolicySpec | None = None
    """Scheduled snapshots; removed from the spec: the schedule is deleted (snapshots stay)."""

    @property
    def smb_reachable(self) -> bool:
        """DittoFS v0.29.0 looks an SMB tree connect's share up by "/" + the UNC's share part in lower case
        (`tree_connect.go` `parseSharePath`): an upper-case letter or a '/' inside leaves a share NFS-only."""
        rest = self.name[1:]
        return rest == rest.lower() and "/" not in rest


class FileUserSpec(ApiModel):
    """A DittoFS user. Its password is a consumed Secret key: changing it resets the password live (no restart)."""

    name: AccountName
    """User name (admin and dittofs-operator are reserved)."""
    password_secret_ref: SecretKeyRef
    """Secret key holding the password (required: DittoFS refuses users without one)."""
    uid: int | None = Field(None, ge=0, le=4294967295)
    """NFS uid of the user (AUTH_SYS identity)."""
    gid: int | None = Field(None, ge=0, le=4294967295)
    """Primary NFS gid."""
    role: Literal["user", "admin"] = "user"
    """DittoFS role; admin may manage the server over its API."""
    groups: list[AccountName] = Field(default_factory=list)
    """Groups declared in spec.groups the user belongs to."""


class FileGroupSpec(ApiModel):
    """A DittoFS group."""

    name: AccountName
    """Group name (admins, operators and users are DittoFS's own)."""
    gid: int | None = Field(None, ge=0, le=4294967295)
    """NFS gid of the group."""


class DittoServerSpec(ApiModel):
    """Desired state of a DittoFS server."""

    image: str = Field(DEFAULT_IMAGE, min_length=1)
    """Server image."""
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"
    """Image pull policy."""
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    """Pull secrets."""
    replicas: int = Field(1, ge=0, le=1)
    """1 runs the server, 0 stops it (`kubectl scale dittoserver NAME --replicas=0` too). DittoFS is
    single-writer."""
    storage: StorageSpec
    """Volumes (required)."""
    database: DatabaseSpec = Field(default_factory=DatabaseSpec)
    """Control-plane database."""
    percona: PerconaSpec = Field(default_factory=PerconaSpec)
    """Percona-managed PostgreSQL."""
    s3: S3Spec | None = None
    """S3 credentials for block stores."""
    adapters: AdaptersSpec = Field(default_factory=AdaptersSpec)
    """Protocol adapters."""
    stores: StoresSpec = Field(default_factory=StoresSpec)
    """Metadata and block stores the shares use."""
    control_plane: ControlPlaneSpec = Field(default_factory=ControlPlaneSpec)
    """REST API."""
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    """Metrics."""
    identity: IdentitySpec = Field(default_factory=IdentitySpec)
    """Authentication."""
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    """Logging."""
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    """Services."""
    network_policy: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)
    """Ingress NetworkPolicy of the server's pod."""
    resources: KubeObject | None = None
    """Container resources (Kubernetes ResourceRequirements)."""
    security_context: KubeObject | None = None
    """Container securityContext, merged field by field over the restricted defaults."""
    pod_security_context: KubeObject | None = None
    """Pod securityContext, merged field by field over the restricted defaults."""
    node_selector: StringMap = Field(default_factory=dict)
    """Node selector."""
    tolerations: list[KubeObject] = Field(default_factory=list)
    """Tolerations."""
    affinity: KubeObject | None = None
    """Affinity."""
    topology_spread_constraints: list[KubeObject] = Field(default_factory=list)
    """Topology spread constraints."""
    priority_class_name: str | None = None
    """PriorityClass."""
    pod_labels: StringMap = Field(default_factory=dict)
    """Extra pod labels (the selector labels cannot be overridden)."""
    pod_annotations: StringMap = Field(default_factory=dict)
    """Extra pod annotations."""
    termination_grace_period_seconds: int | None = Field(None, ge=MIN_GRACE_SECONDS)
    """Pod grace period; default 105 = preStop 5 + 3 x shutdown timeout 30 + 10."""
    startup_timeout_seconds: int | None = Field(None, ge=MIN_STARTUP_SECONDS, le=MAX_STARTUP_SECONDS)
    """Seconds DittoFS may take to start before the kubelet restarts it (the startup probe's budget, rounded up
    to its 5 s period); default 3600. DittoFS answers only after reading back all the data its local stores keep
    on the content volume (an hour reads ~175 GiB at 50 MiB/s). Raise it for more data or a slower disk: a start
    cut short begins again from the start, and the server never comes back."""
    shares: list[FileShareSpec] | None = Field(None, max_length=MAX_SHARES, json_schema_extra=NAMED_LIST)
    """Shares the operator provisions over the REST API once the pod is Ready. Unset: one share /export with
    defaultPermission read-write; [] serves none. A share removed from the list is deleted in DittoFS (its
    data stays in the stores), or only disabled while it has snapshots (DittoFS would delete them with it)."""
    users: list[FileUserSpec] = Field(default_factory=list, json_schema_extra=NAMED_LIST)
    """DittoFS users the operator provisions (removed from the list: deleted in DittoFS)."""
    groups: list[FileGroupSpec] = Field(default_factory=list, json_schema_extra=NAMED_LIST)
    """DittoFS groups the operator provisions (removed from the list: deleted in DittoFS)."""

    @property
    def effective_shares(self) -> list[FileShareSpec]:
        if self.shares is None:
            return [FileShareSpec(name=DEFAULT_SHARE, default_permission="read-write")]
        return self.shares

    @property
    def grace_seconds(self) -> int:
        return self.termination_grace_period_seconds or DEFAULT_GRACE_SECONDS

    @property
    def startup_seconds(self) -> int:
        return self.startup_timeout_seconds or DEFAULT_STARTUP_SECONDS

    @property
    def uses_postgres(self) -> bool:
        return self.percona.enabled or self.database.postgres_secret_ref is not None or (
            self.database.type == "postgres"
        )


class Condition(ApiModel):
    """A metav1.Condition."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    type: str
    """Condition type."""
    status: Literal["True", "False", "Unknown"]
    """Status."""
    reason: str
    """CamelCase reason."""
    message: str = ""
    """Human-readable detail."""
    last_transition_time: str
    """Last time status flipped (RFC 3339)."""
    observed_generation: int | None = None
    """Generation the condition was computed for."""


class Endpoints(ApiModel):
    """In-cluster addresses (host:port) of the server."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    api: str | None = None
    """REST API."""
    nfs: str | None = None
    """NFS."""
    smb: str | None = None
    """SMB."""


class S3Status(ApiModel):
    """State of the S3 credentials Secret."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    secret_found: bool
    """The Secret exists."""
    missing_keys: list[str] = Field(default_factory=list)
    """Expected keys absent from the Secret."""
    message: str = ""
    """Summary."""


class ShareStatus(ApiModel):
    """A provisioned share and where to mount it."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    name: str
    """Share path."""
    read_only: bool = False
    """Served read-only."""
    nfs: str | None = None
    """NFS address (nfs://host:port/share), when NFS is enabled (none while the server is stopped)."""
    smb: str | None = None
    """SMB address (smb://host:port/share), when SMB is enabled and reaches the share (none while stopped)."""
    used_bytes: int | None = None
    """Logical bytes (file sizes) DittoFS last reported for the share. DittoFS v0.29.0 counts them per metadata
    store: shares on the same metadata store all show that store's total."""
    remote_healthy: bool | None = None
    """With a remote block store: DittoFS's last probe of it (for S3, the bucket) succeeded."""


class AdapterStatus(ApiModel):
    """A file protocol adapter as the operator last saw it."""

    type: AdapterType
    """nfs or smb."""
    port: int
    """Declared port."""
    enabled: bool
    """Declared state."""
    listening: bool
    """A TCP connect to the port succeeded (DittoFS's own `running` flag is not trusted)."""


class DittoServerStatus(ApiModel):
    """Observed state, written by the operator."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    observed_generation: int | None = None
    """Generation last reconciled; conditions are stale until it matches metadata.generation."""
    phase: Literal["Pending", "Running", "Stopped", "Degraded", "Failed", "Deleting"] | None = None
    """Summary phase: Deleting during deletion; Failed when ConfigReady is False (Pending while a referenced
    Secret is missing); Degraded; Stopped at 0 replicas; Running once every replica is ready and Ready is
    True (pods up while the file service is not yet provisioned stay Pending); else Pending."""
    ready: str | None = None
    """"<ready>/<desired>" replicas."""
    replicas: int | None = None
    """Pods of the StatefulSet."""
    ready_replicas: int | None = None
    """Ready pods."""
    available_replicas: int | None = None
    """Available pods."""
    config_hash: str | None = None
    """Hash of the rendered config and consumed Secret data."""
    percona_cluster_name: str | None = None
    """Owned PerconaPGCluster."""
    endpoints: Endpoints | None = None
    """Service endpoints."""
    s3: S3Status | None = None
    """S3 credentials state."""
    provisioned: list[str] | None = None
    """Objects the operator created in DittoFS (kind:name); only these are ever updated or deleted."""
    applied_secrets: dict[str, str] | None = None
    """Salted digests of the Secret values last applied in DittoFS (passwords, store keys), never the values, and
    stamps of other inputs applied (a store's config digest, a share made read-only) and the DittoFS id of each
    owned share (one deleted and made again by hand is not the operator's)."""
    shares: list[ShareStatus] | None = None
    """Provisioned shares with ready-to-paste addresses."""
    adapters: list[AdapterStatus] | None = None
    """Adapters and whether they accept connections."""
    store_revision: int | None = None
    """Counts store-config updates DittoFS applies only at start; part of the config hash, so each one rolls
    the pod once."""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    """Conditions."""


class DittoServer(BaseModel):
    """A DittoFS file server managed by the dittofs-operator."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    api_version: Literal["dittofs.dittofs.com/v1alpha1"] = Field("dittofs.dittofs.com/v1alpha1", alias="apiVersion")
    kind: Literal["DittoServer"] = "DittoServer"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: DittoServerSpec
    status: DittoServerStatus | None = None
