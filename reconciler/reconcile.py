"""One level-based pass over one DittoServer: observe, build (pure), apply what differs, report.

Order (SPEC §4): finalizer -> validation -> Secrets -> ConfigMap -> Services -> StatefulSet -> status.
Nothing is written when nothing changed: children are compared with the watch cache, status with the
last status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from dittoctl.api.facts import ClusterFacts
from dittoctl.api.models import DittoServer, DittoServerSpec
from dittoctl.api.naming import FINALIZER, HASH_ANNOTATION, PAUSE_ANNOTATION, Names
from dittoctl.api.rules import validate
from dittoctl.api.secrets import secret_uses, watched_secrets
from dittoctl.kube.events import EventRecorder
from dittoctl.kube.gateway import (
    CONFIGMAPS,
    DITTOSERVERS,
    SECRETS,
    SERVICES,
    STATEFULSETS,
    ApiError,
    Conflict,
    Gateway,
    Kind,
    NotFound,
)
from dittoctl.kube.logs import fields
from reconciler import specs
from reconciler.cache import Cache, Key, secret_digest
from reconciler.compare import needs_apply, stamp_manifest
from reconciler.percona import ensure_database
from reconciler.specs.secrets import admin_secret, jwt_secret, new_jwt_value, new_password
from reconciler.specs.services import endpoints
from reconciler.status import Cond, Observation, build_status, status_changed

log = logging.getLogger("dittofs.reconciler")
# True during the first pass over a DittoServer (no status yet). Per task, so concurrent workers
# reconciling different servers never see each other's value.
_FRESH: ContextVar[bool] = ContextVar("fresh_server", default=False)
PLURALS: dict[str, Kind] = {"configmaps": CONFIGMAPS, "services": SERVICES, "statefulsets": STATEFULSETS}
STORAGE_TEMPLATES = ("controlplane", "metadata", "content")


@dataclass
class Memory:
    """Per-server facts remembered between passes, to post events on transitions only."""

    digests: dict[tuple[str, str], str | None] = field(default_factory=dict)
    database_ready: bool | None = None
    invalid: str | None = None
    backups_seen: set[str] | None = None


class Reconciler:
    def __init__(self, gateway: Gateway, cache: Cache, recorder: EventRecorder, *,
                 cleanup_timeout: float = 60.0) -> None:
        self.gw = gateway
        self.cache = cache
        self.events = recorder
        self.cleanup_timeout = cleanup_timeout
        self.memory: dict[Key, Memory] = {}

        self.percona_served: bool | None = None

    # -- helpers -----------------------------------------------------------------------------------------
    async def _observed(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        cached = self.cache.child(plural, namespace, name)
        if cached is not None or _FRESH.get():
            # A server never reconciled before has no children yet (and if a killed run left one,
            # applying it again is idempotent): skip the confirming GET, which doubles a burst's calls.
            return cached
        obj = await self.gw.get_or_none(PLURALS[plural], name, namespace)
        if obj is not None:
            self.cache.put_child(plural, obj)
        return obj

    async def _apply(self, plural: str, manifest: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """(written, previous) — applies only when the cached object differs from `manifest`."""
        meta = manifest["metadata"]
        previous = await self._observed(plural, meta["namespace"], meta["name"])
        if not needs_apply(manifest, previous):
            return False, previous
        result = await self.gw.apply(manifest)
        self.cache.put_child(plural, result)
        log.info("applied %s", manifest["kind"], extra=fields(namespace=meta["namespace"], name=meta["name"],
                                                       action="create" if previous is None else "update"))
        return True, previous

    async def _secret_digest(self, namespace: str, name: str) -> dict[str, str] | None:
        key = (namespace, name)
        if key in self.cache.secrets:
            return self.cache.secrets[key]
        obj = await self.gw.get_or_none(SECRETS, name, namespace)
        digest = secret_digest(obj) if obj is not None else None
        self.cache.put_secret(key, digest)
        return digest

    async def _ensure_generated(self, server: DittoServer, names: Names) -> None:
        """Create `<name>-jwt` / `<name>-admin-bootstrap-credentials` once; never regenerate."""
        spec = server.spec
        wanted: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        if spec.identity.jwt.secret_ref is None:
            wanted.append((names.jwt_secret, lambda: jwt_secret(names, new_jwt_value())))
        if spec.identity.admin.password_secret_ref is None:
            wanted.append((names.admin_secret,
                           lambda: admin_secret(names, spec.identity.admin.username, new_password())))
        for name, build in wanted:
            known = (names.namespace, name) in self.cache.secrets
            if (known or not _FRESH.get()) and await self._secret_digest(names.namespace, name) is not None:
                continue
            manifest = build()
            try:
                created = await self.gw.create(SECRETS, manifest, names.namespace)
                self.cache.put_secret((names.namespace, name), secret_digest(created))
                log.info("generated Secret", extra=fields(namespace=names.namespace, name=name))
            except Conflict:
                # Someone (a previous run of ours) created it meanwhile: keep theirs.
                existing = await self.gw.get(SECRETS, name, names.namespace)
                self.cache.put_secret((names.namespace, name), secret_digest(existing))

    async def _write_status(self, body: Mapping[str, Any], status: dict[str, Any]) -> None:
        old = body.get("status")
        if not status_changed(old, status):
            return
        meta = body["metadata"]
        try:
            result = await self.gw.merge_patch(DITTOSERVERS, meta["name"], {"status": status},
                                               meta["namespace"], subresource="status")
        except NotFound:
            return
        self.cache.put_server(result)
        log.info("status updated", extra=fields(namespace=meta["namespace"], name=meta["name"],
                                          phase=status.get("phase")))

    async def refresh_percona(self) -> None:
        """Discovery, so a Percona CRD installed after start is noticed without a restart."""
        try:
            self.percona_served = await self.gw.served("pgv2.percona.com", "v2", "perconapgclusters")
        except ApiError:
            return

    def _facts(self, body: Mapping[str, Any]) -> ClusterFacts:
        return ClusterFacts(storage_classes=None, percona_served=self.percona_served, secrets={})

    # -- the pass ----------------------------------------------------------------------------------------
    async def reconcile(self, key: Key) -> float | None:
        """Returns seconds until the next pass is wanted (None: wait for a watch event)."""
        body = self.cache.servers.get(key)
        if body is None:
            self.memory.pop(key, None)
            return None
        meta = body.get("metadata", {})
        if meta.get("deletionTimestamp"):
            from reconciler.deletion import finalize

            return await finalize(self, body)
        generation = int(meta.get("generation", 0))
        _FRESH.set(not body.get("status"))
        memory = self.memory.setdefault(key, Memory())
        if (meta.get("annotations") or {}).get(PAUSE_ANNOTATION) == "disabled":
            await self._paused(body, generation)
            return None
        if FINALIZER not in (meta.get("finalizers") or []):
            await self._add_finalizer(body)
            body = self.cache.servers.get(key, body)  # the patched object; its watch echo is skipped
            meta = body.get("metadata", {})

        wants_percona = bool(((body.get("spec") or {}).get("percona") or {}).get("enabled"))
        if wants_percona and self.percona_served is not True:
            await self.refresh_percona()
        verdict = validate(body, None, self._facts(body))
        if not verdict.allowed or verdict.server is None:
            message = "; ".join(verdict.errors)
            if memory.invalid != message:
                memory.invalid = message
                await self.events.post(body, "Warning", "ValidationFailed", message[:1000])
            status = build_status(Observation(
                generation=generation, desired_replicas=int((body.get("spec") or {}).get("replicas", 1) or 0),
                config_errors=verdict.errors, statefulset=self.cache.child("statefulsets", *key),
                pods=self.cache.pods_of(*key)), body.get("status"))
            await self._write_status(body, status)
            return 15.0 if wants_percona and not self.percona_served else None
        memory.invalid = None
        server = verdict.server
        names = Names.of(server)
        spec = server.spec
        self.cache.set_refs(key, watched_secrets(spec, names))

        await self._ensure_generated(server, names)
        digests: dict[tuple[str, str], str | None] = {}
        for use in secret_uses(spec, names):
            data = await self._secret_digest(names.namespace, use.secret)
            digests[(use.secret, use.key)] = None if data is None else data.get(use.key)
        desired = specs.build(spec, names, digests)

        errors: list[str] = []
        reason = "InvalidSpec"
        # The Percona user Secret appears when the database does; DatabaseReady reports that wait.
        missing = [(s, k) for s, k in desired.missing_secret_keys
                   if not (spec.percona.enabled and s == names.percona_user_secret)]
        if missing:
            reason = "MissingSecret"
            errors = [f"Secret {s} has no key {k!r} (or does not exist); create it or fix the reference"
                      for s, k in missing]

        written_cm, old_cm = await self._apply("configmaps", stamp_manifest(desired.config_map))
        if written_cm and old_cm is not None:
            await self.events.post(body, "Normal", "ConfigUpdated",
                                   f"ConfigMap {names.config_map} updated (config hash {desired.config_hash[:12]})")
        for service in desired.services:
            await self._apply("services", stamp_manifest(service))
        await self._prune_services(spec.metrics.enabled, bool(desired.services and any(
            s["metadata"]["name"] == names.file_service for s in desired.services)), names)

        database = await ensure_database(self, body, spec, names, memory)
        if database.condition is None and spec.database.postgres_secret_ref is not None:
            database.condition = postgres_secret_condition(desired.missing_secret_keys,
                                                           spec.database.postgres_secret_ref.name)

        sts = await self._observed("statefulsets", names.namespace, names.statefulset)
        immutable = storage_drift(sts, desired.statefulset)
        if immutable:
            errors.extend(immutable)
            reason = "InvalidSpec"
        if not errors and database.gate_open:
            sts = await self._apply_statefulset(body, names, desired, sts, memory, digests)
        memory.digests = digests

        observation = Observation(
            generation=generation,
            desired_replicas=spec.replicas,
            config_errors=errors,
            config_reason=reason,
            statefulset=sts,
            pods=self.cache.pods_of(names.namespace, names.server),
            config_hash=desired.config_hash,
            endpoints=endpoints(spec, names),
            database=database.condition,
            percona_cluster=database.cluster_name,
            s3=s3_status(spec, digests),
        )
        await self._write_status(self.cache.servers.get(key, body), build_status(observation, body.get("status")))
        return database.requeue

    async def _apply_statefulset(self, body: Mapping[str, Any], names: Names, desired: specs.Desired,
                                 previous: dict[str, Any] | None, memory: Memory,
                                 digests: dict[tuple[str, str], str | None]) -> dict[str, Any] | None:
        manifest = stamp_manifest(desired.statefulset)
        if not needs_apply(manifest, previous):
            return previous
        result = await self.gw.apply(manifest)
        self.cache.put_child("statefulsets", result)
        log.info("applied StatefulSet", extra=fields(namespace=names.namespace, name=names.statefulset,
                                               configHash=desired.config_hash[:12]))
        sts_name = f"StatefulSet {names.statefulset}"
        if previous is None:
            await self.events.post(body, "Normal", "Created", f"{sts_name} created")
            return result
        old_hash = previous["spec"]["template"]["metadata"].get("annotations", {}).get(HASH_ANNOTATION)
        if old_hash != desired.config_hash and memory.digests:
            rotated = sorted({s for (s, k), d in digests.items() if memory.digests.get((s, k), d) != d})
            for secret in rotated:
                await self.events.post(body, "Normal", "SecretRotated",
                                       f"Secret {secret} changed; rolling {sts_name}")
        old_replicas = previous["spec"].get("replicas")
        new_replicas = desired.statefulset["spec"]["replicas"]
        if old_replicas != new_replicas:
            await self.events.post(body, "Normal", "Scaled",
                                   f"{sts_name} scaled from {old_replicas} to {new_replicas}")
        return result

    async def _prune_services(self, metrics: bool, file_wanted: bool, names: Names) -> None:
        for wanted, name in ((metrics, names.metrics_service), (file_wanted, names.file_service)):
            if wanted:
                continue
            current = self.cache.child("services", names.namespace, name)
            if current is not None and _owned_by(current, names.uid):
                await self.gw.delete(SERVICES, name, names.namespace)
                log.info("deleted obsolete Service", extra=fields(namespace=names.namespace, name=name))
                self.cache.drop_child("services", (names.namespace, name))

    async def _add_finalizer(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        finalizers = [*(meta.get("finalizers") or []), FINALIZER]
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
        result = await self.gw.merge_patch(DITTOSERVERS, meta["name"], patch, meta["namespace"])
        self.cache.put_server(result)
        log.info("added finalizer", extra=fields(namespace=meta["namespace"], name=meta["name"]))

    async def _paused(self, body: Mapping[str, Any], generation: int) -> None:
        previous = body.get("status") or {}
        conditions = [c for c in previous.get("conditions", []) if c.get("type") != "ReconciliationPaused"]
        conditions.append({"type": "ReconciliationPaused", "status": "True", "reason": "AnnotationSet",
                           "message": f"{PAUSE_ANNOTATION}=disabled; remove it to resume",
                           "lastTransitionTime": next((c["lastTransitionTime"] for c in previous.get(
                               "conditions", []) if c.get("type") == "ReconciliationPaused"
                               and c.get("status") == "True"), _now()),
                           "observedGeneration": generation})
        await self._write_status(body, {**previous, "conditions": conditions})


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences", []))


def storage_drift(observed: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> list[str]:
    """volumeClaimTemplates are immutable: report a size/class change instead of failing the apply."""
    if observed is None:
        return []

    def claims(sts: Mapping[str, Any]) -> dict[str, tuple[str | None, str | None]]:
        out = {}
        for claim in sts.get("spec", {}).get("volumeClaimTemplates", []):
            spec = claim.get("spec", {})
            out[claim["metadata"]["name"]] = (
                spec.get("resources", {}).get("requests", {}).get("storage"), spec.get("storageClassName"))
        return out

    before, after = claims(observed), claims(desired)
    errors = []
    for name in STORAGE_TEMPLATES:
        if name in before and name in after and before[name] != after[name]:
            (old_size, old_class), (new_size, new_class) = before[name], after[name]
            if old_size != new_size:
                errors.append(f"spec.storage: immutable: volume {name} is {old_size}, spec asks {new_size}; "
                              "StatefulSet volumeClaimTemplates cannot change")
            if new_class is not None and old_class != new_class:
                errors.append(f"spec.storage.storageClassName: immutable: volume {name} uses {old_class}, "
                              f"spec asks {new_class}")
    return errors


def postgres_secret_condition(missing: list[tuple[str, str]], secret: str) -> Cond:
    gaps = [k for s, k in missing if s == secret]
    if gaps:
        return Cond("DatabaseReady", False, "PostgresSecretIncomplete",
                    f"Secret {secret} lacks keys: {', '.join(gaps)}")
    return Cond("DatabaseReady", True, "PostgresSecretComplete", f"Secret {secret} holds the connection")


def s3_status(spec: DittoServerSpec, digests: Mapping[tuple[str, str], str | None]) -> dict[str, Any] | None:
    if spec.s3 is None or spec.s3.credentials_secret_ref is None:
        return None
    ref = spec.s3.credentials_secret_ref
    keys = [ref.access_key_id_key, ref.secret_access_key_key]
    missing = [k for k in keys if digests.get((ref.secret_name, k)) is None]
    found = any(d is not None for (s, _k), d in digests.items() if s == ref.secret_name)
    if not found:
        return {"secretFound": False, "missingKeys": keys,
                "message": f"Secret {ref.secret_name} not found; create it with keys {', '.join(keys)}"}
    message = f"Secret {ref.secret_name} lacks {', '.join(missing)}" if missing else "credentials present"
    return {"secretFound": True, "missingKeys": missing, "message": message}
