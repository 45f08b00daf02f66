"""The operator process against the real control plane: SPEC §3.2, §4, §5, §6 end to end."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.kube import absent, apply_server, condition, events, kubectl_json, server, wait_ready
from tests.support.operator import OPERATOR_NAMESPACE, OperatorProcess
from tests.support.poll import eventually
from tests.testbed.certmanager import CertManager
from tests.testbed.cluster import OPERATOR_USER
from tests.testbed.paths import certificate_crd, servicemonitor_crd
from tests.testbed.provisioner import PROVISIONER_NAME

pytestmark = pytest.mark.integration


def template_hash(testbed: Any, namespace: str, name: str = "demo") -> str:
    sts = kubectl_json(testbed, "get", "statefulset", name, "-n", namespace)
    return str(sts["spec"]["template"]["metadata"]["annotations"]["dittofs.io/config-hash"])


def apiserver_requests(testbed: Any, resource: str, verb: str) -> float:
    """The apiserver's own count of requests for a resource (all clients; only the operator reads the ones asked
    about while a test waits)."""
    text = testbed.kubectl("get", "--raw", "/metrics").stdout
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith("apiserver_request_total{") and f'resource="{resource}"' in line
               and f'verb="{verb}"' in line)


def test_scheduling_only_changes_do_not_roll_and_zero_replicas_stop(testbed: Any, operator: OperatorProcess,
                                                                    namespace: str) -> None:
    # The logging-change and Secret-rotation restarts moved to test_real_node.py (a real dfs restarts there).
    apply_server(testbed, namespace)
    wait_ready(testbed, namespace)
    first = template_hash(testbed, namespace)

    # A Service annotation (and a pod label) must not restart the file server.
    apply_server(testbed, namespace, service={"annotations": {"team": "storage"}})
    eventually(lambda: kubectl_json(testbed, "get", "service", "demo-api", "-n", namespace)["metadata"]
               .get("annotations", {}).get("team") == "storage", what="service annotation")
    wait_ready(testbed, namespace)
    assert template_hash(testbed, namespace) == first

    # SSA owns only what it sends: a removed annotation disappears, and the type switches both ways (the
    # node ports the apiserver allocated go with NodePort).
    def services(kind: str, gone: str, kept: str | None) -> bool:
        for name in ("demo-api", "demo-file"):
            svc = kubectl_json(testbed, "get", "service", name, "-n", namespace)
            annotations = svc["metadata"].get("annotations") or {}
            nodeports = [p for p in svc["spec"]["ports"] if p.get("nodePort")]
            if svc["spec"]["type"] != kind or gone in annotations or (kept and kept not in annotations) \
                    or bool(nodeports) != (kind == "NodePort"):
                return False
        return True

    apply_server(testbed, namespace, service={"type": "NodePort", "annotations": {"owner": "files"}})
    eventually(lambda: services("NodePort", gone="team", kept="owner"), what="NodePort, annotation replaced")
    apply_server(testbed, namespace, service={"type": "ClusterIP"})
    eventually(lambda: services("ClusterIP", gone="owner", kept=None), what="back to ClusterIP, no annotation")
    wait_ready(testbed, namespace)
    assert template_hash(testbed, namespace) == first

    # replicas: 0 stops the server.
    apply_server(testbed, namespace, replicas=0)
    stopped = eventually(lambda: (s := server(testbed, namespace))["status"].get("phase") == "Stopped" and s,
                         timeout=90, what="phase Stopped")
    assert stopped["status"]["ready"] == "0/0"
    assert condition(stopped, "Available")["reason"] == "Stopped"  # type: ignore[index]
    assert events(testbed, namespace, "Scaled")

    # Started and stopped again within the event recorder's 10 minutes, by `kubectl scale` (the CRD's scale
    # subresource): the second stop is an event too.
    apply_server(testbed, namespace, replicas=1)
    wait_ready(testbed, namespace)
    testbed.kubectl("scale", "dittoserver", "demo", "-n", namespace, "--replicas=0")

    def stops() -> int:
        return len([e for e in events(testbed, namespace, "Scaled") if "from 1 to 0" in e["message"]])

    eventually(lambda: stops() == 2, timeout=90, what="a second 'scaled from 1 to 0' event")


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
    # The repair rolls the pods again: said, with what changed (an operator upgrade that rolled them said nothing).
    [rolled] = eventually(lambda: [e for e in events(testbed, namespace, "ConfigUpdated")
                                   if "pod template of StatefulSet demo changed" in e["message"]],
                          timeout=30, what="ConfigUpdated naming the template change")
    assert "an edit by hand taken back): spec.containers[0].image; rolling its pods" in rolled["message"], rolled
    wait_ready(testbed, namespace)
    repairs = testbed.operator_writes(0, namespace)
    assert any(w["objectRef"]["resource"] == "services" for w in repairs), "the audit log must see our writes"
    time.sleep(3)  # let the last watch events settle
    mark, passes = testbed.audit_line_count(), operator.reconcile_passes()
    time.sleep(12)  # more than two drift passes (interval 5 s)
    writes = testbed.operator_writes(mark, namespace)
    assert writes == [], f"unchanged objects were written: {[(w['verb'], w['objectRef']) for w in writes]}"
    assert operator.reconcile_passes() >= passes + 2, "no drift pass ran in the window: nothing was proven"


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


def test_a_config_map_that_cannot_be_recreated_is_reported_not_claimed(
        testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    """SPEC §3.2 ``ConfigMapMissing``: the ConfigMap deleted by hand while a quota forbids a new one. ConfigReady
    used to keep saying "ConfigMap holds config.yaml"; it says what the API refused, and the server recovers
    once the quota goes."""
    apply_server(testbed, namespace)
    wait_ready(testbed, namespace)
    testbed.apply_yaml(json.dumps({"apiVersion": "v1", "kind": "ResourceQuota",
                                   "metadata": {"name": "no-configmaps", "namespace": namespace},
                                   "spec": {"hard": {"configmaps": "0"}}}))
    testbed.kubectl("delete", "configmap", "demo-config", "-n", namespace)

    def missing() -> dict[str, Any] | None:
        obj = server(testbed, namespace)
        cond = condition(obj, "ConfigReady")
        return obj if cond and (cond["status"], cond["reason"]) == ("False", "ConfigMapMissing") else None

    obj = eventually(missing, timeout=60, what="ConfigReady=False/ConfigMapMissing")
    message = condition(obj, "ConfigReady")["message"]  # type: ignore[index]
    assert message.startswith("ConfigMap demo-config is missing and cannot be created: HTTP 403: "), message
    assert "quota" in message, message
    assert obj["status"]["phase"] == "Failed"
    assert condition(obj, "Ready")["status"] == "False"  # type: ignore[index]
    assert any("demo-config" in e["message"] for e in events(testbed, namespace, "ReconcileFailed"))

    testbed.kubectl("delete", "resourcequota", "no-configmaps", "-n", namespace)
    obj = wait_ready(testbed, namespace, timeout=120)
    assert condition(obj, "ConfigReady")["reason"] == "ConfigRendered"  # type: ignore[index]
    assert testbed.kubectl("get", "configmap", "demo-config", "-n", namespace, check=False).returncode == 0


def test_a_config_map_update_that_is_refused_holds_the_pods_on_the_config_they_run(
        testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    """An admission policy refuses the update of an existing ConfigMap. The StatefulSet used to roll the pods to
    the new config hash at the same time, so they restarted on the old config.yaml under the new hash, and nothing
    rolled them again once the update went through. Now the pods stay as they are, ConfigReady says why, and the
    roll follows the update."""
    apply_server(testbed, namespace)
    wait_ready(testbed, namespace)
    before = template_hash(testbed, namespace)
    policy = f"freeze-config-{namespace}"
    testbed.apply_yaml(json.dumps({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                         "operations": ["UPDATE"], "resources": ["configmaps"]}]},
                 "validations": [{"expression": "object.metadata.name != 'demo-config'",
                                  "message": "demo-config is frozen"}]}}))
    testbed.apply_yaml(json.dumps({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": namespace}}}}}))
    try:
        def frozen() -> bool:
            probe = testbed.kubectl("annotate", "--dry-run=server", "configmap", "demo-config", "-n", namespace,
                                    "probe=1", check=False)
            return probe.returncode != 0 and "frozen" in probe.stderr
        eventually(frozen, timeout=30, what="the policy refusing ConfigMap updates")
        apply_server(testbed, namespace, logging={"level": "DEBUG"})

        def refused() -> dict[str, Any] | None:
            obj = server(testbed, namespace)
            cond = condition(obj, "ConfigReady")
            fresh = obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
            return obj if fresh and cond and cond["reason"] == "ConfigMapMissing" else None

        obj = eventually(refused, timeout=60, what="ConfigReady=False/ConfigMapMissing")
        message = condition(obj, "ConfigReady")["message"]  # type: ignore[index]
        assert message.startswith("ConfigMap demo-config cannot be updated to the current config.yaml, so the "
                                  "pods keep the previous one: HTTP 422: "), message
        assert "frozen" in message, message
        assert obj["status"]["phase"] == "Failed"
        time.sleep(3)  # a few more (failed, backed-off) passes: none of them may roll the pods
        assert template_hash(testbed, namespace) == before
        config = kubectl_json(testbed, "get", "configmap", "demo-config", "-n", namespace)
        assert "DEBUG" not in config["data"]["config.yaml"]
    finally:
        testbed.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy,
                        check=False)
    obj = wait_ready(testbed, namespace, timeout=120)
    assert obj["status"]["configHash"] == template_hash(testbed, namespace) != before
    config = kubectl_json(testbed, "get", "configmap", "demo-config", "-n", namespace)
    assert "DEBUG" in config["data"]["config.yaml"]


def test_a_spec_refused_by_the_reconciler_keeps_the_status_it_cannot_rebuild(
        testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    """Admitted while the webhook was off, an invalid edit builds nothing; its status must still carry the config
    hash (and, alike, what the operator owns in DittoFS and the store revision), or fixing the spec would be
    read as a new configuration."""
    apply_server(testbed, namespace)
    before = wait_ready(testbed, namespace)["status"]
    assert before["configHash"]
    apply_server(testbed, namespace, identity={"ldap": {
        "url": "ldap://dc.example.com", "baseDn": "DC=example,DC=com", "bindDn": "CN=svc",
        "bindPasswordSecretRef": {"name": "ldap-bind", "key": "password"}}})

    def refused() -> dict[str, Any] | None:
        obj = server(testbed, namespace)
        cond = condition(obj, "ConfigReady")
        fresh = obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
        return obj if fresh and cond and cond["reason"] == "InvalidSpec" else None

    status = eventually(refused, timeout=60, what="ConfigReady=False/InvalidSpec")["status"]
    assert status["phase"] == "Failed"
    assert status["configHash"] == before["configHash"], status
    apply_server(testbed, namespace)
    assert wait_ready(testbed, namespace)["status"]["configHash"] == before["configHash"]


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
    passes = operator.reconcile_passes()
    time.sleep(15)  # three drift passes
    assert len(events(testbed, namespace)) <= 2
    assert operator.reconcile_passes() >= passes + 2, "no drift pass ran in the window: nothing was proven"
    assert absent(testbed, "statefulset", "demo", namespace)
    # Creating the Secret is noticed at once through the Secret index.
    testbed.kubectl("create", "secret", "generic", "absent", "-n", namespace, "--from-literal=k=" + "x" * 40)
    wait_ready(testbed, namespace)


def test_a_short_jwt_secret_stops_the_rollout_instead_of_crash_looping(testbed: Any, operator: OperatorProcess,
                                                                        namespace: str) -> None:
    # DittoFS exits at start with a JWT secret under 32 characters: no StatefulSet until it is long enough.
    testbed.kubectl("create", "secret", "generic", "jwt", "-n", namespace, "--from-literal=k=" + "s" * 20)
    apply_server(testbed, namespace, identity={"jwt": {"secretRef": {"name": "jwt", "key": "k"}}})

    def too_short() -> dict[str, Any] | None:
        cond = condition(server(testbed, namespace), "ConfigReady")
        return cond if cond and cond["reason"] == "JwtSecretTooShort" else None

    cond = eventually(too_short, what="ConfigReady=False/JwtSecretTooShort")
    assert cond["status"] == "False" and "at least 32 characters" in cond["message"], cond
    assert "20" not in cond["message"] and "s" * 20 not in cond["message"], "a status never measures a Secret"
    assert server(testbed, namespace)["status"]["phase"] == "Failed"
    assert absent(testbed, "statefulset", "demo", namespace)
    testbed.kubectl("patch", "secret", "jwt", "-n", namespace, "-p", json.dumps({"stringData": {"k": "s" * 32}}))
    wait_ready(testbed, namespace)


def test_an_admin_password_dittofs_cannot_hash_stops_the_first_rollout(testbed: Any, operator: OperatorProcess,
                                                                      namespace: str) -> None:
    # DittoFS creates `admin` at its first boot with bcrypt (8 to 72 bytes) and exits on any other length.
    testbed.kubectl("create", "secret", "generic", "admin", "-n", namespace, "--from-literal=pw=short")
    apply_server(testbed, namespace, identity={"admin": {"passwordSecretRef": {"name": "admin", "key": "pw"}}})

    def refused() -> dict[str, Any] | None:
        cond = condition(server(testbed, namespace), "ConfigReady")
        return cond if cond and cond["reason"] == "AdminPasswordRefused" else None

    cond = eventually(refused, what="ConfigReady=False/AdminPasswordRefused")
    assert cond["status"] == "False" and "8 to 72 bytes" in cond["message"] and "short" not in cond["message"]
    assert absent(testbed, "statefulset", "demo", namespace)
    testbed.kubectl("patch", "secret", "admin", "-n", namespace, "-p",
                    json.dumps({"stringData": {"pw": "long-enough-1"}}))
    wait_ready(testbed, namespace)
    # Re-created on its kept volumes, the server has its admin already (DittoFS ignores the value): not held.
    testbed.kubectl("delete", "dittoserver", "demo", "-n", namespace, "--timeout=60s")
    testbed.kubectl("patch", "secret", "admin", "-n", namespace, "-p", json.dumps({"stringData": {"pw": "short"}}))
    apply_server(testbed, namespace, identity={"admin": {"passwordSecretRef": {"name": "admin", "key": "pw"}}})
    wait_ready(testbed, namespace)


def test_an_empty_postgres_host_holds_every_rollout(testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    # DittoFS's config check stops every start with an empty host: the pods are not rolled into that.
    values = {"host": "", "port": "5432", "database": "dittofs", "user": "dittofs", "password": "pw"}
    testbed.kubectl("create", "secret", "generic", "pg", "-n", namespace,
                    *(f"--from-literal={k}={v}" for k, v in values.items()))
    apply_server(testbed, namespace, database={"type": "postgres", "postgresSecretRef": {"name": "pg"}})

    def empty() -> dict[str, Any] | None:
        cond = condition(server(testbed, namespace), "ConfigReady")
        return cond if cond and cond["reason"] == "SecretValueEmpty" else None

    cond = eventually(empty, what="ConfigReady=False/SecretValueEmpty")
    assert cond["status"] == "False" and 'Secret pg key host: DittoFS needs a value that is not empty' \
        in cond["message"], cond
    assert absent(testbed, "statefulset", "demo", namespace)
    testbed.kubectl("patch", "secret", "pg", "-n", namespace, "-p", json.dumps({"stringData": {"host": "db"}}))
    wait_ready(testbed, namespace)
    # Emptied under a running server: the StatefulSet keeps its pods and template until the value is back.
    template = kubectl_json(testbed, "get", "statefulset", "demo", "-n", namespace)["spec"]["template"]
    testbed.kubectl("patch", "secret", "pg", "-n", namespace, "-p", json.dumps({"stringData": {"host": ""}}))
    eventually(empty, what="ConfigReady=False/SecretValueEmpty on a running server")
    assert kubectl_json(testbed, "get", "statefulset", "demo", "-n", namespace)["spec"]["template"] == template
    testbed.kubectl("patch", "secret", "pg", "-n", namespace, "-p", json.dumps({"stringData": {"host": "db2"}}))
    wait_ready(testbed, namespace)
    assert kubectl_json(testbed, "get", "statefulset", "demo", "-n", namespace)["spec"]["template"] != template


def test_a_sqlite_path_off_its_volume_stays_refused_when_admitted_without_the_webhook(
        testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    """The reconciler's own check (no webhook here): its refusal writes status, which must not make the next pass
    judge the server as one that already ran with that path."""
    apply_server(testbed, namespace, database={"sqlite": {"path": "/tmp/cp.db"}})

    def invalid() -> dict[str, Any] | None:
        cond = condition(server(testbed, namespace), "ConfigReady")
        return cond if cond and cond["reason"] == "InvalidSpec" else None

    assert "spec.database.sqlite.path" in eventually(invalid, what="ConfigReady=False/InvalidSpec")["message"]
    passes = operator.reconcile_passes()
    time.sleep(11)  # two drift passes
    assert operator.reconcile_passes() >= passes + 2, "no drift pass ran in the window: nothing was proven"
    assert invalid() is not None
    assert absent(testbed, "statefulset", "demo", namespace)
    apply_server(testbed, namespace, database={"sqlite": {"path": "/data/controlplane/cp.db"}})
    wait_ready(testbed, namespace)


def test_a_deleted_admin_secret_is_generated_again_and_said_not_to_log_in(testbed: Any, operator: OperatorProcess,
                                                                          namespace: str) -> None:
    """The pod needs the Secret to start, so it comes back; DittoFS set its admin password at first boot and
    ignores the new one, which the event says, so nobody trusts it."""
    apply_server(testbed, namespace)
    wait_ready(testbed, namespace)
    before = kubectl_json(testbed, "get", "secret", "demo-admin-bootstrap-credentials", "-n", namespace)
    testbed.kubectl("delete", "secret", "demo-admin-bootstrap-credentials", "-n", namespace)
    again = eventually(lambda: kubectl_json(testbed, "get", "secret", "demo-admin-bootstrap-credentials", "-n",
                                            namespace), what="the admin Secret generated again")
    assert again["metadata"]["uid"] != before["metadata"]["uid"]
    warned = eventually(lambda: [e for e in events(testbed, namespace, "MissingSecret")
                                 if "does not log in as admin" in e["message"]], what="the MissingSecret warning")
    assert warned[0]["type"] == "Warning"


def test_paused_server_is_left_alone(testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    apply_server(testbed, namespace)
    wait_ready(testbed, namespace)
    testbed.kubectl("annotate", "dittoserver", "demo", "-n", namespace, "dittofs.dittofs.com/reconcile=disabled")
    eventually(lambda: (c := condition(server(testbed, namespace), "ReconciliationPaused")) and c["status"] == "True",
               what="paused condition")
    testbed.kubectl("delete", "service", "demo-api", "-n", namespace)
    time.sleep(3)
    assert absent(testbed, "service", "demo-api", namespace)
    testbed.kubectl("annotate", "dittoserver", "demo", "-n", namespace, "dittofs.dittofs.com/reconcile-")
    eventually(lambda: testbed.kubectl("get", "service", "demo-api", "-n", namespace, check=False)
               .returncode == 0, what="resumed")


def test_pods_left_without_their_statefulset_are_stopped_when_the_server_is_deleted(
        testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    """A server deleted while its StatefulSet is re-created around its pods (a volume expansion, an upgrade's
    podManagementPolicy change), held in that window here by a pause and an orphaning delete by hand: its pod
    ran on for ever after the finalizer's timeout, ownerless, holding the volumes. A StatefulSet of no replicas
    adopts and stops it; the garbage collector takes that StatefulSet with the server."""
    apply_server(testbed, namespace)
    wait_ready(testbed, namespace)
    testbed.kubectl("annotate", "dittoserver", "demo", "-n", namespace, "dittofs.dittofs.com/reconcile=disabled")
    eventually(lambda: (c := condition(server(testbed, namespace), "ReconciliationPaused")) and c["status"] == "True",
               what="paused condition")
    testbed.kubectl("delete", "statefulset", "demo", "-n", namespace, "--cascade=orphan")
    eventually(lambda: absent(testbed, "statefulset", "demo", namespace), what="the StatefulSet orphan-deleted")
    assert not absent(testbed, "pod", "demo-0", namespace), "the pod runs on without it"
    testbed.kubectl("delete", "dittoserver", "demo", "-n", namespace, "--wait=false")
    eventually(lambda: absent(testbed, "pod", "demo-0", namespace), timeout=45, what="the ownerless pod stopped")
    eventually(lambda: absent(testbed, "dittoserver", "demo", namespace), timeout=30, what="the server gone")
    # The garbage collector retries with backoff until its discovery maps a CRD installed moments before (this
    # test first in a session): up to a minute here, a delay no cluster with the CRD in place has.
    eventually(lambda: absent(testbed, "statefulset", "demo", namespace), timeout=120,
               what="the draining StatefulSet collected with it")
    assert not events(testbed, namespace, "CleanupTimeout"), "stopped, not timed out"


def test_ready_only_once_every_listed_object_was_delivered(testbed: Any, operator: OperatorProcess,
                                                           namespace: str) -> None:
    docs = [{"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
             "metadata": {"name": f"r{i}", "namespace": namespace}, "spec": {"storage": {"metadataSize": "1Gi"}}}
            for i in range(30)]
    testbed.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    eventually(lambda: sum(1 for obj in kubectl_json(testbed, "get", "dittoservers", "-n", namespace)["items"]
                           if (condition(obj, "Ready") or {}).get("status") == "True") == 30,
               timeout=180, what="30 DittoServers Ready")
    # 120 Services at once fill the operator's Service lane (SERVICE_WRITES): the deferred ones still land.
    services = {s["metadata"]["name"] for s in kubectl_json(testbed, "get", "services", "-n", namespace)["items"]}
    assert {f"r{i}-{suffix}" for i in range(30) for suffix in ("api", "headless")} <= services
    operator.stop()
    since = len(operator.log_text().splitlines())
    mark = testbed.audit_line_count()
    t0 = time.monotonic()
    operator.start()  # returns at the first /readyz 200
    took = time.monotonic() - t0
    warm = [json.loads(line) for line in operator.log_text().splitlines()[since:]
            if line.startswith("{") and '"caches warm"' in line]
    assert len(warm) == 1 and warm[0]["servers"] >= 30, warm
    # Every server gets a pass after a start; what the listings delivered must compare equal to what the
    # operator would apply (list items carry no apiVersion/kind of their own), so none of them writes.
    eventually(lambda: operator.reconcile_passes() >= 30, timeout=60, what="a pass per server after the restart")
    writes = [f"{w['verb']} {w['objectRef'].get('resource')}/{w['objectRef'].get('subresource') or ''} "
              f"{w['objectRef'].get('name')}" for w in testbed.operator_writes(mark, namespace)]
    assert writes == [], writes[:10]
    print(f"\n[operator] restart with >= 30 servers: ready in {took:.2f} s", file=sys.stderr)


def test_network_policy_and_service_monitor_follow_the_spec_and_the_crd(testbed: Any, operator: OperatorProcess,
                                                                        namespace: str) -> None:
    """The policy the apiserver accepted lets the operator's namespace in first; the ServiceMonitor appears
    once the Prometheus Operator's real CRD is installed (no operator restart), is recreated when deleted,
    selects exactly the metrics Service, and both are removed when switched off."""
    operator_ns = OPERATOR_NAMESPACE  # as the session's operator was told (--operator-namespace)
    metrics = {"enabled": True, "serviceMonitor": {"labels": {"release": "prom"}, "interval": "30s"}}
    policy_spec = {"apiFrom": [{"namespaces": {"kubernetes.io/metadata.name": "tools"}}],
                   "fileClients": [{"cidr": "10.20.0.0/16", "exceptCidrs": ["10.20.9.0/24"]}]}
    apply_server(testbed, namespace, metrics=metrics, networkPolicy=policy_spec)
    wait_ready(testbed, namespace)
    policy = kubectl_json(testbed, "get", "networkpolicy", "demo-ingress", "-n", namespace)
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "dittofs",
                                                            "app.kubernetes.io/instance": "demo"}
    api, scrape, files = policy["spec"]["ingress"]
    operator_peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator_ns}}}
    assert api["from"] == [operator_peer, {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "tools"}}}]
    assert "from" not in scrape and scrape["ports"] == [{"port": 9090, "protocol": "TCP"}]
    assert files["from"] == [operator_peer, {"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.9.0/24"]}}]
    unserved = testbed.kubectl("get", "servicemonitors", "-n", namespace, check=False)
    # kubectl's wording depends on its discovery cache (test_chart served the kind earlier in the session).
    assert unserved.returncode != 0 and ("doesn't have a resource type" in unserved.stderr or "could not find the "
                                         "requested resource" in unserved.stderr), \
        f"the CRD must not be served before this test installs it: {unserved.stderr}"

    crd = servicemonitor_crd()
    logged, start = len(operator.log_text()), testbed.audit_line_count()  # test_chart served the CRD before
    testbed.kubectl("apply", "--server-side", "-f", str(crd))
    try:
        testbed.wait_crd("servicemonitors.monitoring.coreos.com")

        def monitor() -> dict[str, Any] | None:
            proc = testbed.kubectl("get", "servicemonitor", "demo-metrics", "-n", namespace, "-o", "json",
                                   check=False)
            return json.loads(proc.stdout) if proc.returncode == 0 else None

        found = eventually(monitor, timeout=60, what="ServiceMonitor once the CRD is served")
        assert found["metadata"]["labels"]["release"] == "prom"
        assert found["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
        selector = ",".join(f"{k}={v}" for k, v in found["spec"]["selector"]["matchLabels"].items())
        selected = kubectl_json(testbed, "get", "services", "-n", namespace, "-l", selector)["items"]
        assert [s["metadata"]["name"] for s in selected] == ["demo-metrics"]
        uid = found["metadata"]["uid"]
        # Watched while the CRD is served: the passes (a drift pass every 5 s here) read it from the cache.
        eventually(lambda: "servicemonitors served; watching them" in operator.log_text()[logged:], timeout=30,
                   what="the ServiceMonitor watch")
        gets = apiserver_requests(testbed, "servicemonitors", "GET")  # reads are not audited
        assert gets > 0, "the metric counts this test's own kubectl gets"
        passes = operator.reconcile_passes()
        eventually(lambda: operator.reconcile_passes() >= passes + 3, timeout=30, what="three more passes")
        assert apiserver_requests(testbed, "servicemonitors", "GET") == gets, "passes read the ServiceMonitor"
        testbed.kubectl("delete", "servicemonitor", "demo-metrics", "-n", namespace)
        eventually(lambda: (m := monitor()) is not None and m["metadata"]["uid"] != uid, timeout=60,
                   what="a deleted ServiceMonitor recreated")

        apply_server(testbed, namespace, networkPolicy={"enabled": False})  # metrics off, policy off
        eventually(lambda: monitor() is None, timeout=60, what="ServiceMonitor deleted with metrics off")
        eventually(lambda: testbed.kubectl("get", "networkpolicy", "demo-ingress", "-n", namespace,
                                           check=False).returncode != 0, timeout=60, what="policy deleted")
        wait_ready(testbed, namespace)

        # The CRD goes away: the watch ends by itself (no listing retried against a missing API). The audit log
        # has the operator's reads of the group, answered or not.
        def reads(since: int) -> list[tuple[str, int]]:
            return [(e["verb"], (e.get("responseStatus") or {}).get("code", 0))
                    for e in testbed.audit_events(OPERATOR_USER, since)
                    if (e.get("objectRef") or {}).get("resource") == "servicemonitors"]

        assert ("list", 200) in reads(start), "the audit log has the watch's listing while the CRD was served"
        testbed.kubectl("delete", "-f", str(crd), "--timeout=60s")
        eventually(lambda: "servicemonitors no longer served; watch stopped" in operator.log_text()[logged:],
                   timeout=30, what="the ServiceMonitor watch stopped")
        mark = testbed.audit_line_count()
        passes = operator.reconcile_passes()
        time.sleep(6)  # more than a drift interval
        assert reads(mark) == [], "reads of a missing API"
        assert operator.reconcile_passes() > passes, "no pass ran in the window: nothing was proven"
        wait_ready(testbed, namespace)
    finally:
        testbed.kubectl("delete", "-f", str(crd), "--ignore-not-found", "--timeout=60s", check=False)


def test_a_larger_volume_grows_its_pvcs_without_restarting_the_pod(testbed: Any, operator: OperatorProcess,
                                                                  namespace: str) -> None:
    """Volume expansion (issue 14, item 5) on a StorageClass that allows it: the PVC request is raised (the test
    bed's provisioner resizes like a CSI resizer), the StatefulSet is re-created with the larger template and
    adopts the running pod; shrinking is refused with a clear condition."""
    sc = f"expand-{namespace}"
    testbed.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": sc},
        "provisioner": PROVISIONER_NAME, "allowVolumeExpansion": True, "reclaimPolicy": "Retain",
        "volumeBindingMode": "Immediate"}))
    try:
        storage = {"metadataSize": "1Gi", "contentSize": "2Gi", "storageClassName": sc}
        apply_server(testbed, namespace, storage=storage)
        wait_ready(testbed, namespace)
        pod_before = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["metadata"]["uid"]
        sts_before = kubectl_json(testbed, "get", "statefulset", "demo", "-n", namespace)["metadata"]["uid"]

        apply_server(testbed, namespace, storage={**storage, "contentSize": "3Gi"})

        def grown() -> dict[str, Any] | None:
            sts = kubectl_json(testbed, "get", "statefulset", "demo", "-n", namespace)
            sizes = {t["metadata"]["name"]: t["spec"]["resources"]["requests"]["storage"]
                     for t in sts["spec"]["volumeClaimTemplates"]}
            return sts if sts["metadata"]["uid"] != sts_before and sizes["content"] == "3Gi" else None

        sts = eventually(grown, timeout=90, what="a StatefulSet re-created with the 3Gi content template")
        pvc = eventually(lambda: (c := kubectl_json(testbed, "get", "pvc", "content-demo-0", "-n", namespace))
                         ["status"].get("capacity", {}).get("storage") == "3Gi" and c, timeout=60,
                         what="content-demo-0 resized to 3Gi")
        assert pvc["spec"]["resources"]["requests"]["storage"] == "3Gi"
        pod = eventually(lambda: (p := kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace))
                         ["metadata"].get("ownerReferences", [{}])[0].get("uid") == sts["metadata"]["uid"] and p,
                         timeout=60, what="the pod adopted by the new StatefulSet")
        assert pod["metadata"]["uid"] == pod_before, "the pod was restarted by the expansion"
        assert events(testbed, namespace, "VolumesExpanded"), "the re-creation is explained by an event"
        wait_ready(testbed, namespace)

        # Shrinking (the webhook is off here, so the reconciler's own check answers).
        apply_server(testbed, namespace, storage={**storage, "contentSize": "1Gi"})
        refused = eventually(lambda: (c := condition(server(testbed, namespace), "ConfigReady")) is not None
                             and c["status"] == "False" and c, timeout=60, what="ConfigReady=False on a shrink")
        assert "cannot shrink" in refused["message"], refused
        assert kubectl_json(testbed, "get", "pvc", "content-demo-0", "-n", namespace)["spec"]["resources"][
            "requests"]["storage"] == "3Gi"
        apply_server(testbed, namespace, storage={**storage, "contentSize": "3Gi"})
        wait_ready(testbed, namespace)

        # Deleted (its PVCs kept) and declared again, larger: the new StatefulSet's templates never resize the
        # claims it binds, so the operator grows them before it creates it.
        testbed.kubectl("delete", "dittoserver", "demo", "-n", namespace, "--timeout=90s")
        apply_server(testbed, namespace, storage={**storage, "contentSize": "4Gi"})
        eventually(lambda: kubectl_json(testbed, "get", "pvc", "content-demo-0", "-n", namespace)["status"].get(
            "capacity", {}).get("storage") == "4Gi", timeout=60, what="the kept content-demo-0 grown to 4Gi")
        wait_ready(testbed, namespace)
    finally:
        testbed.kubectl("delete", "storageclass", sc, "--ignore-not-found", check=False)


def test_cert_manager_certificates_are_requested_when_asked(testbed: Any, quiet_operator: OperatorProcess,
                                                            namespace: str, tmp_path: Path) -> None:
    """controlPlane.tls.certificate (issue 14, item 1): without cert-manager the server says so; with its real
    Certificate CRD (no controller here: issuance is the install-path issue's), the serving and the operator's
    client Certificates are created as the schema accepts them, and deleted when no longer asked for. The
    operator runs with the default drift interval: cert-manager installed later is noticed by the server's own
    30 s look (the drift timer's 5 min were all there was)."""
    flags = [f for f in quiet_operator.extra if f not in ("--drift-interval", "5")]
    assert len(flags) == len(quiet_operator.extra) - 2, quiet_operator.extra
    operator = OperatorProcess(quiet_operator.kubeconfig, tmp_path, extra=flags)
    operator.start()
    try:
        _certificates_requested(testbed, namespace)
    finally:
        operator.stop()


def _certificates_requested(testbed: Any, namespace: str) -> None:
    tls = {"secretName": "demo-api-tls", "clientCaSecretName": "demo-api-tls",
           "operatorClientSecretName": "demo-operator-client",
           "certificate": {"issuerRef": {"name": "ca", "kind": "ClusterIssuer"}, "duration": "720h"}}
    apply_server(testbed, namespace, controlPlane={"tls": tls})

    def config_ready() -> dict[str, Any] | None:
        return condition(server(testbed, namespace), "ConfigReady")

    unserved = eventually(lambda: (c := config_ready()) is not None and c["status"] == "False"
                          and "install cert-manager" in c["message"] and c, timeout=60, what="cert-manager missing")
    assert "Secret demo-api-tls not found" in unserved["message"] and unserved["reason"] == "CertManagerNotFound"
    assert server(testbed, namespace)["status"]["phase"] == "Pending"
    assert not events(testbed, namespace, "MissingSecret"), "the Secret cert-manager would issue is not the fix"
    crd = certificate_crd()
    testbed.kubectl("apply", "--server-side", "-f", str(crd))
    try:
        testbed.wait_crd("certificates.cert-manager.io")

        def certificates() -> dict[str, Any]:
            items = kubectl_json(testbed, "get", "certificates.cert-manager.io", "-n", namespace)["items"]
            return {c["metadata"]["name"]: c for c in items}

        def both() -> dict[str, Any] | None:
            found = certificates()
            return found if len(found) == 2 else None

        found = eventually(both, timeout=60, what="two Certificates")
        serving, client = found["demo-api"], found["demo-operator-client"]
        assert (serving["spec"]["secretName"], client["spec"]["secretName"]) == ("demo-api-tls", "demo-operator-client")
        assert f"demo-api.{namespace}.svc" in serving["spec"]["dnsNames"]
        assert "client auth" in client["spec"]["usages"] and "server auth" in serving["spec"]["usages"]
        assert serving["spec"]["issuerRef"] == {"name": "ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
        def issued_secret_only() -> dict[str, Any] | None:
            cond = config_ready()
            return cond if cond is not None and "install cert-manager" not in cond["message"] else None

        waiting = eventually(issued_secret_only, timeout=60, what="waiting for the issued Secret only")
        assert waiting["status"] == "False" and "Secret demo-api-tls not found" in waiting["message"], waiting

        apply_server(testbed, namespace)  # TLS off: our Certificates go, the server starts over HTTP
        eventually(lambda: certificates() == {}, timeout=60, what="Certificates deleted")
        wait_ready(testbed, namespace)
    finally:
        testbed.kubectl("delete", "-f", str(crd), "--ignore-not-found", "--timeout=60s", check=False)


def test_identity_providers_mount_their_files_and_only_krb5_conf_restarts(
        testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    """identity.ldap/kerberos (issue 14, item 4) through the real apiserver (the CRD's patterns and CEL rules)
    and the operator: the server waits for the Secrets it mounts, then mounts them; the bind password is an
    environment variable; rotating it, the keytab or the CA changes nothing in the pod template (DittoFS
    re-reads those, the password goes over REST), a new krb5.conf rolls the pod (read only at start)."""
    identity = {
        "ldap": {"url": "ldaps://dc.example.com:636", "baseDn": "DC=example,DC=com", "bindDn": "CN=svc",
                 "bindPasswordSecretRef": {"name": "ldap-bind", "key": "password"},
                 "caSecretRef": {"name": "ldap-ca", "key": "ca.crt"}},
        "kerberos": {"servicePrincipal": "nfs/files.example.com@EXAMPLE.COM",
                     "keytabSecretRef": {"name": "krb", "key": "keytab"},
                     "krb5ConfSecretRef": {"name": "krb", "key": "krb5.conf"}},
    }
    # Admitted while the webhook was off: the reconciler judges it with the same rules and creates nothing.
    plaintext = {**identity, "ldap": {**identity["ldap"], "url": "ldap://dc.example.com"}}
    apply_server(testbed, namespace, name="plain", identity=plaintext)
    invalid = eventually(lambda: (c := condition(server(testbed, namespace, "plain"), "ConfigReady")) is not None
                         and c["reason"] == "InvalidSpec" and c, timeout=60, what="plaintext LDAP judged")
    assert "spec.identity.ldap.url" in invalid["message"] and "clear text" in invalid["message"], invalid
    assert absent(testbed, "statefulset", "plain", namespace)
    apply_server(testbed, namespace, identity=identity)

    def config_ready() -> dict[str, Any] | None:
        return condition(server(testbed, namespace), "ConfigReady")

    waiting = eventually(lambda: (c := config_ready()) is not None and c["status"] == "False" and c,
                         timeout=60, what="waiting for the identity Secrets")
    for missing in ("ldap-bind", "ldap-ca", "krb"):
        assert f"Secret {missing} not found" in waiting["message"], waiting
    for name, literals in (("ldap-bind", ["password=first"]), ("ldap-ca", ["ca.crt=CA1"]),
                           ("krb", ["keytab=KT1", "krb5.conf=[libdefaults]"])):
        testbed.kubectl("create", "secret", "generic", name, "-n", namespace,
                        *[f"--from-literal={literal}" for literal in literals])
    wait_ready(testbed, namespace)
    sts = kubectl_json(testbed, "get", "statefulset", "demo", "-n", namespace)
    pod = sts["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert (mounts["ldap-ca"], mounts["keytab"], mounts["krb5-conf"]) == (
        "/identity/ldap-ca", "/identity/kerberos", "/identity/krb5")
    volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert volumes["keytab"] == {"secretName": "krb", "defaultMode": 0o440,
                                 "items": [{"key": "keytab", "path": "krb5.keytab"}]}
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["DITTOFS_LDAP_BIND_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "ldap-bind", "key": "password"}
    config = kubectl_json(testbed, "get", "configmap", "demo-config", "-n", namespace)["data"]["config.yaml"]
    assert "first" not in config and "keytab_path: /identity/kerberos/krb5.keytab" in config
    first = template_hash(testbed, namespace)

    for name, literal in (("ldap-bind", "password=second"), ("ldap-ca", "ca.crt=CA2"), ("krb", "keytab=KT2")):
        key, _, value = literal.partition("=")
        testbed.kubectl("patch", "secret", name, "-n", namespace, "--type=merge", "-p",
                        json.dumps({"stringData": {key: value}}))
    testbed.kubectl("patch", "secret", "krb", "-n", namespace, "--type=merge", "-p",
                    json.dumps({"stringData": {"krb5.conf": "[libdefaults]\n default_realm = EXAMPLE.COM"}}))
    eventually(lambda: template_hash(testbed, namespace) != first, timeout=60, what="krb5.conf rolls the pod")
    second = template_hash(testbed, namespace)
    for name, literal in (("ldap-bind", "password=third"), ("ldap-ca", "ca.crt=CA3"), ("krb", "keytab=KT3")):
        key, _, value = literal.partition("=")
        testbed.kubectl("patch", "secret", name, "-n", namespace, "--type=merge", "-p",
                        json.dumps({"stringData": {key: value}}))
    time.sleep(8)  # the Secret watch fires within a second; more than one drift pass (5 s)
    assert template_hash(testbed, namespace) == second


def test_a_running_cert_manager_issues_the_certificates_the_operator_requests(
        testbed: Any, operator: OperatorProcess, namespace: str, tmp_path: Path) -> None:
    """controlPlane.tls.certificate (issue 14, item 1) with a real cert-manager v1.11.5 controller (built from
    its module; the install-path issue runs it in the cluster): a CA Issuer signs the serving certificate
    (SAN: the API Service) and the operator's client certificate; the Secrets it writes are what the server
    mounts and the operator presents, and the server comes up with them."""
    cert_manager = CertManager(testbed, namespace, tmp_path)
    try:
        with cert_manager:
            for obj in (
                {"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": {"name": "bootstrap"},
                 "spec": {"selfSigned": {}}},
                {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "root"},
                 "spec": {"isCA": True, "commonName": "dittofs-test-root", "secretName": "root-ca",
                          "issuerRef": {"name": "bootstrap", "kind": "Issuer"}}},
                {"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": {"name": "ca"},
                 "spec": {"ca": {"secretName": "root-ca"}}},
            ):
                testbed.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))
            tls = {"secretName": "demo-api-tls", "clientCaSecretName": "demo-api-tls",
                   "operatorClientSecretName": "demo-operator-client",
                   "certificate": {"issuerRef": {"name": "ca", "kind": "Issuer"}, "duration": "720h"}}
            t0 = time.monotonic()
            apply_server(testbed, namespace, controlPlane={"tls": tls})

            def issued(name: str) -> dict[str, Any] | None:
                cert = kubectl_json(testbed, "get", "certificates.cert-manager.io", name, "-n", namespace)
                ready = [c for c in (cert.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"]
                return cert if ready and ready[0]["status"] == "True" else None

            def both_issued() -> bool:
                return all(issued(name) for name in ("demo-api", "demo-operator-client"))

            eventually(both_issued, timeout=90, what=f"both Certificates issued (log {cert_manager.log_path})")
            took = time.monotonic() - t0
            wait_ready(testbed, namespace)
            root = x509.load_pem_x509_certificate(testbed.secret_data(namespace, "root-ca")["tls.crt"])
            serving = x509.load_pem_x509_certificate(testbed.secret_data(namespace, "demo-api-tls")["tls.crt"])
            client = x509.load_pem_x509_certificate(testbed.secret_data(namespace, "demo-operator-client")["tls.crt"])
            # The client CA the server mounts (ca.crt of its own Secret) is the CA that signs the operator.
            assert testbed.secret_data(namespace, "demo-api-tls")["ca.crt"] == root.public_bytes(Encoding.PEM)
            for cert in (serving, client):
                cert.verify_directly_issued_by(root)
            names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert f"demo-api.{namespace}.svc" in names.get_values_for_type(x509.DNSName)
            usages = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            assert ExtendedKeyUsageOID.CLIENT_AUTH in usages
            sts = kubectl_json(testbed, "get", "statefulset", "demo", "-n", namespace)
            volumes = {v["name"]: v.get("secret", {}).get("secretName")
                       for v in sts["spec"]["template"]["spec"]["volumes"]}
            assert (volumes["api-tls"], volumes["client-ca"]) == ("demo-api-tls", "demo-api-tls")
            print(f"\n[cert-manager] both certificates issued {took:.1f} s after the DittoServer was applied",
                  file=sys.stderr)
    finally:
        testbed.kubectl("delete", "dittoserver", "demo", "-n", namespace, "--timeout=90s", check=False)
        cert_manager.remove_crds()

