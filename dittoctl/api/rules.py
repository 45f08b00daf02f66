"""The admission rules of SPEC §7 as one pure, total function.

`validate(obj, old, facts)` never raises and never does I/O: the webhook, the reconciler and
`dittoctl validate` all call it with a `ClusterFacts` snapshot. Errors read "spec.path: what is wrong;
how to fix it"; warnings lead with the fix, are at most 120 characters, and "could not verify"
warnings (nothing to act on) come last.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
import posixpath
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from dittoctl.api.facts import ClusterFacts, percona_not_served
from dittoctl.api.fileservice.observed import duration_seconds
from dittoctl.api.fileservice.types import BOOTSTRAP_ADMIN, share_name
from dittoctl.api.kubeschema import PASS_THROUGH, key_path, kube_errors
from dittoctl.api.models import (
    API_VERSION,
    BLOCK_ROOT,
    CONTROL_PLANE_ROOT,
    DNS_SUBDOMAIN_PATTERN,
    KIND,
    METADATA_ROOT,
    NFS_VERSIONS,
    PATTERN_MESSAGES,
    QUANTITY_PATTERN,
    REMOTE_LOCATION_KEYS,
    SMB_DIALECTS,
    STORE_LISTS,
    CertificateSpec,
    DittoServer,
    DittoServerSpec,
    DittoServerStatus,
    NetworkPeer,
)
from dittoctl.api.parsed import ParsedSpec, parse_spec
from dittoctl.api.quantity import parse_quantity
from dittoctl.api.secrets import TLS_CERT_KEY, TLS_KEY_KEY, bounded_values, mounted_secrets, user_passwords

log = logging.getLogger("dittofs.rules")
MAX_WARNING = 120
# Pass-through fields _kube_object checks itself (quantities are an integer or a string; sysctls with an example).
_OWN_CHECKS = {("resources", "requests"), ("resources", "limits"), ("podSecurityContext", "sysctls")}
MAX_ERRORS = 50  # schema errors described one by one; the rest are counted
# Services are DNS-1035 labels named <name>-headless (+9), and the StatefulSet's controller-revision-hash
# label "<name>-<10-char hash>" must fit in 63 characters: 52 is the binding limit.
MAX_NAME = 52
MAX_PERCONA_NAME = 63 - len("-postgres-instance1-xxxx-") - 10  # 28: its StatefulSet's revision-hash pod label
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Kubernetes' own syntax (apimachinery validation): what the apiserver would refuse on a child, checked first.
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_QUANTITY = re.compile(QUANTITY_PATTERN)
_SUBDOMAIN = re.compile(DNS_SUBDOMAIN_PATTERN)
_UNVERIFIED, _ACTIONABLE = 1, 0
_SYSTEM_GROUPS = ("admins", "operators", "users")
_SYSTEM_GIDS = {0: "admins", 999: "operators", 1000: "users"}  # DittoFS seeds them (store/groups.go)
# A Secret the file service reads missing: every file-service change waits (the plan is made only once each is
# there), while the server keeps running. Longest first; the warning takes the first that fits.
_FILE_SERVICE_WAITS = ("no file-service change (shares, users, stores) is applied until then; the server runs",
                       "no file-service change is applied until then", "file-service changes wait for it")
_RESERVED_USERS = ("admin", "dittofs-operator")
# Consequence of a missing Secret or key the server container reads, longest (most helpful) first.
_POD_FAILS = ("the pod fails with CreateContainerConfigError until then", "the pod cannot start until then",
              "the pod cannot start")


@dataclass(frozen=True)
class FieldError:
    """One violation, kept structured until an edge renders it (a 422 cause, a CLI line, a condition)."""

    path: str
    """Dotted field path, e.g. `spec.storage.metadataSize`."""
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Verdict:
    """Outcome of validation: deny when `errors` is non-empty."""

    errors: list[FieldError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    server: DittoServer | None = None
    """The parsed object when the models accept it (also when other rules fail)."""

    @property
    def allowed(self) -> bool:
        return not self.errors

    @property
    def messages(self) -> list[str]:
        """The errors as "path: message" lines."""
        return [str(e) for e in self.errors]


@dataclass(frozen=True)
class Stored:
    """What a server's children show it already runs with (the reconciler's re-check has no previous spec):
    the rules that only judge a new server or a change accept what it keeps, as the webhook does on update.
    Given (the reconciler), the rules that judge an admission alone (a new share's name) stay off."""

    sqlite_path: str | None = None
    """The SQLite path of its rendered config, None when it has none (or uses PostgreSQL)."""
    percona: bool = False
    """It runs on a Percona database already."""


def validate(obj: Mapping[str, Any], old: Mapping[str, Any] | None, facts: ClusterFacts, *,
             parsed: ParsedSpec | None = None, stored: Stored | None = None) -> Verdict:
    """All violations of `obj` (an UPDATE when `old` is given). Total: any input gives a Verdict. ``parsed``:
    ``parse_spec(obj["spec"])``, when the caller has it already (the webhook, which read the references).
    ``stored``: see ``Stored`` (the reconciler's re-check)."""
    try:
        check = _Check(obj, old, facts, parsed, stored=stored)
        verdict = check.run()
        if old is not None and verdict.errors:
            # Ratchet, like Kubernetes' CRD validation ratcheting: an UPDATE is not denied for a problem
            # the stored object already had (a StorageClass deleted since, a rule added by an upgrade).
            # Otherwise metadata-only writes, e.g. the operator's finalizer patch, would be stuck.
            before = set(_Check(old, None, facts, check.old_parsed).run().errors)
            verdict.errors = [e for e in verdict.errors if e not in before]
        return verdict
    except Exception as exc:  # a bug must deny with a message, never crash the webhook
        log.exception("validator failed")
        return Verdict(errors=[FieldError("spec", f"internal validation error ({type(exc).__name__}); "
                                                  "see the operator log")])


class _Check:
    """One validation pass; collects findings instead of stopping at the first."""

    def __init__(self, obj: Any, old: Any, facts: ClusterFacts, parsed: ParsedSpec | None = None, *,
                 stored: Stored | None = None) -> None:
        self.obj = obj
        self.old = old
        self.stored = stored
        self.facts = facts
        self.parsed = parsed
        self.old_parsed: ParsedSpec | None = None
        """The old object's spec, once the update rules parsed it (the ratchet checks the old object with it)."""
        self.errors: list[FieldError] = []
        self.warnings: list[tuple[int, str]] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def warn(self, path: str, *messages: str, priority: int = _ACTIONABLE) -> None:
        """Adds the first of `messages` (most helpful first) that fits in MAX_WARNING with its path."""
        texts = [f"{path}: {m}" for m in messages]
        self.warnings.append((priority, next((t for t in texts if len(t) <= MAX_WARNING), _fit(texts[-1]))))

    def unverified(self, path: str, what: str) -> None:
        if self.facts.online:
            self.warn(path, f"could not verify {what} (API lookup failed)", f"could not verify {what}",
                      priority=_UNVERIFIED)

    def verdict(self, server: DittoServer | None) -> Verdict:
        warnings: list[str] = []
        for _, text in sorted(self.warnings, key=lambda w: w[0]):
            if text not in warnings:
                warnings.append(text)
        return Verdict(errors=list(dict.fromkeys(self.errors)), warnings=warnings, server=server)

    # -- the pass ----------------------------------------------------------------------------------------
    def run(self) -> Verdict:
        obj = self.obj
        if not isinstance(obj, Mapping):
            self.error("object", f"must be a DittoServer object (got {_json_type(obj)})")
            return self.verdict(None)
        self._identity(obj)
        meta = obj.get("metadata", {})
        if not isinstance(meta, Mapping):
            self.error("metadata", f"must be an object (got {_json_type(meta)})")
            meta = {}
        self._name(meta.get("name"))
        if "spec" not in obj:
            self.error("spec", "required; a DittoServer needs at least spec.storage.metadataSize")
            return self.verdict(None)
        parsed = self.parsed if self.parsed is not None else parse_spec(obj.get("spec"))
        # Described one by one ("did you mean ...?" is a string search each): a review with 150,000 unknown keys
        # took 17 s of the event loop, the reconciler's too. Only a direct caller can send one (the apiserver
        # prunes unknown fields first); the first ones are what a person can act on anyway.
        for err in parsed.errors[:MAX_ERRORS]:
            self.error(_path(err["loc"]), _describe(err))
        if len(parsed.errors) > MAX_ERRORS:
            self.error("spec", f"and {len(parsed.errors) - MAX_ERRORS} more problems like these; fix the ones above "
                       "first")
        if parsed.spec is not None:
            self._rules(parsed, parsed.spec)
        server = None
        if parsed.valid and parsed.spec is not None:
            server = DittoServer(metadata=dict(meta), spec=parsed.spec, status=_status(obj.get("status")))
        return self.verdict(server)

    def _identity(self, obj: Mapping[str, Any]) -> None:
        api_version, kind = obj.get("apiVersion", API_VERSION), obj.get("kind", KIND)
        if api_version != API_VERSION:
            self.error("apiVersion", f"must be {API_VERSION} (got {_show(api_version)})")
        if kind != KIND:
            self.error("kind", f"must be {KIND} (got {_show(kind)})")

    def _name(self, name: Any) -> None:
        if name is None or name == "":
            return  # generateName: the apiserver fills it in
        if not isinstance(name, str) or len(name) > MAX_NAME or not _NAME.match(name):
            self.error("metadata.name", f"must be a DNS label of at most {MAX_NAME} characters (a-z, 0-9, '-', "
                       f"starting with a letter), as Services and the StatefulSet are named after it "
                       f"(got {_show(name)})")

    def _rules(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        self._ports(parsed, spec)  # rules 2, 3
        self._storage_classes(parsed, spec)  # rule 4
        self._s3(parsed, spec)  # rule 5
        self._percona(parsed, spec)  # rules 6, 7, 9, 11
        self._database(parsed, spec)  # rules 8, 10 (Postgres)
        self._identity_secrets(parsed, spec)  # rule 10 (JWT, admin)
        self._secret_values(parsed, spec)  # values DittoFS exits on at start
        self._api_tls(parsed, spec)
        self._mounted(parsed, spec)
        self._identity_providers(parsed, spec)
        self._file_service(parsed, spec)  # SPEC §13.1: shares, users, groups, stores
        self._adapter_settings(parsed, spec)
        self._deprecations(parsed, spec)  # rule 14
        self._service(parsed, spec)
        self._network_policy(parsed, spec)
        self._kubernetes_fields(parsed, spec)
        if self.old is not None:
            self._update(parsed, spec)  # rules 12, 13

    # -- rules 2 and 3: ports ----------------------------------------------------------------------------
    def _ports(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        ports: list[tuple[str, int]] = []
        if parsed.usable("controlPlane.port"):
            ports.append(("spec.controlPlane.port", spec.control_plane.port))
        if parsed.usable("adapters.nfs") and spec.adapters.nfs.enabled:
            ports.append(("spec.adapters.nfs.port", spec.adapters.nfs.port))
        if parsed.usable("adapters.smb") and spec.adapters.smb.enabled:
            ports.append(("spec.adapters.smb.port", spec.adapters.smb.port))
        if parsed.usable("metrics.enabled", "metrics.port") and spec.metrics.enabled:
            ports.append(("spec.metrics.port", spec.metrics.port))
        for i, (path, port) in enumerate(ports):
            for other, other_port in ports[:i]:
                if port == other_port:
                    self.error(path, f"port {port} is also used by {other}; give every enabled port its own number")
        # Ports below 1024 need no warning: the pod gets net.ipv4.ip_unprivileged_port_start (SPEC §13.2).

    # -- rule 4: StorageClasses --------------------------------------------------------------------------
    def _storage_classes(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        wanted: list[tuple[str, str]] = []
        if parsed.usable("storage.storageClassName") and spec.storage.storage_class_name:
            wanted.append(("spec.storage.storageClassName", spec.storage.storage_class_name))
        percona_class = parsed.usable("percona.enabled", "percona.storageClassName")
        if percona_class and spec.percona.enabled and spec.percona.storage_class_name:
            wanted.append(("spec.percona.storageClassName", spec.percona.storage_class_name))
        known = self.facts.storage_classes
        for path, name in wanted:
            if known is None:
                self.unverified(path, f"StorageClass {_q(name)}")
            elif name not in known:
                choices = ", ".join(_q(n) for n in sorted(known)[:5]) + (", ..." if len(known) > 5 else "")
                hint = f"use an existing one ({choices})" if known else "use one from `kubectl get storageclass`"
                self.error(path, f"StorageClass {_q(name)} not found; create it or {hint}")

    # -- secrets (rules 5, 9, 10) ------------------------------------------------------------------------
    def _secret(self, path: str, name: str, *consequences: str) -> frozenset[str] | None:
        """Keys of Secret `name`; warns (and returns None) when it is missing or unknown."""
        if name not in self.facts.secrets:
            self.unverified(path, f"Secret {_q(name)}")
            return None
        keys = self.facts.secrets[name]
        if keys is None:
            self.warn(path, *(f"create Secret {_q(name)}; {c}" for c in consequences))
        return keys

    def _keys(self, path: str, secret: str, keys: frozenset[str] | None, wanted: list[str], *consequences: str) -> None:
        for key in wanted:
            if keys is not None and key not in keys:
                self.warn(path, *(f"add key {_q(key)} to Secret {_q(secret)}; {c}" for c in consequences))

    def _s3(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        if not parsed.usable("s3.credentialsSecretRef") or spec.s3 is None or spec.s3.credentials_secret_ref is None:
            return
        ref, path = spec.s3.credentials_secret_ref, "spec.s3.credentialsSecretRef"
        why = ("DittoFS cannot reach S3 without it (it may still be created by external-secrets)",
               "DittoFS cannot reach S3 without it", "S3 access fails")
        keys = self._secret(path, ref.secret_name, *why)
        self._keys(path, ref.secret_name, keys, [ref.access_key_id_key, ref.secret_access_key_key], *why)

    def _secret_values(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        for path, ref, bounds in [*bounded_values(spec), *user_passwords(spec)]:
            length = self.facts.key_lengths.get(ref.name, {}).get(ref.key)
            field = path.removeprefix("spec.").split("[")[0]  # a list's entries are usable with the list
            if length is None or not bounds.refuses(length) or not parsed.usable(field):
                continue
            # The length itself is never shown: a denial must not measure a Secret for whoever reads it.
            where = f"Secret {_q(ref.name)} key {_q(ref.key)}"
            if bounds.first_boot_only and self.old is not None:
                # A running server made its admin at its first boot and ignores the value since.
                self.warn(path, f"{where} is not {bounds.need}: a new server would not start")
            else:
                self.error(path, bounds.refusal(where))

    def _identity_secrets(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        for path, ref in (("spec.identity.jwt.secretRef", spec.identity.jwt.secret_ref),
                          ("spec.identity.admin.passwordSecretRef", spec.identity.admin.password_secret_ref)):
            if ref is not None and parsed.usable(path.removeprefix("spec.")):
                keys = self._secret(path, ref.name, *_POD_FAILS)
                self._keys(path, ref.name, keys, [ref.key], *_POD_FAILS)
        access = spec.identity.jwt.access_token_duration
        if parsed.usable("identity.jwt.accessTokenDuration") and (duration_seconds(access) or 0) < 60:
            # DittoFS counts a token's lifetime in whole seconds: under one, it is expired when issued.
            self.error("spec.identity.jwt.accessTokenDuration", f"{_q(access)} is shorter than a minute; every "
                       "client, the operator too, would log in again all the time: use 1m or more (default 15m)")
        admin = spec.identity.admin.username
        if parsed.usable("identity.admin.username") and admin != BOOTSTRAP_ADMIN:
            self.error("spec.identity.admin.username", f"must be {BOOTSTRAP_ADMIN!r} (got {_show(admin)}): DittoFS "
                       f"v0.29.0 always bootstraps the account {BOOTSTRAP_ADMIN!r}; remove the field, and declare "
                       "other accounts in spec.users")

    def _mounted(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        why = ("the pod cannot start without it (cert-manager may still be issuing it)", "the pod cannot start")
        for mounted in mounted_secrets(spec):
            if parsed.usable(mounted.path.removeprefix("spec.")):
                keys = self._secret(mounted.path, mounted.secret, *why)
                self._keys(mounted.path, mounted.secret, keys, list(mounted.keys), *why)

    def _identity_providers(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        ldap = spec.identity.ldap
        if ldap is not None and parsed.usable("identity.ldap"):
            path = "spec.identity.ldap"
            plaintext = ldap.url.lower().startswith("ldap://")
            if plaintext and not ldap.start_tls and not ldap.allow_plaintext:
                self.error(f"{path}.url", f"{_show(ldap.url)} sends the bind password in clear text; use ldaps://, or "
                           "set startTls: true, or (lab only) allowPlaintext: true")
            elif not plaintext and ldap.start_tls:
                self.warn(f"{path}.startTls", "ignored with ldaps:// (the connection is already encrypted); remove it")
            if ldap.ca_secret_ref is not None and plaintext and not ldap.start_tls:
                self.warn(f"{path}.caSecretRef", "unused without TLS; use ldaps:// or startTls: true")
            ref = ldap.bind_password_secret_ref
            keys = self._secret(f"{path}.bindPasswordSecretRef", ref.name, *_POD_FAILS)
            self._keys(f"{path}.bindPasswordSecretRef", ref.name, keys, [ref.key], *_POD_FAILS)
        kerberos = spec.identity.kerberos
        if kerberos is not None and parsed.usable("identity.kerberos"):
            path = "spec.identity.kerberos"
            realm = kerberos.service_principal.partition("@")[2]
            if realm and kerberos.realm and realm != kerberos.realm:
                self.error(f"{path}.realm", f"{_show(kerberos.realm)} differs from the service principal's realm "
                           f"{_show(realm)}; make them equal or remove realm (it defaults to the principal's)")
            if not realm and not kerberos.realm:
                self.error(f"{path}.realm", "required when servicePrincipal has no @REALM suffix; set realm (e.g. "
                           "EXAMPLE.COM) or write the principal as nfs/host@EXAMPLE.COM")
            machine = kerberos.machine_account
            if machine is not None:
                if not kerberos.netbios_domain:
                    self.error(f"{path}.netbiosDomain", "required with machineAccount (NTLM pass-through needs the "
                               "domain's NetBIOS name, e.g. EXAMPLE)")
                ref = machine.secret_ref
                keys = self._secret(f"{path}.machineAccount.secretRef", ref.name, *_POD_FAILS)
                self._keys(f"{path}.machineAccount.secretRef", ref.name, keys, [ref.key], *_POD_FAILS)

    def _api_tls(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        if not parsed.usable("controlPlane.tls"):
            return
        tls = spec.control_plane.tls
        if tls is not None and tls.certificate is not None:
            self._certificate_lifetime("spec.controlPlane.tls.certificate", tls.certificate)
        if tls is None or tls.client_ca_secret_name is None:
            if tls is not None and tls.operator_client_secret_name is not None:
                self.error("spec.controlPlane.tls.operatorClientSecretName", "only with clientCaSecretName (mutual "
                           "TLS); remove it or set clientCaSecretName")
            return
        client = tls.operator_client_secret_name
        path = "spec.controlPlane.tls.operatorClientSecretName"
        if client is None:
            self.error(path, "required with clientCaSecretName: name a kubernetes.io/tls Secret signed by that CA for "
                       "the operator to present, or the API would lock the operator out")
            return
        lockout = ("the operator cannot reach the API until then", "the operator is locked out")
        keys = self._secret(path, client, *lockout)
        self._keys(path, client, keys, [TLS_CERT_KEY, TLS_KEY_KEY], *lockout)

    def _certificate_lifetime(self, path: str, cert: CertificateSpec) -> None:
        """cert-manager's own bounds (its webhook refuses the Certificate otherwise, and every pass with it)."""
        duration = duration_seconds(cert.duration) if cert.duration else 2160 * 3600.0
        renew = duration_seconds(cert.renew_before) if cert.renew_before else None
        if duration is not None and duration < 3600:
            self.error(f"{path}.duration", f"{_show(cert.duration)} is shorter than cert-manager's minimum of 1h")
        if renew is not None and renew < 300:
            self.error(f"{path}.renewBefore", f"{_show(cert.renew_before)} is shorter than cert-manager's minimum "
                       "of 5m")
        elif renew is not None and duration is not None and renew >= duration:
            self.error(f"{path}.renewBefore", f"{_show(cert.renew_before)} must be shorter than the duration "
                       f"({cert.duration or '2160h, the default'})")

    # -- the declared file service (SPEC §13.1) -----------------------------------------------------------
    def _file_service(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        if not parsed.usable("shares", "users", "groups"):
            return
        groups = {g.name for g in spec.groups}
        users = {u.name for u in spec.users}
        self._unique("spec.groups", [g.name for g in spec.groups])
        self._unique("spec.users", [u.name for u in spec.users])
        shares = spec.shares or []
        # "/a" beside "/a/" is refused although DittoFS keeps them apart: two shares a client cannot tell apart.
        self._unique("spec.shares", ["/" + s.name.strip("/") for s in shares], [s.name for s in shares])
        self._unique_ids("spec.users", "uid", [u.uid for u in spec.users])
        self._unique_ids("spec.groups", "gid", [g.gid for g in spec.groups])
        for i, g in enumerate(spec.groups):
            if g.name in _SYSTEM_GROUPS:
                self.error(f"spec.groups[{i}].name", f"{_q(g.name)} is a DittoFS system group; it exists already "
                           "and is not managed by the operator (choose another name)")
            elif g.gid in _SYSTEM_GIDS:
                self.error(f"spec.groups[{i}].gid", f"gid {g.gid} is DittoFS's system group "
                           f"{_q(_SYSTEM_GIDS[g.gid])}, and gids are unique there; choose another, e.g. 2000")
        for i, u in enumerate(spec.users):
            base = f"spec.users[{i}]"
            if u.name in _RESERVED_USERS:
                self.error(f"{base}.name", f"{_q(u.name)} is reserved for DittoFS and the operator "
                           "(choose another name)")
            if u.uid == 0:  # DittoFS's admin has uid 0 (models.DefaultAdminUser), and uids are unique there
                self.error(f"{base}.uid", "uid 0 is DittoFS's admin's, and uids are unique there; choose another, "
                           "e.g. 2000")
            for j, group in enumerate(u.groups):
                if group not in groups and group not in _SYSTEM_GROUPS:
                    self.error(f"{base}.groups[{j}]", f"group {_q(group)} is not declared in spec.groups; add it "
                               "there or remove it here")
                elif group in u.groups[:j]:
                    self.warn(f"{base}.groups[{j}]", f"{_q(group)} is listed twice; remove the repeat")
            why = _FILE_SERVICE_WAITS
            keys = self._secret(f"{base}.passwordSecretRef", u.password_secret_ref.name, *why)
            self._keys(f"{base}.passwordSecretRef", u.password_secret_ref.name, keys, [u.password_secret_ref.key],
                       *why)
        for i, u in enumerate(spec.users):
            if u.role == "admin":
                self.warn(f"spec.users[{i}].role", "admin users can reconfigure the whole server over its API; "
                          "prefer user with share grants")
        stores = self._stores(parsed, spec)
        if spec.shares is None and stores is not None:
            implicit = spec.effective_shares[0]
            for kind, default in (("metadata", implicit.metadata_store), ("local", implicit.local_block_store)):
                if default not in stores[kind]:
                    self.error(f"spec.stores.{kind}", f"the default share {implicit.name} (spec.shares is unset) "
                               f"uses {kind} store {_q(default)}, which this list does not declare; add "
                               f"{{name: {default}}} here, or declare spec.shares naming one of its stores")
        smb_enabled = parsed.usable("adapters.smb") and spec.adapters.smb.enabled
        for i, share in enumerate(shares):
            base = f"spec.shares[{i}]"
            if share.name.strip("/") == "":
                self.error(f"{base}.name", "must name a share below '/', e.g. /export")
            elif "%" in share.name or "#" in share.name:
                # DittoFS URL-decodes a share's name when it stores it, so "%20" would name another share.
                self.error(f"{base}.name", f"{_q(share.name)} may not contain '%' or '#'; use letters, digits, "
                           "'-', '_', '.' and '/' between segments, e.g. /team-docs")
            elif any(seg in ("", ".", "..") for seg in share.name[1:].rstrip("/").split("/")):
                self.error(f"{base}.name", f"{_q(share.name)} has an empty, '.' or '..' path segment; name it "
                           "like /team-docs")
            elif share.name.endswith("/") and self.stored is None and share.name not in self._old_share_names():
                # DittoFS keeps "/a/" as a share apart from "/a"; a share already declared so is kept as it is. At
                # admission only: the reconciler cannot tell a new share from one DittoFS holds already.
                self.error(f"{base}.name", f"{_q(share.name)} ends with '/', and DittoFS would serve it as a share "
                           f"apart from {_q(share.name.rstrip('/'))}; name it {_q(share.name.rstrip('/'))}")
            if smb_enabled and not share.smb_reachable:
                other = _smb_name(share.name)
                example = f", e.g. {_q(other)}" if other not in {s.name for s in shares} else ""
                self.warn(f"{base}.name", f"{_q(share.name)} is served over NFS only: DittoFS finds SMB shares by "
                          f"one lower-case segment{example}",
                          f"{_q(share.name, 30)} is served over NFS only (SMB: one lower-case segment)")
            self._bytes(f"{base}.quota", share.quota)
            sharing = [s.name for s in shares if s.name != share.name and s.metadata_store == share.metadata_store]
            if share.quota is not None and sharing:
                # DittoFS v0.29.0 compares a quota with its metadata store's total (pkg/metadata/io.go).
                others = ", ".join(_q(n, 20) for n in sharing[:2]) + (", ..." if len(sharing) > 2 else "")
                self.warn(f"{base}.quota", f"counts all shares on metadata store {_q(share.metadata_store, 20)} "
                          f"({others}): give this share a store of its own",
                          "counts all shares on its metadata store: give this share a store of its own")
            for key, kind, store in (("metadataStore", "metadata", share.metadata_store),
                                    ("localBlockStore", "local", share.local_block_store),
                                    ("remoteBlockStore", "remote", share.remote_block_store)):
                if store is not None and stores is not None and store not in stores[kind]:
                    declared = ", ".join(_q(n) for n in sorted(stores[kind])) or "none"
                    self.error(f"{base}.{key}", f"{kind} store {_q(store)} is not declared in spec.stores.{kind} "
                               f"(declared: {declared}); declare it or use one of those")
            policy = share.snapshot_policy
            if policy is not None and policy.interval.startswith("@") is False:
                seconds = duration_seconds(policy.interval)
                if seconds is not None and seconds < 60:
                    self.error(f"{base}.snapshotPolicy.interval", f"{_q(policy.interval)} is shorter than a "
                               "minute; snapshot every 1m or more")
            # One error per principal, however many grants repeat it (a generated list must not print thousands).
            grants = Counter(("user", p.user) if p.user is not None else ("group", p.group or "")
                             for p in share.permissions if (p.user is None) != (p.group is None))
            seen: set[tuple[str, str]] = set()
            for j, p in enumerate(share.permissions):
                path = f"{base}.permissions[{j}]"
                if (p.user is None) == (p.group is None):
                    self.error(path, "set exactly one of user and group")
                    continue
                principal, name = ("user", p.user) if p.user is not None else ("group", p.group or "")
                if (principal, name) in seen:
                    continue
                seen.add((principal, name))
                known = users if principal == "user" else groups | set(_SYSTEM_GROUPS)
                if name not in known:
                    self.error(f"{path}.{principal}", f"{principal} {_q(name)} is not declared in "
                               f"spec.{principal}s; declare it or remove this grant")
                if grants[principal, name] > 1:
                    self.error(path, f"{principal} {_q(name)} has {grants[principal, name]} grants on this share; "
                               "keep one")

    def _stores(self, parsed: ParsedSpec, spec: DittoServerSpec) -> dict[str, set[str]] | None:
        """Checks spec.stores; returns the declared names per kind (None when stores is unusable)."""
        if not parsed.usable("stores", "s3"):
            return None
        st = spec.stores
        metadata, local = st.metadata, st.local
        self._unique("spec.stores.metadata", [m.name for m in metadata or []])
        self._unique("spec.stores.local", [b.name for b in local or []])
        self._unique("spec.stores.remote", [r.name for r in st.remote])
        for i, m in enumerate(metadata or []):
            base = f"spec.stores.metadata[{i}]"
            self._store_path(f"{base}.path", m.path, m.type == "badger", METADATA_ROOT, m.type)
            if m.type == "postgres" and m.postgres_secret_ref is None:
                self.error(f"{base}.postgresSecretRef", "required for a postgres store: name the Secret with "
                           "host, port, database, user and password")
            if m.type != "postgres" and m.postgres_secret_ref is not None:
                self.error(f"{base}.postgresSecretRef", f"only for type postgres (this store is {m.type})")
            elif (pg := m.postgres_secret_ref) is not None:
                why = _FILE_SERVICE_WAITS
                keys = self._secret(f"{base}.postgresSecretRef", pg.name, *why)
                self._keys(f"{base}.postgresSecretRef", pg.name, keys,
                           [pg.host_key, pg.port_key, pg.database_key, pg.user_key, pg.password_key], *why)
        for i, b in enumerate(local or []):
            self._store_path(f"spec.stores.local[{i}].path", b.path, b.type == "fs", BLOCK_ROOT, b.type)
            self._bytes(f"spec.stores.local[{i}].maxSize", b.max_size)
        for kind, stores in (("metadata", metadata or []), ("local", local or [])):
            self._own_directories(kind, [(s.name, s.path, s.effective_path) for s in stores])
        for i, r in enumerate(st.remote):
            base = f"spec.stores.remote[{i}]"
            if r.effective_bucket(spec.s3) is None:
                self.error(f"{base}.bucket", "required: name the bucket here or set spec.s3.bucket")
            if r.credentials_secret_ref is None and (spec.s3 is None or spec.s3.credentials_secret_ref is None):
                self.error(f"{base}.credentialsSecretRef", "required: DittoFS needs an access key pair in the "
                           "store's config; name a Secret here or in spec.s3.credentialsSecretRef")
            host = _endpoint_host(r.endpoint) if r.endpoint is not None else ""
            if r.endpoint is not None and host is None:
                self.error(f"{base}.endpoint", f"{_q(r.endpoint)} is not a valid URL with a host name, e.g. "
                           "https://s3.example.com or http://[fd00::10]:9000")
            elif r.endpoint is not None and host and not r.allow_private_endpoint and _private_endpoint(host):
                self.error(f"{base}.endpoint", f"{_q(r.endpoint)} is a loopback or private address, which DittoFS "
                           "refuses; set allowPrivateEndpoint: true for an in-cluster S3 service")
            ref = r.credentials_secret_ref
            if ref is not None:
                why = _FILE_SERVICE_WAITS
                keys = self._secret(f"{base}.credentialsSecretRef", ref.name, *why)
                self._keys(f"{base}.credentialsSecretRef", ref.name, keys,
                           [ref.access_key_id_key, ref.secret_access_key_key], *why)
        return {"metadata": {m.name for m in metadata} if metadata is not None else {"default"},
                "local": {b.name for b in local} if local is not None else {"default"},
                "remote": {r.name for r in st.remote}}

    def _bytes(self, path: str, value: str | None) -> None:
        """A size sent to DittoFS in whole bytes: under one byte it would be sent as 0, DittoFS's "no limit"."""
        if value is not None and int(parse_quantity(value)) < 1:
            self.error(path, f"{_show(value)} is less than one byte ('m' is milli); use e.g. 500Mi or 10Gi")

    def _own_directories(self, kind: str, stores: list[tuple[str, str | None, str | None]]) -> None:
        """Two stores in one directory (or one inside the other) are found only when the server runs: badger
        holds a lock on its directory, and fs stores would mix their blocks. A store named like another's
        default directory (a badger store "badger" beside "default") collides just the same."""
        taken: list[tuple[int, str, str]] = []
        for i, (name, written, directory) in enumerate(stores):
            if directory is None or any(other == name for _, other, _ in taken):
                continue  # a repeated name is reported as such
            here = directory.rstrip("/") + "/"
            clash = next(((j, other) for j, other, there in taken if here.startswith(there) or there.startswith(here)),
                         None)
            if clash is not None:
                j, other = clash
                where = f"spec.stores.{kind}[{i}]" + (".path" if written else "")
                self.error(where, f"store {_q(name)} would keep its data in {directory}, in or around the directory of "
                           f"store {_q(other)} (spec.stores.{kind}[{j}]); give it a path of its own")
            taken.append((i, name, here))

    def _store_path(self, path: str, value: str | None, on_disk: bool, root: str, kind: str) -> None:
        if value is None:
            return
        if not on_disk:
            self.error(path, f"a {kind} store has no path; remove it")
        elif not posixpath.normpath(value).startswith(root + "/") or ".." in value:
            self.error(path, f"must be a directory under {root} (the volume mounted there keeps the data); "
                       f"got {_show(value)}")
        elif posixpath.normpath(value) != value.rstrip("/"):
            # Two spellings of one directory would pass the clash check and share a badger lock or fs blocks.
            self.error(path, f"write it as {posixpath.normpath(value)} (got {_show(value)})")

    def _adapter_settings(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        if not parsed.usable("adapters"):
            return
        nfs, smb = spec.adapters.nfs.settings, spec.adapters.smb.settings
        if nfs.min_version and nfs.max_version and NFS_VERSIONS.index(nfs.min_version) > NFS_VERSIONS.index(
                nfs.max_version):
            self.error("spec.adapters.nfs.settings.minVersion", f"{nfs.min_version} is above maxVersion "
                       f"{nfs.max_version}; lower it or raise maxVersion")
        if smb.min_dialect and smb.max_dialect and SMB_DIALECTS.index(smb.min_dialect) > SMB_DIALECTS.index(
                smb.max_dialect):
            self.error("spec.adapters.smb.settings.minDialect", f"{smb.min_dialect} is above maxDialect "
                       f"{smb.max_dialect}; lower it or raise maxDialect")
        for path, value, low, high in (("nfs.settings.leaseTime", nfs.lease_time, 10, 3600),
                                       ("nfs.settings.gracePeriod", nfs.grace_period, 10, 3600),
                                       ("smb.settings.sessionTimeout", smb.session_timeout, 60, 86400)):
            seconds = duration_seconds(value) if value is not None else None
            if seconds is not None and not low <= seconds <= high:
                self.error(f"spec.adapters.{path}", f"{_q(value or '')} is outside DittoFS's range "
                           f"{low}s to {high}s")

    def _unique_ids(self, path: str, key: str, ids: list[int | None]) -> None:
        """DittoFS keeps uids (gids) unique: a repeat was refused only when provisioned (a bare HTTP 500)."""
        first: dict[int, int] = {}
        for i, value in enumerate(ids):
            if value is None:
                continue
            if value in first:
                self.error(f"{path}[{i}].{key}", f"{key} {value} is also {path}[{first[value]}]'s; DittoFS "
                           f"keeps {key}s unique (choose another)")
            first.setdefault(value, i)

    def _moved_ids(self, old: DittoServerSpec, new: DittoServerSpec) -> None:
        """A kept user's uid (group's gid) changed: DittoFS applies it live, but files keep the old number as their
        owner (group), so the user (the group's members) lose the access the modes gave them."""
        for path, key, before, after in _identity_ids(old, new):
            for i, (name, value) in enumerate(after):
                was = before.get(name)
                if was is not None and value is not None and value != was:
                    who, owner, fix = ((f"{_q(name, 20)} loses", "owner", "chown") if key == "uid" else
                                       ("its members lose", "group", "chgrp"))
                    self.warn(f"{path}[{i}].{key}", f"files of {_q(name, 20)} keep {owner} {key} {was}: {who} {owner} "
                              f"access ({fix} them, or keep {was})",
                              f"files keep {owner} {key} {was}: that {owner} access is lost ({fix} them, or keep "
                              f"{was})")

    def _renamed_identities(self, old: DittoServerSpec, new: DittoServerSpec) -> None:
        """A user (group) renamed with its uid (gid): the operator creates before it deletes, and DittoFS refuses
        the id while the old name holds it, so the change never converged."""
        for path, key, before, after in _identity_ids(old, new):
            names = {name for name, _ in after}
            leaving = {value: name for name, value in before.items() if name not in names and value is not None}
            for i, (name, value) in enumerate(after):
                if name not in before and value in leaving:
                    self.error(f"{path}[{i}].{key}", f"{key} {value} is still {_q(leaving[value])}'s, which "
                               f"leaves {path} in this change; DittoFS refuses it until that one is deleted: "
                               f"remove {_q(leaving[value])} first, then add {_q(name)}")

    def _unique(self, path: str, names: list[str], written: list[str] | None = None) -> None:
        """One error per repeated name, at its second entry, naming the first (``written``: the names as the
        user wrote them, when ``names`` are normalised)."""
        written = written or names
        first: dict[str, int] = {}
        for i, name in enumerate(names):
            j = first.setdefault(name, i)
            if j == i or names.index(name, j + 1) != i:
                continue
            same = "" if written[i] == written[j] else f" ({_q(written[j])})"
            times = names.count(name)
            more = f", {times} times in all" if times > 2 else ""
            self.error(f"{path}[{i}].name", f"{_q(written[i])} repeats {path}[{j}]{same}{more}; names must be "
                       "unique (remove or rename the repeats)")

    # -- database and Percona (rules 6-11) ---------------------------------------------------------------
    def _database(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        if not parsed.usable("database.type", "database.postgresSecretRef"):
            return
        db, base = spec.database, "spec.database"
        ref = db.postgres_secret_ref
        percona_known = parsed.usable("percona.enabled")
        if db.type == "sqlite" and ref is not None:
            self.warn(f"{base}.type", "set it to postgres; postgresSecretRef makes the server use PostgreSQL anyway")
        if db.type == "sqlite" and ref is None and not (percona_known and spec.percona.enabled):
            self._sqlite_path(parsed, spec)
        if db.type == "postgres" and ref is None and percona_known and not spec.percona.enabled:
            self.error(f"{base}.postgresSecretRef", "required when database.type is postgres (the server needs a "
                       "connection); set it, enable percona, or use type sqlite")
        if ref is None or not percona_known or spec.percona.enabled:
            return  # with Percona the external Secret is not consumed
        path = f"{base}.postgresSecretRef"
        keys = self._secret(path, ref.name, *_POD_FAILS)
        wanted = [ref.host_key, ref.port_key, ref.database_key, ref.user_key, ref.password_key]
        self._keys(path, ref.name, keys, wanted, *_POD_FAILS)

    def _sqlite_path(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        """The database must be a file on the control-plane volume: elsewhere DittoFS cannot create it (exits at
        start) or keeps users, shares and stores on the container's filesystem, gone with the next restart. An
        existing server is warned, not locked out of its updates, until its path changes."""
        path = spec.database.sqlite.path
        if not parsed.usable("database.sqlite.path") or posixpath.normpath(path).startswith(f"{CONTROL_PLANE_ROOT}/"):
            return
        problem = (f"{_show(path)} is not a file under {CONTROL_PLANE_ROOT}/, the only persistent path of the "
                   f"control-plane database; use e.g. {CONTROL_PLANE_ROOT}/controlplane.db")
        old_raw = self.old.get("spec") if isinstance(self.old, Mapping) else None
        old = parse_spec(old_raw).spec if isinstance(old_raw, Mapping) else None
        kept = self.stored.sqlite_path if self.stored is not None else old.database.sqlite.path if old else None
        if kept == path:
            self.warn("spec.database.sqlite.path", problem,
                      f"{_show(path)} is not under {CONTROL_PLANE_ROOT}/: users and shares go with the pod")
        else:
            self.error("spec.database.sqlite.path", problem)

    def _percona_name(self, base: str) -> None:
        """Percona's StatefulSet <name>-postgres-instance1-<4> puts its name and a 10-character revision hash in
        a pod label (63 at most): a longer name gets a cluster that never starts. Checked when Percona is turned
        on, so an existing server is never locked out of its updates by it."""
        meta = self.obj.get("metadata") if isinstance(self.obj, Mapping) else None
        name = meta.get("name") if isinstance(meta, Mapping) else None
        old_spec = self.old.get("spec") if isinstance(self.old, Mapping) else None
        was_on = isinstance(old_spec, Mapping) and isinstance(old_spec.get("percona"), Mapping) and \
            old_spec["percona"].get("enabled") is True
        was_on = was_on or (self.stored is not None and self.stored.percona)
        if isinstance(name, str) and len(name) > MAX_PERCONA_NAME and not was_on:
            self.error(f"{base}.enabled", f"the server's name {_q(name)} has {len(name)} characters; with Percona "
                       f"it may have at most {MAX_PERCONA_NAME}, as Percona's pods carry {name}-postgres-instance1-"
                       "<hash> in a 63-character label: use a shorter name")

    def _percona(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        percona, base = spec.percona, "spec.percona"
        if parsed.usable("percona.enabled") and percona.enabled:
            served = self.facts.percona_served
            if served is False:  # rule 6
                self.error(f"{base}.enabled", percona_not_served())
            elif served is None:
                self.unverified(f"{base}.enabled", "that the Percona Operator for PostgreSQL is installed")
            if parsed.usable("database.postgresSecretRef") and spec.database.postgres_secret_ref is not None:  # 7
                self.warn("spec.database.postgresSecretRef", "remove it or disable percona; the Percona database "
                          "is used instead")
            if parsed.usable("percona.image") and not percona.image:  # rule 11
                self.warn(f"{base}.image", "set a PostgreSQL image unless the Percona Operator sets RELATED_IMAGE_*")
            self._percona_name(base)
        backup = percona.backup
        if not parsed.usable("percona.backup.enabled") or not backup.enabled:
            return
        for key in ("bucket", "endpoint"):  # rule 9
            if parsed.usable(f"percona.backup.{key}") and not (getattr(backup, key) or "").strip():
                self.error(f"{base}.backup.{key}", f"required when backup is enabled; set the S3 {key} of the "
                           "pgBackRest repository or disable backup")
        if parsed.usable("percona.enabled") and not percona.enabled:
            self.warn(f"{base}.backup.enabled", "enable percona too, or turn backup off; backups only apply to "
                      "the Percona cluster")
        if not parsed.usable("percona.backup.credentialsSecretRef"):
            return
        if backup.credentials_secret_ref is None:
            self.warn(f"{base}.backup.credentialsSecretRef", "set it to the Secret with pgBackRest S3 credentials; "
                      "backups fail without it")
        else:
            self._secret(f"{base}.backup.credentialsSecretRef", backup.credentials_secret_ref.name,
                         "pgBackRest backups fail without it", "backups fail")

    # -- rule 14 and friends -----------------------------------------------------------------------------
    def _deprecations(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        if not parsed.usable("storage.cacheSize", "storage.contentSize") or spec.storage.cache_size is None:
            return
        if spec.storage.content_size is None:
            self.warn("spec.storage.cacheSize", "rename it to contentSize; cacheSize is deprecated "
                      "(DittoFS >= 0.9 has no disk cache)")
        else:
            self.warn("spec.storage.cacheSize", "remove it; it is deprecated and ignored because contentSize is set")

    def _service(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        svc = spec.service
        lb_open = svc.type == "LoadBalancer" and not svc.load_balancer_source_ranges
        if lb_open and parsed.usable("service.type", "service.loadBalancerSourceRanges"):
            self.warn("spec.service.loadBalancerSourceRanges", "restrict it; a LoadBalancer exposes the "
                      "admin-capable API to every source")

    def _network_policy(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        if not parsed.usable("networkPolicy"):
            return
        policy = spec.network_policy
        for key, peers in (("apiFrom", policy.api_from), ("metricsFrom", policy.metrics_from or []),
                             ("fileClients", policy.file_clients or [])):
            for i, peer in enumerate(peers):
                self._peer(f"spec.networkPolicy.{key}[{i}]", peer)

    def _peer(self, path: str, peer: NetworkPeer) -> None:
        selectors = peer.namespaces is not None or peer.pods is not None
        if peer.cidr is None:
            if not selectors:
                self.error(path, "set cidr, or namespaces and/or pods (an empty peer would match nothing)")
            if peer.except_cidrs:
                self.error(f"{path}.exceptCidrs", "only with cidr; remove it or set cidr")
            return
        if selectors:
            self.error(path, "set either cidr or namespaces/pods, not both (Kubernetes allows one kind per peer)")
        try:
            block = ipaddress.ip_network(peer.cidr, strict=False)
        except ValueError:
            self.error(f"{path}.cidr", f"{_show(peer.cidr)} is not a CIDR such as 10.20.0.0/16")
            return
        for j, text in enumerate(peer.except_cidrs):
            try:
                inner = ipaddress.ip_network(text, strict=False)
            except ValueError:
                self.error(f"{path}.exceptCidrs[{j}]", f"{_show(text)} is not a CIDR such as 10.20.1.0/24")
                continue
            if inner.version != block.version or not inner.subnet_of(block) or inner == block:  # type: ignore[arg-type]
                why = ("Kubernetes refuses an exception as large as the block" if inner == block
                       else "an exception outside the block excepts nothing; Kubernetes refuses it")
                self.error(f"{path}.exceptCidrs[{j}]", f"{_show(text)} must lie strictly inside cidr {peer.cidr} "
                           f"({why})")

    def _kubernetes_fields(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        """Values copied into the children that the apiserver would refuse there (a 422 stops every pass):
        refused here, naming the field."""
        policy = spec.network_policy
        peers = [(f"networkPolicy.{key}[{i}]", peer)
                 for key, group in (("apiFrom", policy.api_from), ("metricsFrom", policy.metrics_from or []),
                                    ("fileClients", policy.file_clients or [])) for i, peer in enumerate(group)]
        labels = [("podLabels", spec.pod_labels), ("nodeSelector", spec.node_selector),
                  ("metrics.serviceMonitor.labels", spec.metrics.service_monitor.labels),
                  *((f"{path}.{kind}", getattr(peer, kind) or {}) for path, peer in peers
                    for kind in ("namespaces", "pods"))]
        for path, mapping in labels:
            if parsed.usable(path.split("[", 1)[0]):
                for key, value in mapping.items():
                    self._label_key(f"spec.{path}", key)
                    if len(value) > 63 or (value and not _QUALIFIED.match(value)):
                        self.error(f"spec.{path}[{key}]", f"{_show(value)} is not a label value: at most 63 letters, "
                                   "digits, '-', '_' or '.', starting and ending with a letter or digit")
        for path, mapping in (("podAnnotations", spec.pod_annotations), ("service.annotations",
                                                                        spec.service.annotations)):
            if parsed.usable(path):
                for key in mapping:
                    self._label_key(f"spec.{path}", key)
        name = spec.priority_class_name
        if name is not None and parsed.usable("priorityClassName") and (len(name) > 253 or not _SUBDOMAIN.match(name)):
            self.error("spec.priorityClassName", f"{_show(name)} is not a PriorityClass name (lower-case DNS name: "
                       "a-z, 0-9, '-' and '.')")
        if parsed.usable("service.loadBalancerSourceRanges"):
            for i, text in enumerate(spec.service.load_balancer_source_ranges):
                try:
                    ipaddress.ip_network(text, strict=False)
                except ValueError:
                    self.error(f"spec.service.loadBalancerSourceRanges[{i}]", f"{_show(text)} is not a CIDR such "
                               "as 203.0.113.0/24")
        for field_name, value in (("resources", spec.resources), ("podSecurityContext", spec.pod_security_context)):
            if parsed.usable(field_name):
                self._kube_object(field_name, value)
        passed: dict[str, Any] = {
            "resources": spec.resources, "securityContext": spec.security_context,
            "podSecurityContext": spec.pod_security_context, "affinity": spec.affinity,
            "tolerations": spec.tolerations, "topologySpreadConstraints": spec.topology_spread_constraints}
        for field_name, value in passed.items():
            if value and parsed.usable(field_name):
                if isinstance(value, Mapping):  # checked above, with the fix in their words
                    value = {k: v for k, v in value.items() if (field_name, k) not in _OWN_CHECKS}
                for problem in kube_errors(value, PASS_THROUGH[field_name], f"spec.{field_name}"):
                    where, _, what = problem.partition(": ")
                    self.error(where, what)

    def _label_key(self, path: str, key: str) -> None:
        prefix, _, name = key.rpartition("/")
        if (len(name) > 63 or not _QUALIFIED.match(name)
                or ("/" in key and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)))):
            self.error(f"{path}[{key}]", f"{_show(key)} is not a valid key: an optional DNS prefix and '/', then at "
                       "most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit")

    def _kube_object(self, field_name: str, value: Mapping[str, Any] | None) -> None:
        """The parts of the pass-through objects the operator reads or the apiserver checks by syntax."""
        if not value:
            return
        if field_name == "resources":
            for part in ("requests", "limits"):
                amounts = value.get(part)
                if amounts is not None and not isinstance(amounts, Mapping):
                    self.error(f"spec.resources.{part}", f"must be a map such as {{cpu: 500m, memory: 1Gi}} "
                               f"(got {_show(amounts)})")
                    continue
                for name, amount in (amounts or {}).items():
                    if isinstance(amount, bool) or not _QUANTITY.match(str(amount)):
                        self.error(f"spec.resources.{part}[{name}]", f"{_show(amount)} is not a quantity such as "
                                   "500m, 2 or 1Gi")
        sysctls = value.get("sysctls") if field_name == "podSecurityContext" else None
        if sysctls is not None and not (isinstance(sysctls, list) and all(
                isinstance(s, Mapping) and isinstance(s.get("name"), str) and isinstance(s.get("value"), str)
                for s in sysctls)):
            self.error("spec.podSecurityContext.sysctls", "must be a list of {name, value} strings, e.g. "
                       f"[{{name: net.ipv4.tcp_keepalive_time, value: \"600\"}}] (got {_show(sysctls)})")

    def _old_share_names(self) -> set[str]:
        """The share names the old object declares, as written (none on a CREATE)."""
        old_spec = self.old.get("spec") if isinstance(self.old, Mapping) else None
        shares = old_spec.get("shares") if isinstance(old_spec, Mapping) else None
        if not isinstance(shares, list):
            return set()
        return {s["name"] for s in shares if isinstance(s, Mapping) and isinstance(s.get("name"), str)}

    # -- rules 12 and 13: updates ------------------------------------------------------------------------
    def _update(self, parsed: ParsedSpec, spec: DittoServerSpec) -> None:
        old_raw = self.old.get("spec") if isinstance(self.old, Mapping) else None
        if not isinstance(old_raw, Mapping):
            return
        old = self.old_parsed = parse_spec(old_raw)
        if old.spec is None:
            return
        self._immutable_storage(old, parsed)
        if old.spec.percona.enabled and spec.percona.enabled and parsed.usable("percona") and old.usable("percona"):
            self._percona_update(old.spec, spec)
        if parsed.usable("stores", "shares") and old.usable("stores", "shares"):
            self._immutable_file_service(old.spec, spec)
            self._dropped_shares(old.spec, spec)
            if parsed.usable("s3") and old.usable("s3"):
                self._implied_changes(old.spec, spec)
        backend = ("database.type", "database.postgresSecretRef", "percona.enabled")
        if parsed.usable(*backend) and old.usable(*backend):
            before, after = _backend(old.spec), _backend(spec)
            # The SQLite file stays on the control-plane volume while another backend is used: it comes back.
            reopened = ("migrate the data first; on SQLite, DittoFS opens any SQLite file left on its volume (old "
                        "data)",) if after == "SQLite" else ()
            if old.spec.percona.enabled and not spec.percona.enabled:
                self.warn("spec.percona.enabled", *reopened, f"migrate the data first; turning Percona off switches "
                          f"the server to {after} and does not move it")
            elif before != after:
                self.warn("spec.database", *reopened, f"migrate the data first; switching from {before} to {after} "
                          "does not move it")

    def _percona_update(self, old: DittoServerSpec, new: DittoServerSpec) -> None:
        """Changes Percona cannot make, or makes by starting over: the cluster's volumes keep their class and
        never shrink, and another databaseName is a new, empty database the server would start on."""
        before, after, base = old.percona, new.percona, "spec.percona"
        if before.database_name != after.database_name:
            self.error(f"{base}.databaseName", f"immutable: DittoFS would start on a new, empty database "
                       f"{_q(after.database_name)} (its data stays in {_q(before.database_name)}); revert the change")
        if before.storage_class_name != after.storage_class_name:
            self.error(f"{base}.storageClassName", f"immutable: the database's PVCs keep their class (was "
                       f"{_shown_value(before.storage_class_name)}, now {_shown_value(after.storage_class_name)}); "
                       "revert the change")
        growth = _growth(before.storage_size, after.storage_size)
        if growth is not None and growth < 0:
            self.error(f"{base}.storageSize", f"cannot shrink the database's volumes (was "
                       f"{_shown_value(before.storage_size)}, now {_shown_value(after.storage_size)}); set "
                       f"{_shown_value(before.storage_size)} or more")
        if after.postgres_version > before.postgres_version:
            self.warn(f"{base}.postgresVersion", f"a major upgrade ({before.postgres_version} -> "
                      f"{after.postgres_version}) needs a PerconaPGUpgrade (see Percona's documentation); this field "
                      "alone does not move the data")
        elif after.postgres_version < before.postgres_version:
            self.error(f"{base}.postgresVersion", f"cannot go back from {before.postgres_version} to "
                       f"{after.postgres_version}: PostgreSQL's data files do not downgrade; revert the change")

    def _implied_changes(self, old: DittoServerSpec, new: DittoServerSpec) -> None:
        """Changes no field of the edit names: a default the edit replaced without saying so."""
        if old.shares is None and new.shares is not None:
            implicit = old.effective_shares[0]
            for i, share in enumerate(new.shares):
                if share.name == implicit.name and share.default_permission != implicit.default_permission:
                    self.warn(f"spec.shares[{i}].defaultPermission", f"{share.default_permission!r} for clients "
                              f"without a grant (implicit, {implicit.name} was {implicit.default_permission})")
        before = {r.name: r.effective_region(old.s3) for r in old.stores.remote}
        for i, store in enumerate(new.stores.remote):
            region = store.effective_region(new.s3)
            if before.get(store.name, region) != region:
                self.warn(f"spec.stores.remote[{i}].region", f"now {region!r} (was {before[store.name]!r}); set "
                          "it on the store to keep it")

    def _immutable_file_service(self, old: DittoServerSpec, new: DittoServerSpec) -> None:
        """A store's type and path and a share's stores cannot change in DittoFS (SPEC §13.2)."""
        fix = "declare a new one under another name and move the data, or revert the change"
        for kind in STORE_LISTS:
            before = {s.name: s for s in old.stores.served(kind)}
            # An unset list is the implicit default store: declaring it with another type or path is a change too.
            implicit = getattr(new.stores, kind) is None
            for i, store in enumerate(new.stores.served(kind)):
                prior = before.get(store.name)
                if prior is None:
                    continue
                # The effective path: writing out the default path the store already uses changes nothing.
                paths = (getattr(prior, "effective_path", None), getattr(store, "effective_path", None))
                for key, a, b in (("type", prior.type, store.type), ("path", *paths)):
                    if a != b:
                        where = f"spec.stores.{kind}" if implicit else f"spec.stores.{kind}[{i}].{key}"
                        self.error(where, f"immutable: store {_q(store.name)} was {_shown_value(a)}, now "
                                   f"{_shown_value(b)}; {fix}")
                        break
        self._renamed_badger_stores(old, new)
        self._renamed_identities(old, new)
        self._moved_ids(old, new)
        remote = {r.name: r.location(old.s3) for r in old.stores.remote}
        for i, r in enumerate(new.stores.remote):
            if r.name not in remote:
                continue
            location = r.location(new.s3)
            for key in REMOTE_LOCATION_KEYS:
                a, b = remote[r.name][key], location[key]
                if a != b:
                    inherited = key == "bucket" and not r.bucket and new.s3 is not None and new.s3.bucket == b
                    where, remedy = (("spec.s3.bucket", f"revert it, or keep this store where it is with bucket: "
                                      f"{_shown_value(a)} on spec.stores.remote[{i}]") if inherited
                                     else (f"spec.stores.remote[{i}].{key}", fix))
                    self.error(where, f"immutable: store {_q(r.name)} keeps its blocks under {key} "
                               f"{_shown_value(a)}, now {_shown_value(b)}; DittoFS would no longer find them "
                               f"(blocks evicted from local disk are read back from there); {remedy}")
                    break
        # Keyed as DittoFS keys shares (leading slashes only): "/a" is a new share beside a kept "/a/".
        shares = {share_name(s.name): s for s in old.effective_shares}
        for i, share in enumerate(new.effective_shares):
            was = shares.get(share_name(share.name))
            if was is None:
                continue
            for key, attr in (("metadataStore", "metadata_store"), ("localBlockStore", "local_block_store"),
                              ("remoteBlockStore", "remote_block_store")):
                a, b = getattr(was, attr), getattr(share, attr)
                if a != b:
                    self.error(f"spec.shares[{i}].{key}", f"immutable: share {_q(share.name)} used "
                               f"{_shown_value(a)}, now {_shown_value(b)}; declare a new share, or revert the change")
            if was.read_only and not share.read_only:
                # DittoFS v0.29.0 refuses writes by an option it sets when it loads a read-only share and never
                # clears: the API would say read-write while every write still failed, restarts included.
                self.error(f"spec.shares[{i}].readOnly", f"share {_q(share.name)} is read-only for good: DittoFS "
                           "keeps refusing its writes once it was read-only; declare a new share for writes, or "
                           "revert the change")

    def _dropped_shares(self, old: DittoServerSpec, new: DittoServerSpec) -> None:
        """A share leaving the spec stops being served at the next pass (deleted in DittoFS, or disabled while it
        has snapshots): an edit that renames one, or lists shares where the implicit /export stood, says nothing
        of it otherwise. One the status says the operator does not own (made by hand) it never touches."""
        kept = {share_name(s.name) for s in new.effective_shares}
        status = self.old.get("status") if isinstance(self.old, Mapping) else None
        owned = status.get("provisioned") if isinstance(status, Mapping) else None
        for share in old.effective_shares:
            key = share_name(share.name)
            if key in kept or (isinstance(owned, list) and f"share:{key}" not in owned):
                continue
            implicit = " (the implicit default share)" if old.shares is None else ""
            self.warn("spec.shares", f"{_q(share.name)}{implicit} leaves the spec: DittoFS stops serving it, its "
                      "clients lose the mount; its files stay",
                      f"{_q(share.name)}{implicit} leaves the spec: DittoFS stops serving it; its files stay",
                      f"{_q(share.name)} leaves the spec: DittoFS stops serving it; its files stay")

    def _renamed_badger_stores(self, old: DittoServerSpec, new: DittoServerSpec) -> None:
        """A new badger store in or around the directory of one leaving the spec (a rename): DittoFS keeps the
        old one's directory locked until it restarts, and reopens it at every start while it exists, so the new
        store's creation, which comes before the old one's deletion, failed for ever."""
        names = {m.name for m in new.stores.served("metadata")}
        leaving = [(m.name, m.effective_path.rstrip("/") + "/") for m in old.stores.served("metadata")
                   if m.name not in names and m.effective_path is not None]
        kept = {m.name for m in old.stores.served("metadata")}
        implicit = new.stores.metadata is None
        for i, store in enumerate(new.stores.served("metadata")):
            if store.name in kept or store.effective_path is None:
                continue
            here = store.effective_path.rstrip("/") + "/"
            for name, there in leaving:
                if here.startswith(there) or there.startswith(here):
                    where = "spec.stores.metadata" if implicit else \
                        f"spec.stores.metadata[{i}]" + (".path" if store.path else "")
                    self.error(where, f"store {_q(store.name)} would open {store.effective_path}, in or around the "
                               f"directory of store {_q(name)}, which leaves the spec: DittoFS keeps that locked "
                               f"until the server restarts, and its files stay; keep the name {_q(name)}, or give "
                               "the new store a path of its own")
                    break

    def _immutable_storage(self, old_parse: ParsedSpec, new_parse: ParsedSpec) -> None:
        """The class is immutable; sizes may grow when the StorageClass allows expansion, never shrink."""
        assert old_parse.spec is not None and new_parse.spec is not None
        old, new = old_parse.spec.storage, new_parse.spec.storage
        fields: list[tuple[str, tuple[str, ...], str | None, str | None]] = [
            ("metadataSize", ("storage.metadataSize",), old.metadata_size, new.metadata_size),
            ("contentSize", ("storage.contentSize", "storage.cacheSize"), old.effective_content_size,
             new.effective_content_size),
            ("controlPlaneSize", ("storage.controlPlaneSize",), old.control_plane_size, new.control_plane_size),
        ]
        paths = ("storage.storageClassName",)
        if old_parse.usable(*paths) and new_parse.usable(*paths) and old.storage_class_name != new.storage_class_name:
            self.error("spec.storage.storageClassName", f"immutable: the PVCs keep their class (was "
                       f"{_shown_value(old.storage_class_name)}, now {_shown_value(new.storage_class_name)}); "
                       "create a new DittoServer and migrate the data, or revert the change")
        for key, field_paths, before, after in fields:
            if not (old_parse.usable(*field_paths) and new_parse.usable(*field_paths)):
                continue  # a broken value is reported by rule 1; comparing its default would mislead
            growth = _growth(before, after)
            if growth is None or growth == 0:
                continue
            change = f"was {_shown_value(before)}, now {_shown_value(after)}"
            if growth < 0:
                self.error(f"spec.storage.{key}", f"cannot shrink a volume ({change}); PVCs only grow: set "
                           f"{_shown_value(before)} or more")
                continue
            self._expansion(f"spec.storage.{key}", new.storage_class_name, change)

    def _expansion(self, path: str, declared: str | None, change: str) -> None:
        name = declared or self.facts.default_storage_class
        expandable = self.facts.expandable_classes
        if name is None or expandable is None:
            if self.facts.online:
                self.warn(path, f"could not verify that the StorageClass allows volume expansion ({change}); if it "
                          "does not, the PVCs keep their size and the server reports VolumeExpansionFailed")
        elif name not in expandable:
            self.error(path, f"StorageClass {_q(name)} does not allow volume expansion ({change}); set "
                       "allowVolumeExpansion: true on it (if its driver can resize), or revert the change")


# -- helpers -------------------------------------------------------------------------------------------------
def _identity_ids(old: DittoServerSpec, new: DittoServerSpec) -> Iterator[
        tuple[str, str, dict[str, int | None], list[tuple[str, int | None]]]]:
    """Users' uids and groups' gids across an update: (list path, id key, name -> id before, [(name, id)] after)."""
    yield "spec.users", "uid", {u.name: u.uid for u in old.users}, [(u.name, u.uid) for u in new.users]
    yield "spec.groups", "gid", {g.name: g.gid for g in old.groups}, [(g.name, g.gid) for g in new.groups]


def _backend(spec: DittoServerSpec) -> str:
    if spec.percona.enabled:
        return "Percona PostgreSQL"
    if spec.database.postgres_secret_ref is not None or spec.database.type == "postgres":
        return "external PostgreSQL"
    return "SQLite"


def _endpoint_host(url: str) -> str | None:
    """The host of an endpoint URL, or None when it has none or is malformed (an unbalanced IPv6 bracket, a bad
    port, a blank in the host: Go's url.Parse in DittoFS refuses those too)."""
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port
    except ValueError:
        return None
    return host.lower() if host and not any(c.isspace() for c in host) else None


def _private_endpoint(host: str) -> bool:
    """An endpoint host DittoFS refuses without allow_private_endpoint: a loopback/private/link-local IP literal,
    localhost, or an in-cluster Service name (it resolves to a private ClusterIP)."""
    if host == "localhost" or host.endswith((".svc", ".svc.cluster.local", ".local")) or "." not in host:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local


def _growth(a: str | None, b: str | None) -> int | None:
    """Sign of b - a as quantities (0: the same size however written); None when either is unparsable."""
    try:
        if a is None or b is None:
            return None
        before, after = parse_quantity(a), parse_quantity(b)
    except ValueError:
        return None
    return (after > before) - (after < before)


def _status(raw: Any) -> DittoServerStatus | None:
    # Status is the operator's business: a malformed one must not make a spec change fail validation.
    try:
        return DittoServerStatus.model_validate(raw) if isinstance(raw, Mapping) else None
    except Exception:
        return None


def _path(loc: tuple[int | str, ...]) -> str:
    out = "spec"
    for part in loc:
        out = f"{out}[{part}]" if isinstance(part, int) else key_path(out, str(part))
    return out


def _describe(err: ErrorDetails) -> str:
    """A pydantic error as "what is wrong (got X)", phrased for someone editing YAML."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    got = f" (got {_show(value)})"
    last = str(err["loc"][-1]) if err["loc"] else ""
    if kind == "missing":
        return "required; add this field"
    if kind == "extra_forbidden":
        return _unknown_field(err["loc"])
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        if isinstance(value, int | float) and not isinstance(value, bool) and f"'{value}'" in expected:
            return f"must be one of {expected}{got}: a string, so quote it (\"{value}\")"
        return f"must be one of {expected}{got}"
    if kind == "string_pattern_mismatch":
        return PATTERN_MESSAGES.get(str(ctx.get("pattern")), f"must match {ctx.get('pattern')}") + got
    if kind == "value_error":
        message = str(ctx.get("error") or err["msg"]).removeprefix("Value error, ")
        shown = _show(value) in message or (isinstance(value, str) and repr(value) in message)
        return message if shown else message + got
    if kind == "string_too_short":
        if last.endswith("Schedule"):
            return f"must be a 5-field cron expression such as '0 2 * * *'{got}"
        if ctx.get("min_length") == 1:
            return "must not be empty"
        if err["loc"][:1] == ("shares",) and last == "name":
            return f"must name a share below '/', e.g. /export{got}"
        return f"must have at least {ctx.get('min_length')} characters{got}"
    if kind == "string_too_long":
        return f"must have at most {ctx.get('max_length')} characters"
    if kind == "too_long":  # a list
        more = " (serve more from another DittoServer)" if last == "shares" else ""
        return f"must have at most {ctx.get('max_length')} items, not {ctx.get('actual_length')}{more}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next((v for k, v in ctx.items() if k in ("ge", "gt", "le", "lt")), "")
        return f"must be {sign} {bound}{got}"
    if kind.startswith("int_"):
        return f"must be an integer{got}"
    if kind.startswith("bool_"):
        return f"must be true or false{got}"
    if kind.startswith("string_"):
        return f"must be a string (got {_json_type(value)})"
    if kind in ("model_type", "dict_type", "model_attributes_type", "mapping_type"):
        return f"must be an object (got {_json_type(value)})"
    if kind in ("list_type", "tuple_type", "iterable_type"):
        return f"must be a list (got {_json_type(value)})"
    return str(err["msg"]).replace("Input should be", "must be")


# Unknown fields with a known cause: (the field, where it was written) -> what to write instead.
_MISPLACED = {
    ("password", "users"): "a password never goes in the spec: put it in a Secret and name it in "
                           "passwordSecretRef: {name, key}",
    ("secretName", "credentialsSecretRef"): "here the Secret is named by name (spec.s3.credentialsSecretRef uses "
                                            "secretName)",
    # Only spec.s3's reference has no `name` (a store's does).
    ("name", "credentialsSecretRef"): "spec.s3.credentialsSecretRef names its Secret by secretName",
}


def _unknown_field(loc: tuple[int | str, ...]) -> str:
    """An unknown field, with the field the user most likely meant."""
    field_ = str(loc[-1]) if loc else ""
    parent = next((str(p) for p in reversed(loc[:-1]) if isinstance(p, str)), "")
    hint = _MISPLACED.get((field_, parent))
    if hint is not None:
        return f"unknown field; {hint}"
    known = _fields_at(loc[:-1])
    match = next((k for k in known if k.lower() == field_.lower()), None) or next(
        iter(difflib.get_close_matches(field_, known, n=1, cutoff=0.75)), None)
    if match is not None:
        return f"unknown field; did you mean {match}? (`kubectl explain dittoserver.spec` lists the fields)"
    return "unknown field; remove it or fix its spelling (`kubectl explain dittoserver.spec` lists the fields)"


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """The field names (as written in YAML) of the object at ``loc`` in a spec; [] when it cannot be told."""
    models: list[type[BaseModel]] = [DittoServerSpec]
    for part in loc:
        if isinstance(part, int):
            continue  # a list item: the same models
        fields_ = [f for m in models for name, f in m.model_fields.items() if (f.alias or name) == part]
        if not fields_:
            return []
        models = [m for f in fields_ for m in _models_in(f.annotation)]
    return sorted({f.alias or name for m in models for name, f in m.model_fields.items()})


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _show(value: Any, limit: int = 40) -> str:
    """A short, JSON-looking rendering of a user value (values in specs are never secret)."""
    try:
        text = f"'{value}'" if isinstance(value, str) else json.dumps(value, default=str)
    except (TypeError, ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    if len(text) <= limit:
        return text
    return text[: limit - 4] + "...'" if text.startswith("'") else text[:limit] + "..."


def _smb_name(share: str) -> str:
    """The name an NFS-only share could take to be reached over SMB too."""
    return "/" + share[1:].rstrip("/").lower().replace("/", "-")


def _q(name: str, limit: int = 40) -> str:
    """A quoted resource name, shortened so warnings stay within MAX_WARNING."""
    return f'"{name}"' if len(name) <= limit else f'"{name[: limit - 3]}..."'


def _shown_value(value: str | None) -> str:
    return "unset" if value is None else _show(value)


def _fit(text: str) -> str:
    return text if len(text) <= MAX_WARNING else text[: MAX_WARNING - 3] + "..."
