"""Playing the Percona operator's part on the test bed (its CRDs are stand-ins, nothing reconciles them)."""

from __future__ import annotations

import json
from typing import Any

from tests.support.kube import kubectl_json
from tests.support.paths import PERCONA_BACKUP_CRD, PERCONA_CRD

__all__ = ["PERCONA_BACKUP_CRD", "PERCONA_CRD", "cluster", "percona_spec", "play_percona_ready"]


def cluster(testbed: Any, namespace: str, name: str = "demo-postgres") -> dict[str, Any]:
    obj: dict[str, Any] = kubectl_json(testbed, "get", "perconapgcluster", name, "-n", namespace)
    return obj


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
