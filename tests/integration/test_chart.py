"""The Helm chart on the real control plane: install, prove its RBAC is enough, uninstall cleanly.

The operator process runs on this machine (kwok only fakes the chart's pod), but as the chart's
ServiceAccount: a token from `kubectl create token`, the arguments from the installed Deployment, and the
webhook behind the chart's ValidatingWebhookConfiguration (clientConfig pointed at loopback, as the
apiserver cannot reach a fake pod). Any permission the code uses and the chart lacks shows up as a 403 in
the operator log or the audit log.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certs.selfsigned import signed_by
from tests.support.chart import RELEASE, SERVICE, Helm, adopt_crd, assert_uninstalled, uninstall
from tests.support.kube import absent, apply_server, events, kubectl_json, server, wait_ready
from tests.support.net import free_port
from tests.support.operator import OperatorProcess
from tests.support.paths import CHART, ROOT
from tests.support.percona import PERCONA_CRD, cluster, percona_spec, play_percona_ready
from tests.support.poll import eventually
from tests.testbed.paths import servicemonitor_crd
from tests.testbed.provisioner import PROVISIONER_NAME
from webhook.server import WEBHOOK_PATH

pytestmark = pytest.mark.integration

PERCONA_CRD_NAME = "perconapgclusters.pgv2.percona.com"
SERVICEMONITOR_CRD_NAME = "servicemonitors.monitoring.coreos.com"
TESTBED_OPERATOR_USER = "dittofs-operator"  # the test bed's cluster-admin operator identity (other tests)



@pytest.fixture(autouse=True)
def _only_reconciler(quiet_operator: OperatorProcess) -> None:
    """Stop the session's cluster-admin operator: the RBAC proof needs the chart's identity to be alone."""


def service_account_kubeconfig(testbed: Any, namespace: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount (a bound token, 1 h)."""
    token = testbed.kubectl("create", "token", RELEASE, "-n", namespace, "--duration=1h").stdout.strip()
    assert token.count(".") == 2, "expected a JWT from the TokenRequest API"
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "testbed", "cluster": {"server": testbed.api_url,
                                                     "certificate-authority": str(testbed.ca_cert_path)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "testbed", "user": "sa"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def chart_args(testbed: Any, namespace: str, overrides: dict[str, str], *extra: str) -> list[str]:
    """The installed Deployment's arguments for `dittoctl run`, host-specific values replaced, `extra` added."""
    deploy = kubectl_json(testbed, "get", "deployment", RELEASE, "-n", namespace)
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    args: list[str] = container["args"]
    assert args[0] == "run", args
    flags = {a.split("=", 1)[0] for a in args[1:]}
    assert set(overrides) <= flags, f"the chart no longer passes {set(overrides) - flags}"
    kept = [a for a in args[1:] if a.split("=", 1)[0] not in overrides]
    return [*kept, *(f"{flag}={value}" for flag, value in overrides.items()), *extra]


def point_webhook_at(testbed: Any, port: int, ca_b64: str) -> None:
    """The apiserver cannot reach a kwok pod: send the chart's webhook to the local process instead."""
    client = {"url": f"https://127.0.0.1:{port}{WEBHOOK_PATH}", "caBundle": ca_b64}
    testbed.kubectl("patch", "validatingwebhookconfiguration", RELEASE, "--type=json",
                    "-p", json.dumps([{"op": "replace", "path": "/webhooks/0/clientConfig", "value": client}]))


def install_provided(testbed: Any, helm: Helm, namespace: str, tmp_path: Path, *sets: str) -> Path:
    """`helm install` in `provided` TLS mode with a serving certificate from the test CA; returns the cert dir."""
    cert_dir = tmp_path / "certs"
    cert, key = testbed.issue_serving_cert(cert_dir, cn=f"{SERVICE}.{namespace}.svc")
    testbed.kubectl("create", "secret", "tls", "webhook-tls", "-n", namespace, f"--cert={cert}", f"--key={key}")
    adopt_crd(testbed, namespace)
    args = ["webhook.tls.mode=provided", "webhook.tls.provided.secretName=webhook-tls",
            f"webhook.tls.provided.caBundle={testbed.ca_b64}", *sets]
    helm("install", RELEASE, str(CHART), "-n", namespace, "--wait", "--timeout", "90s",
         *(a for value in args for a in ("--set", value)))
    return cert_dir


def start_as_chart(testbed: Any, namespace: str, cert_dir: Path, tmp_path: Path) -> OperatorProcess:
    """The real operator with the chart's arguments and ServiceAccount, its webhook behind the chart's config."""
    kubeconfig = service_account_kubeconfig(testbed, namespace, tmp_path / "sa.kubeconfig")
    webhook_port = free_port()
    operator = OperatorProcess(str(kubeconfig), tmp_path)
    operator.extra = chart_args(testbed, namespace, {
        "--health-port": str(operator.health_port), "--webhook-port": str(webhook_port),
        "--cert-dir": str(cert_dir)}, "--webhook-host=127.0.0.1", "--drift-interval=5")
    point_webhook_at(testbed, webhook_port, testbed.ca_b64)
    operator.start()
    return operator


def forbidden_lines(text: str) -> list[str]:
    """Log lines about a denied API call (the apiserver's "... is forbidden: User ..." or our "HTTP 403"). An Event
    refused in a namespace being deleted is a 403 too, but not the RBAC's: the chart's operator watches every
    namespace, and an earlier test's may still be terminating."""
    return [line for line in text.splitlines() if ("forbidden" in line.lower() or "http 403" in line.lower())
            and "because it is being terminated" not in line]


def audit_of(testbed: Any, user: str, since: int) -> list[dict[str, Any]]:
    return list(testbed.audit_events(user=user, since_line=since))


def rbac_denied(audit: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    """The audited requests the RBAC refused. A 403 the authorizer allowed is not one: an Event refused in a
    namespace being deleted (an earlier test's, which the chart's operator also watches)."""
    return [(e["verb"], resource_of(e), (e.get("objectRef") or {}).get("name")) for e in audit
            if (e.get("responseStatus") or {}).get("code") == 403
            and (e.get("annotations") or {}).get("authorization.k8s.io/decision") != "allow"]


def resource_of(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    return f"{ref.get('resource')}/{ref['subresource']}" if ref.get("subresource") else str(ref.get("resource"))


def test_chart_rbac_runs_the_full_lifecycle(testbed: Any, helm: Helm, release_ns: str, workload_ns: str,
                                            tmp_path: Path) -> None:
    percona_preinstalled = testbed.kubectl("get", "crd", PERCONA_CRD_NAME, check=False).returncode == 0
    operator: OperatorProcess | None = None
    try:
        cert_dir = install_provided(testbed, helm, release_ns, tmp_path)
        # The chart's pod passed Pod Security "restricted" and became available (kwok runs it).
        deploy = kubectl_json(testbed, "get", "deployment", RELEASE, "-n", release_ns)
        assert deploy["status"].get("availableReplicas") == 1, deploy["status"]
        vwc = kubectl_json(testbed, "get", "validatingwebhookconfiguration", RELEASE)
        assert base64.b64decode(vwc["webhooks"][0]["clientConfig"]["caBundle"]) == testbed.ca_pem
        if not percona_preinstalled:
            testbed.kubectl("apply", "--server-side", "-f", str(PERCONA_CRD))
            testbed.wait_crd(PERCONA_CRD_NAME)
        testbed.kubectl("apply", "--server-side", "-f", str(servicemonitor_crd()))
        testbed.wait_crd(SERVICEMONITOR_CRD_NAME)
        sa_user = f"system:serviceaccount:{release_ns}:{RELEASE}"
        mark = testbed.audit_line_count()
        operator = start_as_chart(testbed, release_ns, cert_dir, tmp_path)

        lifecycle(testbed, workload_ns)

        log = operator.log_text()
        assert "became leader" in log, operator.log_tail()
        # Reads are not audited: a denied list or watch would be a 403 in the log, checked next.
        assert "perconapgclusters served; watching them" in log and "servicemonitors served; watching them" in log
        assert forbidden_lines(log) == [], "\n".join(forbidden_lines(log))
        audit = audit_of(testbed, sa_user, mark)
        denied = rbac_denied(audit)
        assert denied == [], f"the chart's RBAC denied: {denied}"
        # The lifecycle really exercised every kind of write the chart grants. (A server-side apply that
        # creates its object is audited as "patch" but also authorized as "create".)
        # Only this test's namespaces: the chart's operator watches all of them, and may be finishing other tests'
        # leftovers. (The Lease lives in the release namespace.)
        used = {(e["verb"], resource_of(e)) for e in audit if (e.get("responseStatus") or {}).get("code", 500) < 300
                and (e.get("objectRef") or {}).get("namespace") in (workload_ns, release_ns)}
        expected = {
            ("patch", "dittoservers"), ("patch", "dittoservers/status"), ("patch", "statefulsets"),
            ("patch", "configmaps"), ("patch", "services"), ("delete", "services"), ("create", "secrets"),
            ("create", "events"), ("patch", "perconapgclusters"), ("delete", "perconapgclusters"),
            ("create", "leases"), ("patch", "leases"), ("patch", "networkpolicies"), ("delete", "networkpolicies"),
            ("patch", "servicemonitors"), ("delete", "servicemonitors"), ("patch", "persistentvolumeclaims"),
            ("delete", "statefulsets"),
        }
        assert expected <= used, f"not exercised: {sorted(expected - used)}"
        # Nobody else reconciled these objects (the test bed's cluster-admin operator of other tests).
        others = [e for e in audit_of(testbed, TESTBED_OPERATOR_USER, mark)
                  if (e.get("objectRef") or {}).get("namespace") == workload_ns]
        assert others == [], "another operator touched the test namespace; the RBAC proof is void"
    finally:
        if operator is not None:
            operator.stop()
        if not percona_preinstalled:
            testbed.kubectl("delete", "crd", PERCONA_CRD_NAME, "--ignore-not-found", "--timeout=60s", check=False)
        testbed.kubectl("delete", "crd", SERVICEMONITOR_CRD_NAME, "--ignore-not-found", "--timeout=60s", check=False)
        uninstall(helm, release_ns)
    assert_uninstalled(testbed)


def test_a_cluster_role_without_list_and_watch_on_servicemonitors_means_gets_not_a_403_loop(
        testbed: Any, helm: Helm, release_ns: str, workload_ns: str, tmp_path: Path) -> None:
    """A ClusterRole from before the optional kinds were watched (get, no list/watch): one warning naming what to
    grant, the ServiceMonitor still applied (read with GETs), the operator Ready."""
    operator: OperatorProcess | None = None
    try:
        cert_dir = install_provided(testbed, helm, release_ns, tmp_path)
        testbed.kubectl("apply", "--server-side", "-f", str(servicemonitor_crd()))
        testbed.wait_crd(SERVICEMONITOR_CRD_NAME)
        role = kubectl_json(testbed, "get", "clusterrole", RELEASE)
        for rule in role["rules"]:
            if "servicemonitors" in rule.get("resources", []):
                rule["verbs"] = [v for v in rule["verbs"] if v not in ("list", "watch")]
        testbed.kubectl("replace", "-f", "-", input=json.dumps(role))
        operator = start_as_chart(testbed, release_ns, cert_dir, tmp_path)
        apply_server(testbed, workload_ns, metrics={"enabled": True})
        wait_ready(testbed, workload_ns)
        found = kubectl_json(testbed, "get", "servicemonitor", "demo-metrics", "-n", workload_ns)
        assert found["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
        time.sleep(6)  # a drift pass (every 5 s) reads it again, with a GET
        refused = [line for line in operator.log_text().splitlines()
                   if "servicemonitors: no permission to list and watch them" in line]
        assert len(refused) == 1 and "monitoring.coreos.com" in refused[0], operator.log_tail()
        assert operator.ready(), operator.log_tail()
        assert "servicemonitors watch interrupted" not in operator.log_text(), "retried the refused listing"
    finally:
        if operator is not None:
            operator.stop()
        testbed.kubectl("delete", "dittoserver", "demo", "-n", workload_ns, "--ignore-not-found", "--timeout=60s",
                        check=False)
        testbed.kubectl("delete", "crd", SERVICEMONITOR_CRD_NAME, "--ignore-not-found", "--timeout=60s", check=False)
        uninstall(helm, release_ns)
    assert_uninstalled(testbed)


def test_a_role_without_percona_rules_still_deletes_a_server_that_never_had_a_database(
        testbed: Any, helm: Helm, release_ns: str, workload_ns: str, tmp_path: Path) -> None:
    """A ClusterRole trimmed of Percona (the CRD installed for someone else): the finalizer's look for an owned
    cluster is refused (403), and a server that never had one must not be held forever by it."""
    operator: OperatorProcess | None = None
    percona_preinstalled = testbed.kubectl("get", "crd", PERCONA_CRD_NAME, check=False).returncode == 0
    try:
        cert_dir = install_provided(testbed, helm, release_ns, tmp_path)
        testbed.kubectl("apply", "--server-side", "-f", str(PERCONA_CRD))
        testbed.wait_crd(PERCONA_CRD_NAME)
        role = kubectl_json(testbed, "get", "clusterrole", RELEASE)
        role["rules"] = [r for r in role["rules"] if not {"perconapgclusters", "perconapgbackups"} & set(
            r.get("resources", []))]
        testbed.kubectl("replace", "-f", "-", input=json.dumps(role))
        operator = start_as_chart(testbed, release_ns, cert_dir, tmp_path)
        apply_server(testbed, workload_ns)
        wait_ready(testbed, workload_ns)
        testbed.kubectl("delete", "dittoserver", "demo", "-n", workload_ns, "--timeout=60s")
        assert "this server never had one, so its deletion goes on" in operator.log_text(), operator.log_tail()
    finally:
        if operator is not None:
            operator.stop()
        testbed.kubectl("delete", "dittoserver", "demo", "-n", workload_ns, "--ignore-not-found", "--timeout=60s",
                        check=False)
        if not percona_preinstalled:
            testbed.kubectl("delete", "crd", PERCONA_CRD_NAME, "--ignore-not-found", "--timeout=60s", check=False)
        uninstall(helm, release_ns)
    assert_uninstalled(testbed)


def lifecycle(testbed: Any, ns: str) -> None:
    """Create, change and delete DittoServers through every permission-relevant path of the operator."""
    # The webhook (as the ServiceAccount) denies a bad object and posts a ValidationFailed Event.
    body = {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
            "metadata": {"name": "bad", "namespace": ns},
            "spec": {"storage": {"metadataSize": "1Gi", "storageClassName": "no-such-class"},
                     "adapters": {"nfs": {"port": 8080}}}}
    denied = testbed.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert denied.returncode != 0
    assert "spec.adapters.nfs.port: port 8080 is also used by spec.controlPlane.port" in denied.stderr
    assert 'StorageClass "no-such-class" not found' in denied.stderr
    eventually(lambda: events(testbed, ns, "ValidationFailed"), what="ValidationFailed event from the webhook")

    # A user Secret (read for the hash) and generated ones (created); Percona with and without deletion.
    testbed.kubectl("create", "secret", "generic", "jwt", "-n", ns, "--from-literal=k=" + "j" * 40)
    jwt = {"jwt": {"secretRef": {"name": "jwt", "key": "k"}}}
    apply_server(testbed, ns, "demo", identity=jwt)
    apply_server(testbed, ns, "gone", percona=percona_spec(deleteWithServer=True))
    apply_server(testbed, ns, "kept", percona=percona_spec())
    for name in ("gone", "kept"):
        eventually(lambda: absent(testbed, "perconapgcluster", f"{name}-postgres", ns) is False,  # noqa: B023
                   what=f"PerconaPGCluster {name}-postgres")
        play_percona_ready(testbed, ns, name)
    for name in ("demo", "gone", "kept"):
        wait_ready(testbed, ns, name, timeout=120)

    # Changes: a config change rolls the StatefulSet; metrics on creates a Service and a ServiceMonitor,
    # metrics off deletes both; the NetworkPolicy goes when turned off.
    before = server(testbed, ns, "demo")["status"]["configHash"]
    assert absent(testbed, "networkpolicy", "demo-ingress", ns) is False
    apply_server(testbed, ns, "demo", identity=jwt, logging={"level": "DEBUG"}, metrics={"enabled": True})
    eventually(lambda: absent(testbed, "service", "demo-metrics", ns) is False, what="metrics Service created")
    eventually(lambda: absent(testbed, "servicemonitor", "demo-metrics", ns) is False, what="ServiceMonitor created")
    assert wait_ready(testbed, ns, "demo")["status"]["configHash"] != before
    apply_server(testbed, ns, "demo", identity=jwt, logging={"level": "DEBUG"}, networkPolicy={"enabled": False})
    eventually(lambda: absent(testbed, "service", "demo-metrics", ns), what="metrics Service deleted")
    eventually(lambda: absent(testbed, "servicemonitor", "demo-metrics", ns), what="ServiceMonitor deleted")
    eventually(lambda: absent(testbed, "networkpolicy", "demo-ingress", ns), what="NetworkPolicy deleted")
    wait_ready(testbed, ns, "demo")

    # Volume expansion: PVCs listed and patched, the StatefulSet deleted (orphaning its pod) and re-created.
    sc = f"expand-{ns}"
    testbed.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": sc},
        "provisioner": PROVISIONER_NAME, "allowVolumeExpansion": True, "volumeBindingMode": "Immediate"}))
    try:
        storage = {"metadataSize": "1Gi", "contentSize": "2Gi", "storageClassName": sc}
        apply_server(testbed, ns, "grow", storage=storage)
        wait_ready(testbed, ns, "grow", timeout=120)
        apply_server(testbed, ns, "grow", storage={**storage, "contentSize": "3Gi"})
        eventually(lambda: events(testbed, ns, "VolumesExpanded"), timeout=90, what="VolumesExpanded")
        wait_ready(testbed, ns, "grow", timeout=120)
    finally:
        testbed.kubectl("delete", "storageclass", sc, "--ignore-not-found", check=False)

    # Adoption under OwnerReferencesPermissionEnforcement: children orphaned by `--cascade=orphan` get the new
    # server of that name as their owner (an owner change: the plugin asks for `delete` on each child kind).
    apply_server(testbed, ns, "adopt")
    wait_ready(testbed, ns, "adopt")
    testbed.kubectl("delete", "dittoserver", "adopt", "-n", ns, "--cascade=orphan", "--timeout=90s")
    old_uid = kubectl_json(testbed, "get", "configmap", "adopt-config", "-n", ns)["metadata"].get("uid")
    apply_server(testbed, ns, "adopt")
    new = kubectl_json(testbed, "get", "dittoserver", "adopt", "-n", ns)["metadata"]["uid"]
    eventually(lambda: [r["uid"] for r in kubectl_json(testbed, "get", "configmap", "adopt-config", "-n", ns)
                        ["metadata"].get("ownerReferences", [])] == [new], timeout=60, what="ConfigMap adopted")
    assert kubectl_json(testbed, "get", "configmap", "adopt-config", "-n", ns)["metadata"]["uid"] == old_uid
    wait_ready(testbed, ns, "adopt")

    # Deletion: drain (scale to 0), Percona deleted or orphaned, finalizer removed, PVCs kept.
    for name in ("demo", "gone", "kept", "grow", "adopt"):
        testbed.kubectl("delete", "dittoserver", name, "-n", ns, "--wait=false")
    for name in ("demo", "gone", "kept", "grow", "adopt"):
        eventually(lambda: absent(testbed, "dittoserver", name, ns), timeout=90,  # noqa: B023
                   what=f"DittoServer {name} gone")
    eventually(lambda: absent(testbed, "perconapgcluster", "gone-postgres", ns), what="gone-postgres deleted")
    time.sleep(1)  # garbage collection would act now if the orphaning had failed
    assert cluster(testbed, ns, "kept-postgres")["metadata"].get("ownerReferences", []) == []
    pvcs = {p["metadata"]["name"] for p in kubectl_json(testbed, "get", "pvc", "-n", ns)["items"]}
    assert {"metadata-demo-0", "content-demo-0", "controlplane-demo-0"} <= pvcs


def test_chart_self_signed_mode_publishes_its_ca(testbed: Any, helm: Helm, release_ns: str,
                                                 tmp_path: Path) -> None:
    """selfSigned: the Secret and caBundle writes are granted by name only, and survive `helm upgrade`."""
    adopt_crd(testbed, release_ns)
    operator: OperatorProcess | None = None
    try:
        # failurePolicy Ignore: the configuration points at an unreachable Service while this test runs.
        helm("install", RELEASE, str(CHART), "-n", release_ns, "--wait", "--timeout", "90s",
             "--set", "webhook.tls.mode=selfSigned", "--set", "webhook.failurePolicy=Ignore")
        sa_user = f"system:serviceaccount:{release_ns}:{RELEASE}"
        kubeconfig = service_account_kubeconfig(testbed, release_ns, tmp_path / "sa.kubeconfig")
        cert_dir = tmp_path / "certs"
        operator = OperatorProcess(str(kubeconfig), tmp_path)
        operator.extra = chart_args(testbed, release_ns, {
            "--health-port": str(operator.health_port), "--webhook-port": str(free_port()),
            "--cert-dir": str(cert_dir)}, "--webhook-host=127.0.0.1")
        mark = testbed.audit_line_count()
        operator.start()  # ready = the webhook loaded the certificate it issued itself

        secret = kubectl_json(testbed, "get", "secret", f"{SERVICE}-tls", "-n", release_ns)
        ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
        leaf = x509.load_pem_x509_certificate((cert_dir / "tls.crt").read_bytes())
        leaf.verify_directly_issued_by(ca)
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert f"{SERVICE}.{release_ns}.svc" in sans.get_values_for_type(x509.DNSName)

        def bundle() -> bytes:
            vwc = kubectl_json(testbed, "get", "validatingwebhookconfiguration", RELEASE)
            return base64.b64decode(vwc["webhooks"][0]["clientConfig"].get("caBundle") or "")

        eventually(lambda: ca.public_bytes(Encoding.PEM) in bundle(),
                   what="caBundle published")
        operator.stop()
        operator.start()  # a restart reuses the stored CA (get by name), it does not create a new one
        assert kubectl_json(testbed, "get", "secret", f"{SERVICE}-tls", "-n", release_ns)["data"]["ca.crt"] \
            == secret["data"]["ca.crt"]

        # The Secret deleted ("regenerate everything"): a new CA, trusted beside the old one until the leaf
        # moves to it. Its first kubernetes.io/tls Secret held no tls.crt, which the apiserver refused for ever.
        testbed.kubectl("delete", "secret", f"{SERVICE}-tls", "-n", release_ns)
        operator.stop()
        operator.start()
        eventually(lambda: not absent(testbed, "secret", f"{SERVICE}-tls", release_ns),
                   what="the Secret created again")
        new_ca = base64.b64decode(kubectl_json(testbed, "get", "secret", f"{SERVICE}-tls", "-n", release_ns)[
            "data"]["ca.crt"])
        assert new_ca != ca.public_bytes(Encoding.PEM)
        eventually(lambda: new_ca in bundle() and ca.public_bytes(Encoding.PEM) in bundle(), what="both CAs trusted")
        eventually(lambda: signed_by((cert_dir / "tls.crt").read_bytes(), new_ca), timeout=30,
                   what="the leaf moved to the new CA")
        ca = x509.load_pem_x509_certificate(new_ca)

        # helm upgrade (three-way merge) keeps the caBundle the operator published.
        helm("upgrade", RELEASE, str(CHART), "-n", release_ns, "--reuse-values", "--set", "webhook.timeoutSeconds=5")
        vwc = kubectl_json(testbed, "get", "validatingwebhookconfiguration", RELEASE)
        assert vwc["webhooks"][0]["timeoutSeconds"] == 5
        assert ca.public_bytes(Encoding.PEM) in bundle()

        log = operator.log_text()
        assert forbidden_lines(log) == [], "\n".join(forbidden_lines(log))
        audit = audit_of(testbed, sa_user, mark)
        assert rbac_denied(audit) == []
        used = {(e["verb"], resource_of(e)) for e in audit if (e.get("responseStatus") or {}).get("code", 500) < 300}
        assert {("create", "secrets"), ("patch", "validatingwebhookconfigurations")} <= used
    finally:
        if operator is not None:
            operator.stop()
        uninstall(helm, release_ns)
    assert_uninstalled(testbed)


def test_install_manifests_are_accepted_by_the_apiserver(testbed: Any) -> None:
    """config/install (for kubectl users) passes a server-side dry run, cert-manager kinds aside."""
    docs = [d for d in yaml.safe_load_all((ROOT / "config" / "install" / "dittofs-operator.yaml").read_text()) if d]
    namespace = docs[0]
    assert namespace["kind"] == "Namespace"
    created = absent(testbed, "namespace", namespace["metadata"]["name"])
    if created:
        testbed.kubectl("apply", "-f", "-", input=json.dumps(namespace))
    try:
        rest = [d for d in docs[1:] if not d["apiVersion"].startswith("cert-manager.io/")]
        assert {d["kind"] for d in rest} >= {"CustomResourceDefinition", "Deployment", "ValidatingWebhookConfiguration",
                                             "ClusterRole", "Role", "Service", "ServiceAccount"}
        result = testbed.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server",
                                 "--field-manager=dry-run-check", "-f", "-",
                                 input="\n---\n".join(json.dumps(d) for d in rest))
        assert result.stdout.count("(server dry run)") == len(rest), result.stdout
    finally:
        if created:
            testbed.kubectl("delete", "namespace", namespace["metadata"]["name"], "--wait=false", check=False)


