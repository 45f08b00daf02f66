"""The operator process against the real control plane: SPEC §3.2, §4, §5, §6 end to end."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from tests.support.kube import apply_server, condition, events, kubectl_json, server, wait_ready
from tests.support.operator import OperatorProcess
from tests.support.poll import eventually

pytestmark = pytest.mark.integration
OPERATOR_USER = "dittofs-operator"


def template_hash(testbed: Any, namespace: str, name: str = "demo") -> str:
    sts = kubectl_json(testbed, "get", "statefulset", name, "-n", namespace)
    return str(sts["spec"]["template"]["metadata"]["annotations"]["dittofs.io/config-hash"])


def operator_writes(testbed: Any, since: int) -> list[dict[str, Any]]:
    writes = {"create", "update", "patch", "delete", "deletecollection"}
    result: list[dict[str, Any]] = [e for e in testbed.audit_events(user=OPERATOR_USER, since_line=since)
                                    if e.get("verb") in writes]
    return result


def test_minimal_server_becomes_ready(testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    apply_server(testbed, namespace)
    obj = wait_ready(testbed, namespace)
    status = obj["status"]
    assert status["phase"] == "Running" and status["ready"] == "1/1"
    assert status["endpoints"]["nfs"] == f"demo-file.{namespace}.svc:12049"
    assert status["configHash"] == template_hash(testbed, namespace)
    pod = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)
    assert pod["status"]["phase"] == "Running" and pod["spec"]["nodeName"] == "kwok-node-0"
    assert "dittofs.dittofs.com/finalizer" in obj["metadata"]["finalizers"]
    for kind, name in (("configmap", "demo-config"), ("service", "demo-headless"), ("service", "demo-api"),
                       ("service", "demo-file"), ("secret", "demo-jwt"),
                       ("secret", "demo-admin-bootstrap-credentials")):
        child = kubectl_json(testbed, "get", kind, name, "-n", namespace)
        ref = child["metadata"]["ownerReferences"][0]
        assert ref["uid"] == obj["metadata"]["uid"] and ref["controller"] is True, (kind, name)
    jwt = kubectl_json(testbed, "get", "secret", "demo-jwt", "-n", namespace)
    assert len(base64.b64decode(jwt["data"]["jwt-secret"])) == 64
    # `kubectl wait` works on the condition
    testbed.kubectl("wait", "--for=condition=Ready", "dittoserver/demo", "-n", namespace, "--timeout=30s")
    printed = testbed.kubectl("get", "ditto", "demo", "-n", namespace).stdout
    assert "1/1" in printed and "Running" in printed
    assert events(testbed, namespace, "Created")
    metrics = operator.metrics()
    assert 'controller_runtime_reconcile_total{controller="dittoserver",result="success"}' in metrics
    assert "controller_runtime_reconcile_time_seconds_bucket" in metrics
    assert 'dittofs_operator_dittoservers{phase="Running"}' in metrics
    assert 'leader_election_master_status{name="dittofs-operator"} 1.0' in metrics
    log_lines = [json.loads(line) for line in operator.log_text().splitlines() if line.startswith("{")]
    applied = [e for e in log_lines if e.get("namespace") == namespace and e["msg"].startswith("applied")]
    assert applied and all(e["name"] for e in applied), "one JSON line per action with namespace/name"


def test_config_secret_and_scale_changes(testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    apply_server(testbed, namespace)
    wait_ready(testbed, namespace)
    first = template_hash(testbed, namespace)
    old_pod_uid = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["metadata"]["uid"]

    # A Service annotation (and a pod label) must not restart the file server.
    apply_server(testbed, namespace, service={"annotations": {"team": "storage"}})
    eventually(lambda: kubectl_json(testbed, "get", "service", "demo-api", "-n", namespace)["metadata"]
               .get("annotations", {}).get("team") == "storage", what="service annotation")
    wait_ready(testbed, namespace)
    assert template_hash(testbed, namespace) == first

    # A logging change rolls the pod and says so.
    apply_server(testbed, namespace, service={"annotations": {"team": "storage"}}, logging={"level": "DEBUG"})
    eventually(lambda: template_hash(testbed, namespace) != first, what="new config hash")
    second = template_hash(testbed, namespace)
    eventually(lambda: kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["metadata"]["uid"]
               != old_pod_uid, timeout=90, what="pod rolled")
    wait_ready(testbed, namespace)
    updated = events(testbed, namespace, "ConfigUpdated")
    assert updated and "ConfigMap demo-config updated" in updated[0]["message"]

    # Rotating the JWT Secret rolls it again and names the Secret, never its data.
    new_value = "r" * 64
    testbed.kubectl("patch", "secret", "demo-jwt", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"stringData": {"jwt-secret": new_value}}))
    eventually(lambda: template_hash(testbed, namespace) != second, what="hash after rotation")
    rotated = eventually(lambda: events(testbed, namespace, "SecretRotated"), what="SecretRotated event")
    assert "demo-jwt" in rotated[0]["message"] and new_value not in json.dumps(rotated)

    # replicas: 0 stops the server.
    apply_server(testbed, namespace, service={"annotations": {"team": "storage"}}, logging={"level": "DEBUG"},
                 replicas=0)
    stopped = eventually(lambda: (s := server(testbed, namespace))["status"].get("phase") == "Stopped" and s,
                         timeout=90, what="phase Stopped")
    assert stopped["status"]["ready"] == "0/0"
    assert condition(stopped, "Available")["reason"] == "Stopped"  # type: ignore[index]
    assert events(testbed, namespace, "Scaled")


def test_children_are_repaired_and_unchanged_objects_cost_no_writes(
        testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    apply_server(testbed, namespace)
    wait_ready(testbed, namespace)
    testbed.kubectl("delete", "service", "demo-api", "-n", namespace)
    eventually(lambda: testbed.kubectl("get", "service", "demo-api", "-n", namespace, check=False)
               .returncode == 0, what="Service recreated")
    testbed.kubectl("patch", "statefulset", "demo", "-n", namespace, "--type=json", "-p", json.dumps(
        [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "busybox:evil"}]))
    eventually(lambda: kubectl_json(testbed, "get", "statefulset", "demo", "-n", namespace)["spec"]["template"]
               ["spec"]["containers"][0]["image"] == "marmos91c/dittofs:v0.29.0", what="StatefulSet repaired")
    wait_ready(testbed, namespace)
    repairs = [w for w in operator_writes(testbed, 0) if (w.get("objectRef") or {}).get("namespace") == namespace]
    assert any(w["objectRef"]["resource"] == "services" for w in repairs), "the audit log must see our writes"
    time.sleep(3)  # let the last watch events settle
    mark = testbed.audit_line_count()
    time.sleep(12)  # more than two drift passes (interval 5 s)
    writes = [w for w in operator_writes(testbed, mark)
              if (w.get("objectRef") or {}).get("namespace") == namespace]
    assert writes == [], f"unchanged objects were written: {[(w['verb'], w['objectRef']) for w in writes]}"


def test_deletion_keeps_pvcs_and_removes_finalizer(testbed: Any, operator: OperatorProcess,
                                                    namespace: str) -> None:
    apply_server(testbed, namespace)
    wait_ready(testbed, namespace)
    pvcs = {p["metadata"]["name"] for p in kubectl_json(testbed, "get", "pvc", "-n", namespace)["items"]}
    assert pvcs == {"controlplane-demo-0", "metadata-demo-0", "content-demo-0"}
    testbed.kubectl("delete", "dittoserver", "demo", "-n", namespace, "--wait=false")
    eventually(lambda: testbed.kubectl("get", "dittoserver", "demo", "-n", namespace, check=False)
               .returncode != 0, timeout=75, what="DittoServer gone")
    remaining = {p["metadata"]["name"] for p in kubectl_json(testbed, "get", "pvc", "-n", namespace)["items"]}
    assert remaining == pvcs
    assert events(testbed, namespace, "Deleting")


def test_restart_mid_reconcile_converges_without_duplicates(testbed: Any, operator: OperatorProcess,
                                                             namespace: str) -> None:
    for i in range(5):
        apply_server(testbed, namespace, name=f"s{i}")
    time.sleep(0.5)
    operator.kill()
    operator.start()
    for i in range(5):
        wait_ready(testbed, namespace, f"s{i}", timeout=120)
    secrets = [s["metadata"]["name"] for s in kubectl_json(testbed, "get", "secrets", "-n", namespace)["items"]]
    assert sorted(secrets) == sorted([f"s{i}-jwt" for i in range(5)]
                                     + [f"s{i}-admin-bootstrap-credentials" for i in range(5)])
    stses = kubectl_json(testbed, "get", "statefulsets", "-n", namespace)["items"]
    assert sorted(s["metadata"]["name"] for s in stses) == [f"s{i}" for i in range(5)]


def test_a_waiting_server_does_not_flood_events(testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    # The JWT Secret does not exist: the server waits (ConfigReady=False/MissingSecret) on every drift pass.
    apply_server(testbed, namespace, identity={"jwt": {"secretRef": {"name": "absent", "key": "k"}}})
    def configured() -> dict[str, Any] | None:
        obj = server(testbed, namespace)
        return obj if condition(obj, "ConfigReady") else None

    obj = eventually(configured, what="ConfigReady condition")
    cond = condition(obj, "ConfigReady")
    assert cond is not None and cond["status"] == "False" and cond["reason"] == "MissingSecret"
    assert "absent" in cond["message"]
    time.sleep(15)  # three drift passes
    assert len(events(testbed, namespace)) <= 2
    assert testbed.kubectl("get", "statefulset", "demo", "-n", namespace, check=False).returncode != 0
    # Creating the Secret is noticed at once through the Secret index.
    testbed.kubectl("create", "secret", "generic", "absent", "-n", namespace, "--from-literal=k=" + "x" * 40)
    wait_ready(testbed, namespace)


def test_paused_server_is_left_alone(testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    apply_server(testbed, namespace)
    wait_ready(testbed, namespace)
    testbed.kubectl("annotate", "dittoserver", "demo", "-n", namespace, "dittofs.dittofs.com/reconcile=disabled")
    eventually(lambda: (c := condition(server(testbed, namespace), "ReconciliationPaused")) and c["status"] == "True",
               what="paused condition")
    testbed.kubectl("delete", "service", "demo-api", "-n", namespace)
    time.sleep(3)
    assert testbed.kubectl("get", "service", "demo-api", "-n", namespace, check=False).returncode != 0
    testbed.kubectl("annotate", "dittoserver", "demo", "-n", namespace, "dittofs.dittofs.com/reconcile-")
    eventually(lambda: testbed.kubectl("get", "service", "demo-api", "-n", namespace, check=False)
               .returncode == 0, what="resumed")
