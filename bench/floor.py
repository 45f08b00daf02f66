"""The control-plane floors of the 300 burst (issue 15): what the test bed itself needs to make the same
servers Ready, with no operator in the way.

``floor``: the children of each server, rendered by the operator's own pure builders (``render_offline``:
ConfigMap, Services, NetworkPolicy, StatefulSet, in SPEC §4's order), applied one after the other by a plain
client with server-side apply, ``concurrency`` servers in flight as the scale experiment posts them. The wall
time runs from the first apply to the arrival of the last server's first Ready pod (the same pod watch the
scale figure uses): the controller-manager's StatefulSet and PVC work, the fake provisioner, the scheduler and
kwok are all in it; the operator's reads, status writes, events and the admission webhook are not.
``scale_300_ready`` minus this floor is the operator's overhead.

``contract_floor``: the same, plus every other write SPEC §4-§6 asks of an operator for a new server, made by
the same plain client, which knows the answers in advance (no reads, no decisions): the DittoServer's create
through the admission webhook, its finalizer, the two generated Secrets, the children with their owner
references, the first status, the ``Created`` Event, and the Ready status as soon as the server's pod is Ready.
Its wall time ends, as the burst's, at the arrival of the last DittoServer with Ready=True. What it costs the
control plane beyond the floor, every operator that keeps the contract pays; the order of the writes is the
floor's, so an operator that sends the StatefulSet first and the rest alongside can come in a little under it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

from bench.kube import Kube, bounded_gather
from bench.machine import Contention
from bench.objects import dittoserver, object_path, servers_path
from bench.reconciler import Tracker, _watches, log
from bench.report import Check, Figure
from bench.stats import percentile
from dittoctl.api.conditions import EventReason
from dittoctl.api.facts import ClusterFacts
from dittoctl.api.models import DittoServer
from dittoctl.api.naming import FINALIZER, Names
from dittoctl.api.rules import validate
from dittoctl.kube.events import event_body
from reconciler.specs import render_offline
from reconciler.specs.secrets import admin_secret, jwt_secret, new_jwt_value, new_password
from reconciler.specs.services import endpoints
from reconciler.status import REVISION_LABEL, Observation, build_status

FIELD_MANAGER = "bench-floor"
PENDING = "assigned-by-the-create"  # in a plan rendered before its server exists
REVISION = "bench-floor-1"  # the controller revision the Ready status's observation names (any value will do)


def _apply(kube: Kube, obj: dict[str, Any]) -> Awaitable[Any]:
    return kube.call("PATCH", object_path(obj), obj, content_type="application/apply-patch+yaml",
                     params={"fieldManager": FIELD_MANAGER, "force": "true"})


def _merge(kube: Kube, path: str, body: dict[str, Any], ok: tuple[int, ...] = ()) -> Awaitable[Any]:
    return kube.call("PATCH", path, body, content_type="application/merge-patch+json", ok=ok)


def _admitted(doc: Mapping[str, Any]) -> DittoServer:
    verdict = validate(doc, None, ClusterFacts.offline())
    assert verdict.server is not None, verdict.messages
    return verdict.server


def children(name: str, namespace: str) -> list[dict[str, Any]]:
    """What the operator applies for ``dittoserver(name)``, without owner references: no DittoServer exists,
    and the garbage collector would delete objects whose owner is missing."""
    doc = dittoserver(name, namespace)
    doc["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000"
    out = render_offline(_admitted(doc)).children()
    for obj in out:
        obj["metadata"].pop("ownerReferences", None)
    return out


# The contract's requests beyond the children, by the names `apicost` measures and reports them under.
ADMITTED = "DittoServer create, through the webhook"
FINALIZER_PATCH, STATUS_PATCH = "DittoServer finalizer patch", "DittoServer status patch"
SECRET_CREATE, EVENT_CREATE = "Secret create", "Event create"


@dataclass(frozen=True)
class ContractPlan:
    """Every write SPEC §4-§6 asks of an operator for one new server after its create, in SPEC §4's order."""

    finalizer: dict[str, Any]
    """Merge patch of the DittoServer (guarded by its resourceVersion, as the operator's)."""
    secrets: list[dict[str, Any]]
    """The generated JWT and admin Secrets (§4.1), created."""
    children: list[dict[str, Any]]
    """Server-side applied, owned by the DittoServer."""
    progressing: dict[str, Any]
    """Merge patch of the status subresource once the children exist: Progressing, nothing ready yet."""
    event: dict[str, Any]
    """The ``Created`` Event (§6)."""
    ready: dict[str, Any]
    """Merge patch of the status subresource once the pod is Ready: Ready=True at the server's generation."""

    def requests(self) -> dict[str, int]:
        """How often one server's create makes each request beyond its children, the create itself included,
        under the names ``apicost`` measures them by (the one home of these counts)."""
        return {ADMITTED: 1, FINALIZER_PATCH: 1, STATUS_PATCH: 2,  # progressing, ready
                SECRET_CREATE: len(self.secrets), EVENT_CREATE: 1}


