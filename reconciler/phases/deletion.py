"""Phase (instead of all others once deletion started, SPEC §5): drain the server gracefully, keep every
PVC and the generated Secrets, never hang forever.

Percona handling is decided by the PerconaPGCluster's owner mark (``Names.owns``), not by today's spec.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from dittoctl.api.conditions import EventReason
from dittoctl.api.kinds import DITTOSERVERS, STATEFULSETS
from dittoctl.api.naming import FINALIZER, ORPHAN_FINALIZER, Names, owned_by
from dittoctl.kube.gateway import Conflict, NotFound
from dittoctl.kube.logs import fields
from reconciler.context import Memory, Pass
from reconciler.phases.database import release_database
from reconciler.specs.statefulset import drain_statefulset
from reconciler.status import deleting_status

log = logging.getLogger("dittofs.deletion")
POLL_SECONDS = 1.0
RELEASE_RETRY_MAX = 30.0


async def _waiting(ctx: Pass, what: str) -> None:
    await ctx.write_status(deleting_status(ctx.current().get("status"), ctx.generation, what))


def _age(timestamp: str) -> float:
    deleted = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    return time.time() - deleted


def release_failed(memory: Memory, now: float) -> float:
    """The database must be orphaned before anything else can go; what fails for long (a role without Percona's
    patch, an admission policy) is asked again less and less often, up to RELEASE_RETRY_MAX."""
    memory.release_attempts += 1
    delay = min(POLL_SECONDS * 2.0 ** (memory.release_attempts - 1), RELEASE_RETRY_MAX)
    memory.release_after = now + delay
    return delay


def release_backoff_left(memory: Memory, now: float) -> float | None:
    """The rest of the wait after a refused release, for a pass that an event woke early (None: try now)."""
    return memory.release_after - now if now < memory.release_after else None


async def finalize(ctx: Pass) -> float | None:
    meta = ctx.body["metadata"]
    namespace, name = ctx.namespace, ctx.name
    if FINALIZER not in (meta.get("finalizers") or []):
        return None
    if (ctx.body.get("status") or {}).get("phase") != "Deleting":
        await ctx.post("Normal", EventReason.DELETING, f"DittoServer {name}: draining StatefulSet {name}")

    sts = ctx.cache.child(STATEFULSETS, namespace, name)
    if sts is None:
        sts = await ctx.confirm(STATEFULSETS, name)
    # `--cascade=orphan`: the user keeps the dependents (the StatefulSet serving, the database) without the server.
    # The garbage collector's finalizer is there while it strips their ownerReferences, and once it is gone the
    # StatefulSet (always a controlled child) no longer names the server.
    orphaning = ORPHAN_FINALIZER in (meta.get("finalizers") or []) or (
        sts is not None and not owned_by(sts, str(meta.get("uid"))))
    early = release_backoff_left(ctx.memory, time.monotonic())
    if early is not None:
        return early
    held = await release_database(ctx, orphaning=orphaning)
    if held is not None:
        cluster = Names(name, namespace, "").percona_cluster
        await _waiting(ctx, f"waiting to release PerconaPGCluster {cluster}: {held} (the finalizer stays until "
                            "the database is safe from garbage collection)")
        return release_failed(ctx.memory, time.monotonic())

    if sts is not None and sts.get("spec", {}).get("replicas", 0) != 0 and not orphaning:
        await ctx.write(STATEFULSETS, name, ctx.gw.merge_patch(STATEFULSETS, name, {"spec": {"replicas": 0}},
                                                               namespace))
    pods = [] if orphaning else ctx.cache.pods_of(namespace, name)
    if sts is None and pods:
        # Deleted while its StatefulSet was being re-created around the pods (an expansion, an upgrade's policy
        # change) or deleted by hand with --cascade=orphan: nothing would ever stop them, and they would keep
        # serving (and hold the volumes) after the finalizer timed out.
        await ctx.write(STATEFULSETS, name, ctx.gw.apply(drain_statefulset(Names(name, namespace,
                                                                                   str(meta.get("uid"))))))
        log.info("pods without a StatefulSet: one of no replicas created to stop them",
                 extra=fields(namespace=namespace, name=name, pods=len(pods)))
    timeout = ctx.shared.cleanup_timeout
    timed_out = _age(str(meta["deletionTimestamp"])) > timeout
    if pods and not timed_out:
        await _waiting(ctx, f"draining: waiting for {len(pods)} pod(s) of StatefulSet {name} to stop "
                            f"(at most {int(timeout)}s after deletion, PVCs are kept)")
        return POLL_SECONDS
    if pods:
        await ctx.post("Warning", EventReason.CLEANUP_TIMEOUT,
                       f"{len(pods)} pod(s) of StatefulSet {name} still running after {int(timeout)}s; "
                       "removing the finalizer anyway (PVCs are kept)")
    latest = ctx.current()["metadata"]
    finalizers = [f for f in latest.get("finalizers", []) if f != FINALIZER]
    patch = {"metadata": {"finalizers": finalizers, "resourceVersion": latest["resourceVersion"]}}
    try:
        await ctx.gw.merge_patch(DITTOSERVERS, name, patch, namespace)
        log.info("finalizer removed", extra=fields(namespace=namespace, name=name, podsLeft=len(pods)))
    except NotFound:
        return None
    except Conflict:
        return 0.2  # a newer version arrived; the next pass uses it
    return None
