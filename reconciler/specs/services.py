"""The Services of a DittoServer (SPEC §4.5)."""

from __future__ import annotations

from typing import Any

from dittoctl.api.models import DittoServerSpec
from dittoctl.api.naming import Names


def _port(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "port": port, "targetPort": name, "protocol": "TCP"}


def _file_port(name: str, port: int) -> dict[str, Any]:
    # A number, not the container port's name: adapter ports move live, without a pod template change.
    return {"name": name, "port": port, "targetPort": port, "protocol": "TCP"}


def api_port(spec: DittoServerSpec) -> dict[str, Any]:
    return _port("api", spec.control_plane.port)


def file_ports(spec: DittoServerSpec) -> list[dict[str, Any]]:
    return [_file_port(kind, adapter.port) for kind, adapter in spec.adapters.enabled()]


def _service(names: Names, name: str, component: str, spec_body: dict[str, Any],
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta = names.metadata(name, component)
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec_body}


def _exposed(spec: DittoServerSpec, ports: list[dict[str, Any]], names: Names) -> dict[str, Any]:
    body: dict[str, Any] = {"type": spec.service.type, "selector": names.selector(), "ports": ports}
    if spec.service.type == "LoadBalancer" and spec.service.load_balancer_source_ranges:
        body["loadBalancerSourceRanges"] = list(spec.service.load_balancer_source_ranges)
    return body


def services(spec: DittoServerSpec, names: Names) -> list[dict[str, Any]]:
    """Desired Services; the metrics Service only when metrics are enabled (the caller deletes it otherwise)."""
    nfs = [p for p in file_ports(spec) if p["name"] == "nfs"]
    result = [
        _service(names, names.headless_service, "server", {
            "clusterIP": "None", "selector": names.selector(), "publishNotReadyAddresses": True,
            "ports": [api_port(spec), *nfs],
        }),
        _service(names, names.api_service, "api", _exposed(spec, [api_port(spec)], names),
                 spec.service.annotations),
    ]
    if file_ports(spec):
        result.append(_service(names, names.file_service, "file", _exposed(spec, file_ports(spec), names),
                               spec.service.annotations))
    if spec.metrics.enabled:
        result.append(_service(names, names.metrics_service, "metrics", {
            "type": "ClusterIP", "selector": names.selector(), "ports": [_port("metrics", spec.metrics.port)],
        }, {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(spec.metrics.port),
            "prometheus.io/path": spec.metrics.path,
        }))
    return result


def endpoints(spec: DittoServerSpec, names: Names, listening: set[str] | None = None) -> dict[str, str]:
    """Service addresses; an adapter only once it is proven to listen (``listening`` None: not probed)."""
    result = {"api": f"{names.host(names.api_service)}:{spec.control_plane.port}"}
    for kind, adapter in spec.adapters.enabled():
        if listening is None or kind in listening:
            result[kind] = f"{names.host(names.file_service)}:{adapter.port}"
    return result
