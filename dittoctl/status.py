"""`dittoctl status NAME`: one screen that answers "is my file server OK, and if not, why?"."""

from __future__ import annotations

import sys
from typing import Any

from dittoctl.api.kinds import CRD_NOT_SERVED, DITTOSERVERS, EVENTS, PERCONAPGCLUSTERS, PODS, PVCS, Kind
from dittoctl.api.naming import PAUSE_ANNOTATION, Names
from dittoctl.kube.gateway import ApiError, Gateway, NotFound, load_client


def _pod_line(pod: dict[str, Any]) -> str:
    status = pod.get("status", {})
    states = []
    for cs in status.get("containerStatuses", []):
        waiting = (cs.get("state") or {}).get("waiting")
        state = f"waiting:{waiting.get('reason', '')}" if waiting else "ready" if cs.get("ready") else "not-ready"
        states.append(f"{cs.get('name')}={state}")
    return (f"  {pod['metadata']['name']:<24} {status.get('phase', '?'):<10} node={pod['spec'].get('nodeName', '-')} "
            + " ".join(states))


def render(server: dict[str, Any], pods: list[dict[str, Any]], pvcs: list[dict[str, Any]],
           percona: dict[str, Any] | None, events: list[dict[str, Any]],
           unreadable: dict[str, str] | None = None) -> str:
    """Pure text rendering (secret values never reach this function). ``unreadable``: section -> why it could
    not be listed (RBAC), said in place of "(none)"."""
    unreadable = unreadable or {}

    def none(section: str) -> str:
        return f"  (not readable: {unreadable[section]})" if section in unreadable else "  (none)"

    meta, status = server["metadata"], server.get("status") or {}
    lines = [f"DittoServer {meta['namespace']}/{meta['name']}",
             f"  phase: {status.get('phase', 'Pending')}   ready: {status.get('ready', '-')}   "
             f"generation: {meta.get('generation')} (observed {status.get('observedGeneration', '-')})"]
    if meta.get("deletionTimestamp"):
        lines.append(f"  deleting since {meta['deletionTimestamp']}; waiting on finalizers: "
                     f"{', '.join(meta.get('finalizers') or []) or '(none)'}")
    paused = (meta.get("annotations") or {}).get(PAUSE_ANNOTATION) == "disabled"
    if paused:
        lines.append(f"  note: reconciliation is paused ({PAUSE_ANNOTATION}: disabled); remove the annotation to "
                     "resume")
    elif status.get("observedGeneration") != meta.get("generation"):
        lines.append("  note: status is older than the spec; the operator has not caught up yet")
    lines.append("Conditions:")
    for cond in status.get("conditions", []):
        lines.append(f"  {cond['type']:<22} {cond['status']:<6} {cond.get('reason', ''):<22} {cond.get('message', '')}")
    endpoints = status.get("endpoints") or {}
    if endpoints:
        lines.append("Endpoints:")
        lines.extend(f"  {key:<4} {value}" for key, value in endpoints.items())
    adapters = status.get("adapters") or []
    if adapters:
        lines.append("Adapters:")
        for a in adapters:
            state = "listening" if a.get("listening") else "NOT listening" if a.get("enabled") else "disabled"
            lines.append(f"  {a.get('type', '?'):<4} port {a.get('port', '?'):<6} {state}")
    shares = status.get("shares") or []
    if shares:
        lines.append("Shares:")
        for share in shares:
            where = "  ".join(share[k] for k in ("nfs", "smb") if share.get(k))
            mode = "ro" if share.get("readOnly") else "rw"
            remote = "  (remote store NOT healthy)" if share.get("remoteHealthy") is False else ""
            lines.append(f"  {share.get('name', '?'):<16} {mode}  {where}{remote}")
    lines.append("Pods:")
    lines.extend(_pod_line(p) for p in pods) if pods else lines.append(none("pods"))
    lines.append("PersistentVolumeClaims:")
    if pvcs:
        for pvc in pvcs:
            size = pvc["spec"].get("resources", {}).get("requests", {}).get("storage", "?")
            lines.append(f"  {pvc['metadata']['name']:<28} {pvc.get('status', {}).get('phase', '?'):<8} {size}")
    else:
        lines.append(none("pvcs"))
    if percona is not None:
        pstatus = percona.get("status") or {}
        lines.append(f"PerconaPGCluster {percona['metadata']['name']}: state={pstatus.get('state', 'unknown')}")
    if events or "events" in unreadable:
        lines.append("Recent events:")
        for event in sorted(events, key=_when)[-10:]:
            involved = event.get("involvedObject") or {}
            lines.append(f"  {_when(event) or '-'} {event.get('type', ''):<8} {event.get('reason', ''):<20} "
                         f"{involved.get('kind', '')}/{involved.get('name', '')}: {event.get('message', '')}")
        if not events:
            lines.append(none("events"))
    return "\n".join(lines) + "\n"


def _when(event: dict[str, Any]) -> str:
    """Core events carry lastTimestamp; the scheduler's (events.k8s.io) only eventTime."""
    return str(event.get("lastTimestamp") or event.get("eventTime") or "")


def about(events: list[dict[str, Any]], server: dict[str, Any], others: set[str]) -> list[dict[str, Any]]:
    """The events of this server (by uid: not of an earlier one of the same name) and of its pods, PVCs and
    StatefulSet, where FailedScheduling, FailedMount and ProvisioningFailed explain a stuck server."""
    uid = server["metadata"].get("uid")
    kept = []
    for event in events:
        involved = event.get("involvedObject") or {}
        if involved.get("kind") == "DittoServer":
            if involved.get("name") == server["metadata"]["name"] and involved.get("uid") in (uid, None):
                kept.append(event)
        elif involved.get("name") in others:
            kept.append(event)
    return kept


async def show(name: str, namespace: str, kubeconfig: str | None) -> int:
    gateway = Gateway(await load_client(kubeconfig))
    try:
        try:
            server = await gateway.get(DITTOSERVERS, name, namespace)
        except NotFound:
            served = await gateway.served(DITTOSERVERS)
            print(f"DittoServer {namespace}/{name} not found" if served else f"dittoctl status: {CRD_NOT_SERVED}",
                  file=sys.stderr)
            return 1
        names = Names(name, namespace, str(server["metadata"].get("uid", "")))
        selector = names.selector_string()
        unreadable: dict[str, str] = {}

        async def listed(section: str, kind: Kind, **query: str) -> list[dict[str, Any]]:
            """One section's objects; a refusal (RBAC) is said in that section, the rest is still shown."""
            try:
                return await gateway.list(kind, namespace, **query)
            except ApiError as exc:
                if exc.status == 0:
                    raise
                unreadable[section] = str(exc)[:200]
                return []

        pods = await listed("pods", PODS, label_selector=selector)
        pvcs = await listed("pvcs", PVCS, label_selector=selector)
        percona = None
        if cluster := (server.get("status") or {}).get("perconaClusterName"):
            try:
                percona = await gateway.get(PERCONAPGCLUSTERS, cluster, namespace)
            except (NotFound, ApiError):
                percona = None
        others = {names.server} | {o["metadata"]["name"] for o in pods + pvcs}
        events = about(await listed("events", EVENTS), server, others)
        sys.stdout.write(render(server, pods, pvcs, percona, events, unreadable))
        return 0
    finally:
        await gateway.close()
