"""Phase: the PerconaPGCluster: apply (never forcing over user edits), readiness gate, safe release.

Decided by the cluster's owner mark (``Names.owns``: an ownerReference while `deleteWithServer` is true, else an
annotation), not by today's `spec.percona.enabled`: a user who turned Percona off keeps an owned database, and
deleting the server must release it, never let GC delete it.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from dittoctl.api.conditions import ConditionType, EventReason, Reason
from dittoctl.api.facts import percona_not_served
from dittoctl.api.kinds import PERCONAPGBACKUPS, PERCONAPGCLUSTERS, STATEFULSETS
from dittoctl.api.models import DittoServer
from dittoctl.api.naming import (
    OWNER_ANNOTATION,
    RECLAIM_PERCONA_ANNOTATION,
    RECREATE_DATABASE_ANNOTATION,
    RELEASED_ANNOTATION,
    Names,
    owned_by,
    released_to,
)
from dittoctl.kube.gateway import FIELD_MANAGER, ApiError, Conflict, NotFound
from dittoctl.kube.logs import fields
from reconciler.compare import is_subset, stamp_manifest
from reconciler.context import KeptFields, Pass
from reconciler.phases.statefulset import env_secrets
from reconciler.specs import Desired
from reconciler.specs.percona import DB_USER, adopt_live_values, values_at
from reconciler.status import Cond

log = logging.getLogger("dittofs.percona")

async def release_database(ctx: Pass, *, orphaning: bool = False) -> str | None:
    """None once no PerconaPGCluster of ours can be garbage-collected by surprise; else what holds it (said in
    status: a trimmed role or Percona's webhook refusing is for the user to fix)."""
    body = ctx.current()
    namespace, uid = ctx.namespace, str(body["metadata"].get("uid"))
    names = Names(ctx.name, namespace, uid)
    cluster_name = names.percona_cluster
    try:
        cluster = await ctx.gw.get(PERCONAPGCLUSTERS, cluster_name, namespace)
    except NotFound:
        return None  # no cluster, or the Percona CRD is not installed
    except ApiError as exc:
        # Forbidden (RBAC trimmed to a cluster without Percona) for a server that never owned a cluster: nothing
        # to protect, and waiting would hold its deletion for good.
        if exc.status == 403 and not (body.get("status") or {}).get("perconaClusterName"):
            log.warning("PerconaPGClusters not readable; this server never had one, so its deletion goes on",
                        extra=fields(namespace=namespace, name=ctx.name, error=str(exc)[:300]))
            return None
        return f"reading it failed: {str(exc)[:200]}"
    if not names.owns(cluster):
        return None
    delete = _delete_with_server(body)
    # `--cascade=orphan` (``orphaning``) keeps every dependent, the database too.
    if delete and not orphaning:
        await ctx.gw.delete(PERCONAPGCLUSTERS, cluster_name, namespace)
        await ctx.post("Warning", EventReason.PERCONA_DELETED,
                              f"PerconaPGCluster {cluster_name} deleted (percona.deleteWithServer is true)")
        return None
    meta = cluster["metadata"]
    # Unmarked, a repeated pass (the finalizer's removal conflicting) finds nothing of ours and posts nothing.
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != OWNER_ANNOTATION}
    ops = [*_unreferenced(meta, uid), {"op": "add", "path": "/metadata/annotations",
                                       "value": {**annotations, RELEASED_ANNOTATION: ctx.name}}]
    try:
        await ctx.gw.json_patch(PERCONAPGCLUSTERS, cluster_name, ops, namespace)
    except Conflict:
        return "it changed while being released; trying again"
    except ApiError as exc:
        return f"marking it released failed: {str(exc)[:200]}"
    why = "the DittoServer was deleted with --cascade=orphan" if delete and orphaning else \
        "percona.deleteWithServer is false"
    # A namespace being deleted takes the kept cluster with it: Kubernetes', not the operator's, to hold.
    await ctx.post("Normal", EventReason.PERCONA_ORPHANED, f"PerconaPGCluster {cluster_name} kept ({why}), its "
                   f"data with it unless namespace {ctx.namespace} is deleted; a new DittoServer {ctx.name} takes "
                   "it back")
    return None


@dataclass
class DatabaseState:
    """What the reconcile pass needs to know about the database this time."""

    condition: Cond | None = None
    cluster_name: str | None = None
    gate_open: bool = True  # False: do not create/update the StatefulSet yet
    requeue: float | None = None


def _conflict_paths(exc: Conflict) -> list[str]:
    return [str(c.get("field")) for c in exc.causes if c.get("field")]


