"""The declared file service on the test bed's real node (real dfs, moto S3 on the bridge): a DittoServer with
10 shares, 5 users and 1 remote store.

- create -> DittoServer Ready, minus the readiness probe's initial delay: from just before the POST to the
  arrival of the DittoServer whose Ready condition turned True, for each server's first create.
- pod Ready -> Provisioned=True: from the arrival of the pod with Ready=True (a new pod uid) to the arrival of
  the DittoServer whose Provisioned condition turned True (observedGeneration current), both on the bench's
  own watches (time.perf_counter); ``lastTransitionTime`` (1 s resolution) is not used. The first sample
  creates everything in DittoFS; the pod is then deleted and every restarted pod is measured again (its
  control-plane database is on the retained volume, so that provisioning is mostly reads).
- REST calls per drift pass over the unchanged server: ``dittofs_operator_dittofs_requests_total{method}``
  before and after a window of several drift passes (the operator runs with a short ``--drift-interval``
  for this experiment), passes counted with ``controller_runtime_reconcile_total``.
- operator RSS per provisioned server: VmRSS after the window minus VmRSS just before the first create.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.kube import Kube, Watch, WatchEvent, condition, pod_ready, server_ready
from bench.objects import fileserver, password_secret, servers_path
from bench.process import Operator, settle
from bench.reconciler import INSTANCE, delete_all, log
from bench.report import Check, Figure
from bench.stats import summary
from tests.support.s3 import ACCESS_KEY_ID, MotoServer
from tests.testbed import Testbed
from tests.testbed.node import NODE_IP

USERS = 5
SHARES = 10
BUCKET = "dittofs-blocks"
S3_SECRET = "s3-creds"
# 300 servers within the 150 MiB of operator_rss: what one provisioned server may add, at most.
RSS_TARGET_MIB = 150.0 / 300
FOREIGN_NOTE = ("the real node (kubelet, containerd, the dfs pods) and moto are not among this run's processes: "
                "their CPU counts as foreign")


def requests(op: Operator) -> Counter[str]:
    """dittofs_operator_dittofs_requests_total by HTTP method."""
    prefix = 'dittofs_operator_dittofs_requests_total{method="'
    return Counter({k[len(prefix):].split('"', 1)[0]: int(v) for k, v in op.metrics().items()
                    if k.startswith(prefix)})


def rest_delta(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    return {m: after[m] - before[m] for m in sorted(after) if after[m] != before[m]}


@dataclass
class Transitions:
    """Arrival times of a pod (uid) becoming Ready and of a DittoServer's Provisioned and Ready turning True."""

    pod_ready: dict[str, list[float]] = field(default_factory=dict)  # instance -> arrivals, one per pod uid
    turned: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """(server, condition) -> arrivals of False/absent -> True."""
    last: dict[str, dict[str, Any]] = field(default_factory=dict)  # server -> latest object
    _ready_uids: set[str] = field(default_factory=set)
    _true: dict[tuple[str, str], bool] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_pod(self, ev: WatchEvent) -> None:
        meta = ev.obj["metadata"]
        instance = (meta.get("labels") or {}).get(INSTANCE)
        if instance and ev.type != "DELETED" and pod_ready(ev.obj) and meta["uid"] not in self._ready_uids:
            self._ready_uids.add(meta["uid"])
            self.pod_ready.setdefault(instance, []).append(ev.arrived)
            self.changed.set()

    def on_server(self, ev: WatchEvent) -> None:
        name = ev.obj["metadata"]["name"]
        for kind in ("Provisioned", "Ready"):
            now = ev.type != "DELETED" and server_ready(ev.obj, kind)
            if now and not self._true.get((name, kind)):
                self.turned.setdefault((name, kind), []).append(ev.arrived)
            self._true[(name, kind)] = now
        self.last[name] = ev.obj
        self.changed.set()

    def sample(self, name: str, since: float) -> tuple[float, float, float] | None:
        """(pod Ready, Provisioned=True, Ready=True) arrivals of the first of each after ``since``."""
        found = [next((t for t in arrivals if t >= since), None) for arrivals in (
            self.pod_ready.get(name, []), self.turned.get((name, "Provisioned"), []),
            self.turned.get((name, "Ready"), []))]
        pod, prov, ready = found
        return None if pod is None or prov is None or ready is None else (pod, prov, ready)

    async def wait_sample(self, name: str, since: float, timeout: float) -> tuple[float, float, float]:
        deadline = time.perf_counter() + timeout
        while (found := self.sample(name, since)) is None:
            if time.perf_counter() >= deadline:
                last = self.last.get(name, {})
                raise TimeoutError(f"{name}: no pod Ready + Provisioned=True + Ready=True within {timeout:.0f}s "
                                   f"(Provisioned: {condition(last, 'Provisioned')}; "
                                   f"Ready: {condition(last, 'Ready')})")
            self.changed.clear()
            try:
                async with asyncio.timeout(min(1.0, deadline - time.perf_counter())):
                    await self.changed.wait()
            except TimeoutError:
                pass
        return found


