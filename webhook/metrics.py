"""Webhook metrics, named like controller-runtime's so existing dashboards work (default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("controller_runtime_webhook_requests_total",
                   "Admission requests by HTTP status code", ["webhook", "code"])
LATENCY = Histogram("controller_runtime_webhook_latency_seconds", "Time to answer an admission request",
                    ["webhook"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                          1, 2.5, 5, 10))
IN_FLIGHT = Gauge("controller_runtime_webhook_requests_in_flight", "Admission requests being served",
                  ["webhook"])
CERT_EXPIRY = Gauge("dittofs_operator_webhook_certificate_expiration_timestamp_seconds",
                    "notAfter (Unix time) of the serving certificate currently loaded")