def _keeping(manifest: dict[str, Any], live: dict[str, Any],
             paths: Collection[str]) -> tuple[dict[str, Any], list[str]]:
    """A copy of `manifest` holding the live values at `paths` (the build itself is shared by later passes)."""
    kept = copy.deepcopy(manifest)
    return kept, adopt_live_values(kept, live, sorted(paths))


async def _apply_cluster(ctx: Pass, manifest: dict[str, Any], live: dict[str, Any] | None, names: Names, *,
                         force: bool = False) -> dict[str, Any]:
    """SSA without force (unless the user reclaimed the fields); on conflict keep the user's values and apply
    the rest. One drift event per newly edited field, and again when the server asks another value of one."""
    try:
        applied = await ctx.gw.apply(manifest, force=force)
    except Conflict as exc:
        paths = frozenset(_conflict_paths(exc))
        current = live or await ctx.gw.get(PERCONAPGCLUSTERS, manifest["metadata"]["name"], ctx.namespace)
        asked = values_at(manifest, paths)
        theirs = values_at(current, paths)
        manifest, failed = _keeping(manifest, current, paths)
        before = ctx.memory.percona_kept
        asked_before = json.loads(before.asked) if before is not None else {}
        # The manifest kept this generation's earlier fields already: they conflict no more, and are still kept.
        same = before is not None and before.generation == ctx.generation
        ctx.memory.percona_kept = KeptFields(ctx.generation, paths | (before.paths if before and same else set()),
                                             json.dumps({**(asked_before if same else {}), **asked}, sort_keys=True))
        if not paths or before is None or not paths <= before.paths or any(
                asked_before.get(path) != value for path, value in asked.items()):
            fields_ = "; ".join(f"{p} is {_shown(theirs[p])}, this server asks {_shown(asked[p])}"
                                for p in sorted(paths)) or "unknown"
            await ctx.post("Warning", EventReason.PERCONA_DRIFT_DETECTED,
                           f"PerconaPGCluster {manifest['metadata']['name']} was edited directly; keeping the "
                           f"edited fields (generation {ctx.generation}): {fields_}. To apply this server's values "
                           f"instead: {names.consent(RECLAIM_PERCONA_ANNOTATION)}")
        if failed:
            log.warning("could not adopt drifted fields; leaving the cluster unchanged", extra=fields(
                namespace=ctx.namespace, name=manifest["metadata"]["name"], fields=",".join(failed)))
            return current
        return await ctx.gw.apply(manifest, force=False)
    kept = ctx.memory.percona_kept
    if kept is not None and kept.generation != ctx.generation:
        ctx.memory.percona_kept = None  # this generation's values all applied: no field is kept any more
    return applied


def _shown(value: Any) -> str:
    """A field's value in an event, short enough that the message's command survives the 1 KiB cut."""
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def cluster_ready(cluster: Mapping[str, Any]) -> tuple[bool, str]:
    """SPEC §4.8: ready = state "ready" at the cluster's current generation; (ready, the state to report)."""
    status = cluster.get("status") or {}
    state = str(status.get("state") or "unknown")
    observed = status.get("observedGeneration")
    generation = cluster.get("metadata", {}).get("generation")
    current = observed is None or generation is None or int(observed) >= int(generation)
    return state == "ready" and current, state if current else f"{state} (generation {observed}/{generation})"


def _hand_over(names: Names) -> str:
    """The command that lets this server take a cluster it did not make (the mark a release leaves)."""
    return (f"kubectl -n {names.namespace} annotate --overwrite perconapgcluster {names.percona_cluster} "
            f"{RELEASED_ANNOTATION}={names.server}")


def _not_owned(names: Names) -> DatabaseState:
    """A cluster of that name made by hand, by another tool, or kept from an earlier server whose deletion was
    forced past its finalizer: applying to it would take over someone's database (and with deleteWithServer,
    delete it with this server)."""
    cluster = names.percona_cluster
    return DatabaseState(Cond(
        ConditionType.DATABASE_READY, False, Reason.PERCONA_NOT_OWNED,
        f"PerconaPGCluster {cluster} exists and is not this server's: it is left untouched. To use it and its data, "
        f"annotate it: {_hand_over(names)} {OWNER_ANNOTATION}-; else rename this DittoServer"),
        None, gate_open=False, requeue=30.0)


def _moved_database(cluster: Mapping[str, Any], database: str) -> str | None:
    """The database the cluster's user already owns when the spec names another (the webhook refuses that change,
    but not while it was off, nor across Percona turned off and on): None when it is the same, or none yet."""
    for user in (cluster.get("spec") or {}).get("users") or []:
        if isinstance(user, Mapping) and user.get("name") == DB_USER:
            databases = [d for d in user.get("databases") or [] if isinstance(d, str)]
            return None if not databases or database in databases else databases[0]
    return None