def contract_plan(created: Mapping[str, Any]) -> ContractPlan:
    """The writes for ``created`` (the DittoServer as the apiserver returned its create), rendered by the
    operator's own builders: what its passes would send, minus the reads that tell them so."""
    server = _admitted(created)
    names = Names.of(server)
    desired = render_offline(server)
    observed = partial(Observation, generation=int(created["metadata"].get("generation") or 1),
                       desired_replicas=server.spec.replicas, config_hash=desired.config_hash,
                       endpoints=endpoints(server.spec, names))
    progressing = build_status(observed(statefulset=desired.statefulset), created.get("status"))
    ready = build_status(observed(statefulset=_rolled_out(desired.statefulset, server.spec.replicas),
                                  pods=[_ready_pod(names, i) for i in range(server.spec.replicas)]), progressing)
    meta = created["metadata"]
    return ContractPlan(
        finalizer={"metadata": {"finalizers": [*(meta.get("finalizers") or []), FINALIZER],
                                "resourceVersion": meta["resourceVersion"]}},
        secrets=[jwt_secret(names, new_jwt_value()),
                 admin_secret(names, server.spec.identity.admin.username, new_password())],
        children=desired.children(),
        progressing={"status": progressing},
        event=event_body(created, "Normal", EventReason.CREATED, f"{names.statefulset} created"),
        ready={"status": ready})


def early_plan(doc: Mapping[str, Any]) -> ContractPlan:
    """The plan for ``doc`` before it is created: what the create will assign is a placeholder (see ``bind``)."""
    return contract_plan({**doc, "metadata": {**doc["metadata"], "uid": PENDING, "resourceVersion": PENDING,
                                              "generation": 1}})


def bind(plan: ContractPlan, created: Mapping[str, Any]) -> ContractPlan:
    """``plan``, rendered before the clock from the document sent, for the object its create returned: what the
    apiserver assigned (uid, resourceVersion) goes where the writes name it."""
    meta = created["metadata"]
    owner = {"uid": meta["uid"]}
    return dataclasses.replace(
        plan,
        finalizer={"metadata": {**plan.finalizer["metadata"], "resourceVersion": meta["resourceVersion"]}},
        children=[{**c, "metadata": {**c["metadata"], "ownerReferences": [
            {**ref, **owner} for ref in c["metadata"].get("ownerReferences", [])]}} for c in plan.children],
        event={**plan.event, "involvedObject": {**plan.event["involvedObject"], **owner}})


