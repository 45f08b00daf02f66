"""Names and labels of everything the operator creates for a DittoServer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dittoctl.api.models import API_VERSION, KIND, DittoServer

MANAGER = "dittofs-operator"
FINALIZER = "dittofs.dittofs.com/finalizer"
PAUSE_ANNOTATION = "dittofs.dittofs.com/reconcile"
HASH_ANNOTATION = "dittofs.io/config-hash"
APPLIED_ANNOTATION = "dittofs.io/applied-hash"
# On the control-plane PVC: what the operator created in DittoFS, kept exactly as long as the data is.
OWNERSHIP_ANNOTATION = "dittofs.io/provisioned"
# On a PerconaPGCluster kept when its server is deleted: the server's uid, in place of an ownerReference, which
# a foreground deletion would have the garbage collector follow whatever our finalizer says.
OWNER_ANNOTATION = "dittofs.io/owner-uid"
# On a database kept when its server went: the server's name, so that a new server of that name (and only it)
# takes it back; a cluster without either mark is someone else's and is never applied to.
RELEASED_ANNOTATION = "dittofs.io/released-from"
# On a DittoServer whose database was deleted under it: the user's consent to a new, empty one.
RECREATE_DATABASE_ANNOTATION = "dittofs.dittofs.com/recreate-database"
# On a DittoServer: the user's consent that declared objects found made by hand in DittoFS become the operator's.
ADOPT_ANNOTATION = "dittofs.dittofs.com/adopt"
# On a DittoServer: the user's consent that the PerconaPGCluster's fields edited on it get the server's values.
RECLAIM_PERCONA_ANNOTATION = "dittofs.dittofs.com/reclaim-percona"
CONSENT = "true"  # the value of a consent annotation; any other is none
ORPHAN_FINALIZER = "orphan"  # the garbage collector's, while `kubectl delete --cascade=orphan` runs
# The StatefulSet's volume claim templates (a PVC is named <template>-<statefulset>-0).
CONTROL_PLANE_VOLUME = "controlplane"
METADATA_VOLUME = "metadata"
CONTENT_VOLUME = "content"
CONTAINER = "dittofs"  # the server pod's container
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
CONFIG_FILE = "config.yaml"
CONFIG_DIR = "/config"
DEFAULT_OPERATOR_NAMESPACE = "dittofs-system"  # the chart's default namespace


@dataclass(frozen=True)
class Names:
    """Every child name derived from one DittoServer."""

    server: str
    namespace: str
    uid: str

    @classmethod
    def of(cls, server: DittoServer) -> Names:
        meta = server.metadata
        return cls(str(meta.get("name", "")), str(meta.get("namespace", "default")), str(meta.get("uid", "")))

    @property
    def statefulset(self) -> str:
        return self.server

    @property
    def config_map(self) -> str:
        return f"{self.server}-config"

    @property
    def headless_service(self) -> str:
        return f"{self.server}-headless"

    @property
    def file_service(self) -> str:
        return f"{self.server}-file"

    @property
    def api_service(self) -> str:
        return f"{self.server}-api"

    @property
    def metrics_service(self) -> str:
        return f"{self.server}-metrics"

    @property
    def service_monitor(self) -> str:
        return f"{self.server}-metrics"

    @property
    def api_certificate(self) -> str:
        return f"{self.server}-api"

    @property
    def operator_certificate(self) -> str:
        return f"{self.server}-operator-client"

    @property
    def network_policy(self) -> str:
        return f"{self.server}-ingress"

    @property
    def jwt_secret(self) -> str:
        return f"{self.server}-jwt"

    @property
    def admin_secret(self) -> str:
        return f"{self.server}-admin-bootstrap-credentials"

    @property
    def operator_secret(self) -> str:
        return f"{self.server}-operator-credentials"

    @property
    def pod(self) -> str:
        """The server's pod (DittoFS is single-writer: at most one replica, ordinal 0)."""
        return f"{self.statefulset}-0"

    @property
    def control_plane_claim(self) -> str:
        """The pod's control-plane PVC (the StatefulSet controller names it <template>-<pod>)."""
        return f"{CONTROL_PLANE_VOLUME}-{self.pod}"

    @property
    def content_claim(self) -> str:
        return f"{CONTENT_VOLUME}-{self.pod}"

    @property
    def percona_cluster(self) -> str:
        return f"{self.server}-postgres"

    @property
    def percona_user_secret(self) -> str:
        return f"{self.percona_cluster}-pguser-dittofs"

    def selector(self) -> dict[str, str]:
        """Pod selector: immutable, so only name + instance."""
        return {NAME_LABEL: "dittofs", INSTANCE_LABEL: self.server}

    def selector_string(self) -> str:
        return selector_string(self.selector())

    def labels(self, component: str) -> dict[str, str]:
        return {
            **self.selector(),
            "app.kubernetes.io/component": component,
            MANAGED_BY_LABEL: MANAGER,
            "app.kubernetes.io/part-of": "dittofs",
        }

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.server,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, name: str, component: str, **extra: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(component),
            "ownerReferences": [self.owner_reference()],
        }
        meta.update(extra)
        return meta

    def owns(self, obj: Mapping[str, Any]) -> bool:
        """Whether `obj` is this server's: by ownerReference, or by ``OWNER_ANNOTATION`` (a kept database;
        only Percona clusters are claimed that way, see `owned_by`)."""
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        return annotations.get(OWNER_ANNOTATION) == self.uid or owned_by(obj, self.uid)

    def host(self, service: str) -> str:
        return f"{service}.{self.namespace}.svc"

    def consent(self, annotation: str) -> str:
        """The command that gives the user's consent ``annotation`` on this server."""
        return f"kubectl -n {self.namespace} annotate dittoserver {self.server} {annotation}={CONSENT}"


def url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address (a pod's, on an IPv6 cluster) in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def released_to(obj: Mapping[str, Any], name: str) -> bool:
    """Whether `obj` (a Percona cluster) was kept by a deleted server named `name`, and is owned by none."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return annotations.get(RELEASED_ANNOTATION) == name and OWNER_ANNOTATION not in annotations


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether an ownerReference of `obj` names `uid`: the mark of every child the garbage collector may delete
    with its server."""
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def selector_string(labels: Mapping[str, str], *, negated: bool = False) -> str:
    """A label selector for list/watch calls (``k=v,k2=v2``); negated, each label differs or is absent
    (``k!=v,k2!=v2``)."""
    return ",".join(f"{k}{'!=' if negated else '='}{v}" for k, v in labels.items())