def _lowered(cluster: Mapping[str, Any], manifest: Mapping[str, Any]) -> tuple[int, int] | None:
    """(live, declared) PostgreSQL majors when the declared one is lower; None otherwise."""
    before = (cluster.get("spec") or {}).get("postgresVersion")
    after = (manifest.get("spec") or {}).get("postgresVersion")
    return (before, after) if isinstance(before, int) and isinstance(after, int) and after < before else None


def _applies_version(cluster: Mapping[str, Any]) -> bool:
    """Whether spec.postgresVersion is the operator's apply's alone (from a full read: the cache keeps no
    managedFields), so its live value came from the spec. One a user or Percona also set (an upgrade; the
    operator then co-owns it by applying the live value back, as it keeps every such edit) is theirs to keep."""
    owners = [entry for entry in (cluster.get("metadata") or {}).get("managedFields") or []
              if "f:postgresVersion" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})]
    return bool(owners) and all(entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply"
                                for entry in owners)


def _had_database(ctx: Pass, names: Names) -> bool:
    """The server ran on this cluster: its StatefulSet reads Percona's user Secret, or its status still names
    the cluster (status alone is not enough: a pass that saw no cluster of ours, e.g. while the CRD was away,
    clears it)."""
    sts = ctx.cache.child(STATEFULSETS, ctx.namespace, names.server)
    status = ctx.current().get("status") or {}
    return names.percona_user_secret in env_secrets(sts) or status.get("perconaClusterName") == names.percona_cluster


def _missing(names: Names) -> DatabaseState:
    """The cluster that held this server's database is gone (deleted by hand, by a tool): a new one would be
    empty (the server would start over without its users and shares), and with backups on it would set up
    its pgBackRest repository where the old one's backups are. Only the user can choose that, or a restore."""
    cluster = names.percona_cluster
    return DatabaseState(Cond(
        ConditionType.DATABASE_READY, False, Reason.PERCONA_MISSING,
        f"PerconaPGCluster {cluster}, which held this server's database, is gone; the operator does not create an "
        f"empty one in its place. Restore it from a backup (a PerconaPGCluster {cluster} with a dataSource, then "
        f"{_hand_over(names)}), "
        f"or start over empty: {names.consent(RECREATE_DATABASE_ANNOTATION)}"), cluster, gate_open=False, requeue=30.0)


def _not_served(requeue: float) -> DatabaseState:
    return DatabaseState(Cond(ConditionType.DATABASE_READY, False, Reason.PERCONA_NOT_FOUND, percona_not_served()),
                         None, gate_open=False, requeue=requeue)


def _refused(names: Names, message: str) -> DatabaseState:
    """A spec the live cluster cannot follow (admitted while the webhook was off): nothing is applied to it."""
    return DatabaseState(Cond(ConditionType.DATABASE_READY, False, Reason.INVALID_SPEC, message),
                         names.percona_cluster, gate_open=False)


def _state(ready: bool, cluster: str, message: str) -> DatabaseState:
    if ready:
        return DatabaseState(Cond(ConditionType.DATABASE_READY, True, Reason.PERCONA_READY, message), cluster)
    return DatabaseState(Cond(ConditionType.DATABASE_READY, False, Reason.PERCONA_NOT_READY, message), cluster,
                         gate_open=False, requeue=5.0)


