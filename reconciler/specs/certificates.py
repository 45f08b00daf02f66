"""cert-manager Certificates for the REST API, when controlPlane.tls.certificate asks the operator to request
them: the serving certificate for the API Service, and with mutual TLS the operator's client certificate."""

from __future__ import annotations

from typing import Any

from dittoctl.api.kinds import CERTIFICATES
from dittoctl.api.models import CertificateSpec, DittoServerSpec
from dittoctl.api.naming import Names


def _certificate(names: Names, name: str, secret: str, request: CertificateSpec, dns_names: list[str],
                 usages: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "secretName": secret,
        "dnsNames": dns_names,
        "usages": usages,
        "issuerRef": request.issuer_ref.model_dump(),
        # ECDSA P-256: small and fast, like the operator's own certificates; a new key at every renewal.
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
    }
    if request.duration:
        spec["duration"] = request.duration
    if request.renew_before:
        spec["renewBefore"] = request.renew_before
    return {"apiVersion": CERTIFICATES.api_version, "kind": CERTIFICATES.kind,
            "metadata": names.metadata(name, "api"), "spec": spec}


def certificates(spec: DittoServerSpec, names: Names) -> list[dict[str, Any]]:
    """The Certificates wanted ([] when the user provides the Secrets; the caller prunes ours)."""
    tls = spec.control_plane.tls
    if tls is None or tls.certificate is None:
        return []
    service = names.api_service
    # The names the operator and in-cluster clients use (the operator verifies <svc>.<ns>.svc).
    dns = [service, f"{service}.{names.namespace}", names.host(service), f"{names.host(service)}.cluster.local"]
    wanted = [_certificate(names, names.api_certificate, tls.secret_name, tls.certificate, dns,
                           ["digital signature", "server auth"])]
    if tls.client_ca_secret_name and tls.operator_client_secret_name:
        wanted.append(_certificate(names, names.operator_certificate, tls.operator_client_secret_name,
                                   tls.certificate, ["dittofs-operator"], ["digital signature", "client auth"]))
    return wanted
