"""The test bed itself: scheduler + kwok, PVC binding, GC, TLS admission webhooks, audit, RBAC, restarts."""

from __future__ import annotations

import errno
import http.server
import json
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import kubectl_json
from tests.support.poll import eventually
from tests.testbed import NODE_NAME, OPERATOR_USER, Testbed
from tests.testbed.safety import BLACKHOLED, blackhole_routes, connect_error, proxy_vars_of

pytestmark = pytest.mark.integration


def get_json(testbed: Testbed, *args: str) -> Any:
    return json.loads(testbed.kubectl("get", *args, "-o", "json").stdout)


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return pod.get("status", {}).get("phase") == "Running" and ready


@pytest.fixture
def tb_ns(testbed: Testbed) -> Iterator[str]:
    name = f"tb-{uuid.uuid4().hex[:8]}"
    testbed.create_namespace(name)  # pods are refused until its default ServiceAccount exists
    yield name
    testbed.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def statefulset(name: str, ns: str, replicas: int, claims: list[dict[str, Any]] | None = None) -> str:
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                # Never pulled: kwok plays the kubelet and only fakes the pod status.
                "spec": {"containers": [{"name": "main", "image": "registry.invalid/none:1"}]},
            },
        },
    }
    if claims:
        body["spec"]["volumeClaimTemplates"] = claims
    return json.dumps(body)


def rollout(testbed: Testbed, ns: str, name: str, timeout: int = 90) -> None:
    """`kubectl rollout status`; on a timeout, fail with what each party did (the pods, claims, volumes,
    events, and the provisioner's and scheduler's logs), so a slow rollout names its cause."""
    result = testbed.kubectl("rollout", "status", f"statefulset/{name}", "-n", ns, f"--timeout={timeout}s",
                             check=False, timeout=timeout + 30)
    if result.returncode == 0:
        return
    state = testbed.kubectl("get", "statefulset,pods,pvc,events", "-n", ns, "-o", "wide", check=False).stdout
    pvs = testbed.kubectl("get", "pv", "-o", "wide", check=False).stdout
    logs = {log: "\n".join(line for line in (testbed.logs_dir / log).read_text(errors="replace").splitlines()
                           if ns in line or log == "provisioner.log")[-4000:]
            for log in ("provisioner.log", "kube-scheduler.log", "kube-controller-manager.log", "kwok.log")}
    raise AssertionError(f"rollout of {ns}/{name} not done in {timeout}s: {result.stderr}\n{state}\n{pvs}\n"
                         + "\n".join(f"--- {k}\n{v}" for k, v in logs.items()))


def test_statefulset_rolls_out_and_namespace_deletion_removes_pods(testbed: Testbed) -> None:
    ns = f"tb-sts-{uuid.uuid4().hex[:6]}"
    testbed.create_namespace(ns)
    testbed.apply_yaml(statefulset("web", ns, 3))
    rollout(testbed, ns, "web")

    sts = get_json(testbed, "statefulset", "web", "-n", ns)
    assert sts["status"]["readyReplicas"] == 3
    pods = get_json(testbed, "pods", "-n", ns, "-l", "app=web")["items"]
    assert sorted(p["metadata"]["name"] for p in pods) == ["web-0", "web-1", "web-2"]
    for pod in pods:
        assert pod["spec"]["nodeName"] == NODE_NAME
        assert pod_ready(pod), pod["status"]
        assert pod["status"]["podIP"].startswith("10.244.")

    testbed.kubectl("delete", "namespace", ns, "--timeout=90s")
    status, _ = testbed.api.request("GET", f"/api/v1/namespaces/{ns}")
    assert status == 404
    assert testbed.api.get(f"/api/v1/namespaces/{ns}/pods")["items"] == []