async def ensure_database(ctx: Pass, server: DittoServer, names: Names, desired: Desired) -> DatabaseState:
    spec = server.spec
    if desired.percona_cluster is None:
        return await _existing_owned(ctx, names, keep=not spec.percona.delete_with_server)
    if not await ctx.shared.discovery.percona():
        return _not_served(30.0)
    manifest = stamp_manifest(desired.percona_cluster)
    live = await ctx.optional_child(PERCONAPGCLUSTERS, names.percona_cluster)
    if live is None:  # the cache holds only clusters with our labels: one made by hand would be applied to
        live = await ctx.gw.get_or_none(PERCONAPGCLUSTERS, names.percona_cluster, ctx.namespace)
    if live is not None and not names.owns(live) and not released_to(live, names.server):
        return _not_owned(names)
    consent = ctx.consents(RECREATE_DATABASE_ANNOTATION)
    if live is None and not consent and _had_database(ctx, names):
        return _missing(names)
    if live is not None and consent:  # used once: a later loss asks again
        await ctx.forget_consent(RECREATE_DATABASE_ANNOTATION)
    moved = _moved_database(live, spec.percona.database_name) if live is not None else None
    if moved is not None:
        return _refused(names, f"spec.percona.databaseName is {spec.percona.database_name!r}, but PerconaPGCluster "
                        f"{names.percona_cluster} holds this server's data in {moved!r}: DittoFS would start on a "
                        f"new, empty database; set databaseName back to {moved!r}")
    lowered = _lowered(live, manifest) if live is not None else None
    # The webhook refuses a downgrade on update, but not while it was off: PostgreSQL's data files do not go back.
    if lowered is not None and _applies_version(await ctx.gw.get(PERCONAPGCLUSTERS, names.percona_cluster,
                                                                 ctx.namespace)):
        return _refused(names, f"spec.percona.postgresVersion is {lowered[1]}, but PerconaPGCluster "
                        f"{names.percona_cluster} runs PostgreSQL {lowered[0]}, whose data files do not downgrade: "
                        f"set {lowered[0]}")
    if live is not None and live.get("metadata", {}).get("deletionTimestamp"):
        return _state(False, names.percona_cluster, f"PerconaPGCluster {names.percona_cluster} is being deleted")
    reclaim = live is not None and ctx.consents(RECLAIM_PERCONA_ANNOTATION)
    kept = None if reclaim else ctx.memory.percona_kept
    keeping = live is not None and kept is not None and kept.generation == ctx.generation
    if live is not None and kept is not None and keeping:
        manifest, _ = _keeping(manifest, live, kept.paths)
    elif live is not None and is_subset(manifest, live):
        ctx.memory.percona_kept = None  # the cluster holds every value this server asks (set back by hand)
    if live is None or not is_subset(manifest, live) or reclaim:
        try:
            live = await ctx.write(PERCONAPGCLUSTERS, names.percona_cluster,
                                   _apply_cluster(ctx, manifest, live, names, force=reclaim))
        except NotFound:  # the CRD went away since discovery said it was served
            ctx.shared.discovery.forget(PERCONAPGCLUSTERS)
            return _not_served(15.0)
        if reclaim:  # force took the edited fields back: nothing is kept any more
            ctx.memory.percona_kept = None
            log.info("applied the server's values over fields edited on the PerconaPGCluster, as the user asked",
                     extra=fields(namespace=ctx.namespace, name=ctx.name, cluster=names.percona_cluster))
            await ctx.forget_consent(RECLAIM_PERCONA_ANNOTATION)
        if ctx.memory.database_ready is None and live.get("metadata", {}).get("generation") == 1:
            await ctx.post("Normal", EventReason.PERCONA_CREATED, f"PerconaPGCluster {names.percona_cluster} created")
    ready, state = cluster_ready(live)
    if ready and ctx.memory.database_ready is not True:
        await ctx.post("Normal", EventReason.PERCONA_READY, f"PerconaPGCluster {names.percona_cluster} is ready")
    elif not ready and ctx.memory.database_ready is True:
        await ctx.post("Warning", EventReason.PERCONA_NOT_READY, f"PerconaPGCluster {names.percona_cluster} is {state}")
    ctx.memory.database_ready = ready
    if spec.percona.backup.enabled:
        await _report_backups(ctx, names)
    kept = ctx.memory.percona_kept
    edited = (f"; fields edited on it are kept at their values: {', '.join(sorted(kept.paths))} (the "
              f"{EventReason.PERCONA_DRIFT_DETECTED} event says how to apply this server's)" if kept else "")
    return _state(ready, names.percona_cluster, (f"PerconaPGCluster {names.percona_cluster} is ready" if ready
                  else f"PerconaPGCluster {names.percona_cluster} state: {state}") + edited)


def percona_secret_wait(database: DatabaseState, missing: list[tuple[str, str]], names: Names) -> DatabaseState:
    """A ready cluster whose user Secret (made by Percona) is absent or incomplete is not ready for the server:
    the pod would sit in CreateContainerConfigError while DatabaseReady said True."""
    gaps = [key for secret, key in missing if secret == names.percona_user_secret]
    if not database.gate_open or not gaps:
        return database
    message = (f"PerconaPGCluster {names.percona_cluster} is ready, but its Secret {names.percona_user_secret} "
               f"lacks {', '.join(gaps)} (Percona creates it for the user dittofs)")
    return DatabaseState(Cond(ConditionType.DATABASE_READY, False, Reason.PERCONA_NOT_READY, message),
                         database.cluster_name, gate_open=False, requeue=5.0)


