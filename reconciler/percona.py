"""The PerconaPGCluster phase: apply (never forcing over user edits), readiness gate, safe release.

Decided by the ownerReference on the cluster, not by today's `spec.percona.enabled`: a user who turned
Percona off keeps an owned database, and deleting the server must orphan it, never let GC delete it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dittoctl.api.models import DittoServerSpec
from dittoctl.api.naming import Names
from dittoctl.kube.gateway import PERCONAPGBACKUPS, PERCONAPGCLUSTERS, ApiError, Conflict, NotFound
from dittoctl.kube.logs import fields
from reconciler.compare import is_subset, stamp_manifest
from reconciler.specs.percona import adopt_live_values, percona_cluster
from reconciler.status import Cond

log = logging.getLogger("dittofs.percona")

if TYPE_CHECKING:
    from reconciler.reconcile import Reconciler


async def release_database(rec: Reconciler, body: Mapping[str, Any]) -> bool:
    """True once no PerconaPGCluster of ours can be garbage-collected by surprise."""
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid")
    cluster_name = f"{name}-postgres"
    try:
        cluster = await rec.gw.get(PERCONAPGCLUSTERS, cluster_name, namespace)
    except NotFound:
        return True  # no cluster, or the Percona CRD is not installed
    except ApiError:
        return False
    refs = cluster.get("metadata", {}).get("ownerReferences", [])
    ours = [i for i, ref in enumerate(refs) if ref.get("uid") == uid]
    if not ours:
        return True
    delete = bool((body.get("spec") or {}).get("percona", {}).get("deleteWithServer", False))
    if delete:
        await rec.gw.delete(PERCONAPGCLUSTERS, cluster_name, namespace)
        await rec.events.post(body, "Warning", "PerconaDeleted",
                              f"PerconaPGCluster {cluster_name} deleted (percona.deleteWithServer is true)")
        return True
    rv = cluster["metadata"]["resourceVersion"]
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}]
    ops += [{"op": "remove", "path": f"/metadata/ownerReferences/{i}"} for i in reversed(ours)]
    try:
        await rec.gw.json_patch(PERCONAPGCLUSTERS, cluster_name, ops, namespace)
    except (Conflict, ApiError):
        return False
    await rec.events.post(body, "Normal", "PerconaOrphaned",
                          f"PerconaPGCluster {cluster_name} kept; ownerReference removed (data preserved)")
    return True


@dataclass
class DatabaseState:
    """What the reconcile pass needs to know about the database this time."""

    condition: Cond | None = None
    cluster_name: str | None = None
    gate_open: bool = True  # False: do not create/update the StatefulSet yet
    requeue: float | None = None


def _conflict_paths(exc: Conflict) -> list[str]:
    return [str(c.get("field")) for c in exc.causes if c.get("field")]


async def _apply_cluster(rec: Reconciler, body: Mapping[str, Any], manifest: dict[str, Any],
                         live: dict[str, Any] | None) -> dict[str, Any]:
    """SSA without force; on conflict keep the user's values (one drift event) and apply the rest."""
    try:
        return await rec.gw.apply(manifest, force=False)
    except Conflict as exc:
        paths = _conflict_paths(exc)
        current = live or await rec.gw.get(PERCONAPGCLUSTERS, manifest["metadata"]["name"],
                                           manifest["metadata"]["namespace"])
        failed = adopt_live_values(manifest, current, paths)
        await rec.events.post(body, "Warning", "PerconaDriftDetected",
                              f"PerconaPGCluster {manifest['metadata']['name']} was edited directly; keeping "
                              f"the edited fields: {', '.join(sorted(paths)) or 'unknown'}")
        if failed:
            log.warning("could not adopt drifted fields; leaving the cluster unchanged",
                        extra=fields(name=manifest["metadata"]["name"], fields=",".join(failed)))
            return current
        return await rec.gw.apply(manifest, force=False)


def _ready(cluster: Mapping[str, Any]) -> tuple[bool, str]:
    status = cluster.get("status") or {}
    state = str(status.get("state") or "unknown")
    observed = status.get("observedGeneration")
    generation = cluster.get("metadata", {}).get("generation")
    current = observed is None or generation is None or int(observed) >= int(generation)
    return state == "ready" and current, state if current else f"{state} (generation {observed}/{generation})"


