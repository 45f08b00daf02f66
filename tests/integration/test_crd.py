"""The generated CRD on the real apiserver: accepted, defaults applied, explainable, validating."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kube import kubectl_json
from tests.support.paths import ROOT

pytestmark = pytest.mark.integration


def test_sample_round_trips_with_defaults(crd: Any, namespace: str) -> None:
    sample = yaml.safe_load((ROOT / "config" / "samples" / "dittoserver-minimal.yaml").read_text())
    sample["metadata"]["name"] = "roundtrip"
    sample["metadata"]["namespace"] = namespace
    sample["metadata"]["annotations"] = {"dittofs.dittofs.com/reconcile": "disabled"}  # keep the operator off
    crd.kubectl("apply", "-f", "-", input=json.dumps(sample))
    spec = kubectl_json(crd, "get", "dittoserver", "roundtrip", "-n", namespace)["spec"]
    assert spec["service"]["type"] == "ClusterIP"  # a nested default under an omitted parent
    assert spec["adapters"] == {"nfs": {"enabled": True, "port": 12049, "settings": {}},
                                "smb": {"enabled": False, "port": 1445, "settings": {}}}
    assert spec["controlPlane"] == {"port": 8080}
    assert spec["image"] == "marmos91c/dittofs:v0.29.0" and spec["replicas"] == 1
    assert spec["storage"]["controlPlaneSize"] == "1Gi" and "cacheSize" not in spec["storage"]
    assert spec["percona"]["backup"]["enabled"] is False
    assert spec["identity"]["jwt"]["accessTokenDuration"] == "15m"


def test_kubectl_explain_uses_the_docstrings(crd: Any) -> None:
    out = crd.kubectl("explain", "dittoserver.spec.storage.metadataSize").stdout
    assert "/data/store/metadata" in out
    assert "single-writer" in crd.kubectl("explain", "ditto.spec.replicas").stdout  # short name works too


def test_schema_rejects_bad_types_before_any_webhook(crd: Any, namespace: str) -> None:
    bad = {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
           "metadata": {"name": "bad", "namespace": namespace},
           "spec": {"storage": {"metadataSize": "1Gi"}, "replicas": 5, "logging": {"level": "LOUD"}}}
    result = crd.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0
    assert "spec.replicas" in result.stderr and "spec.logging.level" in result.stderr


def test_two_appliers_each_keep_their_own_users_and_shares(crd: Any, namespace: str) -> None:
    """Named lists are maps to server-side apply: a second manager's entries join the first's (atomic, the last
    applier replaced the list, and the operator deleted the other's users and shares in DittoFS)."""
    def applied(users: list[str], shares: list[str]) -> str:
        return json.dumps({"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
                           "metadata": {"name": "shared", "namespace": namespace,
                                        "annotations": {"dittofs.dittofs.com/reconcile": "disabled"}},
                           "spec": {"storage": {"metadataSize": "1Gi"},
                                    "users": [{"name": u, "passwordSecretRef": {"name": "pw", "key": u}}
                                              for u in users],
                                    "shares": [{"name": s} for s in shares]}})

    crd.kubectl("apply", "--server-side", "--field-manager=argocd", "-f", "-", input=applied(["alice"], ["/a"]))
    crd.kubectl("apply", "--server-side", "--field-manager=team", "-f", "-", input=applied(["bob"], ["/b"]))
    spec = kubectl_json(crd, "get", "dittoserver", "shared", "-n", namespace)["spec"]
    assert [u["name"] for u in spec["users"]] == ["alice", "bob"]
    assert [s["name"] for s in spec["shares"]] == ["/a", "/b"]
    # A manager dropping its entry removes only that one.
    crd.kubectl("apply", "--server-side", "--field-manager=team", "-f", "-", input=applied([], []))
    spec = kubectl_json(crd, "get", "dittoserver", "shared", "-n", namespace)["spec"]
    assert [u["name"] for u in spec["users"]] == ["alice"] and [s["name"] for s in spec["shares"]] == ["/a"]


def test_dittoctl_validate_with_cluster_lookups(crd: Any, namespace: str, tmp_path: Path) -> None:
    doc = {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
           "metadata": {"name": "v", "namespace": namespace},
           "spec": {"storage": {"metadataSize": "1Gi", "storageClassName": "no-such-class"},
                    "s3": {"credentialsSecretRef": {"secretName": "missing-s3"}}}}
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump(doc))
    base = [sys.executable, "-m", "dittoctl", "validate", "-f", str(path), "-o", "json"]
    offline = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert offline.returncode == 0, offline.stdout + offline.stderr  # nothing to look up offline
    online = subprocess.run([*base, "--cluster", "--kubeconfig", str(crd.kubeconfig)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert online.returncode == 1, online.stdout + online.stderr
    (result,) = json.loads(online.stdout)
    assert any("spec.storage.storageClassName" in e and "no-such-class" in e for e in result["errors"])
    assert any("missing-s3" in w for w in result["warnings"])
    # A manifest without a namespace is checked where `kubectl apply -n` would create it.
    crd.kubectl("create", "secret", "generic", "jwt", "-n", namespace, "--from-literal=k=" + "s" * 20)
    doc = {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer", "metadata": {"name": "w"},
           "spec": {"storage": {"metadataSize": "1Gi"},
                    "identity": {"jwt": {"secretRef": {"name": "jwt", "key": "k"}}}}}
    path.write_text(yaml.safe_dump(doc))
    there = subprocess.run([*base, "--cluster", "--kubeconfig", str(crd.kubeconfig), "-n", namespace], cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=False)
    (result,) = json.loads(there.stdout)
    assert there.returncode == 1 and any("needs at least 32 characters" in e for e in result["errors"]), result


def test_what_dittoctl_validate_refuses_by_type_the_apiserver_refuses(crd: Any, namespace: str,
                                                                      tmp_path: Path) -> None:
    """dittoctl validate's type errors (tests/unit/test_cli.py) are the apiserver's own."""
    from tests.unit.test_cli import LAX

    path = tmp_path / "lax.yaml"
    path.write_text(LAX)
    applied = crd.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
    assert applied.returncode != 0, applied.stdout
    for field in ("spec.replicas", "spec.adapters.nfs.port", "spec.users[0].uid", "spec.storage.contentSize",
                  "spec.service.annotations.a"):
        assert field in applied.stderr, (field, applied.stderr)
    fixed = LAX.replace('"1"', "1").replace('"2049"', "2049").replace('"1000"', "1000").replace(
        "contentSize: 2", "contentSize: 2Gi").replace("a: 1", 'a: "1"')
    path.write_text(fixed)
    validated = subprocess.run([sys.executable, "-m", "dittoctl", "validate", "-f", str(path)], cwd=ROOT,
                               capture_output=True, text=True, timeout=60, check=False)
    assert validated.returncode == 0, validated.stdout
    assert crd.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path)).returncode == 0
