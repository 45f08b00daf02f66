"""Where each resource the operator touches lives in the REST tree: the one home of groups, versions,
plurals and kind names (the Percona group/version included)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    """Where a resource lives in the REST tree, and how its objects name their type."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def crd_name(self) -> str:
        """The name of the CustomResourceDefinition that serves this kind (fixed by the API: plural.group)."""
        return f"{self.plural}.{self.group}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


DITTOSERVERS = Kind("dittofs.dittofs.com", "v1alpha1", "dittoservers", "DittoServer")
CRD_NOT_SERVED = (f"the DittoServer CRD ({DITTOSERVERS.crd_name}, version "
                  f"{DITTOSERVERS.version}) is not served: install it with `dittoctl crd | kubectl apply -f -` "
                  "(the Helm chart installs it while its value crds.install is true)")
STATEFULSETS = Kind("apps", "v1", "statefulsets", "StatefulSet")
SERVICES = Kind("", "v1", "services", "Service")
CONFIGMAPS = Kind("", "v1", "configmaps", "ConfigMap")
SECRETS = Kind("", "v1", "secrets", "Secret")
PODS = Kind("", "v1", "pods", "Pod")
PVCS = Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
EVENTS = Kind("", "v1", "events", "Event")
STORAGECLASSES = Kind("storage.k8s.io", "v1", "storageclasses", "StorageClass", namespaced=False)
NETWORKPOLICIES = Kind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy")
CERTIFICATES = Kind("cert-manager.io", "v1", "certificates", "Certificate")
SERVICEMONITORS = Kind("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor")
PERCONAPGCLUSTERS = Kind("pgv2.percona.com", "v2", "perconapgclusters", "PerconaPGCluster")
PERCONAPGBACKUPS = Kind("pgv2.percona.com", "v2", "perconapgbackups", "PerconaPGBackup")
LEASES = Kind("coordination.k8s.io", "v1", "leases", "Lease")
WEBHOOKCONFIGS = Kind("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations",
                      "ValidatingWebhookConfiguration", namespaced=False)
_BY_API = {(k.api_version, k.kind): k for k in (
    DITTOSERVERS, STATEFULSETS, SERVICES, CONFIGMAPS, SECRETS, PODS, PVCS, EVENTS, STORAGECLASSES, NETWORKPOLICIES,
    SERVICEMONITORS, CERTIFICATES, PERCONAPGCLUSTERS, PERCONAPGBACKUPS, LEASES, WEBHOOKCONFIGS)}


def kind_of(obj: Mapping[str, Any]) -> Kind:
    return _BY_API[(str(obj["apiVersion"]), str(obj["kind"]))]
