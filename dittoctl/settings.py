"""`dittoctl run`'s settings, apart from the operator: the CLI takes its flags' defaults from here without
importing kopf and the reconciler (the offline commands start fast)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunSettings:
    """Everything `dittoctl run` can be told, from flags or DITTOFS_OPERATOR_* variables."""

    kubeconfig: str | None = None
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    reconciler: bool = True
    webhook: bool = True
    webhook_host: str = ""  # every address, IPv6 too: the apiserver must reach the pod, on an IPv6 cluster too
    webhook_port: int = 9443
    cert_dir: str = "/tmp/k8s-webhook-server/serving-certs"  # noqa: S108 - controller-runtime's default
    tls_mode: str = "provided"
    webhook_config_name: str = "dittofs-operator"
    service_name: str = "dittofs-operator-webhook"
    service_namespace: str = "dittofs-system"
    health_host: str = ""
    health_port: int = 8081
    leader_election: bool = False
    lease_name: str = "dittofs-operator"
    lease_namespace: str = "dittofs-system"
    log_level: str = "INFO"
    log_format: str = "json"
    workers: int = 32  # passes mostly wait on the API: more in flight keep a burst moving (bench, issue 15)
    drift_interval: float = 300.0
    shutdown_delay: float = 0.0
    """Seconds the webhook keeps answering, unready, after a stop signal: the apiserver may still route to this pod
    until its endpoint is gone, and a request meeting a closed listener fails its admission (the chart sets it)."""
    server_address: str = "service"
    provision_networks: list[str] = field(default_factory=list)
    operator_namespace: str = "dittofs-system"
    """Where the operator runs; every DittoServer's NetworkPolicy lets this namespace in."""
