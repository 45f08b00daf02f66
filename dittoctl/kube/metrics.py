"""Prometheus metrics with controller-runtime names, so existing dashboards work unchanged."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONTROLLER = "dittoserver"
RECONCILE_TOTAL = Counter("controller_runtime_reconcile_total", "Reconciliations per result",
                          ["controller", "result"])
RECONCILE_ERRORS = Counter("controller_runtime_reconcile_errors_total", "Failed reconciliations",
                           ["controller"])
RECONCILE_TIME = Histogram("controller_runtime_reconcile_time_seconds", "Time per reconciliation",
                           ["controller"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
LEADER = Gauge("leader_election_master_status", "1 while this replica holds the Lease", ["name"])
SERVERS = Gauge("dittofs_operator_dittoservers", "DittoServers by phase", ["phase"])
DITTOFS_REQUESTS = Counter("dittofs_operator_dittofs_requests_total",
                           "REST requests the operator sent to DittoFS servers (a drift pass over an unchanged "
                           "server sends only GET)", ["method"])
PROVISIONING_FAILURES = Counter("dittofs_operator_provisioning_failures_total",
                                "Passes whose file-service provisioning failed, by Provisioned reason (each is retried "
                                "with backoff: a rate above 0 means a server is not serving what it declares)",
                                ["reason"])
API_REQUESTS = Counter("rest_client_requests_total", "Requests to the Kubernetes API server by method and HTTP "
                       "code (0: unreachable); watch streams count once per (re)connect", ["code", "method"])
RECONCILE_ERRORS.labels(CONTROLLER)  # a sample of 0 from the start: rate() and absent() alerts need one
PHASES = ("Pending", "Running", "Stopped", "Degraded", "Failed", "Deleting")


def observe_reconcile(result: str, seconds: float) -> None:
    RECONCILE_TOTAL.labels(CONTROLLER, result).inc()
    RECONCILE_TIME.labels(CONTROLLER).observe(seconds)
    if result == "error":
        RECONCILE_ERRORS.labels(CONTROLLER).inc()