async def _secret(kube: Kube, namespace: str, name: str, data: dict[str, str]) -> None:
    await kube.call("POST", f"/api/v1/namespaces/{namespace}/secrets",
                    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data},
                    ok=(409,))


async def fileservice(tb: Testbed, kube: Kube, op: Operator, workdir: Path, namespace: str, *, population: int,
                      servers: int = 3, restarts: int = 3, drift_interval: float = 5.0, window: float = 30.0,
                      timeout: float = 180.0) -> list[Figure]:
    """Start the real node and moto, run the operator with a short drift interval, measure, clean up."""
    node = await asyncio.to_thread(tb.start_real_node)
    original = op.drift_interval
    try:
        if original != drift_interval:
            op.stop()
            op.drift_interval = drift_interval
            op.start()
        with MotoServer(workdir, host=NODE_IP) as s3:
            s3.create_bucket(BUCKET)
            return await _measure(tb, kube, op, namespace, s3.endpoint, node.pod_placement(),
                                  population=population, servers=servers, restarts=restarts, window=window,
                                  timeout=timeout, node_timings=dict(node.timings))
    finally:
        if op.drift_interval != original:
            op.stop()
            op.drift_interval = original
            op.start()
        await asyncio.to_thread(tb.stop_real_node)


async def _measure(tb: Testbed, kube: Kube, op: Operator, namespace: str, endpoint: str,
                   placement: dict[str, Any], *, population: int, servers: int, restarts: int, window: float,
                   timeout: float, node_timings: dict[str, float]) -> list[Figure]:
    await kube.create_namespace(namespace)
    names = ["demo"] + [f"demo{i}" for i in range(1, servers)]
    await _secret(kube, namespace, S3_SECRET, {"accessKeyId": ACCESS_KEY_ID, "secretAccessKey": "bench-secret-key"})
    for name in names:
        for i in range(USERS):
            await _secret(kube, namespace, password_secret(name, i), {"password": f"bench-{name}-u{i}-password"})
    tracker = Transitions()
    watches = [Watch(kube, servers_path(namespace), tracker.on_server),
               Watch(kube, f"/api/v1/namespaces/{namespace}/pods", tracker.on_pod)]
    for w in watches:
        await w.start()
    created: list[str] = []
    try:
        # A baseline without file servers: the (re)started operator's startup burst over, no file server known.
        await asyncio.to_thread(settle, op, 2.0, 60.0)
        rss_before = op.status_kib()
        firsts: list[float] = []
        create_to_ready: list[float] = []
        initial_delays: list[int] = []
        rest_first: list[dict[str, int]] = []
        rss_after_each: list[int] = []
        for name in names:
            rest0 = requests(op)
            mark = time.perf_counter()
            await kube.call("POST", servers_path(namespace), fileserver(
                name, namespace, s3_endpoint=endpoint, placement=placement, users=USERS, shares=SHARES,
                bucket=BUCKET, s3_credentials=S3_SECRET))
            created.append(name)
            pod, prov, ready = await tracker.wait_sample(name, mark, timeout)
            firsts.append(prov - pod)
            create_to_ready.append(ready - mark)
            initial_delays.append(await _readiness_delay(kube, namespace, name))
            log(f"fileservice: {name} pod Ready -> Provisioned=True in {prov - pod:.2f}s (first, "
                f"{time.perf_counter() - mark:.0f}s after create); create -> Ready {ready - mark:.2f}s")
            await asyncio.sleep(1.0)
            rest_first.append(rest_delta(rest0, requests(op)))
            await asyncio.sleep(op.drift_interval)  # one drift pass over it, too
            rss_after_each.append(op.status_kib()["VmRSS"])
        again: list[float] = []
        rest_again: list[dict[str, int]] = []
        for _ in range(restarts):
            rest0 = requests(op)
            mark = time.perf_counter()
            await kube.call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{names[0]}-0")
            pod, prov, _ = await tracker.wait_sample(names[0], mark, timeout)
            again.append(prov - pod)
            log(f"fileservice: restarted pod Ready -> Provisioned=True in {prov - pod:.2f}s")
            await asyncio.sleep(1.0)
            rest_again.append(rest_delta(rest0, requests(op)))
        final = {n: tracker.last[n] for n in names}
        drift = await _drift_window(tb, op, namespace, servers_in_cluster=population + len(names),
                                    file_servers=len(names), window=window)
        rss_after = op.status_kib()
    finally:
        for w in watches:
            await w.stop()
        if created:
            took = await delete_all(kube, namespace, created)
            log(f"fileservice: deleted {len(created)} file server(s) in {took:.1f}s")

    common: dict[str, Any] = {
        "file_servers": len(names), "servers_in_cluster": population + len(names),
        "spec": {"users": USERS, "shares": SHARES, "remote_stores": 1, "shares_tiered_to_s3": 1},
        "real_node_start_s": node_timings, "drift_interval_s": op.drift_interval,
        "provisioned_condition": condition(final[names[0]], "Provisioned"),
        "status_provisioned_refs": len((final[names[0]].get("status") or {}).get("provisioned") or []),
        "watch_errors": [e for w in watches for e in w.errors][:5],
        "cpu_accounting": FOREIGN_NOTE,
    }
    return [_provisioned_figure(firsts, again, rest_first, rest_again, common),
            _create_to_ready_figure(create_to_ready, initial_delays, common),
            _drift_figure(drift, common),
            _rss_figure(rss_before, rss_after, rss_after_each, common)]