def postgres_secret_condition(missing: list[tuple[str, str]], secret: str) -> Cond:
    """External Postgres: DatabaseReady says whether its Secret holds every key the server reads."""
    gaps = [k for s, k in missing if s == secret]
    if gaps:
        return Cond(ConditionType.DATABASE_READY, False, Reason.POSTGRES_SECRET_INCOMPLETE,
                    f"Secret {secret} lacks keys: {', '.join(gaps)}")
    return Cond(ConditionType.DATABASE_READY, True, Reason.POSTGRES_SECRET_COMPLETE,
                f"Secret {secret} holds the connection")


async def _existing_owned(ctx: Pass, names: Names, *, keep: bool) -> DatabaseState:
    """Percona is off: an owned cluster is left alone (data is never migrated nor deleted). ``keep``
    (deleteWithServer false): an ownerReference left from when it was true goes, as an apply would have taken
    it: a foreground deletion of the server deletes its dependents before any finalizer runs."""
    live = await _owned_cluster(ctx, names)
    if live is None:
        return DatabaseState()
    if keep:
        await _drop_reference(ctx, names, live)
    return DatabaseState(cluster_name=names.percona_cluster)


async def keep_database(ctx: Pass) -> None:
    """A paused server, or one whose spec is refused, is not converged, yet `deleteWithServer: false` set
    meanwhile still takes effect: until the cluster's ownerReference goes, a foreground deletion would have the
    garbage collector delete the database."""
    body = ctx.current()
    if _delete_with_server(body):
        return
    names = Names(ctx.name, ctx.namespace, str(body["metadata"].get("uid")))
    live = await _owned_cluster(ctx, names)
    if live is not None:
        await _drop_reference(ctx, names, live)


def _delete_with_server(body: Mapping[str, Any]) -> bool:
    """Read from the stored object, not the model: a refused spec must still say what happens to its data."""
    percona = (body.get("spec") or {}).get("percona")
    return isinstance(percona, Mapping) and percona.get("deleteWithServer") is True


async def _owned_cluster(ctx: Pass, names: Names) -> dict[str, Any] | None:
    if not ctx.shared.discovery.percona_served:
        return None
    try:
        live = await ctx.optional_child(PERCONAPGCLUSTERS, names.percona_cluster)
    except ApiError:
        return None
    return live if live is not None and names.owns(live) else None


async def _drop_reference(ctx: Pass, names: Names, live: dict[str, Any]) -> None:
    """The cluster stays this server's by annotation alone, out of the garbage collector's reach."""
    if not owned_by(live, names.uid):
        return
    meta = live["metadata"]
    ops = _unreferenced(meta, names.uid)
    if (meta.get("annotations") or {}).get(OWNER_ANNOTATION) != names.uid:  # still ours without the reference
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {
            **(meta.get("annotations") or {}), OWNER_ANNOTATION: names.uid}})
    try:
        await ctx.write(PERCONAPGCLUSTERS, names.percona_cluster, ctx.gw.json_patch(
            PERCONAPGCLUSTERS, names.percona_cluster, ops, names.namespace))
    except (Conflict, ApiError, NotFound):
        pass  # the next pass tries again
    else:
        log.info("PerconaPGCluster no longer garbage-collected with its server (deleteWithServer is false)",
                 extra=fields(namespace=names.namespace, name=ctx.name))


def _unreferenced(meta: Mapping[str, Any], uid: str) -> list[dict[str, Any]]:
    """A JSON patch removing ``uid``'s ownerReferences, valid only against the object it was read from (its
    indices shift with any other change)."""
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}]
    return ops + [{"op": "remove", "path": f"/metadata/ownerReferences/{i}"}
                  for i, ref in reversed(list(enumerate(meta.get("ownerReferences") or []))) if ref.get("uid") == uid]


async def _report_backups(ctx: Pass, names: Names) -> None:
    """One `PerconaBackupCompleted` per newly succeeded PerconaPGBackup of our cluster.

    The first look after a start only records what exists, so a restart never repeats old news.
    """
    try:
        backups = await ctx.gw.list(PERCONAPGBACKUPS, names.namespace)
    except (ApiError, NotFound):
        return
    done = {b["metadata"]["name"] for b in backups
            if (b.get("spec") or {}).get("pgCluster") == names.percona_cluster
            and str((b.get("status") or {}).get("state", "")).lower() == "succeeded"}
    if ctx.memory.backups_seen is not None:
        for name in sorted(done - ctx.memory.backups_seen):
            await ctx.post("Normal", EventReason.PERCONA_BACKUP_COMPLETED,
                                  f"PerconaPGBackup {name} of PerconaPGCluster {names.percona_cluster} succeeded")
    ctx.memory.backups_seen = done
