"""The install path a cluster admin takes, run for real (issue 17): the image built from our unchanged
Dockerfile, imported into the real node's containerd; `helm install` of the chart, its operator pod on the
real node under the chart's ServiceAccount (restricted Pod Security, read-only root); the apiserver calling
the webhook through its Service (at the pod's endpoint: there is no kube-proxy and ClusterIPs are
blackholed); a DittoServer provisioned from inside the cluster and serving its share over NFS; then
`helm upgrade`, a leader failover with two replicas, and `helm uninstall`.

The only test-bed concession is the operator's apiserver address: `KUBERNETES_SERVICE_HOST` names the node's
bridge address (a relay to the loopback apiserver) instead of the `kubernetes` Service's ClusterIP, which
kube-proxy would translate in a real cluster. Everything else is the chart's own rendering.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.support.chart import RELEASE, SERVICE, Helm, adopt_crd, assert_uninstalled, uninstall
from tests.support.kube import absent, apply_server, condition, kubectl_json, wait_ready
from tests.support.operator import OperatorProcess
from tests.support.paths import CHART
from tests.support.poll import eventually
from tests.testbed import Testbed
from tests.testbed.certmanager import CertManager
from tests.testbed.fileservice import nfs_get, nfs_put
from tests.testbed.images import import_archive, operator_image
from tests.testbed.node import SUBNET, RealNode

pytestmark = pytest.mark.integration
GROUP_PATH = "/apis/dittofs.dittofs.com/v1alpha1"
INVALID = {"storage": {"metadataSize": "1Gi", "contentSize": "2Gi"}, "adapters": {"nfs": {"port": 8080}}}
DENIAL = "spec.adapters.nfs.port: port 8080 is also used by spec.controlPlane.port"  # only the webhook knows


@pytest.fixture(scope="module")
def image(real_node: RealNode) -> str:
    """The operator image from the Dockerfile (cached by the project's files), in the node's containerd."""
    t0 = time.monotonic()
    ref, archive = operator_image()
    built = time.monotonic() - t0
    import_archive(real_node.ctr, archive)
    print(f"\n[install] image {ref}: build/cache {built:.1f} s, import {time.monotonic() - t0 - built:.1f} s, "
          f"archive {archive.stat().st_size / 2**20:.1f} MiB", file=sys.stderr)
    return ref


def values(real_node: RealNode, **more: Any) -> dict[str, Any]:
    placement = real_node.pod_placement()
    return {
        "webhook": {"tls": {"mode": "selfSigned"}},
        "nodeSelector": placement["nodeSelector"],
        "tolerations": placement["tolerations"],
        "extraEnv": real_node.in_cluster_env(),
        # No cluster DNS here: reach each DittoFS pod at its IP, on the node's bridge only.
        "extraArgs": ["--server-address=pod", f"--provision-networks={SUBNET}"],
        **more,
    }


def operator_pods(testbed: Testbed, namespace: str) -> list[dict[str, Any]]:
    pods = kubectl_json(testbed, "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator")
    return [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]


def ready_pods(testbed: Testbed, namespace: str, count: int) -> list[dict[str, Any]] | None:
    pods = operator_pods(testbed, namespace)
    ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                     for c in p["status"].get("conditions") or [])]
    return ready if len(ready) == count == len(pods) else None


def lease_holder(testbed: Testbed, namespace: str) -> str | None:
    lease = testbed.api.call("GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{RELEASE}",
                             ok=(404,))
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


def admit_invalid(testbed: Testbed, namespace: str) -> str:
    """`kubectl apply` of an invalid DittoServer; returns the denial (fails if it was admitted)."""
    body = {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
            "metadata": {"name": "invalid", "namespace": namespace}, "spec": INVALID}
    result = testbed.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert result.returncode != 0, "an invalid DittoServer was admitted"
    return str(result.stderr)


def health(ip: str, path: str) -> int:
    with urllib.request.urlopen(f"http://{ip}:8081{path}", timeout=3) as resp:
        return int(resp.status)


class Admissions(threading.Thread):
    """Server-side dry-run creates of a valid DittoServer, back to back: every one passes the webhook."""

    def __init__(self, testbed: Testbed, namespace: str, limit: float = 120.0) -> None:
        super().__init__(daemon=True)
        self.limit = limit
        self.api = testbed.admin_client()
        self.path = f"{GROUP_PATH}/namespaces/{namespace}/dittoservers?dryRun=All"
        self.body = {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
                     "metadata": {"name": "probe", "namespace": namespace},
                     "spec": {"storage": {"metadataSize": "1Gi", "contentSize": "2Gi"}}}
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def summary(self) -> str:
        lat = sorted(self.latencies)
        return (f"{len(lat)} sent, {len(self.failures)} failed, p50 {statistics.median(lat) * 1000:.1f} ms, "
                f"max {lat[-1] * 1000:.1f} ms")

    def run(self) -> None:
        deadline = time.monotonic() + self.limit  # bounded whatever the test does
        while not self.stop.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                status, payload = self.api.request("POST", self.path, self.body)
            except Exception as exc:  # recorded: an uncaught one would end the thread, unseen
                status, payload = 0, f"{type(exc).__name__}: {exc}"
            self.latencies.append(time.monotonic() - t0)
            if status != 201:
                message = payload.get("message") if isinstance(payload, dict) else payload
                self.failures.append(f"HTTP {status}: {message}")
            time.sleep(0.05)


def test_helm_install_runs_operator_and_webhook_on_the_real_node(
        testbed: Testbed, real_node: RealNode, quiet_operator: OperatorProcess, helm: Helm, release_ns: str,
        workload_ns: str, image: str, tmp_path: Path) -> None:
    report: list[str] = []
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values(real_node)))
    adopt_crd(testbed, release_ns)
    with installed(testbed, helm, release_ns, report):
        # 1. Install: the operator pod on the real node, Ready through the chart's own probes.
        t0 = time.monotonic()
        helm("install", RELEASE, str(CHART), "-n", release_ns, "-f", str(values_file), "--wait", "--timeout", "180s")
        pods = eventually(lambda: ready_pods(testbed, release_ns, 1), timeout=60, what="the operator pod Ready")
        report.append(f"helm install --wait -> operator Ready: {time.monotonic() - t0:.1f} s")
        pod = pods[0]
        name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
        assert pod["spec"]["nodeName"] == real_node.name
        assert pod["spec"]["serviceAccountName"] == RELEASE
        assert pod["status"]["containerStatuses"][0]["imageID"], pod["status"]["containerStatuses"]
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
        container = pod["spec"]["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["image"] == image.removeprefix("docker.io/library/"), (container["image"], image)
        # The token volume came from ServiceAccount admission (the chart's account, not a test credential).
        assert any(v.get("projected") for v in pod["spec"]["volumes"]), pod["spec"]["volumes"]
        started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        ready_at = next(c["lastTransitionTime"] for c in pod["status"]["conditions"] if c["type"] == "Ready")
        report.append(f"container start {started} -> pod Ready {ready_at}")
        assert (health(ip, "/healthz"), health(ip, "/readyz")) == (200, 200)
        rss = real_node_rss(pod["metadata"]["uid"])
        report.append(f"operator container RSS after install: {rss / 2**20:.1f} MiB")

        # JSON logs, as `kubectl logs` shows them.
        logs = testbed.kubectl("logs", name, "-n", release_ns).stdout
        lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
        assert lines and all({"ts", "level", "logger", "msg"} <= set(entry) for entry in lines), logs[-2000:]

        # 2. The webhook, in-cluster, through its Service's endpoint.
        endpoints = kubectl_json(testbed, "get", "endpoints", SERVICE, "-n", release_ns)
        addresses = [a["ip"] for s in endpoints.get("subsets") or [] for a in s.get("addresses") or []]
        assert addresses == [ip], endpoints
        denial = admit_invalid(testbed, workload_ns)
        assert 'The DittoServer "invalid" is invalid' in denial and DENIAL in denial, denial
        report.append(f"invalid DittoServer: {denial.strip()[:160]}")

        # 3. A valid DittoServer, reconciled and provisioned by the in-cluster operator; a file through NFS.
        apply_server(testbed, workload_ns, **real_node.pod_placement(),
                     shares=[{"name": "/export", "defaultPermission": "read-write"}])
        obj = wait_ready(testbed, workload_ns, timeout=180)
        provisioned = condition(obj, "Provisioned")
        assert provisioned is not None and provisioned["status"] == "True", provisioned
        sa_user = f"system:serviceaccount:{release_ns}:{RELEASE}"
        writes = [e for e in testbed.audit_events(user=sa_user) if e.get("verb") in {"create", "patch", "update"}
                  and (e.get("objectRef") or {}).get("namespace") == workload_ns]
        assert writes, f"no write to {workload_ns} by {sa_user}: the in-cluster operator did not reconcile"
        dfs_pod = kubectl_json(testbed, "get", "pod", "demo-0", "-n", workload_ns)
        dfs_ip, dfs_uid = dfs_pod["status"]["podIP"], dfs_pod["metadata"]["uid"]
        payload = f"installed by helm in {workload_ns}\n".encode() * 100
        (tmp_path / "f.txt").write_bytes(payload)

        def put() -> bool:
            nfs_put(dfs_ip, tmp_path / "f.txt", "f.txt", share="/export")
            return True

        eventually(put, timeout=30, what="nfs-cp into /export")
        assert nfs_get(dfs_ip, "f.txt", share="/export") == payload

        # 4. helm upgrade to a changed value: the operator rolls, the DittoFS pod does not.
        helm("upgrade", RELEASE, str(CHART), "-n", release_ns, "-f", str(values_file),
             "--set", "logging.level=DEBUG", "--wait", "--timeout", "180s")
        pods = eventually(lambda: ready_pods(testbed, release_ns, 1), timeout=60, what="the upgraded operator")
        assert pods[0]["metadata"]["name"] != name, "helm upgrade did not roll the operator"
        assert "--log-level=DEBUG" in pods[0]["spec"]["containers"][0]["args"]
        dfs_pod = kubectl_json(testbed, "get", "pod", "demo-0", "-n", workload_ns)
        assert dfs_pod["metadata"]["uid"] == dfs_uid
        assert dfs_pod["status"]["containerStatuses"][0]["restartCount"] == 0
        assert DENIAL in admit_invalid(testbed, workload_ns)
        wait_ready(testbed, workload_ns, timeout=60)

        # 5. Two replicas: delete the leader's pod; the other takes the Lease, every admission passes.
        helm("upgrade", RELEASE, str(CHART), "-n", release_ns, "-f", str(values_file),
             "--set", "logging.level=DEBUG", "--set", "replicaCount=2", "--wait", "--timeout", "180s")
        pods = eventually(lambda: ready_pods(testbed, release_ns, 2), timeout=90, what="two operator replicas")
        leader = eventually(lambda: lease_holder(testbed, release_ns), timeout=30, what="a Lease holder")
        leader_pod = leader.rsplit("_", 1)[0]  # holderIdentity: <pod name>_<random>
        assert leader_pod in {p["metadata"]["name"] for p in pods}, (leader, pods)
        admissions = Admissions(testbed, workload_ns)
        admissions.start()
        time.sleep(2)
        t_kill = time.monotonic()
        testbed.kubectl("delete", "pod", leader_pod, "-n", release_ns, "--wait=false")
        new_leader = eventually(lambda: (h if (h := lease_holder(testbed, release_ns)) not in (None, leader)
                                         else None), timeout=60, interval=0.05, what="a new Lease holder")
        gap = time.monotonic() - t_kill
        eventually(lambda: ready_pods(testbed, release_ns, 2), timeout=90, what="the replacement replica")
        time.sleep(2)
        admissions.stop.set()
        admissions.join(timeout=30)
        assert not admissions.is_alive()
        report.append(f"failover: Lease {leader} -> {new_leader} in {gap:.2f} s; admissions during it: "
                      f"{admissions.summary()}")
        assert admissions.failures == [], admissions.failures[:5]
        assert len(admissions.latencies) > 20, admissions.latencies
        assert gap < 20, gap
        # The DittoServer is still reconciled by the new leader: an edit reaches its StatefulSet.
        testbed.kubectl("annotate", "dittoserver", "demo", "-n", workload_ns, "testbed.local/poke=1")
        wait_ready(testbed, workload_ns, timeout=60)

    # 6. helm uninstall: no webhook configuration, no RBAC left; the CRD and the DittoServer (with its data) stay.
    assert_uninstalled(testbed)
    # What the operator made for itself (Lease, selfSigned Secret) is owned by the webhook configuration: the
    # garbage collector follows it out. Only the namespace's own default account is left.
    leftovers: list[str] = []

    def nothing_left() -> bool | None:
        names = testbed.kubectl("get", "deployment,replicaset,pod,service,serviceaccount,secret,configmap,lease,"
                                "role,rolebinding,poddisruptionbudget", "-n", release_ns, "-o", "name").stdout.split()
        leftovers[:] = [n for n in names if n not in ("serviceaccount/default", "configmap/kube-root-ca.crt")]
        return True if not leftovers else None

    try:
        eventually(nothing_left, timeout=60, what=f"helm uninstall to leave nothing in {release_ns}")
    except AssertionError:
        raise AssertionError(f"helm uninstall left {leftovers} in {release_ns}") from None
    assert kubectl_json(testbed, "get", "dittoserver", "demo", "-n", workload_ns)["metadata"]["name"] == "demo"


CERTIFICATES = "/apis/cert-manager.io/v1/namespaces/{ns}/certificates"


def served_certificate(ip: str, port: int = 9443) -> x509.Certificate:
    """The certificate the webhook serves right now (read without verifying: the test compares it)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((ip, port), timeout=3) as sock, ctx.wrap_socket(sock) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def secret_pem(testbed: Testbed, namespace: str, name: str, key: str) -> bytes | None:
    status, secret = testbed.api.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
    data = (secret.get("data") or {}) if status == 200 else {}
    return base64.b64decode(data[key]) if data.get(key) else None


def renew(testbed: Testbed, namespace: str, name: str) -> None:
    """What `cmctl renew` does: set the Certificate's Issuing condition (reason ManuallyTriggered)."""
    path = f"{CERTIFICATES.format(ns=namespace)}/{name}"
    cert = testbed.api.get(path)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conditions = [c for c in cert["status"].get("conditions") or [] if c["type"] != "Issuing"]
    conditions.append({"type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
                       "message": "renewal triggered by the install test", "lastTransitionTime": now})
    testbed.api.call("PATCH", f"{path}/status", {"status": {"conditions": conditions}},
                     content_type="application/merge-patch+json")


def test_cert_manager_issues_injects_and_renews_without_a_failed_admission(
        testbed: Testbed, real_node: RealNode, quiet_operator: OperatorProcess, helm: Helm, release_ns: str,
        workload_ns: str, image: str, tmp_path: Path) -> None:
    """The chart's default TLS mode with a real cert-manager v1.11.5 controller and cainjector."""
    report: list[str] = []
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values(real_node, webhook={"tls": {"mode": "certManager"}})))
    cert_manager = CertManager(testbed, release_ns, tmp_path, cainjector=True)
    tls_secret, cert_name, config = f"{SERVICE}-tls", f"{RELEASE}-serving-cert", RELEASE
    adopt_crd(testbed, release_ns)
    # cert-manager goes after the release; its CRDs too: other tests prove the answer to a cluster without it.
    with installed(testbed, helm, release_ns, report, after=(cert_manager.stop, cert_manager.remove_crds)):
        cert_manager.start()
        t0 = time.monotonic()
        helm("install", RELEASE, str(CHART), "-n", release_ns, "-f", str(values_file), "--wait", "--timeout", "180s")
        pods = eventually(lambda: ready_pods(testbed, release_ns, 1), timeout=120, what="the operator pod Ready")
        report.append(f"helm install (certManager) -> operator Ready: {time.monotonic() - t0:.1f} s")
        ip = pods[0]["status"]["podIP"]

        # Issued by the chart's CA, injected by cainjector, served by the pod.
        leaf_pem = eventually(lambda: secret_pem(testbed, release_ns, tls_secret, "tls.crt"), timeout=60,
                              what=f"Secret {tls_secret} (log {cert_manager.log_path})")
        ca_pem = secret_pem(testbed, release_ns, tls_secret, "ca.crt")
        assert ca_pem is not None
        ca = x509.load_pem_x509_certificate(ca_pem)
        leaf = x509.load_pem_x509_certificate(leaf_pem)
        leaf.verify_directly_issued_by(ca)
        assert ca.subject != leaf.subject  # a CA, not a self-signed leaf

        def injected() -> bytes | None:
            hooks = testbed.api.get(f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{config}")
            bundle = hooks["webhooks"][0]["clientConfig"].get("caBundle")
            return base64.b64decode(bundle) if bundle else None

        bundle = eventually(injected, timeout=60,
                            what=f"cainjector's caBundle (log {cert_manager.cainjector_log_path})")
        assert x509.load_pem_x509_certificate(bundle) == ca
        served = eventually(lambda: c if (c := served_certificate(ip)).serial_number == leaf.serial_number else None,
                            timeout=120, what="the pod serving cert-manager's certificate")
        report.append(f"issued, injected and served: {time.monotonic() - t0:.1f} s after helm install; "
                      f"leaf serial {served.serial_number:x}")
        assert DENIAL in admit_invalid(testbed, workload_ns)

        # A renewal: a new leaf (new key: rotationPolicy Always) from the same CA; the caBundle stays; the pod
        # picks the new files up when the kubelet refreshes the volume, and no admission fails meanwhile.
        admissions = Admissions(testbed, workload_ns, limit=240)
        admissions.start()
        time.sleep(2)
        t_renew = time.monotonic()
        renew(testbed, release_ns, cert_name)

        def renewed() -> x509.Certificate | None:
            pem = secret_pem(testbed, release_ns, tls_secret, "tls.crt")
            new = x509.load_pem_x509_certificate(pem) if pem else None
            return new if new is not None and new.serial_number != leaf.serial_number else None

        new_leaf = eventually(renewed, timeout=60, what="the renewed Secret")
        issued = time.monotonic() - t_renew
        new_leaf.verify_directly_issued_by(ca)
        eventually(lambda: served_certificate(ip).serial_number == new_leaf.serial_number or None, timeout=180,
                   interval=1, what="the pod serving the renewed certificate")
        picked_up = time.monotonic() - t_renew
        time.sleep(2)
        admissions.stop.set()
        admissions.join(timeout=30)
        assert not admissions.is_alive()
        assert injected() == bundle, "the renewal changed the caBundle"
        restarts = operator_pods(testbed, release_ns)[0]["status"]["containerStatuses"][0]["restartCount"]
        report.append(f"renewal: Secret {issued:.1f} s, served by the pod {picked_up:.1f} s after the trigger "
                      f"(same pod, restartCount {restarts}); admissions meanwhile: {admissions.summary()}")
        assert admissions.failures == [], admissions.failures[:5]
        assert operator_pods(testbed, release_ns)[0]["metadata"]["uid"] == pods[0]["metadata"]["uid"]
    assert_uninstalled(testbed)


@contextlib.contextmanager
def installed(testbed: Testbed, helm: Helm, namespace: str, report: list[str],
              after: tuple[Callable[[], object], ...] = ()) -> Iterator[None]:
    """The body installs the chart; a failure prints the diagnosis; the report is printed and the release
    uninstalled whatever happens (a failurePolicy=Fail webhook must not outlive the test), then ``after``."""
    try:
        yield
    except BaseException:
        print(diagnosis(testbed, namespace), file=sys.stderr)
        raise
    finally:
        print("\n[install] " + "\n[install] ".join(report), file=sys.stderr)
        uninstall(helm, namespace)
        for cleanup in after:
            cleanup()


def diagnosis(testbed: Testbed, namespace: str) -> str:
    """What a failed install looked like: the operator pods, their events and the last log lines."""
    parts = [testbed.kubectl("get", "deploy,rs,pods,endpoints", "-n", namespace, "-o", "wide", check=False).stdout,
             testbed.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout[-3000:]]
    for pod in operator_pods(testbed, namespace):
        name = pod["metadata"]["name"]
        parts.append(f"--- {name} status: {json.dumps(pod['status'].get('containerStatuses'))[:1500]}")
        parts.append(testbed.kubectl("logs", name, "-n", namespace, "--tail=40", check=False).stdout)
    return "\n[install diagnosis] ".join(["", *parts])


def real_node_rss(pod_uid: str) -> int:
    """Resident memory of the operator's process on the real node, found by its pod's cgroup."""
    markers = (pod_uid, pod_uid.replace("-", "_"))  # cgroupfs and systemd drivers spell it differently
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            cgroup = (proc / "cgroup").read_text()
            if not any(m in cgroup for m in markers) or not any(b"dittoctl" in a for a in cmdline):
                continue
            status = (proc / "status").read_text()
        except OSError:
            continue
        return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
    raise AssertionError(f"no dittoctl process in the cgroup of pod {pod_uid}")


def test_default_mode_without_cert_manager_fails_at_install_naming_the_fix(
        testbed: Testbed, helm: Helm, release_ns: str) -> None:
    """Bad input: the default TLS mode on a cluster that does not serve cert-manager.io/v1."""
    served = testbed.kubectl("api-versions").stdout.split()
    assert "cert-manager.io/v1" not in served, "a previous test left cert-manager's CRDs installed"
    result = helm("install", RELEASE, str(CHART), "-n", release_ns, check=False)
    try:
        assert result.returncode != 0, result.stdout
        assert "needs cert-manager" in result.stderr and "--set webhook.tls.mode=selfSigned" in result.stderr, \
            result.stderr
        assert absent(testbed, "deployment", RELEASE, release_ns)
        assert absent(testbed, "validatingwebhookconfiguration", RELEASE)
    finally:
        uninstall(helm, release_ns)
