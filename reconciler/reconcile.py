"""One level-based pass over one DittoServer: observe, build (pure), apply what differs, report.

The pass is a sequence of named phases (reconciler/phases, SPEC §4 order). Nothing is written when
nothing changed: children are compared with the watch cache, status with the last status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, NamedTuple

from dittoctl.api.conditions import Reason
from dittoctl.api.kinds import CONFIGMAPS
from dittoctl.api.models import DittoServer
from dittoctl.api.naming import Names
from dittoctl.api.secrets import ADMIN_PASSWORD, EMPTY_REFUSED, JWT_SECRET, ValueBounds, watched_secrets
from dittoctl.kube.background import together
from dittoctl.kube.events import EventRecorder
from dittoctl.kube.gateway import ApiError, Gateway
from dittoctl.kube.logs import about
from reconciler import specs
from reconciler.cache import Cache, Key
from reconciler.context import LANE_RETRY, Discovery, Memory, Pass, Provisioning, Shared
from reconciler.phases.config import (
    apply_certificates,
    apply_config_map,
    apply_network_policy,
    apply_service_monitor,
    apply_services,
    config_map_refusal,
    unserved_certificates,
)
from reconciler.phases.database import (
    DatabaseState,
    ensure_database,
    keep_database,
    percona_secret_wait,
    postgres_secret_condition,
)
from reconciler.phases.deletion import finalize
from reconciler.phases.fileservice import Provisioned, provision
from reconciler.phases.fileservice import memory as fileservice_memory
from reconciler.phases.finalizer import ensure_finalizer
from reconciler.phases.paused import is_paused, report_paused
from reconciler.phases.secrets import (
    Consumed,
    consumed_digests,
    ensure_generated,
    missing_mounted,
    missing_secrets,
    refused_values,
    report_missing,
    s3_secret,
)
from reconciler.phases.spec import check_spec
from reconciler.phases.statefulset import apply_statefulset, observe_statefulset, policy_moved, storage_drift
from reconciler.phases.volumes import claim_sizes, expand_volumes, grow_claims, orphan_statefulset
from reconciler.specs import Desired, SecretDigests
from reconciler.specs.services import endpoints
from reconciler.status import Observation, build_status, kept_fileservice, s3_status, settled

REFUSED_VALUE_REASONS: dict[ValueBounds, Reason] = {
    JWT_SECRET: Reason.JWT_SECRET_TOO_SHORT, ADMIN_PASSWORD: Reason.ADMIN_PASSWORD_REFUSED,
    **dict.fromkeys(EMPTY_REFUSED, Reason.SECRET_VALUE_EMPTY),
}

Obj = dict[str, Any]
CERT_MANAGER_POLL = 30.0  # seconds between looks for cert-manager's Certificate kind while a server waits for it
RECREATE_POLL = 1.0  # seconds between looks at an orphan-deleted StatefulSet until it is gone


class Gated(NamedTuple):
    """The StatefulSet phase's outcome."""

    statefulset: Obj | None
    database: DatabaseState
    errors: list[str]
    reason: Reason
    """Why ``errors`` hold the StatefulSet back (the condition's reason)."""
    recreating: bool
    """The StatefulSet is being re-created around its pods (a volume expansion, a policy change)."""
    refused: ApiError | None
    """The API's refusal to bring the existing ConfigMap up to date."""


