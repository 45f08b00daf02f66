"""SPEC §12 and the HA part of §8 on the real control plane: crashes, API restarts, leader election,
secrets that never leak, and memory that does not follow unrelated Secrets. Each test is time-bounded."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import absent, apply_server, condition, kubectl_json, wait_ready
from tests.support.net import free_port
from tests.support.operator import OperatorProcess
from tests.support.paths import ROOT
from tests.support.poll import eventually
from tests.testbed.webhook import install_webhook

pytestmark = pytest.mark.integration
LEAK_WEBHOOK = "dittofs-operator-leak-test"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def create_many(testbed: Any, namespace: str, count: int, prefix: str = "s") -> None:
    docs = [{"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
             "metadata": {"name": f"{prefix}{i}", "namespace": namespace},
             "spec": {"storage": {"metadataSize": "1Gi"}}} for i in range(count)]
    testbed.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))


def all_ready(testbed: Any, namespace: str, expected: int) -> bool:
    items = kubectl_json(testbed, "get", "dittoservers", "-n", namespace)["items"]
    ready = [i for i in items if (c := condition(i, "Ready")) and c["status"] == "True"
             and i["status"].get("observedGeneration") == i["metadata"]["generation"]]
    return len(ready) == expected


def test_kill_9_at_random_points_converges(testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    """20 rounds of SIGKILL while 50 DittoServers are created, changed and some deleted."""
    rng = random.Random(1234)
    since = testbed.audit_line_count()
    create_many(testbed, namespace, 50)
    for round_ in range(20):
        time.sleep(rng.uniform(0.05, 1.5))
        operator.kill()
        if round_ % 5 == 0:  # changes and deletions land while the operator is down
            target = f"s{rng.randrange(50)}"
            testbed.kubectl("patch", "dittoserver", target, "-n", namespace, "--type=merge",
                            "-p", json.dumps({"spec": {"logging": {"level": rng.choice(["DEBUG", "WARN"])}}}))
        if round_ in (7, 13):
            testbed.kubectl("delete", "dittoserver", f"s{round_}", "-n", namespace, "--wait=false")
        operator.start()
    survivors = 48
    eventually(lambda: all_ready(testbed, namespace, survivors), timeout=180, interval=1.0,
               what=f"{survivors} DittoServers Ready after 20 kills")
    gone = [n for n in ("s7", "s13")
            if absent(testbed, "dittoserver", n, namespace)]
    assert gone == ["s7", "s13"], "deleted servers must not be stuck on the finalizer"
    stses = sorted(s["metadata"]["name"] for s in kubectl_json(testbed, "get", "sts", "-n", namespace)["items"])
    # s7/s13's StatefulSets are garbage-collected; every other server has exactly one.
    eventually(lambda: sorted(s["metadata"]["name"] for s in kubectl_json(testbed, "get", "sts", "-n",
               namespace)["items"]) == sorted(f"s{i}" for i in range(50) if i not in (7, 13)),
               timeout=60, what=f"one StatefulSet per server (have {len(stses)})")

    # Their ConfigMaps and Services go too; every survivor has the same set (no orphan, none missing).
    def children_by_server(kind: str) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for obj in kubectl_json(testbed, "get", kind, "-n", namespace, "-l", "app.kubernetes.io/name=dittofs")["items"]:
            server_name, _, suffix = obj["metadata"]["name"].partition("-")
            found.setdefault(server_name, set()).add(suffix)
        return found

    live = {f"s{i}" for i in range(50) if i not in (7, 13)}
    for kind in ("configmaps", "services"):
        def only_live(kind: str = kind) -> dict[str, set[str]] | None:
            found = children_by_server(kind)
            return found if set(found) == live else None

        children = eventually(only_live, timeout=60, what=f"{kind} of the surviving servers only")
        assert len({frozenset(v) for v in children.values()}) == 1 and children["s0"], children["s0"]
    # Generated Secrets: exactly two per server ever created (they outlive a deleted server, see
    # reconciler/specs/secrets.py), each labelled with its server, and each written exactly once - a
    # kill between create and cache must find the Secret again, never regenerate or rewrite its value.
    wanted = {f"s{i}-{kind}" for i in range(50) for kind in ("jwt", "admin-bootstrap-credentials")}
    found = {s["metadata"]["name"]: s for s in kubectl_json(testbed, "get", "secrets", "-n", namespace)["items"]}
    assert set(found) == wanted, f"missing {sorted(wanted - set(found))}, unexpected {sorted(set(found) - wanted)}"
    for name, secret in found.items():
        owner = name.removesuffix("-jwt").removesuffix("-admin-bootstrap-credentials")
        assert secret["metadata"]["labels"]["app.kubernetes.io/instance"] == owner, name
        assert all(len(base64.b64decode(v)) >= 16 or k == "username" for k, v in secret["data"].items()), name
    writes = [e for e in testbed.audit_events(user=testbed.operator_user, since_line=since)
              if (e.get("objectRef") or {}).get("resource") == "secrets"
              and (e.get("objectRef") or {}).get("namespace") == namespace]
    assert writes, "no audited Secret write at all: the audit check below would prove nothing"
    rewrites = [(e["verb"], e["objectRef"].get("name")) for e in writes if e["verb"] != "create"]
    assert not rewrites, f"generated Secrets were rewritten: {rewrites}"
    created = [e for e in writes if (e.get("responseStatus") or {}).get("code") == 201]
    # Each Secret exists (above) and none was written twice. Not "exactly one 201 each": a create whose
    # client was SIGKILLed mid-request can commit while its audit record carries no 201 (seen under a CPU hog).
    assert 0 < len(created) <= len(wanted), f"{len(created)} successful creates for {len(wanted)} Secrets"
    pvcs = {p["metadata"]["name"] for p in kubectl_json(testbed, "get", "pvc", "-n", namespace)["items"]}
    assert {"metadata-s7-0", "metadata-s13-0"} <= pvcs, "PVCs survive every deletion path"


def secret_gets(testbed: Any) -> float:
    """Point reads of Secrets the API server has answered, from any client (its own metrics)."""
    metrics = testbed.kubectl("get", "--raw", "/metrics").stdout.splitlines()
    return sum(float(line.rpartition(" ")[2]) for line in metrics
               if line.startswith("apiserver_request_total{") and 'resource="secrets"' in line
               and 'verb="GET"' in line)


def test_a_restart_reads_its_generated_secrets_in_pages(testbed: Any, quiet_operator: OperatorProcess,
                                                        namespace: str, tmp_path: Path) -> None:
    """A restart learns the digests of the Secrets it generated from a listing, not from a GET each (at 300
    servers that was 662 GETs in 2 s, and their peak left the heap fragmented), and it still follows them."""
    # quiet_operator, and an operator of this namespace only: the servers other tests left behind have
    # Secrets of their own, and the shared operator would count their reads too.
    proc = OperatorProcess(str(testbed.operator_kubeconfig), tmp_path,
                           extra=["--no-webhook", "--namespaces", namespace, "--drift-interval", "5"])
    count = 30
    proc.start()
    try:
        create_many(testbed, namespace, count)
        eventually(lambda: all_ready(testbed, namespace, count), timeout=120, interval=1.0,
                   what=f"{count} DittoServers Ready")
        proc.stop()
        before_restart = secret_gets(testbed)
        proc.start()
        # Its first pass over every server, and one drift pass more (a regression's GETs must all be counted).
        eventually(lambda: proc.reconcile_passes() >= 2 * count, timeout=60, interval=0.5,
                   what="the restarted operator's first and drift passes")
        # The only client of this namespace's Secrets now (the shared operator is stopped): it read them with
        # a GET each before they were listed (2 * count).
        gets = secret_gets(testbed) - before_restart
        print(f"Secret GETs of a restart over {count} settled servers: {gets:.0f}")
        assert gets < count, f"{gets:.0f} Secret GETs after a restart with {count} settled servers"

        # The listed stream still follows them: a generated Secret deleted is generated again.
        def uid() -> str | None:
            found = testbed.kubectl("get", "secret", "s0-jwt", "-n", namespace, "-o", "json", check=False)
            return str(json.loads(found.stdout)["metadata"]["uid"]) if found.returncode == 0 else None

        before = uid()
        assert before is not None
        testbed.kubectl("delete", "secret", "s0-jwt", "-n", namespace)
        eventually(lambda: uid() not in (None, before), timeout=30, what="s0-jwt generated again")
    finally:
        proc.stop()


def test_apiserver_and_etcd_restart_under_the_operator(testbed: Any, operator: OperatorProcess,
                                                       namespace: str) -> None:
    apply_server(testbed, namespace, name="before")
    wait_ready(testbed, namespace, "before")
    pid = operator.proc.pid if operator.proc else 0
    testbed.restart_apiserver(with_etcd=True)
    apply_server(testbed, namespace, name="after")
    wait_ready(testbed, namespace, "after", timeout=120)
    apply_server(testbed, namespace, name="before", logging={"level": "DEBUG"})
    eventually(lambda: "level: DEBUG" in kubectl_json(testbed, "get", "cm", "before-config", "-n", namespace)
               ["data"]["config.yaml"], timeout=90, what="update after the restart")
    assert operator.proc is not None and operator.proc.pid == pid and operator.proc.poll() is None


def test_leader_election_only_the_holder_reconciles(testbed: Any, quiet_operator: OperatorProcess, namespace: str,
                                                    tmp_path: Path) -> None:
    # quiet_operator: the shared, non-elected operator would reconcile this namespace too
    lease_ns = namespace
    args = ["--no-webhook", "--leader-election", "--lease-namespace", lease_ns, "--namespaces", namespace,
            "--drift-interval", "5"]
    first = OperatorProcess(str(testbed.operator_kubeconfig), tmp_path, extra=args)
    second = OperatorProcess(str(testbed.operator_kubeconfig), tmp_path, extra=args)
    first.start()
    eventually(lambda: "became leader" in first.log_text(), timeout=30, what="first replica leads")
    second.start()
    try:
        apply_server(testbed, namespace, name="ha")
        wait_ready(testbed, namespace, "ha")
        time.sleep(6)
        assert "applied" in first.log_text()
        assert "applied" not in second.log_text() and "became leader" not in second.log_text()
        lease = kubectl_json(testbed, "get", "lease", "dittofs-operator", "-n", lease_ns)
        assert lease["spec"]["holderIdentity"]
        killed = time.monotonic()
        first.kill()
        eventually(lambda: "became leader" in second.log_text(), timeout=40, what="failover")
        failover = time.monotonic() - killed
        apply_server(testbed, namespace, name="after-failover")
        wait_ready(testbed, namespace, "after-failover")
        print(f"leader failover after SIGKILL: {failover:.1f}s")  # lease 15 s + retry 2 s
        assert failover < 30
    finally:
        first.stop()
        second.stop()


def encodings(value: str) -> dict[str, str]:
    """``value`` as it could show up when something leaks it: raw, hex, percent-encoded and base64 (standard
    and URL-safe) - the base64 forms as the stable core of its encoding at each of the 3 byte alignments, so
    the value is found inside the encoding of a longer text (a whole Secret, a JSON blob) as well."""
    raw = value.encode()
    forms = {"raw": value, "hex": raw.hex(), "percent": urllib.parse.quote(value, safe="")}
    for align in range(3):
        # `align` bytes before the value shift its encoding; the characters that also depend on the bytes
        # around it (at most 2 at each end) are dropped, so the core matches any surroundings.
        encoded = base64.b64encode(b"\0" * align + raw + b"\0\0").decode()
        core = encoded[(align * 4 + 2) // 3 + 1:((align + len(raw)) * 4) // 3 - 1]
        forms[f"base64@{align}"] = core
        forms[f"base64url@{align}"] = core.replace("+", "-").replace("/", "_")
    return forms


def leaks(text: str, planted: dict[str, str]) -> list[str]:
    """Which planted value, in which encoding, occurs in ``text``."""
    return [f"{name} as {form}" for name, value in planted.items()
            for form, needle in encodings(value).items() if needle in text]


def test_planted_secret_values_never_leak(testbed: Any, quiet_operator: OperatorProcess, namespace: str,
                                          tmp_path: Path) -> None:
    """Secret values never reach logs, events, status, children, metrics or admission answers - in any
    obvious encoding - with the whole product running: reconciler and webhook, at DEBUG, the webhook
    registered with the apiserver and answering real admission requests."""
    planted = {"jwt": "PLANTEDjwt" + "q" * 40, "admin": "PLANTEDadmin0000000001", "s3": "PLANTEDs3secretvalue",
               "pg": "PLANTEDpgpassword0001", "rotated": "PLANTEDrotated" + "z" * 40}
    # The detector must find what is there: each planted value inside a Secret as the apiserver returns it
    # (base64 in `data`, at an arbitrary alignment inside the JSON) and inside a base64 blob of a whole text.
    for name, value in planted.items():
        blob = base64.b64encode(f'{{"note": "x", "k": "{value}"}}'.encode()).decode()
        assert leaks(blob, {name: value}), f"the detector misses {name} inside a base64 blob"

    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    testbed.issue_serving_cert(cert_dir, name="tls")
    hook_port = free_port()
    # quiet_operator: the session's reconciler-only operator is stopped, so this one does all the work.
    proc = OperatorProcess(str(testbed.operator_kubeconfig), tmp_path, extra=[
        "--webhook-host", "127.0.0.1", "--webhook-port", str(hook_port), "--cert-dir", str(cert_dir),
        "--tls-mode", "provided", "--log-level", "DEBUG", "--drift-interval", "5"])
    proc.start()
    admission: list[str] = []  # what `kubectl` users got back from the webhook
    try:
        install_webhook(testbed, hook_port, name=LEAK_WEBHOOK)
        testbed.kubectl("create", "secret", "generic", "my-jwt", "-n", namespace, f"--from-literal=k={planted['jwt']}")
        testbed.kubectl("create", "secret", "generic", "my-admin", "-n", namespace,
                        f"--from-literal=password={planted['admin']}")
        testbed.kubectl("create", "secret", "generic", "s3", "-n", namespace, "--from-literal=accessKeyId=AKIA",
                        f"--from-literal=secretAccessKey={planted['s3']}")
        testbed.kubectl("create", "secret", "generic", "pg", "-n", namespace, "--from-literal=host=db",
                        "--from-literal=port=5432", "--from-literal=database=d", "--from-literal=user=u",
                        f"--from-literal=password={planted['pg']}")
        spec: dict[str, Any] = {
            "identity": {"jwt": {"secretRef": {"name": "my-jwt", "key": "k"}},
                         "admin": {"passwordSecretRef": {"name": "my-admin", "key": "password"}}},
            "s3": {"credentialsSecretRef": {"secretName": "s3"}}, "database": {"postgresSecretRef": {"name": "pg"}}}
        # Admission traffic that makes the webhook read the referenced Secrets: an allowed create, a denied
        # update (an event is posted), a warned dry run about a key the s3 Secret lacks.
        created = apply_manifest(testbed, namespace, spec)
        assert created.returncode == 0, created.stderr
        denied = apply_manifest(testbed, namespace, {**spec, "storage": {"metadataSize": "2Gi"}})
        assert denied.returncode != 0 and "spec.storage.metadataSize: StorageClass" in denied.stderr, denied.stderr
        warned = apply_manifest(testbed, namespace, {**spec, "s3": {"credentialsSecretRef": {
            "secretName": "s3", "accessKeyIdKey": "missing-key"}}}, "--dry-run=server")
        assert warned.returncode == 0 and 'add key "missing-key" to Secret "s3"' in warned.stderr, warned.stderr
        admission += [r.stdout + r.stderr for r in (created, denied, warned)]
        wait_ready(testbed, namespace)

        testbed.kubectl("patch", "secret", "my-jwt", "-n", namespace, "--type=merge",
                        "-p", json.dumps({"stringData": {"k": planted["rotated"]}}))
        eventually(lambda: any(e["reason"] == "SecretRotated" for e in
                               kubectl_json(testbed, "get", "events", "-n", namespace)["items"]), what="rotation")
        wait_ready(testbed, namespace)
        status_cli = subprocess.run([sys.executable, "-m", "dittoctl", "status", "demo", "-n", namespace,
                                     "--kubeconfig", str(testbed.kubeconfig)], cwd=ROOT, capture_output=True,
                                    text=True, timeout=60, check=True).stdout
        assert "Conditions:" in status_cli
        log = proc.log_text()
        # The webhook really answered the apiserver (and logged at DEBUG) in this very process.
        entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert "admission denied" in log and any(e.get("level") == "debug" and e.get("msg") == "admission allowed"
                                                 for e in entries), proc.log_tail()
        user_secrets = {"my-jwt", "my-admin", "s3", "pg"}
        other_secrets = [s for s in kubectl_json(testbed, "get", "secrets", "-n", namespace)["items"]
                         if s["metadata"]["name"] not in user_secrets]
        haystacks = {
            "operator log (reconciler + webhook)": log,
            "operator metrics": proc.metrics(),
            "admission answers (kubectl output)": "\n".join(admission),
            "objects in the namespace": json.dumps(kubectl_json(
                testbed, "get", "dittoservers,configmaps,services,statefulsets,pods,events,"
                "persistentvolumeclaims,serviceaccounts", "-n", namespace)),
            "Secrets the operator generated": json.dumps(other_secrets),
            "dittoctl status": status_cli,
        }
        # The positive control on real apiserver output: every user Secret carries its current value (my-jwt
        # the rotated one), base64'd.
        user_secret_json = json.dumps(kubectl_json(testbed, "get", "secrets", "-n", namespace))
        for name in ("admin", "s3", "pg", "rotated"):
            assert leaks(user_secret_json, {name: planted[name]}), f"the detector misses {name} in a real Secret"
        found = {where: hits for where, text in haystacks.items() if (hits := leaks(text, planted))}
        assert not found, f"planted secret values leaked: {found}"
        # The log covers the whole lifecycle of this server (a short, unrelated log would prove little).
        for msg in ("applied StatefulSet", "admission denied"):
            assert any(e.get("msg") == msg and e.get("namespace") == namespace for e in entries), \
                f"{msg!r} in {namespace} missing from the operator log"
    finally:
        testbed.kubectl("delete", "validatingwebhookconfiguration", LEAK_WEBHOOK, "--ignore-not-found", check=False)
        proc.stop()


def apply_manifest(testbed: Any, namespace: str, spec: dict[str, Any], *flags: str) -> Any:
    """`kubectl apply` of DittoServer demo without raising: the admission answer is what is checked."""
    body = {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
            "metadata": {"name": "demo", "namespace": namespace},
            "spec": {"storage": {"metadataSize": "1Gi", "contentSize": "2Gi"}, **spec}}
    return testbed.kubectl("apply", *flags, "-f", "-", input=json.dumps(body), check=False)


def test_memory_stays_flat_with_unrelated_secrets(testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    apply_server(testbed, namespace)
    wait_ready(testbed, namespace)
    assert operator.proc is not None
    blob = "x" * 2048

    def unrelated(chunk: int, count: int = 500) -> None:
        items = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"unrelated-{chunk}-{i}",
                  "namespace": namespace}, "stringData": {"blob": blob}} for i in range(count)]
        testbed.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
                        timeout=300)

    # A warm-up batch first: the operator may have been restarted by the test before (quiet_operator), and the
    # code paths the Secrets take are built on first use.
    unrelated(-1, 100)
    time.sleep(2)
    before = rss_kib(operator.proc.pid)
    for chunk in range(4):  # 2,000 Secrets of 2 KiB the operator must not keep
        unrelated(chunk)
    time.sleep(5)
    after = rss_kib(operator.proc.pid)
    print(f"operator RSS before {before} KiB, after 2000 Secrets {after} KiB")
    # 2,000 x 2 KiB bodies alone would be ~4 MiB plus parsing overhead (~3x); allow allocator noise only.
    assert after - before < 6 * 1024, f"RSS grew by {after - before} KiB"