def test_volume_claim_templates_are_bound_by_the_fake_provisioner(testbed: Testbed, tb_ns: str) -> None:
    claims = [
        {
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "standard",
                "resources": {"requests": {"storage": "2Gi"}},
            },
        },
        {  # "" = explicitly no class: the PV must carry "" as well
            "metadata": {"name": "scratch"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]
    testbed.apply_yaml(statefulset("db", tb_ns, 1, claims))
    rollout(testbed, tb_ns, "db")

    pod = get_json(testbed, "pod", "db-0", "-n", tb_ns)
    assert pod_ready(pod), pod["status"]
    for claim, size, cls in (("data-db-0", "2Gi", "standard"), ("scratch-db-0", "1Gi", "")):
        pvc = get_json(testbed, "pvc", claim, "-n", tb_ns)
        assert pvc["status"]["phase"] == "Bound"
        assert pvc["status"]["capacity"]["storage"] == size
        pv = get_json(testbed, "pv", pvc["spec"]["volumeName"])
        assert pv["status"]["phase"] == "Bound"
        assert pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
        assert pv["spec"].get("storageClassName", "") == cls
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        host_dir = Path(pv["spec"]["hostPath"]["path"])
        assert host_dir.parent == testbed.volumes_dir
        # hostPath gets no fsGroup: the directory itself must let dfs (uid 65532) write.
        assert host_dir.is_dir() and host_dir.stat().st_mode & 0o777 == 0o777


def test_an_unschedulable_pod_is_retried_within_a_minute_without_any_event(testbed: Testbed, tb_ns: str) -> None:
    """The scheduler's leftover flush is 10 s here, not 5 min: a pod that failed on a stale volume cache
    (kubernetes#93552) is retried without waiting for an event that already came. Nothing in the cluster
    changes for this pod (no node will ever match its selector), so only the flush can retry it. Each failure is
    an event or a step of an event's series: client-go keys a series by the pod's resourceVersion too, and the
    scheduler's own status patch after the first failure may or may not have reached the retried pod, so a
    retry shows either as a series count of 2 (written at once) or as a second event."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nowhere", "namespace": tb_ns},
           "spec": {"nodeSelector": {"testbed.local/no-such-node": "true"},
                    "containers": [{"name": "main", "image": "registry.invalid/none:1"}]}}
    testbed.apply_yaml(json.dumps(pod))

    def attempts() -> int:
        events = get_json(testbed, "events.events.k8s.io", "-n", tb_ns)["items"]
        failed = [e for e in events if e["reason"] == "FailedScheduling" and e["regarding"]["name"] == "nowhere"]
        return sum((e.get("series") or {}).get("count", 1) for e in failed)

    eventually(lambda: attempts() >= 1, timeout=30, interval=0.5, what="the first FailedScheduling")
    eventually(lambda: attempts() >= 2, timeout=60, interval=1, what="a second attempt by the scheduler's flush")


def test_garbage_collector_deletes_dependents(testbed: Testbed, tb_ns: str) -> None:
    testbed.kubectl("create", "configmap", "owner", "-n", tb_ns, "--from-literal=a=1")
    owner = get_json(testbed, "configmap", "owner", "-n", tb_ns)
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": tb_ns,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
            ],
        },
        "data": {"b": "2"},
    }
    testbed.apply_yaml(json.dumps(dependent))
    assert get_json(testbed, "configmap", "dependent", "-n", tb_ns)["metadata"]["ownerReferences"]

    testbed.kubectl("delete", "configmap", "owner", "-n", tb_ns)
    eventually(
        lambda: testbed.api.request("GET", f"/api/v1/namespaces/{tb_ns}/configmaps/dependent")[0] == 404,
        what="the garbage collector to delete the dependent ConfigMap",
    )


def test_a_blocking_owner_reference_needs_update_on_the_owners_finalizers(testbed: Testbed, tb_ns: str) -> None:
    """The apiserver runs OwnerReferencesPermissionEnforcement, as OpenShift and hardened clusters do: the chart's
    RBAC is proven against it (the operator's children name their server with blockOwnerDeletion: true)."""
    account = f"system:serviceaccount:{tb_ns}:probe"
    testbed.kubectl("create", "serviceaccount", "probe", "-n", tb_ns)
    testbed.kubectl("create", "role", "probe", "-n", tb_ns, "--verb=create", "--resource=configmaps")
    testbed.kubectl("create", "rolebinding", "probe", "-n", tb_ns, "--role=probe", f"--serviceaccount={tb_ns}:probe")
    testbed.kubectl("create", "configmap", "owner", "-n", tb_ns)
    owner = get_json(testbed, "configmap", "owner", "-n", tb_ns)

    def create(name: str) -> subprocess.CompletedProcess[str]:
        ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"],
               "controller": True, "blockOwnerDeletion": True}
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": tb_ns, "ownerReferences": [ref]}}
        return testbed.kubectl("create", "-f", "-", f"--as={account}", input=json.dumps(body), check=False)

    # Allowed to create ConfigMaps (the RBAC authorizer's cache may take a moment), refused the blocking reference.
    def refused() -> str | None:
        proc = create("dependent")
        return proc.stderr if proc.returncode != 0 and "blockOwnerDeletion" in proc.stderr else None

    assert "cannot set blockOwnerDeletion" in eventually(refused, what="the blocking reference refused")
    testbed.kubectl("create", "role", "finalizers", "-n", tb_ns, "--verb=update", "--resource=configmaps/finalizers")
    testbed.kubectl("create", "rolebinding", "finalizers", "-n", tb_ns, "--role=finalizers",
                    f"--serviceaccount={tb_ns}:probe")
    eventually(lambda: create("dependent").returncode == 0, what="the reference allowed with update on finalizers")


class _DenyLabelled(http.server.BaseHTTPRequestHandler):
    """A validating webhook: deny objects that carry the label ``testbed.local/deny``."""

    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        type(self).seen.append(request)
        labels = (request.get("object") or {}).get("metadata", {}).get("labels") or {}
        response: dict[str, Any] = {"uid": request["uid"], "allowed": "testbed.local/deny" not in labels}
        if not response["allowed"]:
            response["status"] = {"code": 403, "message": f"testbed webhook denies {request['name']}"}
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_validating_webhook_over_tls_on_loopback(testbed: Testbed, tb_ns: str, tmp_path: Path) -> None:
    cert, key = testbed.issue_serving_cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    _DenyLabelled.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DenyLabelled)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    vwc_name = f"testbed-deny-{tb_ns}"
    vwc = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": vwc_name},
        "webhooks": [
            {
                "name": "deny.testbed.local",
                "clientConfig": {"url": f"https://127.0.0.1:{port}/validate", "caBundle": testbed.ca_b64},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["configmaps"],
                    }
                ],
                # Only this test's namespace: a Fail-closed webhook must not break other tests.
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": tb_ns}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }
    denied_cm = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "bad", "namespace": tb_ns, "labels": {"testbed.local/deny": "yes"}},
        }
    )
    try:
        testbed.apply_yaml(json.dumps(vwc))

        def denial() -> str:
            proc = testbed.kubectl("apply", "--dry-run=server", "-f", "-", input=denied_cm, check=False)
            denied = proc.returncode != 0 and "testbed webhook denies bad" in proc.stderr
            return proc.stderr if denied else ""

        stderr = eventually(denial, what="the webhook to deny the labelled ConfigMap", timeout=30)
        assert 'admission webhook "deny.testbed.local" denied the request' in stderr
        assert any(r["name"] == "bad" and r["dryRun"] for r in _DenyLabelled.seen)
        # Unlabelled objects pass through the same webhook, and dry-run really created nothing.
        testbed.kubectl("create", "configmap", "good", "-n", tb_ns)
        assert any(r["name"] == "good" and not r["dryRun"] for r in _DenyLabelled.seen)
        assert testbed.api.request("GET", f"/api/v1/namespaces/{tb_ns}/configmaps/bad")[0] == 404
    finally:
        testbed.kubectl("delete", "validatingwebhookconfiguration", vwc_name, "--ignore-not-found", check=False)
        server.shutdown()
        server.server_close()


