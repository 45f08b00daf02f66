"""What each write costs the control plane (issue 15): the CPU the apiserver, etcd and the controller-manager spend
per request, for the writes the floor makes (a server's children) and for the writes the operator makes beyond
them (the contract of SPEC §4-§6: the DittoServer, its finalizer and status, the generated Secrets, an Event).

During the 300 burst both cores are saturated, so the wall time follows the CPU spent by every process; this
decomposes the operator's overhead over the floor into what its writes cost the control plane and what the
operator spends itself. Measured on a quiet control plane with the operator stopped and the admission webhook
unregistered (its cost is `admission_overhead`'s), ``count`` requests per kind, ``concurrency`` in flight;
the control plane's idle CPU over the same time is subtracted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from bench.admission import set_webhook
from bench.floor import (
    ADMITTED,
    EVENT_CREATE,
    FINALIZER_PATCH,
    SECRET_CREATE,
    STATUS_PATCH,
    ContractPlan,
    children,
    early_plan,
)
from bench.kube import Kube, Watch, bounded_gather
from bench.machine import process_cpu
from bench.objects import KIND, PLURAL, VERSION, dittoserver, object_path, servers_path
from bench.process import Operator
from bench.reconciler import log
from bench.report import Check, Figure
from dittoctl.api.crd import build_crd
from dittoctl.api.kinds import Kind
from dittoctl.api.naming import FINALIZER, MANAGED_BY_LABEL, MANAGER
from tests.testbed import Testbed

COMPONENTS = ("kube-apiserver", "etcd", "kube-controller-manager")
WATCHERS = 8  # streams added to measure what one delivered watch event costs the apiserver
WATCH_ROUNDS = 3  # rounds of ConfigMap applies with and without them
# The watch-event probe's two sides, by how many streams watch the ConfigMaps.
PROBES = {0: "ConfigMap apply, no watcher", WATCHERS: f"ConfigMap apply, {WATCHERS} watchers"}
# The DittoServer writes again, against a copy of the CRD without the schema's defaults (SPEC §3 asks for them):
# how much of each DittoServer write is the apiserver applying and carrying those defaults.
UNDEFAULTED_KIND = Kind("undefaulted.bench.dittofs.com", VERSION, PLURAL, KIND)
UNDEFAULTED_CRD = UNDEFAULTED_KIND.crd_name
UNDEFAULTED = " (CRD without schema defaults)"
SERVER_WRITES = ("DittoServer create, no webhook", FINALIZER_PATCH, f"{STATUS_PATCH} (1)", f"{STATUS_PATCH} (2)")


def without_defaults(schema: Any) -> Any:
    """``schema`` with every ``default`` dropped (a property named "default" stays)."""
    if isinstance(schema, list):
        return [without_defaults(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {key: ({name: without_defaults(sub) for name, sub in value.items()} if key == "properties"
                  else without_defaults(value)) for key, value in schema.items() if key != "default"}


def crd_without_defaults() -> dict[str, Any]:
    """The DittoServer CRD without its schema defaults (the operator's models still default every field)."""
    crd = build_crd()
    for version in crd["spec"]["versions"]:
        version["schema"] = without_defaults(version["schema"])
    return crd


def undefaulted_crd() -> dict[str, Any]:
    """`crd_without_defaults` in a group of its own, so that both CRDs can be served at once."""
    crd = crd_without_defaults()
    crd["metadata"] = {"name": UNDEFAULTED_CRD}
    crd["spec"]["group"] = UNDEFAULTED_KIND.group
    return crd


def _status(plan: ContractPlan, round_: int) -> dict[str, Any]:
    """The first status a create writes (Progressing), or its second (Ready)."""
    return plan.progressing if round_ == 1 else plan.ready


@dataclass(frozen=True)
class Split:
    floor: dict[str, float]
    """ms of control-plane CPU per server for each child kind the floor applies."""
    contract: dict[str, float]
    """The same for each of the operator's writes beyond the children."""
    watch_event: float | None
    """ms per watch event delivered to one more stream (None: the rounds with watchers read no more than the rounds
    without, so the meter did not resolve it)."""
    defaults: float | None
    """ms per server that the CRD's schema defaults add to the DittoServer writes (None: not measured)."""


def per_server_costs(per_request: dict[str, dict[str, float]], per_server: dict[str, float],
                     contract: Mapping[str, int]) -> Split:
    """Per-request costs (label -> component -> ms) times how often one server's create makes each request: each
    child kind ``per_server`` times, each of the contract's other requests as ``ContractPlan.requests`` says."""
    def total(label: str) -> float:
        return sum(per_request.get(label, {}).values())

    status = (total(SERVER_WRITES[2]) + total(SERVER_WRITES[3])) / 2
    writes = {label: round(times * (status if label == STATUS_PATCH else total(label)), 1)
              for label, times in contract.items()}
    floor = {label: round(count * total(f"{label} apply"), 1) for label, count in per_server.items()}
    event = (total(PROBES[WATCHERS]) - total(PROBES[0])) / WATCHERS
    defaults = None
    if all(label + UNDEFAULTED in per_request for label in SERVER_WRITES):
        # A server's create makes each of these once (the two status patches are its first and its Ready one).
        defaults = round(sum(total(label) - total(label + UNDEFAULTED) for label in SERVER_WRITES), 1)
    return Split(floor, writes, round(event, 3) if event > 0 else None, defaults)


def median_round(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The round (component -> ms) whose total is the median of the rounds'."""
    return sorted(rounds, key=lambda r: sum(r.values()))[len(rounds) // 2]


class _Meter:
    def __init__(self, tb: Testbed) -> None:
        self.pids = {name: pid for name in COMPONENTS if (pid := tb.pid(name)) is not None}
        self.idle_per_s: dict[str, float] = {}

    def cpu(self) -> dict[str, float]:
        return {name: process_cpu(pid) for name, pid in self.pids.items()}

    async def idle(self, seconds: float) -> None:
        before, t = self.cpu(), time.perf_counter()
        await asyncio.sleep(seconds)
        after, took = self.cpu(), time.perf_counter() - t
        self.idle_per_s = {n: (after[n] - before[n]) / took for n in before}

    async def quiet(self, limit: float = 8.0, step: float = 0.5) -> None:
        """Until the control plane is back at its idle rate: what a block of requests set off (a Service's
        endpoints, the garbage collector's bookkeeping) is counted in that block, not the next."""
        deadline = time.perf_counter() + limit
        idle = sum(self.idle_per_s.values())
        while time.perf_counter() < deadline:
            before, t = self.cpu(), time.perf_counter()
            await asyncio.sleep(step)
            rate = (sum(self.cpu().values()) - sum(before.values())) / (time.perf_counter() - t)
            if rate <= 1.5 * idle + 0.02:
                return

    async def measure(self, calls: list[Callable[[], Awaitable[Any]]],
                      concurrency: int) -> tuple[dict[str, float], list[str]]:
        """ms of CPU per call, per component, net of the idle rate; and the errors."""
        await self.quiet()
        before, t = self.cpu(), time.perf_counter()
        results = await bounded_gather(concurrency, calls)
        await self.quiet()
        after, took = self.cpu(), time.perf_counter() - t
        per_call = {n: max(0.0, (after[n] - before[n] - self.idle_per_s.get(n, 0.0) * took)) * 1000 / len(calls)
                    for n in before}
        return per_call, [repr(r)[:200] for r in results if isinstance(r, BaseException)]


async def write_costs(tb: Testbed, kube: Kube, op: Operator, namespace: str, *, count: int = 300,
                      concurrency: int = 16) -> Figure:
    # Its watches and passes would add to the control plane's CPU (and it would reconcile our servers): it runs
    # only as the webhook, for the creates that go through admission, and then not at all.
    await kube.create_namespace(namespace)
    meter = _Meter(tb)
    costs: dict[str, dict[str, float]] = {}
    watch_rounds: dict[str, list[float]] = {}
    errors: list[str] = []
    names = [f"cost-{i:03d}" for i in range(count)]
    base = servers_path(namespace)

    async def measure(label: str, calls: list[Callable[[], Awaitable[Any]]]) -> None:
        per_call, failed = await meter.measure(calls, concurrency)
        costs[label] = {n: round(v, 2) for n, v in per_call.items()}
        errors.extend(f"{label}: {e}" for e in failed)

    # The bodies the operator sends (status, Secret, Event), rendered by its own builders as the contract floor's.
    plans = {n: early_plan(dittoserver(n, namespace)) for n in names}
    try:
        with op.webhook_only():
            await asyncio.sleep(3.0)  # the operator's start and the namespace settle
            await meter.idle(5.0)
            meter.pids["operator (webhook)"] = op.pid
            await measure(ADMITTED, [partial(kube.call, "POST", base, dittoserver(f"{n}-w", namespace))
                                     for n in names])
            del meter.pids["operator (webhook)"]
        set_webhook(tb, op.webhook_port, False, namespace)
        await asyncio.sleep(3.0)
        await meter.idle(5.0)

        def patch(path: str, body: dict[str, Any]) -> Awaitable[Any]:
            return kube.call("PATCH", path, body, content_type="application/merge-patch+json")

        def apply(obj: dict[str, Any]) -> Awaitable[Any]:
            return kube.call("PATCH", object_path(obj), obj, content_type="application/apply-patch+yaml",
                             params={"fieldManager": "bench-cost", "force": "true"})

        # The operator's contract writes, in the order a create makes them.
        await measure(SERVER_WRITES[0], [partial(kube.call, "POST", base, dittoserver(n, namespace))
                                             for n in names])
        await measure(FINALIZER_PATCH, [
            partial(patch, f"{base}/{n}", {"metadata": {"finalizers": [FINALIZER]}})
            for n in names])
        for round_ in (1, 2):
            await measure(f"{STATUS_PATCH} ({round_})", [
                partial(patch, f"{base}/{n}/status", _status(plans[n], round_)) for n in names])
        bare = await _serve_undefaulted(kube, namespace)
        await measure(SERVER_WRITES[0] + UNDEFAULTED, [partial(kube.call, "POST", bare, {
            **dittoserver(n, namespace), "apiVersion": UNDEFAULTED_KIND.api_version}) for n in names])
        await measure(SERVER_WRITES[1] + UNDEFAULTED, [
            partial(patch, f"{bare}/{n}", {"metadata": {"finalizers": [FINALIZER]}})
            for n in names])
        for round_ in (1, 2):
            await measure(SERVER_WRITES[1 + round_] + UNDEFAULTED, [
                partial(patch, f"{bare}/{n}/status", _status(plans[n], round_)) for n in names])
        await measure(SECRET_CREATE, [partial(
            kube.call, "POST", f"/api/v1/namespaces/{namespace}/secrets", plans[n].secrets[0]) for n in names])
        await measure(EVENT_CREATE, [partial(
            kube.call, "POST", f"/api/v1/namespaces/{namespace}/events", plans[n].event) for n in names])

        # The floor's writes: each child kind, server-side applied as the floor does. The StatefulSets have no
        # replicas here: their pods and PVCs are the controller-manager's work, the same in the floor and the burst.
        rendered = {n: children(n, namespace) for n in names}
        for obj in (o for n in names for o in rendered[n] if o["kind"] == "StatefulSet"):
            obj["spec"]["replicas"] = 0
        by_label: dict[str, list[dict[str, Any]]] = {}
        for n in names:
            for obj in rendered[n]:
                if obj["kind"] == "ServiceMonitor":
                    continue  # served only with the Prometheus Operator; the test bed has none
                label = obj["kind"]
                if label == "Service":
                    label += " (headless)" if obj["spec"].get("clusterIP") == "None" else " (ClusterIP)"
                by_label.setdefault(label, []).append(obj)
        per_server = {label: len(objs) / count for label, objs in by_label.items()}
        for label, objs in by_label.items():
            await measure(f"{label} apply", [partial(apply, o) for o in objs[:count]])

        # One watch event delivered: the same ConfigMaps changed again, without and with WATCHERS streams.
        def cm(n: str, value: str) -> dict[str, Any]:
            return {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": f"{n}-probe", "namespace": namespace,
                                 "labels": {MANAGED_BY_LABEL: MANAGER}}, "data": {"v": value}}
        # A block can absorb what the one before it set off (one read 3.2 ms a ConfigMap after the StatefulSets,
        # against 1.2 with the watchers): the two sides alternate, WATCH_ROUNDS each, and each keeps its median.
        async def probe(value: str, watchers: int) -> dict[str, float]:
            watches = [Watch(kube, f"/api/v1/namespaces/{namespace}/configmaps", lambda _e: None,
                             label_selector=f"{MANAGED_BY_LABEL}={MANAGER}") for _ in range(watchers)]
            for w in watches:
                await w.start()
            try:
                per_call, failed = await meter.measure([partial(apply, cm(n, value)) for n in names], concurrency)
            finally:
                for w in watches:
                    await w.stop()
            errors.extend(f"{PROBES[watchers]}: {e}" for e in failed)
            return per_call

        await bounded_gather(concurrency, [partial(apply, cm(n, "a")) for n in names])
        sides: dict[int, list[dict[str, float]]] = {watchers: [] for watchers in PROBES}
        for i in range(WATCH_ROUNDS):
            for watchers in sorted(sides, reverse=bool(i % 2)):
                sides[watchers].append(await probe(f"{i}-{watchers}", watchers))
        for watchers, rounds in sides.items():
            costs[PROBES[watchers]] = {n: round(v, 2) for n, v in median_round(rounds).items()}
            watch_rounds[PROBES[watchers]] = [round(sum(r.values()), 2) for r in rounds]
    finally:
        bare = UNDEFAULTED_KIND.path(namespace)
        await bounded_gather(concurrency, [partial(
            kube.call, "PATCH", f"{path}/{n}", {"metadata": {"finalizers": None}}, ok=(404,),
            content_type="application/merge-patch+json") for path in (base, bare) for n in names])
        await kube.call("DELETE", f"{CRDS}/{UNDEFAULTED_CRD}", ok=(404,))
        if not await kube.delete_namespace(namespace, 120.0):
            log(f"apicost: namespace {namespace} still terminating after 120s")
        await kube.create_namespace(namespace)  # empty: where the webhook's registration is probed
        op.start()
        set_webhook(tb, op.webhook_port, True, namespace)

    return report(costs, per_server, plans[names[0]].requests(), errors, meter.idle_per_s, watch_rounds=watch_rounds,
                  method=f"{count} requests per kind, {concurrency} in flight, admin client, operator stopped, "
                         "webhook unregistered; CPU of kube-apiserver + etcd + kube-controller-manager from /proc, "
                         "net of their idle rate; per server = per request x how often a create makes it")


CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


async def _serve_undefaulted(kube: Kube, namespace: str, timeout: float = 60.0) -> str:
    """Installs `undefaulted_crd` and returns its DittoServers' path in ``namespace`` once a list answers (a
    new CRD's storage answers 429 for a moment after discovery serves it)."""
    await kube.call("POST", CRDS, undefaulted_crd(), ok=(409,))
    path = UNDEFAULTED_KIND.path(namespace)
    deadline = time.perf_counter() + timeout
    while (await kube.request("GET", path))[0] != 200:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{UNDEFAULTED_CRD} not served after {timeout:.0f}s")
        await asyncio.sleep(0.2)
    return path


def report(costs: dict[str, dict[str, float]], per_server: dict[str, float], contract: Mapping[str, int],
           errors: list[str], idle_per_s: dict[str, float], *, method: str,
           watch_rounds: dict[str, list[float]] | None = None) -> Figure:
    split = per_server_costs(costs, per_server, contract)
    floor_ms, contract_ms = sum(split.floor.values()), sum(split.contract.values())
    return Figure(
        "apiserver_write_cost", "control-plane CPU per server: the floor's writes and the operator's contract writes",
        "informational",
        # Zero would mean the meter saw nothing (a wrong pid, a missing /proc): the figure is then wrong, not good.
        [Check("the contract's writes per server", round(contract_ms, 1), ">=", 0.1, "ms CPU"),
         Check("failed requests", len(errors), "==", 0, "requests")],
        f"children {floor_ms:.0f} ms, contract writes {contract_ms:.0f} ms of control-plane CPU per server "
        f"(+{100 * contract_ms / floor_ms:.0f} %); a watch event delivered "
        + (f"{split.watch_event:.2f} ms" if split.watch_event is not None else "not resolved")
        + (f"; the CRD's schema defaults are {split.defaults:.0f} ms of the DittoServer's writes"
           if split.defaults is not None else "") if floor_ms else "no floor writes measured",
        details={
            "per_request_ms": costs,
            "floor_children_per_server_ms": split.floor,
            "contract_writes_per_server_ms": split.contract,
            "per_watch_event_delivered_ms": split.watch_event,
            "watch_probe_rounds_ms": watch_rounds or {},
            "schema_defaults_per_server_ms": split.defaults,
            "idle_cpu_ms_per_s": {n: round(v * 1000, 1) for n, v in idle_per_s.items()},
            "errors": errors[:5],
            "method": method,
        },
    )