async def _drift_window(tb: Testbed, op: Operator, namespace: str, *, servers_in_cluster: int, file_servers: int,
                        window: float) -> dict[str, Any]:
    """REST calls and Kubernetes writes over a window of drift passes; one pass = one reconcile per server."""
    await asyncio.sleep(op.drift_interval + 1.0)  # the passes right after provisioning are over
    rest0, rec0, mark = requests(op), op.reconciles(), tb.audit_line_count()
    t0 = time.perf_counter()
    await asyncio.sleep(window)
    rest1, rec1 = requests(op), op.reconciles()
    wall = time.perf_counter() - t0
    writes = tb.operator_writes(mark, namespace)
    return {"window_s": round(wall, 1), "reconciles": int(rec1 - rec0),
            "passes": (rec1 - rec0) / servers_in_cluster, "passes_by_clock": round(wall / op.drift_interval, 2),
            "file_servers": file_servers, "rest": rest_delta(rest0, rest1),
            "kubernetes_writes": Counter(f"{e.get('verb')} {(e.get('objectRef') or {}).get('resource')}"
                                         for e in writes)}


def _provisioned_figure(firsts: list[float], again: list[float], rest_first: list[dict[str, int]],
                        rest_again: list[dict[str, int]], common: dict[str, Any]) -> Figure:
    first = max(firsts)
    worst = max(again, default=float("nan"))
    median = statistics.median(again) if again else float("nan")
    return Figure(
        "fileservice_provisioned", f"pod Ready -> Provisioned=True ({SHARES} shares, {USERS} users, 1 remote store)",
        "< 2 s",
        [Check("first provisioning (max)", round(first, 3), "<", 2.0, "s"),
         Check("after a pod restart (max)", round(worst, 3), "<", 2.0, "s")],
        f"first {first:.2f} s (creates everything{f'; max of {len(firsts)} servers' if len(firsts) > 1 else ''}); "
        f"after a pod restart median {median:.2f} s (max {worst:.2f} s, n={len(again)})",
        details={**common,
                 "first_s": [round(t, 3) for t in firsts],
                 "after_pod_restart_s": [round(t, 3) for t in again],
                 "after_pod_restart_ms": summary(again, 1000.0, 1),
                 "rest_calls_first_provisioning": rest_first,
                 "rest_calls_after_pod_restart": rest_again,
                 "method": "t0 = arrival of the pod (new uid) with Ready=True, t1 = arrival of the DittoServer "
                           "whose Provisioned condition turned True with observedGeneration current, both on the "
                           "bench's own watches; the first sample follows the create, the others a DELETE of "
                           "the pod (the StatefulSet re-creates it on the retained volumes). REST calls from "
                           "the operator's counter between the create/delete and 1 s after Provisioned=True "
                           "(login included; with several servers, the others' drift passes too)"},
    )


