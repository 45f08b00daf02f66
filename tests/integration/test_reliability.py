"""SPEC §12 and the HA part of §8 on the real control plane: crashes, API restarts, leader election,
secrets that never leak, and memory that does not follow unrelated Secrets. Each test is time-bounded."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import apply_server, condition, kubectl_json, server, wait_ready
from tests.support.operator import OperatorProcess
from tests.support.paths import ROOT
from tests.support.poll import eventually

pytestmark = pytest.mark.integration


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
            if testbed.kubectl("get", "dittoserver", n, "-n", namespace, check=False).returncode != 0]
    assert gone == ["s7", "s13"], "deleted servers must not be stuck on the finalizer"
    stses = sorted(s["metadata"]["name"] for s in kubectl_json(testbed, "get", "sts", "-n", namespace)["items"])
    # s7/s13's StatefulSets are garbage-collected; every other server has exactly one.
    eventually(lambda: sorted(s["metadata"]["name"] for s in kubectl_json(testbed, "get", "sts", "-n",
               namespace)["items"]) == sorted(f"s{i}" for i in range(50) if i not in (7, 13)),
               timeout=60, what=f"one StatefulSet per server (have {len(stses)})")
    secrets = [s["metadata"]["name"] for s in kubectl_json(testbed, "get", "secrets", "-n", namespace)["items"]]
    assert len(secrets) == len(set(secrets))
    for i in range(50):
        if i in (7, 13):
            continue
        assert f"s{i}-jwt" in secrets and f"s{i}-admin-bootstrap-credentials" in secrets
    pvcs = {p["metadata"]["name"] for p in kubectl_json(testbed, "get", "pvc", "-n", namespace)["items"]}
    assert {"metadata-s7-0", "metadata-s13-0"} <= pvcs, "PVCs survive every deletion path"


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


def test_planted_secret_values_never_leak(testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    planted = {"jwt": "PLANTEDjwt" + "q" * 40, "admin": "PLANTEDadmin0000000001", "s3": "PLANTEDs3secretvalue",
               "pg": "PLANTEDpgpassword0001"}
    testbed.kubectl("create", "secret", "generic", "my-jwt", "-n", namespace, f"--from-literal=k={planted['jwt']}")
    testbed.kubectl("create", "secret", "generic", "my-admin", "-n", namespace,
                    f"--from-literal=password={planted['admin']}")
    testbed.kubectl("create", "secret", "generic", "s3", "-n", namespace, "--from-literal=accessKeyId=AKIA",
                    f"--from-literal=secretAccessKey={planted['s3']}")
    testbed.kubectl("create", "secret", "generic", "pg", "-n", namespace, "--from-literal=host=db",
                    "--from-literal=port=5432", "--from-literal=database=d", "--from-literal=user=u",
                    f"--from-literal=password={planted['pg']}")
    apply_server(testbed, namespace, identity={"jwt": {"secretRef": {"name": "my-jwt", "key": "k"}},
                                               "admin": {"passwordSecretRef": {"name": "my-admin", "key": "password"}}},
                 s3={"credentialsSecretRef": {"secretName": "s3"}}, database={"postgresSecretRef": {"name": "pg"}})
    wait_ready(testbed, namespace)
    rotated = "PLANTEDrotated" + "z" * 40
    testbed.kubectl("patch", "secret", "my-jwt", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"stringData": {"k": rotated}}))
    eventually(lambda: any(e["reason"] == "SecretRotated" for e in
                           kubectl_json(testbed, "get", "events", "-n", namespace)["items"]), what="rotation")
    status_cli = subprocess.run([sys.executable, "-m", "dittoctl", "status", "demo", "-n", namespace,
                                 "--kubeconfig", str(testbed.kubeconfig)], cwd=ROOT, capture_output=True,
                                text=True, timeout=60, check=True).stdout
    assert "Conditions:" in status_cli
    haystacks = {
        "operator log": operator.log_text(),
        "events": json.dumps(kubectl_json(testbed, "get", "events", "-n", namespace)),
        "status": json.dumps(server(testbed, namespace).get("status")),
        "configmaps": json.dumps(kubectl_json(testbed, "get", "configmaps", "-n", namespace)),
        "statefulset": json.dumps(kubectl_json(testbed, "get", "sts", "-n", namespace)),
        "dittoctl status": status_cli,
    }
    for where, text in haystacks.items():
        assert not re.search(r"PLANTED", text), f"a planted secret value leaked into the {where}"


def test_memory_stays_flat_with_unrelated_secrets(testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    apply_server(testbed, namespace)
    wait_ready(testbed, namespace)
    assert operator.proc is not None
    time.sleep(2)
    before = rss_kib(operator.proc.pid)
    blob = "x" * 2048
    for chunk in range(4):  # 2,000 Secrets of 2 KiB the operator must not keep
        items = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"unrelated-{chunk}-{i}",
                  "namespace": namespace}, "stringData": {"blob": blob}} for i in range(500)]
        testbed.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
                        timeout=300)
    time.sleep(5)
    after = rss_kib(operator.proc.pid)
    print(f"operator RSS before {before} KiB, after 2000 Secrets {after} KiB")
    # 2,000 x 2 KiB bodies alone would be ~4 MiB plus parsing overhead (~3x); allow allocator noise only.
    assert after - before < 6 * 1024, f"RSS grew by {after - before} KiB"
