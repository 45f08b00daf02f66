"""Playing the Percona operator's part on the test bed (its CRDs are stand-ins, nothing reconciles them)."""

from __future__ import annotations

import json
from typing import Any

from tests.support.kube import kubectl_json
from tests.support.paths import PERCONA_BACKUP_CRD, PERCONA_CRD
from tests.support.poll import eventually

__all__ = ["PERCONA_BACKUP_CRD", "PERCONA_CRD", "cluster", "install_crd", "percona_spec", "play_percona_ready",
           "wait_gc_follows_clusters"]
CRD_NAME = "perconapgclusters.pgv2.percona.com"


def cluster(testbed: Any, namespace: str, name: str = "demo-postgres") -> dict[str, Any]:
    obj: dict[str, Any] = kubectl_json(testbed, "get", "perconapgcluster", name, "-n", namespace)
    return obj


def install_crd(testbed: Any) -> None:
    """The stand-in CRD, served: a test run on its own must not depend on the one that installs it."""
    testbed.kubectl("apply", "--server-side", "-f", str(PERCONA_CRD))
    testbed.wait_crd(CRD_NAME)


def wait_gc_follows_clusters(testbed: Any, namespace: str) -> None:
    """Until Kubernetes' garbage collector follows PerconaPGClusters (it takes up a new CRD's kind at its next
    discovery resync, up to 30 s), a test of what it would delete could not fail: wait until it deletes a
    dependent of a deleted ConfigMap."""
    testbed.kubectl("create", "configmap", "gc-probe", "-n", namespace)
    uid = kubectl_json(testbed, "get", "configmap", "gc-probe", "-n", namespace)["metadata"]["uid"]
    testbed.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "pgv2.percona.com/v2", "kind": "PerconaPGCluster",
        "metadata": {"name": "gc-probe", "namespace": namespace, "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "gc-probe", "uid": uid}]},
        "spec": {"backups": {"enabled": False}, "postgresVersion": 16,
                 "instances": [{"name": "instance1", "dataVolumeClaimSpec": {}}]}}))
    testbed.kubectl("delete", "configmap", "gc-probe", "-n", namespace)
    eventually(lambda: testbed.kubectl("get", "perconapgcluster", "gc-probe", "-n", namespace,
                                       check=False).returncode != 0,
               timeout=90, interval=1, what="the garbage collector following PerconaPGClusters")


def play_percona_ready(testbed: Any, namespace: str, server_name: str = "demo") -> None:
    """What the Percona operator would do: mark the cluster ready and publish the user Secret."""
    name = f"{server_name}-postgres"
    generation = cluster(testbed, namespace, name)["metadata"]["generation"]
    testbed.kubectl("patch", "perconapgcluster", name, "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"state": "ready", "observedGeneration": generation}}))
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": f"{name}-pguser-dittofs", "namespace": namespace},
              "stringData": {"host": f"{name}-primary.{namespace}.svc", "port": "5432", "dbname": "dittofs",
                             "user": "dittofs", "password": "pw-from-percona-1",
                             "uri": f"postgresql://dittofs:pw-from-percona-1@{name}-primary:5432/dittofs"}}
    testbed.kubectl("apply", "-f", "-", input=json.dumps(secret))


def percona_spec(**extra: Any) -> dict[str, Any]:
    return {"enabled": True, "image": "percona/percona-postgresql-operator:2.8.0-ppg16-postgres", **extra}
