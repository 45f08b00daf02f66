"""Finalizer-driven deletion (SPEC §5): drain the server gracefully, keep every PVC, never hang forever.

PVCs are never touched (the StatefulSet's retention policy is Retain). Percona handling is decided by the
ownerReference on the PerconaPGCluster, not by today's spec.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dittoctl.api.naming import FINALIZER
from dittoctl.kube.gateway import DITTOSERVERS, STATEFULSETS, Conflict, NotFound
from dittoctl.kube.logs import fields

log = logging.getLogger("dittofs.deletion")

if TYPE_CHECKING:
    from reconciler.reconcile import Reconciler

POLL_SECONDS = 1.0


def _age(timestamp: str) -> float:
    deleted = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    return time.time() - deleted


async def finalize(rec: Reconciler, body: Mapping[str, Any]) -> float | None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if FINALIZER not in (meta.get("finalizers") or []):
        return None
    status = dict(body.get("status") or {})
    if status.get("phase") != "Deleting":
        await rec.events.post(body, "Normal", "Deleting", f"DittoServer {name}: draining StatefulSet {name}")
        await rec._write_status(body, {**status, "phase": "Deleting"})

    from reconciler.percona import release_database

    if not await release_database(rec, body):
        return POLL_SECONDS  # the database must be orphaned before anything else can go

    sts = rec.cache.child("statefulsets", namespace, name)
    if sts is None:
        sts = await rec.gw.get_or_none(STATEFULSETS, name, namespace)
    if sts is not None and sts.get("spec", {}).get("replicas", 0) != 0:
        scaled = await rec.gw.merge_patch(STATEFULSETS, name, {"spec": {"replicas": 0}}, namespace)
        rec.cache.put_child("statefulsets", scaled)
    pods = rec.cache.pods_of(namespace, name)
    timed_out = _age(str(meta["deletionTimestamp"])) > rec.cleanup_timeout
    if pods and not timed_out:
        return POLL_SECONDS
    if pods:
        await rec.events.post(body, "Warning", "CleanupTimeout",
                              f"{len(pods)} pod(s) of StatefulSet {name} still running after "
                              f"{int(rec.cleanup_timeout)}s; removing the finalizer anyway (PVCs are kept)")
    finalizers = [f for f in meta.get("finalizers", []) if f != FINALIZER]
    patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
    try:
        await rec.gw.merge_patch(DITTOSERVERS, name, patch, namespace)
        log.info("finalizer removed", extra=fields(namespace=namespace, name=name, podsLeft=len(pods)))
    except NotFound:
        return None
    except Conflict:
        return 0.2  # a newer version arrived; the next pass uses it
    return None
