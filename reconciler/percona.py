"""PerconaPGCluster handling that must exist from day one: releasing the database on deletion.

Decided by the ownerReference on the cluster, not by today's `spec.percona.enabled`: a user who turned
Percona off keeps an owned database, and deleting the server must orphan it, never let GC delete it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dittoctl.gateway import PERCONAPGCLUSTERS, ApiError, Conflict, NotFound

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