def test_audit_log_records_writes_not_reads(testbed: Testbed, tb_ns: str) -> None:
    since = testbed.audit_line_count()
    testbed.kubectl("create", "configmap", "audit-probe", "-n", tb_ns, "--from-literal=k=v")
    testbed.kubectl("get", "configmap", "audit-probe", "-n", tb_ns)

    def creates() -> list[dict[str, Any]]:
        return [
            e
            for e in testbed.audit_events(user="admin", since_line=since)
            if e["verb"] == "create"
            and e["objectRef"].get("resource") == "configmaps"
            and e["objectRef"].get("namespace") == tb_ns
            and e["objectRef"].get("name") == "audit-probe"
        ]

    events = eventually(creates, what="the audit event of the admin's ConfigMap create", timeout=30)
    assert len(events) == 1
    assert events[0]["level"] == "Metadata"
    assert events[0]["stage"] == "ResponseComplete"
    assert events[0]["responseStatus"]["code"] == 201
    assert "system:masters" in events[0]["user"]["groups"]
    assert "requestObject" not in events[0]  # Metadata level: no bodies
    # (Reads of monitoring.coreos.com alone are audited: the operator's, of an API that may be missing.)
    reads = [e for e in testbed.audit_events(since_line=since) if e["verb"] in ("get", "list", "watch")
             and (e.get("objectRef") or {}).get("apiGroup") != "monitoring.coreos.com"]
    assert reads == []
    # "admin" is only tests and kubectl: the controllers run under their own (system:masters) names.
    assert all(e["objectRef"].get("namespace") == tb_ns for e in testbed.audit_events("admin", since))
    root_ca = [
        e
        for e in testbed.audit_events()
        if e["verb"] == "create"
        and e["objectRef"].get("namespace") == tb_ns
        and e["objectRef"].get("name") == "kube-root-ca.crt"
    ]
    assert [e["user"]["username"] for e in root_ca] == ["system:kube-controller-manager"]


