"""The per-server ingress NetworkPolicy (SPEC §13, issue 14): API from the operator and declared sources,
metrics and file ports from their declared sources. Policies only allow; Ingress alone is restricted."""

from __future__ import annotations

from typing import Any

from dittoctl.api.kinds import NETWORKPOLICIES
from dittoctl.api.models import DittoServerSpec, NetworkPeer
from dittoctl.api.naming import Names

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the apiserver on every namespace since 1.22


def _peer(peer: NetworkPeer) -> dict[str, Any]:
    if peer.cidr is not None:
        block: dict[str, Any] = {"cidr": peer.cidr}
        if peer.except_cidrs:
            block["except"] = list(peer.except_cidrs)
        return {"ipBlock": block}
    out: dict[str, Any] = {}
    if peer.namespaces is not None:
        out["namespaceSelector"] = {"matchLabels": dict(peer.namespaces)} if peer.namespaces else {}
    if peer.pods is not None:
        out["podSelector"] = {"matchLabels": dict(peer.pods)} if peer.pods else {}
    return out


def _rule(ports: list[int], peers: list[NetworkPeer] | None, operator_namespace: str | None) -> dict[str, Any]:
    """An ingress rule; ``peers`` None: any source (a rule without `from`). ``operator_namespace``: let in
    first, whatever is declared; the whole namespace, not the operator's pod labels (the chart's to change)."""
    rule: dict[str, Any] = {"ports": [{"port": p, "protocol": "TCP"} for p in ports]}
    if peers is not None:
        operator = ([{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: operator_namespace}}}]
                    if operator_namespace else [])
        rule["from"] = [*operator, *(_peer(p) for p in peers)]
    return rule


def network_policy(spec: DittoServerSpec, names: Names, operator_namespace: str) -> dict[str, Any] | None:
    """The policy, or None when disabled (the caller deletes an existing one)."""
    policy = spec.network_policy
    if not policy.enabled:
        return None
    rules = [_rule([spec.control_plane.port], policy.api_from, operator_namespace)]
    if spec.metrics.enabled and policy.metrics_from != []:
        rules.append(_rule([spec.metrics.port], policy.metrics_from, None))
    file_ports = [a.port for _, a in spec.adapters.enabled()]
    if file_ports:
        # The operator always: it proves the adapters listen (AdaptersReady) with a TCP connect.
        rules.append(_rule(file_ports, policy.file_clients, operator_namespace))
    return {
        "apiVersion": NETWORKPOLICIES.api_version, "kind": NETWORKPOLICIES.kind,
        "metadata": names.metadata(names.network_policy, "server"),
        "spec": {"podSelector": {"matchLabels": names.selector()}, "policyTypes": ["Ingress"], "ingress": rules},
    }
