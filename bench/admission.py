"""Webhook figures: direct HTTPS AdmissionReview latency at a fixed rate, and the admission overhead the
webhook adds to a request through the kube-apiserver."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.kube import client_ssl
from bench.machine import Contention
from bench.objects import admission_review, dittoserver, invalid_dittoserver, servers_path
from bench.process import Operator
from bench.report import Check, Figure
from bench.stats import percentile, summary
from tests.testbed import Testbed
from tests.testbed.webhook import webhook_configuration
from webhook.server import WEBHOOK_PATH

WEBHOOK_CONFIG = "dittofs-operator"
WEBHOOKCONFIG_PATH = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
_LE = re.compile(r'le="([^"]+)"')


@dataclass
class Sample:
    scheduled: float
    start: float
    end: float | None
    status: int
    error: str | None = None


def _histogram(metrics: dict[str, float], name: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of a Prometheus histogram (all label sets summed)."""
    out: dict[float, float] = {}
    for key, value in metrics.items():
        if key.startswith(name + "_bucket{"):
            match = _LE.search(key)
            if match:
                le = float(match.group(1))
                out[le] = out.get(le, 0.0) + value
    return out


def _bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """Upper bound of the bucket holding the q-quantile of the observations between two scrapes."""
    delta = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in after}
    total = delta.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for le in sorted(delta):
        if delta[le] >= q * total:
            return le
    return None


async def _sample_cpu(contention: Contention, out: list[tuple[float, dict[str, Any]]]) -> None:
    """One contention sample per second (perf_counter at the end of each second)."""
    last = contention.snapshot()
    while True:
        await asyncio.sleep(1.0)
        now = contention.snapshot()
        out.append((time.perf_counter(), contention.between(last, now)))
        last = now


def _per_second(samples: list[Sample], t0: float, cpu: list[tuple[float, dict[str, Any]]],
                quiet: float) -> tuple[list[dict[str, Any]], list[float]]:
    """Latency per second of the run beside the foreign CPU of that second; also the latencies of the
    seconds in which other workloads used less than `quiet` % of one core."""
    by_second: dict[int, list[float]] = {}
    for s in samples:
        if s.end is not None and s.error is None:
            by_second.setdefault(int(s.start - t0), []).append(s.end - s.start)
    rows: list[dict[str, Any]] = []
    quiet_latencies: list[float] = []
    for second, values in sorted(by_second.items()):
        start = t0 + second
        foreign = next((c["foreign_pct_of_one_core"] for t, c in cpu if start + 0.5 <= t <= start + 1.5), None)
        rows.append({"second": second, "requests": len(values), "p50_ms": round(percentile(values, 50) * 1000, 2),
                     "p99_ms": round(percentile(values, 99) * 1000, 2), "max_ms": round(max(values) * 1000, 2),
                     "foreign_cpu_pct_of_one_core": foreign})
        if foreign is not None and foreign < quiet:
            quiet_latencies.extend(values)
    return rows, quiet_latencies


