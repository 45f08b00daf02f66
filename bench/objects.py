"""The objects the benchmarks send: DittoServers and AdmissionReview requests."""

from __future__ import annotations

import json
import uuid
from typing import Any

from dittoctl.api.kinds import DITTOSERVERS, kind_of

GROUP = DITTOSERVERS.group
VERSION = DITTOSERVERS.version
API_VERSION = DITTOSERVERS.api_version
KIND = DITTOSERVERS.kind
PLURAL = DITTOSERVERS.plural


def servers_path(namespace: str, name: str | None = None) -> str:
    return DITTOSERVERS.path(namespace, name)


def object_path(obj: dict[str, Any]) -> str:
    """The REST path of a Kubernetes object (its kind must be one the operator knows)."""
    return kind_of(obj).path(obj["metadata"].get("namespace"), obj["metadata"]["name"])


def dittoserver(name: str, namespace: str, storage_class: str = "standard") -> dict[str, Any]:
    """A realistic DittoServer: explicit sizes and class, both adapters, metrics, logging, resources,
    Service annotations. No Secret references, so admission needs no Secret lookups (the common case:
    the operator generates the JWT and admin Secrets)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "bench"}},
        "spec": {
            "replicas": 1,
            "storage": {"metadataSize": "1Gi", "contentSize": "5Gi", "controlPlaneSize": "1Gi",
                        "storageClassName": storage_class},
            "database": {"type": "sqlite"},
            "adapters": {"nfs": {"enabled": True, "port": 12049}, "smb": {"enabled": True, "port": 1445}},
            "controlPlane": {"port": 8080},
            "metrics": {"enabled": True, "port": 9090, "path": "/metrics"},
            "logging": {"level": "INFO", "format": "json"},
            "service": {"type": "ClusterIP", "annotations": {"example.com/team": "storage"}},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                          "limits": {"memory": "512Mi"}},
            "podLabels": {"team": "storage"},
        },
    }


def invalid_dittoserver(name: str, namespace: str) -> dict[str, Any]:
    """Valid for the CRD schema but denied by the webhook (controlPlane.port == adapters.nfs.port)."""
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name, "namespace": namespace},
            "spec": {"storage": {"metadataSize": "1Gi"}, "controlPlane": {"port": 12049}}}


def admission_review(obj: dict[str, Any], *, dry_run: bool = False, uid: str | None = None) -> bytes:
    """An AdmissionReview v1 CREATE request as the kube-apiserver sends it for ``obj``."""
    meta = obj["metadata"]
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": GROUP, "version": VERSION, "kind": KIND},
            "resource": {"group": GROUP, "version": VERSION, "resource": PLURAL},
            "requestKind": {"group": GROUP, "version": VERSION, "kind": KIND},
            "requestResource": {"group": GROUP, "version": VERSION, "resource": PLURAL},
            "name": meta["name"],
            "namespace": meta["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "admin", "groups": ["system:masters", "system:authenticated"]},
            "object": {**obj, "metadata": {**meta, "creationTimestamp": None,
                                           "managedFields": [{"manager": "kubectl", "operation": "Apply",
                                                              "apiVersion": API_VERSION,
                                                              "fieldsType": "FieldsV1"}]}},
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "fieldManager": "kubectl"},
        },
    }
    return json.dumps(review).encode()


def fileserver(name: str, namespace: str, *, s3_endpoint: str, placement: dict[str, Any], users: int = 5,
               shares: int = 10, bucket: str = "dittofs-blocks", s3_credentials: str = "s3-creds") -> dict[str, Any]:
    """A DittoServer with a declared file service (docs/FILE_SERVICE.md): ``users`` users ``u0..`` whose
    passwords are in the Secrets ``<name>-u<i>-pw`` (key ``password``), ``shares`` shares ``/s0..`` each
    read-write for one user, the first tiered to one S3 remote store. ``placement`` pins it to a node."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "bench"}},
        "spec": {
            **placement,
            "storage": {"metadataSize": "1Gi", "contentSize": "2Gi"},
            "s3": {"credentialsSecretRef": {"secretName": s3_credentials}, "bucket": bucket},
            "stores": {"remote": [{"name": "s3", "endpoint": s3_endpoint, "allowPrivateEndpoint": True}]},
            "users": [{"name": f"u{i}", "passwordSecretRef": {"name": password_secret(name, i), "key": "password"}}
                      for i in range(users)],
            "shares": [{"name": f"/s{i}", "permissions": [{"user": f"u{i % users}", "level": "read-write"}],
                        **({"remoteBlockStore": "s3"} if i == 0 else {})} for i in range(shares)],
        },
    }


def password_secret(server: str, user: int) -> str:
    return f"{server}-u{user}-pw"
