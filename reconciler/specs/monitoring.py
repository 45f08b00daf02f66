"""The Prometheus Operator ServiceMonitor for the <name>-metrics Service."""

from __future__ import annotations

from typing import Any

from dittoctl.api.kinds import SERVICEMONITORS
from dittoctl.api.models import DittoServerSpec
from dittoctl.api.naming import Names


def service_monitor(spec: DittoServerSpec, names: Names) -> dict[str, Any] | None:
    """The ServiceMonitor, or None when metrics or the monitor are off (the caller deletes an existing one).
    Whether the CRD is served is the caller's concern: this stays a pure function of the spec."""
    wanted = spec.metrics.service_monitor
    if not (spec.metrics.enabled and wanted.enabled):
        return None
    meta = names.metadata(names.service_monitor, "metrics")
    meta["labels"] = {**wanted.labels, **meta["labels"]}
    endpoint: dict[str, Any] = {"port": "metrics", "path": spec.metrics.path}
    if wanted.interval is not None:
        endpoint["interval"] = wanted.interval
    return {
        "apiVersion": SERVICEMONITORS.api_version, "kind": SERVICEMONITORS.kind, "metadata": meta,
        "spec": {"selector": {"matchLabels": names.labels("metrics")}, "endpoints": [endpoint],
                 "namespaceSelector": {"matchNames": [names.namespace]}},
    }