async def webhook_latency(tb: Testbed, op: Operator, *, rate: float = 500.0, duration: float = 20.0,
                          warmup: float = 2.0, contention: Contention | None = None,
                          quiet: float = 25.0) -> Figure:
    """Open-loop sender: request i leaves at t0 + i/rate whatever happened to earlier ones (no coordinated
    omission); latency is send -> full response read, per request, with time.perf_counter."""
    url = f"https://127.0.0.1:{op.webhook_port}{WEBHOOK_PATH}"
    obj = dittoserver("bench-webhook", "bench-webhook")
    n_warm, n = int(rate * warmup), int(rate * duration)
    bodies = [admission_review(obj, uid=str(uuid.uuid4())) for _ in range(n_warm + n)]
    uids = [json.loads(b)["request"]["uid"] for b in bodies]
    connections = 0

    async def on_conn(*_: Any) -> None:
        nonlocal connections
        connections += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_conn)
    connector = aiohttp.TCPConnector(ssl=client_ssl(tb.ca_cert_path), limit=64, keepalive_timeout=120)
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=10)
    samples: list[Sample | None] = [None] * (n_warm + n)
    bad: list[str] = []
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace], timeout=timeout) as session:

        async def one(i: int, scheduled: float) -> None:
            start = time.perf_counter()
            try:
                async with session.post(url, data=bodies[i], headers=headers) as resp:
                    raw = await resp.read()
                    end = time.perf_counter()
                    status = resp.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                samples[i] = Sample(scheduled, start, None, 0, f"{type(exc).__name__}: {exc}")
                return
            error = None
            if status != 200:
                error = f"HTTP {status}: {raw[:200]!r}"
            else:
                response = json.loads(raw).get("response") or {}
                if response.get("uid") != uids[i] or response.get("allowed") is not True:
                    error = f"unexpected response: {raw[:300]!r}"
            samples[i] = Sample(scheduled, start, end, status, error)

        async def paced(first: int, count: int) -> tuple[float, float]:
            tasks: list[asyncio.Task[None]] = []
            t0 = time.perf_counter() + 0.05
            for k in range(count):
                scheduled = t0 + k / rate
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(first + k, scheduled)))
            sent_until = time.perf_counter()
            await asyncio.gather(*tasks)
            return t0, sent_until

        # The load generator's own garbage collector must not pause the sender or the stopwatch: collect,
        # freeze what exists (the bodies), and keep GC off for the bounded run.
        gc.collect()
        gc.freeze()
        gc.disable()
        try:
            await paced(0, n_warm)
            metrics_before = op.metrics()
            cpu_before = op.cpu()
            cpu_series: list[tuple[float, dict[str, Any]]] = []
            sampler = asyncio.create_task(_sample_cpu(contention, cpu_series)) if contention else None
            t0, sent_until = await paced(n_warm, n)
            if sampler is not None:
                sampler.cancel()
                await asyncio.gather(sampler, return_exceptions=True)
            cpu_after = op.cpu()
            metrics_after = op.metrics()
        finally:
            gc.enable()
            gc.unfreeze()

    measured = [s for s in samples[n_warm:] if s is not None]
    errors = [s for s in measured if s.error is not None or s.end is None]
    for s in errors[:5]:
        bad.append(s.error or "no response")
    lat = [s.end - s.start for s in measured if s.end is not None and s.error is None]
    lag = [s.start - s.scheduled for s in measured]
    from_schedule = [s.end - s.scheduled for s in measured if s.end is not None and s.error is None]
    hist = "controller_runtime_webhook_latency_seconds"
    server_before, server_after = _histogram(metrics_before, hist), _histogram(metrics_after, hist)
    lat_ms = summary(lat, 1000.0)
    p50, p99 = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
    worst = max(lat) * 1000 if lat else float("nan")
    wall = cpu_after.wall - cpu_before.wall
    rows, quiet_lat = _per_second([s for s in measured], t0, cpu_series, quiet)
    quiet_summary = summary(quiet_lat, 1000.0)
    notes: list[str] = []
    if contention is not None and quiet_lat and len(quiet_lat) < len(lat):
        notes.append(f"in the {sum(1 for r in rows if (r['foreign_cpu_pct_of_one_core'] or 0) < quiet)} of "
                     f"{len(rows)} seconds where other workloads used < {quiet:g}% of a core: p50 "
                     f"{quiet_summary['p50']} ms, p99 {quiet_summary['p99']} ms, max {quiet_summary['max']} ms "
                     f"({len(quiet_lat)} requests)")
    return Figure(
        "webhook_latency", "webhook latency, direct HTTPS, keep-alive, 500 req/s", "p50 < 1 ms, p99 < 5 ms",
        [Check("p50", round(p50, 3), "<", 1.0, "ms"), Check("p99", round(p99, 3), "<", 5.0, "ms"),
         Check("errors", len(errors), "==", 0, "requests")],
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.1f} ms, {len(errors)} errors / {len(measured)}",
        details={
            "requests": len(measured), "warmup_requests": n_warm, "rate_target_rps": rate,
            "rate_achieved_rps": round(n / (sent_until - t0), 1), "duration_s": duration,
            "latency_ms": lat_ms, "errors": len(errors), "error_examples": bad,
            "send_lag_ms": summary(lag, 1000.0), "latency_from_schedule_ms": summary(from_schedule, 1000.0),
            "connections_opened": connections,
            "server_histogram_bucket_upper_bound_ms": {
                "p50": _ms(_bucket_quantile(server_before, server_after, 0.5)),
                "p99": _ms(_bucket_quantile(server_before, server_after, 0.99))},
            "operator_cpu_percent_of_one_core": round(100 * (cpu_after.cpu - cpu_before.cpu) / wall, 1),
            "latency_in_quiet_seconds_ms": quiet_summary,
            "per_second": rows,
            "notes": notes,
            "request_body_bytes": len(bodies[0]),
            "method": "aiohttp client in the bench process (same 2 cores, its GC frozen and disabled during the "
                      "run), TLS 127.0.0.1, keep-alive pool, open-loop paced sender (request i leaves at t0 + i/rate); "
                      "latency = send -> response fully read; body: a DittoServer CREATE AdmissionReview",
        },
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