class Reconciler:
    def __init__(self, gateway: Gateway, cache: Cache, recorder: EventRecorder, *,
                 cleanup_timeout: float = 60.0, provisioning: Provisioning | None = None) -> None:
        self.shared = Shared(gateway, cache, recorder, Discovery(gateway), cleanup_timeout,
                             provisioning or Provisioning())
        self.memory: dict[Key, Memory] = {}

    @property
    def discovery(self) -> Discovery:
        return self.shared.discovery

    async def memory_for(self, key: Key, uid: str) -> Memory:
        """What is remembered about the server ``uid``: a new server of a deleted one's name starts afresh (its
        predecessor's reported states would hide its own events, its DittoFS session reach a pod now gone)."""
        memory = self.memory.get(key)
        if memory is None or memory.uid != uid:
            await self.forget(key)
            memory = self.memory[key] = Memory(uid=uid)
        return memory

    async def forget(self, key: Key) -> None:
        """Drop what is remembered about a server, and close its DittoFS session."""
        gone = self.memory.pop(key, None)
        if gone is not None and gone.fileservice is not None:
            await gone.fileservice.close()

    async def close(self) -> None:
        """Close every DittoFS session (the process is stopping)."""
        await asyncio.gather(*(self.forget(key) for key in list(self.memory)), return_exceptions=True)

    async def reconcile(self, key: Key) -> float | None:
        """Returns seconds until the next pass is wanted (None: wait for a watch event)."""
        with about(*key):  # every line the pass logs names its server
            return await self._reconcile(key)

    async def _reconcile(self, key: Key) -> float | None:
        packed = self.shared.cache.servers.get(key)
        if packed is None:
            self.shared.forget(key)
            await self.forget(key)
            return None
        body = packed.unpack()
        memory = await self.memory_for(key, str(body.get("metadata", {}).get("uid") or ""))
        ctx = Pass(self.shared, key, body, memory, fresh=not body.get("status"), _current=(packed, body))
        if body.get("metadata", {}).get("deletionTimestamp"):
            return await finalize(ctx)
        if is_paused(body):
            await together(report_paused(ctx), keep_database(ctx))
            return None
        server = await check_spec(ctx)
        if server is None:
            await together(ensure_finalizer(ctx), keep_database(ctx))
            return None  # an invalid spec waits for an edit
        return await self._converge(ctx, server)

    async def _converge(self, ctx: Pass, server: DittoServer) -> float | None:
        names = Names.of(server)
        ctx.cache.set_refs(ctx.key, watched_secrets(server.spec, names))
        # Independent writes go out together: a new server's first pass is a few round trips, not a dozen.
        await together(ensure_finalizer(ctx), ensure_generated(ctx, server, names))
        consumed = await consumed_digests(ctx, server, names)
        digests = consumed.digests
        status = ctx.current().get("status") or {}
        desired = ctx.desired = self._desired(ctx, server, names, digests, int(status.get("storeRevision") or 0))
        existed = ctx.cache.packed_child(CONFIGMAPS, names.namespace, names.config_map) is not None
        # The StatefulSet needs none of the other children to exist (a pod waits for its ConfigMap), only its
        # gates: so a new server's goes out with them, its second round trip.
        # It is also sent first: the pods, the slowest part of a new server, start from it.
        gated, created, *_ = await together(
            self._statefulset(ctx, server, names, desired, consumed, config_map_exists=existed),
            asyncio.sleep(0) if existed else apply_config_map(ctx, desired, names),
            apply_services(ctx, desired, names), apply_network_policy(ctx, desired, names),
            apply_service_monitor(ctx, desired, names), apply_certificates(ctx, desired, names))
        ctx.memory.digests = dict(digests)
        sts, database, recreating = gated.statefulset, gated.database, gated.recreating
        errors, reason, refused = gated.errors, gated.reason, gated.refused or created
        if refused is not None:
            reason = reason if errors else Reason.CONFIG_MAP_MISSING
            errors = [*errors, config_map_refusal(names, refused, existed)]
        fileservice = await provision(ctx, server, names) if not errors and sts is not None else None
        if fileservice is None:
            await fileservice_memory(ctx).close()
        # cert-manager installed later sends no event a server waits for (its TLS Secret comes only once the
        # Certificate is created): asked again, as for Percona's CRD.
        unserved = CERT_MANAGER_POLL if ctx.unserved else None
        requeues = [r for r in (database.requeue, fileservice.requeue if fileservice else None,
                                RECREATE_POLL if recreating else None, LANE_RETRY if ctx.deferred else None, unserved)
                    if r is not None]

        if ctx.deferred:
            # A pass that left writes for later has not converged: its status waits for them (the pass that
            # makes them writes it), rather than one more DittoServer write per server in a burst.
            return min(requeues)
        reported = build_status(Observation(
            generation=ctx.generation,
            desired_replicas=server.spec.replicas,
            config_errors=errors,
            config_reason=reason,
            statefulset=sts,
            pods=ctx.cache.pods_of(names.namespace, names.server),
            config_hash=desired.config_hash,
            endpoints=endpoints(server.spec, names, _listening(fileservice, status)),
            database=database.condition,
            percona_cluster=database.cluster_name,
            s3=s3_status(server.spec, await s3_secret(ctx, server)),
            provisioned=fileservice.condition if fileservice else None,
            adapters_ready=fileservice.adapters_ready if fileservice else None,
            fileservice=fileservice.status() if fileservice else kept_fileservice(status),
            recreating=recreating,
        ), status)
        await ctx.write_status(reported)
        if refused is not None:
            raise refused  # retried with backoff, and a ReconcileFailed event
        if requeues:
            return min(requeues)
        if settled(status, reported):
            # Nothing follows this pass but an edit or the next drift tick, which derive anew anyway. Kept to
            # the end of a wave of such passes (a restart, a drift tick at 300 servers), 300 parsed specs and
            # the builds raised the heap's peak, and its arenas never shrank back: RSS 10 s after a restart at
            # 300 servers went from 85 to 78 MiB without them (ISSUE15-round13).
            self.shared.forget(ctx.key)
        return None

    async def _statefulset(self, ctx: Pass, server: DittoServer, names: Names, desired: Desired,
                           consumed: Consumed, *, config_map_exists: bool) -> Gated:
        """The StatefulSet behind its gates (complete config, database, storage), and an existing ConfigMap brought
        up to date only once they are open."""
        digests = consumed.digests
        database = await ensure_database(ctx, server, names, desired)
        if server.spec.percona.enabled:
            database = percona_secret_wait(database, desired.missing_secret_keys, names)
        ref = server.spec.database.postgres_secret_ref
        if database.condition is None and ref is not None:
            database.condition = postgres_secret_condition(desired.missing_secret_keys, ref.name)

        missing = missing_secrets(desired.missing_secret_keys, consumed, server, names)
        missing += await missing_mounted(ctx, server)
        # cert-manager absent: the TLS Secrets it would issue are a consequence, not what to fix (no event for them).
        unserved = await unserved_certificates(ctx, desired)
        ctx.unserved = bool(unserved)  # asked again in 30 s, whatever other problem the status names first
        issued = {c["spec"]["secretName"] for c in desired.certificates} if unserved else set()
        await report_missing(ctx, [m for m in missing if m.secret not in issued])
        errors = [m.line for m in missing]
        reason = Reason.CERT_MANAGER_NOT_FOUND if unserved else Reason.MISSING_SECRET if errors else Reason.INVALID_SPEC
        errors = [*unserved, *errors]
        sts = await observe_statefulset(ctx, names)
        # The admin password matters only to a first boot: without a StatefulSet or a control-plane volume.
        for bounds, error in await refused_values(ctx, server, names, digests, has_statefulset=sts is not None):
            errors, reason = [*errors, error], REFUSED_VALUE_REASONS[bounds]
        drift = storage_drift(sts, desired.statefulset)
        if drift.errors:
            errors, reason = [*errors, *drift.errors], Reason.INVALID_SPEC
        # The StatefulSet is being re-created around its pods (volume expansion): wait until it is gone.
        recreating = sts is not None and bool(sts["metadata"].get("deletionTimestamp"))
        refused = None
        if not errors and database.gate_open and not recreating and config_map_exists:
            # Not before the gates: the kubelet updates a mounted ConfigMap in a running pod, so a pod that
            # restarts while the StatefulSet is held (waiting for a database, a Secret) would start on a config
            # its template cannot run (Postgres without its variables, TLS without its mount). And before the
            # StatefulSet may roll the pods to the new config hash: were the update refused while the roll
            # landed, the pods would run the old config under the new hash. Unchanged, it costs no round trip.
            refused = await apply_config_map(ctx, desired, names)
        held = refused is not None
        if sts is not None and drift.grown and not errors and not held and database.gate_open and not recreating:
            failed = await expand_volumes(ctx, names, drift.grown)
            if failed:
                errors, reason = [*errors, *failed], Reason.VOLUME_EXPANSION_FAILED
            recreating = not failed
        elif sts is not None and policy_moved(sts, desired.statefulset) and not errors and not held \
                and database.gate_open and not recreating:
            ctx.memory.migrated = True
            await orphan_statefulset(ctx, names, "to change its podManagementPolicy (immutable)")
            recreating = True
        if sts is None and not errors and not held and database.gate_open and not recreating and (
                not ctx.fresh or ctx.memory.predecessor):
            # Created over claims that may exist (re-created after an expansion or by hand, or kept from an
            # earlier server of this name): they are grown first, as the new templates never resize them. A new
            # server's first pass has none to find: no list per server in a burst.
            failed = await grow_claims(ctx, names, claim_sizes(desired.statefulset))
            if failed:
                errors, reason = [*errors, *failed], Reason.VOLUME_EXPANSION_FAILED
        if not errors and not held and database.gate_open and not recreating:
            sts = await apply_statefulset(ctx, names, desired, sts, digests)
        return Gated(sts, database, errors, reason, recreating, refused)

    def _desired(self, ctx: Pass, server: DittoServer, names: Names, digests: SecretDigests,
                 store_revision: int) -> Desired:
        """The desired children, from ``Recent`` while every input of the builders is unchanged; config.yaml,
        the dearest part, from the server's own memory while its generation is."""
        operator_namespace = self.shared.provisioning.operator_namespace
        inputs = (ctx.uid, ctx.generation, tuple(sorted(digests.items())), store_revision, operator_namespace)
        ctx.in_sync = ctx.memory.marks(inputs) if ctx.generation else None
        known = self.shared.built.get(ctx.key, inputs) if ctx.generation else None
        if known is not None:
            return known
        generation = (ctx.uid, ctx.generation)
        if ctx.memory.rendered is None or ctx.memory.rendered[0] != generation or not ctx.generation:
            ctx.memory.rendered = (generation, specs.render(server.spec))
        return self.shared.built.put(ctx.key, inputs, specs.build(
            server.spec, names, digests, store_revision=store_revision, operator_namespace=operator_namespace,
            rendered=ctx.memory.rendered[1]))


def _listening(fileservice: Provisioned | None, status: Mapping[str, Any]) -> set[str] | None:
    """Adapter types proven to listen (None: not probed, e.g. a simulated pod)."""
    adapters = fileservice.adapters if fileservice is not None else status.get("adapters")
    if adapters is None:
        return None
    return {a["type"] for a in adapters if a.get("listening")}
