"""The declared file service of a DittoServer (SPEC §13.1), pure: spec -> ``FileService`` for the planner,
and the share addresses shown in status."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from dittoctl.api.fileservice import (
    AdapterSpec,
    FileService,
    Grant,
    GroupSpec,
    Kind,
    NfsOptions,
    Observed,
    Op,
    Plan,
    Problem,
    ProblemKind,
    Ref,
    SecretValue,
    ShareSpec,
    SnapshotPolicySpec,
    StoreKind,
    StoreSpec,
    UserSpec,
    plan,
    read_only_stamps,
    share_ids,
)
from dittoctl.api.fileservice.observed import duration_seconds
from dittoctl.api.fileservice.types import Call, IdentityProviderSpec, Scalar
from dittoctl.api.models import DittoServerSpec
from dittoctl.api.naming import OWNERSHIP_ANNOTATION, Names, url_host
from dittoctl.api.quantity import parse_quantity
from dittoctl.api.secrets import (
    LDAP_PASSWORD_SLOT,
    MACHINE_SECRET_SLOT,
    ProvisionedSecret,
    identity_secrets,
    postgres_store_secrets,
    remote_store_credentials,
)
from reconciler.specs.identity import KERBEROS_DURATIONS, LDAP_DURATIONS, kerberos_record, ldap_record

# (secret, key) -> digest of the value (the cache's), None when the Secret or key is missing.
DigestOf = Callable[[str, str], str | None]


def secret_ref(secret: str, key: str) -> str:
    return f"{secret}/{key}"


def salted(salt: str, digest: str) -> str:
    """What status records for an applied secret: keyed by the operator's own password, so a digest in
    status cannot be matched against guessed passwords."""
    return hmac.new(salt.encode(), digest.encode(), hashlib.sha256).hexdigest()[:32]


def seconds(duration: str) -> int:
    return int(duration_seconds(duration) or 0)


_SECONDS = frozenset({"lease_time", "grace_period", "session_timeout"})  # Go durations in the spec, seconds in DittoFS


def _settings(settings: BaseModel) -> tuple[tuple[str, Scalar], ...]:
    """The set fields, under their DittoFS names (the spec's snake_case field names are DittoFS's keys)."""
    values = settings.model_dump(exclude_none=True)
    return tuple(sorted((k, seconds(v) if k in _SECONDS else v) for k, v in values.items()))


def adapters(spec: DittoServerSpec) -> tuple[AdapterSpec, ...]:
    """Both adapters, always declared: DittoFS seeds both enabled, so a disabled one must be turned off."""
    return tuple(AdapterSpec(kind, a.enabled, a.port, _settings(a.settings)) for kind, a in spec.adapters.by_type())


def _secrets(found: Mapping[str, ProvisionedSecret], lookup: DigestOf, salt: str, what: str,
             missing: list[str]) -> tuple[tuple[str, SecretValue], ...] | None:
    """(config key, value) pairs; None (and the missing keys named) when one is missing."""
    out: list[tuple[str, SecretValue]] = []
    for config_key, use in found.items():
        digest = lookup(use.secret, use.key)
        if digest is None:
            if not use.optional:  # sslmode, as in database.postgresSecretRef
                missing.append(f"Secret {use.secret} key {use.key} ({what})")
                return None
            continue
        out.append((config_key, SecretValue(secret_ref(use.secret, use.key), salted(salt, digest))))
    return tuple(out)


def stores(spec: DittoServerSpec, lookup: DigestOf, salt: str, missing: list[str],
           capacity: int | None = None) -> tuple[StoreSpec, ...]:
    """Declared stores. The implicit `default` ones are declared even with no share: pruning them would make
    their paths unusable until a restart (DittoFS keeps a deleted badger store's lock), so `shares: []`
    followed by a share again would fail."""
    out: list[StoreSpec] = []
    for i, m in enumerate(spec.stores.served("metadata")):
        if m.type == "badger":
            out.append(StoreSpec(StoreKind.METADATA, m.name, "badger", (("path", m.effective_path or ""),)))
        elif m.type == "postgres":
            what = f"metadata store {m.name}"
            found = _secrets(postgres_store_secrets(spec, i), lookup, salt, what, missing)
            if found is not None:
                out.append(StoreSpec(StoreKind.METADATA, m.name, "postgres", secrets=found))
        else:
            out.append(StoreSpec(StoreKind.METADATA, m.name, m.type))
    for b in spec.stores.served("local"):
        config: dict[str, Scalar] = {}
        if b.effective_path is not None:
            config["path"] = b.effective_path
        if (cap := b.effective_max_size(spec.storage.effective_content_size, capacity)) is not None:
            config["max_size"] = cap
        out.append(StoreSpec(StoreKind.LOCAL, b.name, b.type, tuple(sorted(config.items()))))
    s3 = spec.s3
    for i, r in enumerate(spec.stores.remote):
        remote: dict[str, Scalar] = {"bucket": r.effective_bucket(s3) or "", "region": r.effective_region(s3)}
        for key, value in (("endpoint", r.endpoint), ("prefix", r.prefix), ("force_path_style", r.force_path_style)):
            if value is not None:
                remote[key] = value
        if r.allow_private_endpoint:
            remote["allow_private_endpoint"] = True
        found = _secrets(remote_store_credentials(spec, i), lookup, salt, f"credentials of remote store {r.name}",
                         missing)
        if found is None:
            continue
        out.append(StoreSpec(StoreKind.REMOTE, r.name, r.type, tuple(sorted(remote.items())), found))
    return tuple(out)


def shares(spec: DittoServerSpec) -> tuple[ShareSpec, ...]:
    out = []
    for s in spec.effective_shares:
        nfs = NfsOptions(s.nfs.squash, s.nfs.anonymous_uid, s.nfs.anonymous_gid) if s.nfs else None
        policy = None
        if s.snapshot_policy is not None:
            p = s.snapshot_policy
            policy = SnapshotPolicySpec(p.interval, p.keep_last, p.ttl, p.name_prefix, p.enabled)
        out.append(ShareSpec(
            s.name, metadata_store=s.metadata_store, local_store=s.local_block_store,
            remote_store=s.remote_block_store, read_only=s.read_only, default_permission=s.default_permission,
            quota_bytes=int(parse_quantity(s.quota)) if s.quota else None, nfs=nfs,
            permissions=tuple(Grant("user" if p.user else "group", p.user or p.group or "", p.level)
                              for p in s.permissions),
            snapshot_policy=policy))
    return tuple(out)


def declared(spec: DittoServerSpec, lookup: DigestOf, salt: str,
             capacity: int | None = None) -> tuple[FileService, list[str]]:
    """(the declared file service, missing Secret keys as messages). Users and stores whose Secret keys are
    missing are left out (and named), so nothing is created without its credentials. ``capacity``: the content
    volume's size while it is smaller than declared (``LocalStoreSpec.effective_max_size``)."""
    missing: list[str] = []
    users: list[UserSpec] = []
    for u in spec.users:
        ref = u.password_secret_ref
        digest = lookup(ref.name, ref.key)
        if digest is None:
            missing.append(f"Secret {ref.name} key {ref.key} (password of user {u.name})")
            continue
        users.append(UserSpec(u.name, SecretValue(secret_ref(ref.name, ref.key), salted(salt, digest)),
                              uid=u.uid, gid=u.gid, groups=tuple(u.groups), role=u.role))
    declared_shares = shares(spec)
    return FileService(adapters=adapters(spec), stores=stores(spec, lookup, salt, missing, capacity),
                       shares=declared_shares, users=tuple(users),
                       groups=tuple(GroupSpec(g.name, g.gid) for g in spec.groups),
                       identity=identity_providers(spec, lookup, salt, missing)), missing


def identity_providers(spec: DittoServerSpec, lookup: DigestOf, salt: str,
                       missing: list[str]) -> tuple[IdentityProviderSpec, ...]:
    """The LDAP and Kerberos records, with their write-only password (a provider whose password Secret is
    missing is left out, and named)."""
    passwords = identity_secrets(spec)
    found: list[IdentityProviderSpec] = []

    def password(slot: str, what: str) -> tuple[bool, SecretValue | None]:
        """(usable, the password if one is declared)."""
        use = passwords.get(slot)
        if use is None:
            return True, None
        digest = lookup(use.secret, use.key)
        if digest is None:
            missing.append(f"Secret {use.secret} key {use.key} ({what})")
            return False, None
        return True, SecretValue(secret_ref(use.secret, use.key), salted(salt, digest))

    ldap, kerberos = spec.identity.ldap, spec.identity.kerberos
    if ldap is not None:
        usable, secret = password(LDAP_PASSWORD_SLOT, "LDAP bind password")
        if usable:
            found.append(IdentityProviderSpec("ldap", ldap_record(ldap, clearing=True), secret, "bind_password",
                                              durations=LDAP_DURATIONS))
    if kerberos is not None:
        usable, secret = password(MACHINE_SECRET_SLOT, "Kerberos machine account password")
        if usable:
            found.append(IdentityProviderSpec("kerberos", kerberos_record(kerberos, clearing=True), secret, "secret",
                                              within="machine_account", restart=True, durations=KERBEROS_DURATIONS))
    return tuple(found)


ShareUsage = tuple[int | None, bool | None]  # (used bytes, remote store healthy); None = not known yet


def dittofs_address(spec: DittoServerSpec, names: Names, pod_ip: str | None) -> tuple[str, str]:
    """(DittoFS's REST base URL, the host its file protocols answer on): the pod's IP when provisioning by
    pod (``--server-address pod``, ``pod_ip``), else the API and file Services' cluster DNS names."""
    host = pod_ip or names.host(names.api_service)
    scheme = "https" if spec.control_plane.tls is not None else "http"
    return f"{scheme}://{url_host(host)}:{spec.control_plane.port}", pod_ip or names.host(names.file_service)


def share_status(spec: DittoServerSpec, host: str, present: Mapping[str, ShareUsage]) -> list[dict[str, Any]]:
    """Declared shares that exist in DittoFS, with their usage and ready-to-paste addresses on ``host``."""
    out = []
    enabled = spec.adapters.enabled()
    for s in spec.effective_shares:
        if s.name not in present:
            continue
        used, remote = present[s.name]
        entry: dict[str, Any] = {"name": s.name, "readOnly": s.read_only}
        if used is not None:
            entry["usedBytes"] = used
        if s.remote_block_store is not None and remote is not None:
            entry["remoteHealthy"] = remote
        for kind, adapter in enabled:
            if kind == "smb" and not s.smb_reachable:
                continue  # no address that does not answer
            entry[kind] = f"{kind}://{url_host(host)}:{adapter.port}{s.name}"
        out.append(entry)
    return out


BADGER_LOCKED = "Another process is using this Badger database"


def refusal_hint(call: Call, detail: str, owned: Collection[Ref], pod: str) -> str:
    """What a refusal of DittoFS does not say but the user can act on ("" when nothing). DittoFS's DELETE of a
    metadata store forgets its config but keeps the open badger database (and its directory lock) until the
    server restarts, so re-creating a store of ours deleted by hand fails on the lock."""
    if call.op is Op.CREATE and call.kind is Kind.METADATA_STORE and call.ref in owned and BADGER_LOCKED in detail:
        return (f". If the store was deleted by hand, DittoFS holds its directory until it restarts: delete pod {pod} "
                "and it is re-created")
    return ""


def adopting(want: FileService, seen: Observed, owned: set[Ref], applied: Mapping[str, str],
             recorded: Iterable[str] | None, *, consent: bool = False) -> tuple[Plan, set[Ref]]:
    """The plan, and what it adopts: the declared objects found unowned that the control-plane PVC records as
    the operator's, i.e. those a re-created server's predecessor made; with the user's ``consent``
    (``ADOPT_ANNOTATION``), every declared object found unowned, made by hand included, unless DittoFS holds it
    otherwise than it can be declared (``Immutable``: other stores, or read-only declared writable): owned, it
    would be deleted once the user declares a new one in its place, files and all. A share adopted read-only is
    stamped so (``read_only_stamps``, kept by the plan's ``digests_after``). A child is judged only once its
    parent is owned, so adoption repeats until nothing adoptable is left unowned."""
    mine = set(recorded or ())
    refused: dict[Ref, Problem] = {}
    while True:
        adopted: set[Ref] = set()
        the_plan = plan(want, seen, owned, applied)
        while more := {p.ref for p in the_plan.problems if p.kind is ProblemKind.NOT_OWNED and p.ref not in adopted
                       and (str(p.ref) in mine or (consent and p.ref not in refused))}:
            adopted |= more
            # Adopted as DittoFS holds them now: their ids replace any stamped for an earlier share of the name.
            the_plan = plan(want, seen, owned | adopted,
                            {**applied, **share_ids(adopted, seen), **read_only_stamps(adopted, seen)})
        clashes = {p.ref: p for p in the_plan.problems
                   if p.kind is ProblemKind.IMMUTABLE and p.ref in adopted and str(p.ref) not in mine}
        if not clashes:
            break
        refused.update(clashes)  # again from the start: a refused share's grants must not stay adopted either
    problems = tuple(Problem(ProblemKind.IMMUTABLE, p.ref, f"made by hand, not adopted: {refused[p.ref].message}")
                     if p.kind is ProblemKind.NOT_OWNED and p.ref in refused else p for p in the_plan.problems)
    stamped = {**the_plan.stamped, **read_only_stamps(adopted, seen)}
    return dataclasses.replace(the_plan, problems=problems, stamped=stamped), adopted


def unhealthy_remotes(seen: Observed) -> list[str]:
    """The remote stores a served share tiers to that DittoFS's own probe of the bucket finds failing."""
    return sorted({share.remote_store for share in seen.shares.values()
                   if share.remote_store and seen.remote_health(share) is False})


def ownership_record(refs: Iterable[str]) -> dict[str, Any]:
    """The merge patch recording ``refs`` (what the operator created in DittoFS) on the control-plane PVC."""
    return {"metadata": {"annotations": {OWNERSHIP_ANNOTATION: json.dumps(sorted(refs))}}}


def recorded_refs(annotations: Mapping[str, str] | None) -> list[str] | None:
    """The refs a PVC's annotations record (None: no record, e.g. a volume from before records existed)."""
    try:
        refs = json.loads((annotations or {})[OWNERSHIP_ANNOTATION])
    except (KeyError, ValueError):
        return None
    return sorted(str(r) for r in refs) if isinstance(refs, list) else None