def _rolled_out(sts: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    counts = ("replicas", "readyReplicas", "availableReplicas", "updatedReplicas", "currentReplicas")
    return {**sts, "status": {"observedGeneration": 1, **dict.fromkeys(counts, replicas),
                              "currentRevision": REVISION, "updateRevision": REVISION}}


def _ready_pod(names: Names, ordinal: int) -> dict[str, Any]:
    return {"metadata": {"name": f"{names.statefulset}-{ordinal}", "labels": {REVISION_LABEL: REVISION}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


@dataclass
class _Burst:
    """One floor's run, as the figure reads it."""

    started: float
    sent_s: float
    finished: dict[str, float]
    errors: list[str]
    cpu: dict[str, Any]


async def _burst(kube: Kube, namespace: str, names: list[str], serve: Callable[[str], Awaitable[None]],
                 finished: Callable[[Tracker], dict[str, float]], tracker: Tracker, *, concurrency: int,
                 timeout: float, contention: Contention | None, window: AbstractContextManager[object] | None,
                 ) -> _Burst:
    """``serve`` each name, ``concurrency`` in flight, then wait until ``finished`` holds every served one."""
    watches = await _watches(kube, namespace, tracker)
    cpu: dict[str, Any] = {}
    try:
        with window or nullcontext():
            before = contention.snapshot() if contention is not None else None
            t0 = time.perf_counter()
            results = await bounded_gather(concurrency, [partial(serve, n) for n in names])
            errors = [repr(r) for r in results if isinstance(r, BaseException)]
            sent = time.perf_counter() - t0
            log(f"{namespace}: {len(names) - len(errors)} servers written in {sent:.1f}s")
            await tracker.until(lambda: len(finished(tracker)) >= len(names) - len(errors), timeout)
            if contention is not None and before is not None:
                cpu = contention.between(before, contention.snapshot())
    finally:
        for w in watches:
            await w.stop()
    return _Burst(t0, sent, finished(tracker), errors, cpu)


def _figure(name: str, title: str, method: str, run: _Burst, count: int, details: dict[str, Any]) -> Figure:
    ready = sorted(t - run.started for t in run.finished.values())
    wall = ready[-1] if len(ready) >= count else float("nan")
    return Figure(
        name, title, "informational (a floor)",
        [Check("wall time", round(wall, 2), ">=", 0.0, "s"), Check("write errors", len(run.errors), "==", 0,
                                                                   "requests")],
        f"{wall:.1f} s" + (f" ({len(ready)}/{count} Ready)" if len(ready) < count else ""),
        details={"servers": count, **details,
                 "timeline_s": {"all_written": round(run.sent_s, 2), "all_ready": round(wall, 2)},
                 "ready_count_at": {f"{q}%": round(percentile(ready, q), 2) for q in (10, 50, 90, 100)}
                 if ready else {},
                 "write_errors": run.errors[:5],
                 "cpu_until_all_ready": run.cpu,
                 "method": method})


async def _monitors(kube: Kube) -> bool:
    """A ServiceMonitor is applied only where its CRD is served, as the operator does."""
    return (await kube.request("GET", "/apis/monitoring.coreos.com/v1"))[0] == 200


async def floor(kube: Kube, namespace: str, *, count: int = 300, concurrency: int = 50,
                timeout: float = 300.0, contention: Contention | None = None,
                window: AbstractContextManager[object] | None = None) -> Figure:
    """``window``: entered for the measured span only, from the first apply to the last Ready pod."""
    await kube.create_namespace(namespace)
    monitors = await _monitors(kube)
    names = [f"floor-{i:03d}" for i in range(count)]
    # Rendered before the clock: the builders are not the floor.
    rendered = {n: [o for o in children(n, namespace) if monitors or o["kind"] != "ServiceMonitor"] for n in names}

    async def apply(name: str) -> None:
        for obj in rendered[name]:
            await _apply(kube, obj)

    try:
        run = await _burst(kube, namespace, names, apply, lambda t: t.pod_ready, Tracker(),
                           concurrency=concurrency, timeout=timeout, contention=contention, window=window)
    finally:
        if not await kube.delete_namespace(namespace, timeout):  # the floor's servers must not outlive it
            log(f"floor: namespace {namespace} still terminating after {timeout:.0f}s")
    return _figure(
        "scale_300_floor", f"control-plane floor: {count} servers' children applied directly -> all pods Ready",
        "server-side apply of render_offline(...).children() per server, one after the other, "
        f"{concurrency} servers in flight; wall time from the first apply to the last server's first Ready pod",
        run, count, {"concurrency": concurrency, "objects_per_server": len(rendered[names[0]]),
                     "kinds": [o["kind"] for o in rendered[names[0]]]})


async def contract_floor(kube: Kube, namespace: str, *, count: int = 300, concurrency: int = 50,
                         timeout: float = 300.0, contention: Contention | None = None,
                         window: AbstractContextManager[object] | None = None) -> Figure:
    """The contract's writes by a plain client (module docstring). Needs the admission webhook served and no
    reconciler running (it would make the same writes again)."""
    await kube.create_namespace(namespace)
    monitors = await _monitors(kube)
    names = [f"contract-{i:03d}" for i in range(count)]
    docs = {n: dittoserver(n, namespace) for n in names}
    # Rendered before the clock, as the floor's children; bound to each server's create on the way.
    rendered = {n: early_plan(doc) for n, doc in docs.items()}
    plans: dict[str, ContractPlan] = {}
    writes: list[int] = []
    readying: set[asyncio.Task[None]] = set()
    gate = asyncio.Semaphore(concurrency)

    async def write_ready(name: str) -> None:
        async with gate:
            await _merge(kube, f"{servers_path(namespace, name)}/status", plans[name].ready)

    def pod_ready(name: str) -> None:
        if name in plans:  # else its own writes are not done yet, and make this one at their end
            readying.add(task := asyncio.create_task(write_ready(name)))
            task.add_done_callback(readying.discard)

    tracker = Tracker(on_pod_ready=pod_ready)

    async def serve(name: str) -> None:
        created = await kube.call("POST", servers_path(namespace), docs[name])
        plan = bind(rendered[name], created)
        await _merge(kube, servers_path(namespace, name), plan.finalizer)
        for secret in plan.secrets:
            await kube.call("POST", f"/api/v1/namespaces/{namespace}/secrets", secret)
        owned = [o for o in plan.children if monitors or o["kind"] != "ServiceMonitor"]
        for obj in owned:
            await _apply(kube, obj)
        await _merge(kube, f"{servers_path(namespace, name)}/status", plan.progressing)
        await kube.call("POST", f"/api/v1/namespaces/{namespace}/events", plan.event)
        plans[name] = plan
        writes.append(sum(plan.requests().values()) + len(owned))
        if name in tracker.pod_ready:
            await _merge(kube, f"{servers_path(namespace, name)}/status", plan.ready)

    try:
        run = await _burst(kube, namespace, names, serve, lambda t: t.server_ready, tracker,
                           concurrency=concurrency, timeout=timeout, contention=contention, window=window)
    finally:
        for task in list(readying):
            task.cancel()
        # No operator runs to finalize them: the finalizers go first, or the namespace would never go.
        await bounded_gather(concurrency, [partial(_merge, kube, servers_path(namespace, n),
                                                   {"metadata": {"finalizers": None}}, (404,)) for n in names])
        if not await kube.delete_namespace(namespace, timeout):
            log(f"contract floor: namespace {namespace} still terminating after {timeout:.0f}s")
    return _figure(
        "scale_300_contract_floor",
        f"contract floor: {count} servers' contract writes made by a plain client -> all Ready",
        f"per server, {concurrency} in flight: create through the webhook, finalizer, 2 Secrets, the children "
        "(server-side apply, owned), status, Created Event, then the Ready status once its pod is Ready; wall "
        "time from the first POST to the arrival of the last DittoServer with Ready=True",
        run, count, {"concurrency": concurrency, "writes_per_server": max(writes, default=0)})