# -- through the apiserver -----------------------------------------------------------------------------------

def _dry_run_apply(tb: Testbed, namespace: str, obj: dict[str, Any]) -> tuple[int, Any, float]:
    path = (servers_path(namespace, obj["metadata"]["name"])
            + "?fieldManager=bench&force=true&dryRun=All")
    body = json.dumps(obj).encode()
    t = time.perf_counter()
    status, payload = tb.api.request("PATCH", path, body, content_type="application/apply-patch+yaml")
    return status, payload, time.perf_counter() - t


def set_webhook(tb: Testbed, port: int, registered: bool, namespace: str, timeout: float = 30.0) -> float:
    """(Un)register the ValidatingWebhookConfiguration and wait until the apiserver acts on it (it loads
    configurations asynchronously). Returns the seconds that took."""
    t0 = time.perf_counter()
    if registered:
        tb.api.call("POST", WEBHOOKCONFIG_PATH, webhook_configuration(port, tb.ca_b64, WEBHOOK_CONFIG),
                    ok=(409,))
    else:
        tb.api.call("DELETE", f"{WEBHOOKCONFIG_PATH}/{WEBHOOK_CONFIG}", ok=(404,))
    probe = invalid_dittoserver("bench-probe", namespace)
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        status, payload, _ = _dry_run_apply(tb, namespace, probe)
        denied_by_us = status >= 400 and "spec.controlPlane.port" in json.dumps(payload)
        if registered and denied_by_us:
            return time.perf_counter() - t0
        if not registered and 200 <= status < 300:
            return time.perf_counter() - t0
        time.sleep(0.05)
    raise RuntimeError(f"the apiserver did not {'start' if registered else 'stop'} calling the webhook "
                       f"within {timeout:.0f}s")


def admission_overhead(tb: Testbed, op: Operator, namespace: str, *, per_block: int = 150, rounds: int = 2,
                       warmup: int = 15) -> Figure:
    """Server-side dry-run apply of one DittoServer (what `kubectl apply --server-side --dry-run=server`
    sends) over one keep-alive connection, in alternating blocks without / with the webhook registered."""
    tb.api.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": namespace}}, ok=(409,))
    obj = dittoserver("bench-admission", namespace)
    samples: dict[str, list[float]] = {"without": [], "with": []}
    toggles: list[float] = []
    failures: list[str] = []
    for _ in range(rounds):
        for mode in ("without", "with"):
            toggles.append(set_webhook(tb, op.webhook_port, mode == "with", namespace))
            for i in range(warmup + per_block):
                status, payload, seconds = _dry_run_apply(tb, namespace, obj)
                if not 200 <= status < 300:
                    failures.append(f"{mode}: HTTP {status}: {str(payload)[:200]}")
                    continue
                if i >= warmup:
                    samples[mode].append(seconds)
    with_p50 = percentile(samples["with"], 50) * 1000
    without_p50 = percentile(samples["without"], 50) * 1000
    overhead = with_p50 - without_p50
    return Figure(
        "admission_overhead", "admission overhead through the apiserver (dry-run apply, with vs without)",
        "< 5 ms p50",
        [Check("p50 difference", round(overhead, 3), "<", 5.0, "ms"),
         Check("failed requests", len(failures), "==", 0, "requests")],
        f"{overhead:.2f} ms (p50 {with_p50:.2f} ms with, {without_p50:.2f} ms without)",
        details={
            "with_webhook_ms": summary(samples["with"], 1000.0),
            "without_webhook_ms": summary(samples["without"], 1000.0),
            "p90_difference_ms": round((percentile(samples["with"], 90) - percentile(samples["without"], 90))
                                       * 1000, 3),
            "blocks": f"{rounds} x (without, with), {per_block} measured + {warmup} warm-up requests each",
            "registration_wait_s": [round(t, 2) for t in toggles],
            "failures": failures[:5],
            "method": "PATCH application/apply-patch+yaml ?dryRun=All&fieldManager=bench&force=true, admin "
                      "client, one keep-alive connection; 'without' = ValidatingWebhookConfiguration deleted",
        },
    )