def test_chart_watch_namespaces_rbac_is_enough(testbed: Any, helm: Helm, release_ns: str, workload_ns: str,
                                              tmp_path: Path) -> None:
    """watchNamespaces: namespaced rights only there (RoleBindings), and the operator needs no more."""
    sa_user = f"system:serviceaccount:{release_ns}:{RELEASE}"
    operator: OperatorProcess | None = None
    try:
        cert_dir = install_provided(testbed, helm, release_ns, tmp_path, f"watchNamespaces={{{workload_ns}}}")
        # Least privilege: nothing namespaced outside the watched namespace.
        for verb, resource, ns in (("list", "secrets", workload_ns), ("create", "configmaps", workload_ns)):
            assert testbed.kubectl("auth", "can-i", verb, resource, "-n", ns, f"--as={sa_user}",
                                   check=False).stdout.strip() == "yes"
        for verb, resource, ns in (("get", "secrets", "default"), ("list", "pods", "default"),
                                   ("list", "secrets", "--all-namespaces")):
            where = ["--all-namespaces"] if ns == "--all-namespaces" else ["-n", ns]
            assert testbed.kubectl("auth", "can-i", verb, resource, *where, f"--as={sa_user}",
                                   check=False).stdout.strip() == "no", (verb, resource, ns)
        mark = testbed.audit_line_count()
        operator = start_as_chart(testbed, release_ns, cert_dir, tmp_path)
        testbed.kubectl("create", "secret", "generic", "jwt", "-n", workload_ns, "--from-literal=k=" + "j" * 40)
        apply_server(testbed, workload_ns, "demo", identity={"jwt": {"secretRef": {"name": "jwt", "key": "k"}}})
        wait_ready(testbed, workload_ns, "demo")
        testbed.kubectl("delete", "dittoserver", "demo", "-n", workload_ns, "--timeout=90s")
        log = operator.log_text()
        assert forbidden_lines(log) == [], "\n".join(forbidden_lines(log)[:5])
        audit = audit_of(testbed, sa_user, mark)
        assert rbac_denied(audit) == []
        # ... and the audit read above is the chart identity's real work (else "no 403" proves nothing).
        used = {(e["verb"], resource_of(e)) for e in audit if (e.get("responseStatus") or {}).get("code", 500) < 300}
        assert {("patch", "statefulsets"), ("patch", "dittoservers/status")} <= used, sorted(used)
    finally:
        if operator is not None:
            operator.stop()
        uninstall(helm, release_ns)
    assert_uninstalled(testbed)
