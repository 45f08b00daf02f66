"""The control-plane floor of the 300 burst (issue 15): what the test bed itself needs to make the same
servers Ready, with no operator in the way.

The children of each server are rendered by the operator's own pure builders (``render_offline``: ConfigMap,
Services, StatefulSet, in the operator's apply order) and applied by a plain client with server-side apply,
``concurrency`` servers in flight as the scale experiment posts them. The wall time runs from the first apply
to the arrival of the last server's first Ready pod (the same pod watch the scale figure uses): the
controller-manager's StatefulSet and PVC work, the fake provisioner, the scheduler and kwok are all in it;
the operator's reads, status writes, events and the admission webhook are not. ``scale_300_ready`` minus
this floor is the operator's overhead.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

from bench.kube import Kube, bounded_gather
from bench.machine import Contention
from bench.objects import dittoserver, object_path
from bench.reconciler import Tracker, _watches, log
from bench.report import Check, Figure
from bench.stats import percentile
from dittoctl.api.facts import ClusterFacts
from dittoctl.api.rules import validate
from reconciler.specs import render_offline

FIELD_MANAGER = "bench-floor"


def children(name: str, namespace: str) -> list[dict[str, Any]]:
    """What the operator applies for ``dittoserver(name)``, without owner references: no DittoServer exists,
    and the garbage collector would delete objects whose owner is missing."""
    doc = dittoserver(name, namespace)
    doc["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000"
    verdict = validate(doc, None, ClusterFacts.offline())
    assert verdict.server is not None, verdict.messages
    out = render_offline(verdict.server).children()
    for obj in out:
        obj["metadata"].pop("ownerReferences", None)
    return out


async def floor(kube: Kube, namespace: str, *, count: int = 300, concurrency: int = 50,
                timeout: float = 300.0, contention: Contention | None = None,
                window: AbstractContextManager[object] | None = None) -> Figure:
    """``window``: entered for the measured span only, from the first apply to the last Ready pod."""
    await kube.create_namespace(namespace)
    monitors = (await kube.request("GET", "/apis/monitoring.coreos.com/v1"))[0] == 200
    tracker = Tracker()
    watches = await _watches(kube, namespace, tracker)
    names = [f"floor-{i:03d}" for i in range(count)]
    # Rendered before the clock (the builders are not the floor); a ServiceMonitor only where its CRD is served,
    # as the operator does.
    rendered = {n: [o for o in children(n, namespace) if monitors or o["kind"] != "ServiceMonitor"] for n in names}
    cpu: dict[str, Any] = {}
    try:
        async def apply(name: str) -> None:
            for obj in rendered[name]:
                await kube.call("PATCH", object_path(obj), obj, content_type="application/apply-patch+yaml",
                                params={"fieldManager": FIELD_MANAGER, "force": "true"})

        with window or nullcontext():
            before = contention.snapshot() if contention is not None else None
            t0 = time.perf_counter()
            results = await bounded_gather(concurrency, [partial(apply, n) for n in names])
            errors = [repr(r) for r in results if isinstance(r, BaseException)]
            applied = time.perf_counter() - t0
            log(f"floor: children of {count - len(errors)} servers applied in {applied:.1f}s")
            await tracker.until(lambda: len(tracker.pod_ready) >= count - len(errors), timeout)
            if contention is not None and before is not None:
                cpu = contention.between(before, contention.snapshot())
    finally:
        for w in watches:
            await w.stop()
        if not await kube.delete_namespace(namespace, timeout):  # the floor's servers must not outlive it
            log(f"floor: namespace {namespace} still terminating after {timeout:.0f}s")
    ready = sorted(t - t0 for t in tracker.pod_ready.values())
    wall = ready[-1] if len(ready) >= count else float("nan")
    per_server = len(rendered[names[0]])
    return Figure(
        "scale_300_floor", f"control-plane floor: {count} servers' children applied directly -> all pods Ready",
        "informational (the floor)",
        [Check("wall time", round(wall, 2), ">=", 0.0, "s"), Check("apply errors", len(errors), "==", 0, "requests")],
        f"{wall:.1f} s" + (f" ({len(ready)}/{count} pods Ready)" if len(ready) < count else ""),
        details={"servers": count, "concurrency": concurrency, "objects_per_server": per_server,
                 "kinds": [o["kind"] for o in rendered[names[0]]],
                 "timeline_s": {"all_applied": round(applied, 2), "all_pods_ready": round(wall, 2)},
                 "ready_count_at": {f"{q}%": round(percentile(ready, q), 2) for q in (10, 50, 90, 100)}
                 if ready else {},
                 "apply_errors": errors[:5],
                 "cpu_until_all_ready": cpu,
                 "method": "server-side apply of render_offline(...).children() per server, the operator's order, "
                           f"{concurrency} servers in flight; wall time from the first apply to the last server's "
                           "first Ready pod"},
    )