def test_operator_identity_is_a_plain_user_bound_to_cluster_admin(testbed: Testbed, tb_ns: str) -> None:
    whoami = json.loads(testbed.kubectl("auth", "whoami", "-o", "json", kubeconfig=testbed.operator_kubeconfig).stdout)
    info = whoami["status"]["userInfo"]
    assert info["username"] == OPERATOR_USER
    assert "system:masters" not in info.get("groups", [])
    since = testbed.audit_line_count()
    testbed.kubectl("create", "configmap", "by-operator", "-n", tb_ns, kubeconfig=testbed.operator_kubeconfig)
    events = eventually(
        lambda: [
            e
            for e in testbed.audit_events(user=OPERATOR_USER, since_line=since)
            if e["objectRef"].get("name") == "by-operator"
        ],
        what="the operator's audited create",
        timeout=30,
    )
    assert events[0]["responseStatus"]["code"] == 201
    assert events[0]["annotations"]["authorization.k8s.io/decision"] == "allow"
    assert "testbed-dittofs-operator-cluster-admin" in events[0]["annotations"]["authorization.k8s.io/reason"]


def test_restart_of_etcd_and_apiserver_keeps_data_and_controllers(testbed: Testbed, tb_ns: str) -> None:
    testbed.kubectl("create", "configmap", "survivor", "-n", tb_ns, "--from-literal=k=v")
    old_pid = testbed.pid("kube-apiserver")
    testbed.restart_apiserver(with_etcd=True)
    assert testbed.pid("kube-apiserver") not in (None, old_pid)
    assert get_json(testbed, "configmap", "survivor", "-n", tb_ns)["data"] == {"k": "v"}
    # The KCM, scheduler and kwok reconnect on their own: a new StatefulSet still rolls out.
    testbed.apply_yaml(statefulset("after", tb_ns, 1))
    rollout(testbed, tb_ns, "after")
    assert pod_ready(get_json(testbed, "pod", "after-0", "-n", tb_ns))