async def ensure_database(rec: Reconciler, body: Mapping[str, Any], spec: DittoServerSpec,
                          names: Names, memory: Any) -> DatabaseState:
    uid = names.uid
    if not spec.percona.enabled:
        return await _existing_owned(rec, names, uid)
    if rec.percona_served is not True:
        await rec.refresh_percona()
    if not rec.percona_served:
        return DatabaseState(
            Cond("DatabaseReady", False, "PerconaNotFound",
                 "pgv2.percona.com/v2 perconapgclusters is not served: install the Percona Operator for "
                 "PostgreSQL or disable percona.enabled"), None, gate_open=False, requeue=30.0)
    manifest = stamp_manifest(percona_cluster(spec, names))
    live = await rec.gw.get_or_none(PERCONAPGCLUSTERS, names.percona_cluster, names.namespace)
    if live is not None and live.get("metadata", {}).get("deletionTimestamp"):
        return DatabaseState(Cond("DatabaseReady", False, "PerconaNotReady",
                                  f"PerconaPGCluster {names.percona_cluster} is being deleted"),
                             names.percona_cluster, gate_open=False, requeue=5.0)
    if live is None or not is_subset(manifest, live):
        try:
            live = await _apply_cluster(rec, body, manifest, live)
        except NotFound:  # the CRD went away since discovery said it was served
            rec.percona_served = False
            return DatabaseState(
                Cond("DatabaseReady", False, "PerconaNotFound",
                     "pgv2.percona.com/v2 perconapgclusters is not served: install the Percona Operator for "
                     "PostgreSQL or disable percona.enabled"), None, gate_open=False, requeue=15.0)
        if memory.database_ready is None and live.get("metadata", {}).get("generation") == 1:
            await rec.events.post(body, "Normal", "PerconaCreated", f"PerconaPGCluster {names.percona_cluster} created")
    ready, state = _ready(live)
    if ready and memory.database_ready is not True:
        await rec.events.post(body, "Normal", "PerconaReady", f"PerconaPGCluster {names.percona_cluster} is ready")
    elif not ready and memory.database_ready is True:
        await rec.events.post(body, "Warning", "PerconaNotReady",
                              f"PerconaPGCluster {names.percona_cluster} is {state}")
    memory.database_ready = ready
    if spec.percona.backup.enabled:
        await _report_backups(rec, body, names, memory)
    if ready:
        return DatabaseState(Cond("DatabaseReady", True, "PerconaReady",
                                  f"PerconaPGCluster {names.percona_cluster} is ready"), names.percona_cluster)
    return DatabaseState(Cond("DatabaseReady", False, "PerconaNotReady",
                              f"PerconaPGCluster {names.percona_cluster} state: {state}"),
                         names.percona_cluster, gate_open=False, requeue=5.0)


async def _existing_owned(rec: Reconciler, names: Names, uid: str) -> DatabaseState:
    """Percona is off: an owned cluster is left alone (data is never migrated nor deleted)."""
    if not rec.percona_served:
        return DatabaseState()
    try:
        live = await rec.gw.get_or_none(PERCONAPGCLUSTERS, names.percona_cluster, names.namespace)
    except ApiError:
        return DatabaseState()
    owned = live is not None and any(r.get("uid") == uid for r in live["metadata"].get("ownerReferences", []))
    return DatabaseState(cluster_name=names.percona_cluster if owned else None)


async def _report_backups(rec: Reconciler, body: Mapping[str, Any], names: Names, memory: Any) -> None:
    """One `PerconaBackupCompleted` per newly succeeded PerconaPGBackup of our cluster.

    The first look after a start only records what exists, so a restart never repeats old news.
    """
    try:
        backups = await rec.gw.list(PERCONAPGBACKUPS, names.namespace)
    except (ApiError, NotFound):
        return
    done = {b["metadata"]["name"] for b in backups
            if (b.get("spec") or {}).get("pgCluster") == names.percona_cluster
            and str((b.get("status") or {}).get("state", "")).lower() == "succeeded"}
    if memory.backups_seen is not None:
        for name in sorted(done - memory.backups_seen):
            await rec.events.post(body, "Normal", "PerconaBackupCompleted",
                                  f"PerconaPGBackup {name} of PerconaPGCluster {names.percona_cluster} succeeded")
    memory.backups_seen = done
