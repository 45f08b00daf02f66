"""What a new user sees, through the tools they run (`kubectl`, `helm`) on the real control plane."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from typing import Any

import pytest

from tests.support.kube import absent, apply_server, condition, events, kubectl_json, server, wait_ready
from tests.support.operator import OperatorProcess
from tests.support.paths import CHART, CRD, CRD_NAME, ROOT
from tests.support.poll import eventually
from tests.testbed.node import RealNode

pytestmark = pytest.mark.integration
DOCS = ROOT / "docs"


def test_a_quantity_typo_is_rejected_in_words_not_a_regular_expression(crd: Any, namespace: str) -> None:
    body = {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
            "metadata": {"name": "typo", "namespace": namespace}, "spec": {"storage": {"metadataSize": "10Gb"}}}
    proc = crd.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert proc.returncode != 0
    assert "spec.storage.metadataSize" in proc.stderr, proc.stderr
    assert '"10Gb" must be a Kubernetes quantity such as 1Gi, 500Mi or 10G' in proc.stderr, proc.stderr
    assert "[KMGTPE]" not in proc.stderr, "the raw pattern must not reach the user"
    # In a share too (a bounded list: the CRD can afford the rule there), and a snapshot interval in words.
    body["spec"] = {"storage": {"metadataSize": "1Gi"}, "shares": [
        {"name": "/p", "quota": "10GB", "snapshotPolicy": {"interval": "daily"}}]}
    proc = crd.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert proc.returncode != 0
    assert "spec.shares[0].quota" in proc.stderr and "must be a Kubernetes quantity" in proc.stderr, \
        proc.stderr
    assert '"daily" must be a duration such as 6h or 30m, or @hourly, @daily, @weekly' in proc.stderr, proc.stderr
    assert '"10GB" must be a Kubernetes quantity' in proc.stderr, proc.stderr
    assert "[KMGTPE]" not in proc.stderr and "@hourly|" not in proc.stderr, "no raw pattern"


def test_a_missing_secret_is_a_wait_with_one_event_and_an_exact_message(
        testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    # The pod consumes the JWT Secret (S3 keys no longer: they go into remote stores over REST, SPEC §13).
    apply_server(testbed, namespace, identity={"jwt": {"secretRef": {"name": "my-jwt", "key": "jwt"}}})

    def waiting() -> dict[str, Any] | None:
        obj = server(testbed, namespace)
        config = condition(obj, "ConfigReady")
        return obj if config and config["reason"] == "MissingSecret" else None

    obj = eventually(waiting, timeout=60, what="ConfigReady=False/MissingSecret")
    assert obj["status"]["phase"] == "Pending"
    assert condition(obj, "ConfigReady")["message"] == "Secret my-jwt not found"  # type: ignore[index]
    progressing = condition(obj, "Progressing")
    assert progressing is not None and (progressing["status"], progressing["reason"]) == ("False", "WaitingForSecret")
    listed = testbed.kubectl("get", "dittoserver", "demo", "-n", namespace).stdout
    assert "Pending" in listed and "Failed" not in listed

    # The Secret appears without one key: a new, exact message and one more event.
    testbed.kubectl("create", "secret", "generic", "my-jwt", "-n", namespace, "--from-literal=other=x")
    eventually(lambda: (condition(server(testbed, namespace), "ConfigReady") or {}).get("message")
               == "Secret my-jwt has no key jwt", timeout=60, what="missing-key message")
    def two_warnings() -> list[dict[str, Any]] | None:
        found = events(testbed, namespace, "MissingSecret")
        return found if len(found) == 2 else None

    warnings = eventually(two_warnings, timeout=30, what="two MissingSecret events")
    assert {w["type"] for w in warnings} == {"Warning"}
    assert sorted(w["message"].split(";")[0] for w in warnings) == [
        "waiting for Secret my-jwt has no key jwt", "waiting for Secret my-jwt not found"]
    described = testbed.kubectl("describe", "dittoserver", "demo", "-n", namespace).stdout
    assert "MissingSecret" in described and "Events:  <none>" not in described


def test_a_server_held_by_its_finalizer_shows_deleting_and_why(
        testbed: Any, operator: OperatorProcess, real_node: RealNode, namespace: str) -> None:
    """On the real node a drain takes seconds (preStop, dfs's graceful stop): long enough to be seen.
    (kwok removes a pod's finalizers at once, so a fake pod cannot hold the finalizer.)"""
    apply_server(testbed, namespace, **real_node.pod_placement())
    wait_ready(testbed, namespace, timeout=120)
    testbed.kubectl("delete", "dittoserver", "demo", "-n", namespace, "--wait=false")
    seen: list[tuple[str, str]] = []

    def deleting() -> dict[str, Any] | None:
        obj = server(testbed, namespace)
        ready = condition(obj, "Ready") or {}
        listed = testbed.kubectl("get", "dittoserver", "demo", "-n", namespace, check=False).stdout.splitlines()
        seen.append((listed[1].split()[2] if len(listed) > 1 else "-", ready.get("message", "")))
        return obj if obj["status"].get("phase") == "Deleting" and ready.get("reason") == "Deleting" else None

    obj = eventually(deleting, timeout=30, interval=0.2, what="phase Deleting with the reason")
    assert "waiting for 1 pod(s) of StatefulSet demo to stop" in condition(obj, "Ready")["message"]  # type: ignore[index]
    assert ("Deleting", condition(obj, "Ready")["message"]) in seen, seen  # type: ignore[index]
    shown = [status for status, _ in seen]  # the PHASE column: Running until the finalizer's first status write
    assert "Running" not in shown[shown.index("Deleting"):], seen
    eventually(lambda: absent(testbed, "dittoserver", "demo", namespace),
               timeout=90, what="DittoServer gone")


def test_helm_install_without_cert_manager_stops_early_and_names_the_fix(crd: Any) -> None:
    release_ns = f"ux-{uuid.uuid4().hex[:6]}"
    argv = [str(crd.binaries.helm), "--kubeconfig", str(crd.kubeconfig), "install", "ux-operator", str(CHART),
            "-n", release_ns, "--create-namespace", "--set", "crds.install=false"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=crd.env(), check=False)
    assert proc.returncode != 0
    assert "needs cert-manager" in proc.stderr and "--set webhook.tls.mode=selfSigned" in proc.stderr, proc.stderr
    assert "ensure CRDs are installed first" not in proc.stderr
    # Nothing half-installed: no release, no webhook configuration.
    releases = subprocess.run([*argv[:3], "list", "-A", "-o", "json"], capture_output=True, text=True,
                              timeout=60, env=crd.env(), check=True).stdout
    assert "ux-operator" not in releases
    configs = kubectl_json(crd, "get", "validatingwebhookconfigurations")["items"]
    assert not [c for c in configs if c["metadata"]["name"].startswith("ux-operator")]


def test_a_misspelled_field_is_rejected_as_the_troubleshooting_guide_says(crd: Any, namespace: str) -> None:
    claimed = re.search(r"`(strict decoding error: unknown field \"spec\.storag\")`",
                        (DOCS / "TROUBLESHOOTING.md").read_text())
    assert claimed, "docs/TROUBLESHOOTING.md must quote kubectl's error"
    body = {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
            "metadata": {"name": "typo", "namespace": namespace},
            "spec": {"storage": {"metadataSize": "1Gi"}, "storag": {"metadataSize": "1Gi"}}}
    proc = crd.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert proc.returncode != 0 and claimed.group(1) in proc.stderr, proc.stderr
    assert absent(crd, "dittoserver", "typo", namespace)


def test_an_operator_started_before_its_crd_says_so_and_watches_once_it_is_installed(tmp_path: Any) -> None:
    """kopf resolves its resources once, when it starts. An operator that started first (a GitOps sync, a
    `kubectl apply -f` of a whole directory) used to turn ready and never watch a DittoServer. This needs a
    control plane without the CRD, so it starts its own."""
    from tests.testbed import Testbed, ensure_binaries

    bed = Testbed(binaries=ensure_binaries())
    bed.start()
    proc = OperatorProcess(str(bed.operator_kubeconfig), tmp_path, extra=["--no-webhook", "--log-level", "INFO"])
    try:
        proc.start(wait=False)
        problems = eventually(lambda: [p for p in proc.readiness() or [] if "CRD" in p] or None, timeout=30,
                              what="/readyz naming the missing CRD")
        assert CRD_NAME in problems[0], problems
        assert "dittoctl crd | kubectl apply -f -" in problems[0], problems
        assert "dittoctl crd | kubectl apply -f -" in proc.log_text()
        assert not proc.ready()
        status = subprocess.run([sys.executable, "-m", "dittoctl", "status", "demo", "-n", "default",
                                 "--kubeconfig", str(bed.kubeconfig)], capture_output=True, text=True, timeout=60)
        assert status.returncode == 1
        assert "is not served: install it with `dittoctl crd | kubectl apply -f -`" in status.stderr, status.stderr

        bed.kubectl("apply", "--server-side", "-f", str(CRD))
        bed.wait_crd(CRD_NAME)
        eventually(proc.ready, timeout=30, what=f"readiness once the CRD is served (log {proc.log_path})")
        bed.create_namespace("late")
        status = subprocess.run([sys.executable, "-m", "dittoctl", "status", "nope", "-n", "late",
                                 "--kubeconfig", str(bed.kubeconfig)], capture_output=True, text=True, timeout=60)
        assert (status.returncode, status.stderr.strip()) == (1, "DittoServer late/nope not found")
        apply_server(bed, "late")

        def reconciled() -> dict[str, Any] | None:
            obj = server(bed, "late")
            return obj if (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"] else None

        obj = eventually(reconciled, timeout=60, what=f"a reconciled DittoServer (log {proc.log_path})")
        assert "dittofs.dittofs.com/finalizer" in obj["metadata"]["finalizers"]
        assert bed.kubectl("get", "statefulset", "demo", "-n", "late", check=False).returncode == 0

        # The CRD deleted: the server is finalized (the deletion waits for that), then the process exits with one
        # line instead of kopf's traceback, so that its restart waits for the CRD as above.
        bed.kubectl("delete", "crd", CRD_NAME, "--timeout=90s")
        assert proc.proc is not None
        assert proc.proc.wait(timeout=60) == 1, proc.log_tail()
        assert "is not served: install it with `dittoctl crd | kubectl apply -f -` (the Helm chart installs it " \
               "while its value crds.install is true); exiting: a restart waits for it" in proc.log_text()
        last = [json.loads(line)["msg"] for line in proc.log_text().splitlines()[-2:]]
        assert last[1] == "dittofs-operator stopped", last  # kopf logs its watcher's failure; the exit is ours
    finally:
        proc.stop()
        bed.stop()