def test_no_packet_leaves_the_machine_from_the_control_plane(testbed: Testbed, tb_ns: str, operator: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC §14, the part that needs no real node (so it is proven also where the real node is opted out):
    blackhole routes for exactly the Service and kwok pod ranges, dials there fail at once (from the host and
    from the apiserver following a webhook Service), and no proxy variable reaches a component or the operator
    under test. The real node's part is test_real_node.py's test_no_packet_leaves_the_machine."""
    report: list[str] = []
    # 1. Blackhole routes for exactly the Service and kwok pod CIDRs.
    routes = blackhole_routes()
    assert set(BLACKHOLED) <= routes, routes
    report.append(f"blackhole routes: {sorted(routes)}")

    # 2. A ClusterIP and a kwok pod IP fail at once with the blackhole's EINVAL, from the host...
    testbed.kubectl("create", "service", "clusterip", "probe", "-n", tb_ns, "--tcp=443:8443")
    cluster_ip = kubectl_json(testbed, "get", "service", "probe", "-n", tb_ns)["spec"]["clusterIP"]
    # Labelled for the Service's selector: the apiserver calls Service webhooks at their endpoints.
    testbed.kubectl("run", "kwokpod", "-n", tb_ns, "--image=registry.invalid/none:1", "--restart=Never",
                    "--labels=app=probe")

    def kwok_pod() -> Any:
        return kubectl_json(testbed, "get", "pod", "kwokpod", "-n", tb_ns)

    kwok_ip = eventually(lambda: kwok_pod()["status"].get("podIP"), what="kwok pod IP")
    assert kwok_pod()["spec"]["nodeName"] == NODE_NAME  # untolerating: kwok
    for what, ip in (("ClusterIP", cluster_ip), ("kwok pod IP", kwok_ip)):
        route = subprocess.run(["ip", "route", "get", ip], capture_output=True, text=True, check=False)
        assert route.returncode != 0 or route.stdout.startswith("blackhole"), route
        err, took = connect_error(ip, 443)
        assert err == errno.EINVAL and took < 0.5, (what, ip, err, took)
        report.append(f"connect {what} {ip}:443 -> {errno.errorcode.get(err or 0)} in {took * 1000:.1f} ms")

    # ...and from the apiserver: a webhook behind a Service is dialled at its endpoint (aggregator routing),
    # here the kwok pod's IP, and fails fast.
    hook = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": f"blackhole-{tb_ns}"},
        "webhooks": [{
            "name": "blackhole.testbed.local",
            "clientConfig": {"service": {"name": "probe", "namespace": tb_ns, "port": 443},
                             "caBundle": testbed.ca_b64},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["configmaps"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": tb_ns}},
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }],
    }
    testbed.apply_yaml(json.dumps(hook))
    try:
        def denied() -> str | None:
            # Until the endpoint controller lists the pod the apiserver says "no endpoints available": not a dial.
            result = testbed.kubectl("create", "configmap", "x", "-n", tb_ns, check=False)
            return result.stderr if "failed calling webhook" in result.stderr and kwok_ip in result.stderr else None

        t0 = time.monotonic()
        message = eventually(denied, timeout=30, what="the webhook call to be attempted")
        assert "invalid argument" in message, message
        assert kwok_ip in message, message
        report.append(f"apiserver -> webhook Service {cluster_ip} (endpoint {kwok_ip}): ...{message.strip()[-120:]}")
        assert time.monotonic() - t0 < 30
    finally:
        testbed.kubectl("delete", "validatingwebhookconfiguration", f"blackhole-{tb_ns}", check=False)

    # 3. No proxy variable reaches a component or the operator, even when the test session has them.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    testbed.stop_component("kwok")
    testbed.start_component("kwok")
    operator.stop()
    operator.start()
    pids = {n: testbed.pid(n) for n in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                          "kwok")} | {"operator": operator.proc.pid}
    for name, pid in pids.items():
        assert pid is not None, f"{name} not running"
        assert proxy_vars_of(pid) == [], f"{name} has proxy variables {proxy_vars_of(pid)}"
    report.append(f"proxy variables in {sorted(pids)}: none (kwok and the operator restarted with HTTPS_PROXY set)")
    # Nor does the test process's own HTTP obey them: urllib proxies even 127.0.0.1 and the bridge.
    with socket.create_server(("127.0.0.1", 0)) as proxy:
        proxy.settimeout(0.5)
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.getsockname()[1]}")
        assert eventually(operator.ready, what="the operator ready, asked without a proxy")
        with pytest.raises(TimeoutError):
            proxy.accept()
    report.append("the test process's own requests (the operator's /readyz): no proxy, with HTTP_PROXY set")
    print("\n[safety] " + "\n[safety] ".join(report))