async def _readiness_delay(kube: Kube, namespace: str, name: str) -> int:
    """The readiness probe's initial delay as the server's StatefulSet states it (the figure subtracts it)."""
    sts = await kube.call("GET", f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    return int((container.get("readinessProbe") or {}).get("initialDelaySeconds", 0))


def _create_to_ready_figure(took: list[float], delays: list[int], common: dict[str, Any]) -> Figure:
    net = [t - d for t, d in zip(took, delays, strict=True)]
    worst = max(net)
    return Figure(
        "fileservice_create_to_ready", "create -> DittoServer Ready on the real node (real dfs), minus the "
        "readiness probe's initial delay", "< 3 s",
        [Check("create -> Ready minus the initial delay (max)", round(worst, 3), "<", 3.0, "s")],
        f"max {worst:.2f} s, median {statistics.median(net):.2f} s over {len(net)} creates "
        f"(initial delay {', '.join(sorted({f'{d} s' for d in delays}))} subtracted)",
        details={**common,
                 "create_to_ready_s": [round(t, 3) for t in took],
                 "readiness_initial_delay_s": delays,
                 "net_s": [round(t, 3) for t in net],
                 "method": "t0 = just before the DittoServer's POST, t1 = arrival of the DittoServer whose Ready "
                           "condition turned True with observedGeneration current, on the bench's own watch; "
                           "the readiness probe's initialDelaySeconds, read from the server's StatefulSet, is "
                           "subtracted. Each server declares the full file service (shares, users, a remote "
                           "store), so Ready waits for Provisioned and AdaptersReady as well as for the pod"},
    )


def _drift_figure(drift: dict[str, Any], common: dict[str, Any]) -> Figure:
    passes = drift["passes"]
    per_server_passes = passes * drift["file_servers"]
    rest: dict[str, int] = drift["rest"]
    gets = rest.get("GET", 0) / per_server_passes if per_server_passes >= 1 else float("nan")
    writes = sum(v for m, v in rest.items() if m != "GET")
    return Figure(
        "fileservice_drift_rest", "DittoFS REST calls per drift pass over an unchanged file server",
        "0 writes, <= 10 reads per pass",
        [Check("reads per pass", round(gets, 2), "<=", 10.0, "requests"),
         Check("writes", writes, "==", 0, "requests"),
         Check("drift passes", round(passes, 2), ">=", 2.0, "passes")],
        f"{gets:.1f} GET/pass, {writes} writes over {passes:.1f} passes",
        details={**common, **drift, "passes": round(passes, 2),
                 "method": "dittofs_operator_dittofs_requests_total{method} from the operator's /metrics before "
                           "and after the window; drift passes from controller_runtime_reconcile_total (one "
                           "reconcile per DittoServer in the cluster per pass); Kubernetes writes from the "
                           "audit log (operator's user, this namespace)"},
    )


def _rss_figure(before: dict[str, int], after: dict[str, int], after_each: list[int],
                common: dict[str, Any]) -> Figure:
    n = len(after_each)
    first = (after_each[0] - before["VmRSS"]) / 1024
    # The first server also pays one-time costs (the first DittoFS client, lazily built code paths): with
    # several servers the headline is what each further one adds.
    per_server = (after_each[-1] - after_each[0]) / 1024 / (n - 1) if n > 1 else first
    steps = [(b - a) / 1024 for a, b in zip([before["VmRSS"], *after_each], after_each, strict=False)]
    measured = (f"{per_server:+.2f} MiB per further server (the first {first:+.2f} MiB with one-time costs)"
                if n > 1 else f"{first:+.2f} MiB for one server (one-time costs included)")
    notes = [f"target derived from operator_rss (150 MiB at 300 DittoServers): {RSS_TARGET_MIB:g} MiB "
             "per server at most"]
    others = common["servers_in_cluster"] - n
    if others:
        notes.append(f"measured beside {others} other DittoServers: the operator's RSS at that population moves by "
                     "more than one file server adds; `python -m bench --only fileservice` measures it alone")
    return Figure(
        "fileservice_rss", "operator RSS per provisioned file server", f"< {RSS_TARGET_MIB:g} MiB per server",
        [Check("VmRSS per provisioned server", round(per_server, 2), "<", RSS_TARGET_MIB, "MiB")],
        f"{measured}; {before['VmRSS'] / 1024:.1f} -> {after['VmRSS'] / 1024:.1f} MiB with {n} server(s)",
        details={**common, "proc_status_kib_before": before, "proc_status_kib_after_window": after,
                 "vmrss_after_each_server_kib": after_each,
                 "vmrss_step_per_server_mib": [round(s, 2) for s in steps],
                 "notes": notes,
                 "method": "VmRSS of the operator process (/proc/<pid>/status): just before the first create (the "
                           "operator restarted with the short drift interval, quiet), after each server is "
                           "provisioned plus one drift interval, and after the drift window. Headline: (RSS after "
                           "the last server - RSS after the first) / (servers - 1); with one server, its step"},
    )
