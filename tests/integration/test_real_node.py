"""Claims about the running server, proven on the real node (SPEC §14): the real dfs under a real kubelet.

Every DittoServer here is pinned to ``real-node-0`` (nodeSelector + toleration of its taint), so its pod
runs the real ``dfs`` v0.29.0 in containerd: Ready means dfs answered the kubelet's probes, a restart
means a new dfs process, logs come from the kubelet. The node's own safety and hygiene are tested too.
kwok still serves every test that is about scheduling or scale.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certs.selfsigned import KeyPair, new_ca, new_leaf
from tests.support.kube import (
    apply_server,
    condition,
    enforce_restricted,
    events,
    kubectl_json,
    report_bundle,
    server,
    wait_ready,
)
from tests.support.operator import OperatorProcess
from tests.support.percona import PERCONA_CRD, cluster, percona_spec
from tests.support.poll import eventually
from tests.testbed import Testbed
from tests.testbed.fileservice import DfsRest, admin_rest, bootstrap_admin, dfs_pid, nfs_get, nfs_put
from tests.testbed.images import DFS_IMAGE, PG_ISREADY_IMAGE
from tests.testbed.node import (
    BRIDGE,
    LEASES,
    NODE_IP,
    NODE_NAME,
    STATE_FILE,
    SUBNET,
    RealNode,
    RealNodeError,
    preflight,
    snapshot_host,
)
from tests.testbed.postgres import PostgresServer
from tests.testbed.safety import proxy_vars_of

pytestmark = pytest.mark.integration
SHUTDOWN_STARTED = "Shutdown signal received, initiating graceful shutdown"
SHUTDOWN_DONE = "Server stopped gracefully"  # tests/testbed/dfs.py GRACEFUL_STOP_MARKER
BRIDGE_PREFIX = SUBNET.rsplit(".", 1)[0] + "."


def real_server(testbed: Testbed, node: RealNode, namespace: str, name: str = "demo", **spec: Any) -> None:
    apply_server(testbed, namespace, name, **node.pod_placement(), **spec)


def pod(testbed: Testbed, namespace: str, name: str = "demo-0") -> dict[str, Any]:
    found: dict[str, Any] = kubectl_json(testbed, "get", "pod", name, "-n", namespace)
    return found


def dfs_log(testbed: Testbed, namespace: str, name: str = "demo-0") -> str:
    return testbed.kubectl("logs", name, "-n", namespace, "-c", "dittofs").stdout


def admin_login(testbed: Testbed, namespace: str, pod_ip: str, name: str = "demo") -> int:
    return DfsRest(pod_ip).login(*bootstrap_admin(testbed, namespace, name))


def on_real_node(testbed: Testbed, namespace: str, name: str = "demo-0") -> dict[str, Any]:
    """The pod, after checking it runs in containerd on the real node with a bridge IP."""
    p = pod(testbed, namespace, name)
    assert p["spec"]["nodeName"] == NODE_NAME
    assert p["status"]["podIP"].startswith(BRIDGE_PREFIX), p["status"].get("podIP")
    status = p["status"]["containerStatuses"][0]
    assert status["containerID"].startswith("containerd://") and "running" in status["state"]
    return p


def dfs_rss_mib() -> float:
    """RSS of the real dfs processes on this host (the pod's container runs as a host process)."""
    total = 0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"/app/dfs\0start"):
                rss = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("VmRSS:"))
                total += int(rss.split()[1])
        except (OSError, StopIteration):
            continue
    assert total, "no dfs process found on the host"
    return total / 1024


def test_minimal_server_is_ready_because_dfs_answered(testbed: Testbed, operator: OperatorProcess,
                                                      real_node: RealNode, namespace: str) -> None:
    """Moved from test_operator: Ready now means the real dfs passed the kubelet's HTTP probes, in a namespace
    enforcing Pod Security "restricted" (SPEC §4.7), where a non-compliant pod would never be created."""
    enforce_restricted(testbed, namespace)
    real_server(testbed, real_node, namespace)

    def waiting() -> dict[str, Any] | None:  # the readiness probe's 10 s delay leaves time to see it
        cond = condition(kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace), "Provisioned")
        return cond if cond and (cond["status"], cond["reason"]) == ("False", "WaitingForServer") else None

    assert "waiting for pod demo-0 to be Ready" in eventually(waiting, timeout=30, interval=0.2,
                                                              what="Provisioned=False/WaitingForServer")["message"]
    obj = wait_ready(testbed, namespace, timeout=120)
    status = obj["status"]
    assert status["phase"] == "Running" and status["ready"] == "1/1"
    assert status["endpoints"]["nfs"] == f"demo-file.{namespace}.svc:12049"
    p = on_real_node(testbed, namespace)
    ip = p["status"]["podIP"]
    # The kubelet's probes hit these; answer them ourselves over the bridge.
    for path in ("/health", "/health/ready"):
        code, _ = DfsRest(ip).call("GET", path)
        assert code == 200, path
    assert admin_login(testbed, namespace, ip) == 200, "the operator's generated admin Secret logs in"
    # DittoFS's own cap on a share's local data ignores the volume (a quarter of the memory it sees, here the
    # node's 24 GiB; 10 GiB for a remote-backed share): the local store gets 80 % of contentSize (2Gi).
    _, stats = admin_rest(testbed, namespace, ip).call("GET", "/api/v1/shares/export/blockstore/stats")
    assert stats["totals"]["local_disk_max"] == int(2 * 1024**3 * 0.8) // 2**20 * 2**20, stats
    readiness = p["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/health/ready"
    # Every volume is a fake-provisioner hostPath (no fsGroup) and still writable by dfs's uid 65532.
    script = ("id -u; for d in /data/controlplane /data/store/metadata /data/store/block; do "
              "echo probe > $d/.w && stat -c '%u %n' $d/.w && rm $d/.w || exit 1; done")
    out = testbed.kubectl("exec", "demo-0", "-n", namespace, "-c", "dittofs", "--", "sh", "-c", script).stdout
    lines = out.split()
    assert lines[0] == "65532", out
    assert out.count("65532 /data/") == 3, out
    # Only this server's volumes (other tests' are there too), and files dfs may rename meanwhile are skipped.
    dirs = [Path(pv["spec"]["hostPath"]["path"]) for pv in kubectl_json(testbed, "get", "pv")["items"]
            if (pv["spec"].get("claimRef") or {}).get("namespace") == namespace]
    assert len(dirs) == 3 and all(d.is_relative_to(testbed.volumes_dir) for d in dirs), dirs

    def by_dfs(path: Path) -> bool:
        try:
            return path.stat().st_uid == 65532
        except FileNotFoundError:
            return False

    assert [f for d in dirs for f in d.rglob("*") if by_dfs(f)], "dfs wrote its data as 65532 into its host dirs"
    # What the kwok version of this test checked, unchanged.
    sts = kubectl_json(testbed, "get", "statefulset", "demo", "-n", namespace)
    assert status["configHash"] == sts["spec"]["template"]["metadata"]["annotations"]["dittofs.io/config-hash"]
    assert "dittofs.dittofs.com/finalizer" in obj["metadata"]["finalizers"]
    for kind, name in (("configmap", "demo-config"), ("service", "demo-headless"), ("service", "demo-api"),
                       ("service", "demo-file")):
        ref = kubectl_json(testbed, "get", kind, name, "-n", namespace)["metadata"]["ownerReferences"][0]
        assert ref["uid"] == obj["metadata"]["uid"] and ref["controller"] is True, (kind, name)
    jwt = kubectl_json(testbed, "get", "secret", "demo-jwt", "-n", namespace)
    assert len(base64.b64decode(jwt["data"]["jwt-secret"])) == 64
    testbed.kubectl("wait", "--for=condition=Ready", "dittoserver/demo", "-n", namespace, "--timeout=30s")
    printed = testbed.kubectl("get", "ditto", "demo", "-n", namespace).stdout
    assert "1/1" in printed and "Running" in printed
    wide = testbed.kubectl("get", "ditto", "demo", "-n", namespace, "-o", "wide").stdout
    assert "SHARE" in wide and "/export" in wide and f"demo-file.{namespace}.svc:12049" in wide, wide
    assert status["adapters"] == [{"type": "nfs", "port": 12049, "enabled": True, "listening": True},
                                  {"type": "smb", "port": 1445, "enabled": False, "listening": False}]
    print(f"\n[real-node] dfs RSS {dfs_rss_mib():.0f} MiB (one minimal server, provisioned)", file=sys.stderr)
    assert events(testbed, namespace, "Created")
    metrics = operator.metrics()
    assert 'controller_runtime_reconcile_total{controller="dittoserver",result="success"}' in metrics
    assert 'dittofs_operator_dittoservers{phase="Running"}' in metrics
    assert 'controller_runtime_reconcile_time_seconds_count{controller="dittoserver"}' in metrics
    # SPEC §8's controller-runtime names, so existing dashboards work (the families exist before a sample; the
    # webhook's, with the webhook off here, in tests/unit/test_webhook_server.py).
    for family in ("controller_runtime_reconcile_errors_total", "leader_election_master_status",
                   "dittofs_operator_provisioning_failures_total"):
        assert f"# TYPE {family} " in metrics, family
    # A sample from the start, not only after a first error: rate() and absent() alerts need one.
    assert 'controller_runtime_reconcile_errors_total{controller="dittoserver"} ' in metrics
    log_lines = [json.loads(line) for line in operator.log_text().splitlines() if line.startswith("{")]
    applied = [e for e in log_lines if e.get("namespace") == namespace and e["msg"].startswith("applied")]
    assert applied and all(e["name"] for e in applied), "one JSON line per action with namespace/name"


def test_logging_change_and_secret_rotation_restart_the_real_process(
        testbed: Testbed, operator: OperatorProcess, real_node: RealNode, namespace: str) -> None:
    """Moved from test_operator: a new config hash means a new dfs process, and it runs the new config."""
    real_server(testbed, real_node, namespace, logging={"level": "INFO"})
    wait_ready(testbed, namespace, timeout=120)
    first = on_real_node(testbed, namespace)
    first_cid = first["status"]["containerStatuses"][0]["containerID"]
    assert "DEBUG" not in dfs_log(testbed, namespace)

    real_server(testbed, real_node, namespace, logging={"level": "DEBUG"})
    eventually(lambda: pod(testbed, namespace)["metadata"]["uid"] != first["metadata"]["uid"], timeout=120,
               what="pod replaced after the logging change")
    wait_ready(testbed, namespace, timeout=120)
    second = on_real_node(testbed, namespace)
    assert second["status"]["containerStatuses"][0]["containerID"] != first_cid
    def debug_logged() -> str | None:
        log = dfs_log(testbed, namespace)
        return log if "DEBUG" in log else None

    eventually(debug_logged, timeout=30, what="DEBUG lines in kubectl logs of the new dfs")
    updated = events(testbed, namespace, "ConfigUpdated")
    assert updated and "ConfigMap demo-config updated" in updated[0]["message"]

    # Rotating the JWT Secret restarts dfs again (new container), and the event names only the Secret.
    new_value = "r" * 64
    testbed.kubectl("patch", "secret", "demo-jwt", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"stringData": {"jwt-secret": new_value}}))
    eventually(lambda: pod(testbed, namespace)["metadata"]["uid"] != second["metadata"]["uid"], timeout=120,
               what="pod replaced after the Secret rotation")
    wait_ready(testbed, namespace, timeout=120)
    third = on_real_node(testbed, namespace)
    assert third["status"]["containerStatuses"][0]["containerID"] not in (first_cid, second["status"]
                                                                          ["containerStatuses"][0]["containerID"])
    rotated = eventually(lambda: events(testbed, namespace, "SecretRotated"), what="SecretRotated event")
    assert "demo-jwt" in rotated[0]["message"] and new_value not in json.dumps(rotated)
    assert admin_login(testbed, namespace, third["status"]["podIP"]) == 200

    # A second rotation within the recorder's 10 minutes is a second event (a session saw two rolls, one event).
    testbed.kubectl("patch", "secret", "demo-jwt", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"stringData": {"jwt-secret": "s" * 64}}))
    def two_rotations() -> list[dict[str, Any]] | None:
        found = events(testbed, namespace, "SecretRotated")
        return found if len(found) == 2 else None

    rotated = eventually(two_rotations, timeout=60, what="a second SecretRotated event")
    assert rotated[0]["message"] != rotated[1]["message"] and all("config hash" in e["message"] for e in rotated)
    wait_ready(testbed, namespace, timeout=120)


class LogFollower:
    """``kubectl logs -f`` in the background: keeps the container's log after the pod object is gone."""

    def __init__(self, testbed: Testbed, namespace: str, pod_name: str) -> None:
        argv = [str(testbed.binaries.kubectl), f"--kubeconfig={testbed.kubeconfig}", "logs", "-f", pod_name,
                "-n", namespace, "-c", "dittofs"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[tuple[float, str]] = []
        self.ended_at: float | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))
        self.ended_at = time.monotonic()

    def first(self, marker: str) -> float | None:
        return next((t for t, line in self.lines if marker in line), None)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def test_deletion_drains_the_real_server_before_the_finalizer_goes(
        testbed: Testbed, operator: OperatorProcess, real_node: RealNode, namespace: str) -> None:
    """Moved from test_operator: SIGTERM reaches dfs, it stops gracefully, then (and only then) the CR goes.

    The operator falls back to removing the finalizer after 60 s (CleanupTimeout event). A graceful drain
    is told apart by: dfs's own shutdown lines, the container's end before the CR's, well under 60 s,
    and no CleanupTimeout event.
    """
    real_server(testbed, real_node, namespace)
    wait_ready(testbed, namespace, timeout=120)
    on_real_node(testbed, namespace)
    pvcs = {p["metadata"]["name"] for p in kubectl_json(testbed, "get", "pvc", "-n", namespace)["items"]}
    assert pvcs == {"controlplane-demo-0", "metadata-demo-0", "content-demo-0"}
    follower = LogFollower(testbed, namespace, "demo-0")
    try:
        eventually(lambda: follower.lines, timeout=15, what="log stream attached")
        t0 = time.monotonic()
        testbed.kubectl("delete", "dittoserver", "demo", "-n", namespace, "--wait=false")
        eventually(lambda: testbed.kubectl("get", "dittoserver", "demo", "-n", namespace, check=False)
                   .returncode != 0, timeout=75, interval=0.2, what="DittoServer gone")
        gone = time.monotonic()
        eventually(lambda: follower.ended_at, timeout=15, what="log stream closed (container exited)")
    finally:
        follower.close()
    assert follower.ended_at is not None
    started, done = follower.first(SHUTDOWN_STARTED), follower.first(SHUTDOWN_DONE)
    log_tail = "".join(line for _, line in follower.lines[-15:])
    assert started is not None and done is not None, f"no graceful stop in dfs's log:\n{log_tail}"
    assert "graceful shutdown timed out" not in log_tail
    assert t0 < started <= done <= gone + 0.5, "dfs stopped before the finalizer went"
    assert gone - t0 < 45, f"took {gone - t0:.1f}s: the 60 s CleanupTimeout fallback, not a drain"
    assert not events(testbed, namespace, "CleanupTimeout")
    assert events(testbed, namespace, "Deleting")
    remaining = {p["metadata"]["name"] for p in kubectl_json(testbed, "get", "pvc", "-n", namespace)["items"]}
    assert remaining == pvcs
    print(f"\n[real-node] delete -> SIGTERM seen {started - t0:.1f}s, dfs stopped {done - t0:.1f}s, "
          f"CR gone {gone - t0:.1f}s")


def test_a_server_that_does_not_stop_is_released_after_the_cleanup_timeout(
        testbed: Testbed, operator: OperatorProcess, real_node: RealNode, namespace: str) -> None:
    """SPEC §5: 60 s after the deletion the pod wait is skipped (one CleanupTimeout, Warning) and the finalizer
    goes; the PVCs stay. A stopped dfs plays the stuck server: SIGTERM waits, and the default grace period
    (105 s) keeps the kubelet from killing it before the operator gives up."""
    real_server(testbed, real_node, namespace)
    wait_ready(testbed, namespace, timeout=120)
    pid = dfs_pid(pod(testbed, namespace)["metadata"]["uid"])
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        testbed.kubectl("delete", "dittoserver", "demo", "-n", namespace, "--wait=false")
        eventually(lambda: testbed.kubectl("get", "dittoserver", "demo", "-n", namespace, check=False)
                   .returncode != 0, timeout=100, what="DittoServer released by the cleanup timeout")
        took = time.monotonic() - t0
        assert 55 < took < 95, f"released after {took:.1f}s, not by the 60 s cleanup timeout"
        (timeout,) = events(testbed, namespace, "CleanupTimeout")
        assert timeout["type"] == "Warning" and "removing the finalizer anyway (PVCs are kept)" in timeout["message"]
        assert pod(testbed, namespace)["metadata"].get("deletionTimestamp"), "the stuck pod is still draining"
        claims = kubectl_json(testbed, "get", "pvc", "-n", namespace, "-l", "app.kubernetes.io/instance=demo")
        assert len(claims["items"]) == 3, [c["metadata"]["name"] for c in claims["items"]]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # the pending SIGTERM stops it gracefully now


def test_nfs_file_survives_pod_deletion_restart_and_image_upgrade(
        testbed: Testbed, operator: OperatorProcess, real_node: RealNode, namespace: str, tmp_path: Path) -> None:
    """Also an upgrade (issue 14, item 7): a new spec.image rolls the real server within its startup budget and
    the file is still there."""
    real_server(testbed, real_node, namespace)
    wait_ready(testbed, namespace, timeout=120)
    ip = on_real_node(testbed, namespace)["status"]["podIP"]
    rest = admin_rest(testbed, namespace, ip)
    assert "/export" in rest.shares(), "the operator provisioned the default share"
    payload = f"written over NFS into {namespace} at {time.time()}\n".encode() * 100
    local = tmp_path / "hello.txt"
    local.write_bytes(payload)
    def put() -> bool:
        nfs_put(ip, local, "hello.txt")
        return True

    eventually(put, timeout=30, what="nfs-cp into the new share")
    assert nfs_get(ip, "hello.txt") == payload

    old_uid = pod(testbed, namespace)["metadata"]["uid"]
    testbed.kubectl("delete", "pod", "demo-0", "-n", namespace, "--wait=true", "--timeout=120s")
    eventually(lambda: pod(testbed, namespace)["metadata"]["uid"] != old_uid, timeout=60, what="pod recreated")
    wait_ready(testbed, namespace, timeout=120)
    new_ip = on_real_node(testbed, namespace)["status"]["podIP"]
    assert eventually(lambda: nfs_get(new_ip, "hello.txt"), timeout=30, what="file readable after restart") \
        == payload

    # The upgrade: the same dfs under a new tag, already on the node (IfNotPresent, no registry).
    upgraded = f"{DFS_IMAGE}-upgrade"
    subprocess.run([*real_node.ctr, "-n", "k8s.io", "images", "tag", "--force", DFS_IMAGE, upgraded], check=True,
                   capture_output=True)
    before = pod(testbed, namespace)["metadata"]["uid"]
    real_server(testbed, real_node, namespace, image=upgraded)
    eventually(lambda: (p := pod(testbed, namespace))["metadata"]["uid"] != before
               and p["spec"]["containers"][0]["image"] == upgraded, timeout=90, what="pod rolled to the new image")
    wait_ready(testbed, namespace, timeout=180)  # DittoFS starts in seconds here: its data is a few KiB
    status = on_real_node(testbed, namespace)["status"]
    assert eventually(lambda: nfs_get(status["podIP"], "hello.txt"), timeout=30,
                      what="file readable after the upgrade") == payload

    # A wrong image (not on the node, never pulled), then the fix: the pod that never got Ready is replaced by
    # the fixed template. Under OrderedReady the StatefulSet waited for it for ever (the pod was deleted by hand).
    missing = f"{DFS_IMAGE}-missing"
    real_server(testbed, real_node, namespace, image=missing, imagePullPolicy="Never")

    def stuck() -> dict[str, Any] | None:
        p = pod(testbed, namespace)
        waiting = [(c.get("state") or {}).get("waiting", {}).get("reason") for c in
                   (p.get("status") or {}).get("containerStatuses") or [] if c.get("image") == missing]
        return p if "ErrImageNeverPull" in waiting else None

    broken = eventually(stuck, timeout=90, what="the pod stuck on the missing image")["metadata"]["uid"]
    degraded = eventually(lambda: (c := condition(server(testbed, namespace), "Degraded")) is not None
                          and c["status"] == "True" and c, timeout=60, what="Degraded=True")
    assert "demo-0" in degraded["message"], degraded
    real_server(testbed, real_node, namespace, image=upgraded, imagePullPolicy="Never")
    eventually(lambda: (p := pod(testbed, namespace))["metadata"]["uid"] != broken
               and p["spec"]["containers"][0]["image"] == upgraded, timeout=90,
               what="the stuck pod replaced by the fixed template, with no deletion by hand")
    wait_ready(testbed, namespace, timeout=180)
    status = on_real_node(testbed, namespace)["status"]
    assert eventually(lambda: nfs_get(status["podIP"], "hello.txt"), timeout=30,
                      what="file readable after the fix") == payload


def test_recreated_server_keeps_its_data_and_adopts_only_what_it_made(
        testbed: Testbed, operator: OperatorProcess, real_node: RealNode, namespace: str, tmp_path: Path) -> None:
    """SPEC §12: delete + re-create a DittoServer -> same data, login works.

    The generated credentials live as long as the data (PVCs are retained on delete): dfs reads
    DITTOFS_ADMIN_INITIAL_PASSWORD at first boot only, so a regenerated Secret would no longer match the admin
    row kept in the retained control-plane volume (login 401). What the operator created in DittoFS is
    recorded on the control-plane PVC, so the re-created server adopts exactly that, never a share made by
    hand (SPEC §13: objects created by hand are never touched).
    """
    real_server(testbed, real_node, namespace)
    wait_ready(testbed, namespace, timeout=120)
    first_ip = on_real_node(testbed, namespace)["status"]["podIP"]
    assert admin_login(testbed, namespace, first_ip) == 200
    payload = f"kept across a re-create of {namespace}/demo at {time.time()}\n".encode()
    (tmp_path / "kept.txt").write_bytes(payload)
    nfs_put(first_ip, tmp_path / "kept.txt", "kept.txt")
    rest = admin_rest(testbed, namespace, first_ip)
    rest.call("POST", "/api/v1/shares", {"name": "/manual", "metadata_store_id": "default",
                                         "local_block_store": "default", "default_permission": "read-write"})
    (tmp_path / "by-hand.txt").write_bytes(b"written to a share made by hand\n")
    nfs_put(first_ip, tmp_path / "by-hand.txt", "by-hand.txt", "/manual")
    claim = kubectl_json(testbed, "get", "pvc", "controlplane-demo-0", "-n", namespace)
    assert "share:/export" in json.loads(claim["metadata"]["annotations"]["dittofs.io/provisioned"])
    secrets = ("demo-admin-bootstrap-credentials", "demo-operator-credentials")
    before = [kubectl_json(testbed, "get", "secret", s, "-n", namespace)["data"] for s in secrets]
    created = len(events(testbed, namespace, "ShareCreated"))
    assert created >= 1

    testbed.kubectl("delete", "dittoserver", "demo", "-n", namespace, "--timeout=90s")
    real_server(testbed, real_node, namespace)
    obj = wait_ready(testbed, namespace, timeout=120)
    after = [kubectl_json(testbed, "get", "secret", s, "-n", namespace)["data"] for s in secrets]
    assert after == before, "a generated Secret was regenerated"
    ip = on_real_node(testbed, namespace)["status"]["podIP"]
    assert admin_login(testbed, namespace, ip) == 200, "the re-created server no longer accepts its admin Secret"
    assert nfs_get(ip, "kept.txt") == payload
    assert "share:/export" in obj["status"]["provisioned"] and "share:/manual" not in obj["status"]["provisioned"]
    assert len(events(testbed, namespace, "ShareCreated")) == created, "the predecessor's share was made again"

    # Declaring the hand-made share's name is reported, not taken over.
    real_server(testbed, real_node, namespace, shares=[{"name": "/export", "defaultPermission": "read-write"},
                                                       {"name": "/manual", "defaultPermission": "read"}])

    def not_owned() -> dict[str, Any] | None:
        cond = condition(kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace), "Provisioned")
        return cond if cond and cond["reason"] == "NotOwned" else None

    cond = eventually(not_owned, timeout=60, what="Provisioned=False/NotOwned for the hand-made share")
    assert "share:/manual" in cond["message"] and "share:/export" not in cond["message"], cond
    adopt = f"kubectl -n {namespace} annotate dittoserver demo dittofs.dittofs.com/adopt=true"
    assert adopt in cond["message"], cond

    # The user hands it over: adopted as it is (never re-created: its file stays), brought to the declaration
    # (guests may read, no longer write), and the consent is used once.
    testbed.kubectl(*adopt.split()[1:])
    obj = wait_ready(testbed, namespace, timeout=60)
    assert "share:/manual" in obj["status"]["provisioned"], obj["status"]
    assert "dittofs.dittofs.com/adopt" not in (obj["metadata"].get("annotations") or {})
    assert len(events(testbed, namespace, "ShareCreated")) == created, "the adopted share was made again"
    ip = on_real_node(testbed, namespace)["status"]["podIP"]
    _, share = admin_rest(testbed, namespace, ip).call("GET", "/api/v1/shares/manual")
    assert share["default_permission"] == "read", share
    assert nfs_get(ip, "by-hand.txt", "/manual") == b"written to a share made by hand\n"


def test_percona_path_runs_wait_for_postgres_and_dfs_on_postgres(
        testbed: Testbed, operator: OperatorProcess, real_node: RealNode, namespace: str) -> None:
    """The Percona init container is the real pg_isready (Debian's, image built offline) against a real TLS
    PostgreSQL on the bridge, and dfs then keeps its control plane there. The test plays Percona's part. Both
    containers pass Pod Security "restricted" (SPEC §4.7)."""
    enforce_restricted(testbed, namespace)
    testbed.kubectl("apply", "--server-side", "-f", str(PERCONA_CRD))
    testbed.wait_crd("perconapgclusters.pgv2.percona.com")
    pg = PostgresServer(ssl=True)
    pg.host = NODE_IP  # pods reach the host only on the bridge
    try:
        pg.start()
        hba = pg.datadir / "pg_hba.conf"
        hba.write_text(hba.read_text() + f"hostssl all all {SUBNET} scram-sha-256\n")
        pg.psql("SELECT pg_reload_conf();")
        real_server(testbed, real_node, namespace, percona=percona_spec(image=PG_ISREADY_IMAGE))
        created = eventually(lambda: cluster(testbed, namespace), timeout=60, what="PerconaPGCluster created")
        testbed.kubectl("patch", "perconapgcluster", "demo-postgres", "-n", namespace, "--subresource=status",
                        "--type=merge", "-p", json.dumps({"status": {
                            "state": "ready", "observedGeneration": created["metadata"]["generation"]}}))
        uri = f"postgresql://{pg.user}:{pg.password}@{NODE_IP}:{pg.port}/{pg.database}?sslmode=require"
        secret = {"apiVersion": "v1", "kind": "Secret",
                  "metadata": {"name": "demo-postgres-pguser-dittofs", "namespace": namespace},
                  "stringData": {"host": NODE_IP, "port": str(pg.port), "dbname": pg.database, "user": pg.user,
                                 "password": pg.password, "uri": uri}}
        testbed.kubectl("apply", "-f", "-", input=json.dumps(secret))
        wait_ready(testbed, namespace, timeout=180)
        p = on_real_node(testbed, namespace)
        init = p["status"]["initContainerStatuses"][0]
        assert init["name"] == "wait-for-postgres" and init["image"].endswith(PG_ISREADY_IMAGE.split("/", 1)[1])
        assert init["state"]["terminated"]["exitCode"] == 0, init
        waited = testbed.kubectl("logs", "demo-0", "-n", namespace, "-c", "wait-for-postgres").stdout
        assert "accepting connections" in waited, waited
        tables = pg.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public';", database=pg.database)
        assert int(tables.strip().split()[-1] if tables.strip() else "0") > 0, f"dfs made no tables: {tables}"
        assert admin_login(testbed, namespace, p["status"]["podIP"]) == 200
    finally:
        testbed.kubectl("delete", "dittoserver", "demo", "-n", namespace, "--timeout=90s", check=False)
        pg.cleanup()


# ---------------------------------------------------------------------------------------------- the node


def test_no_packet_leaves_the_machine(testbed: Testbed, real_node: RealNode, namespace: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The real node's part; the control plane's (routes, dials, proxy variables) is proven without the node in
    test_testbed.py, so it holds also where the real node is opted out."""
    report: list[str] = []
    # 3. No proxy variable reaches the node's components, even when the test session has them.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    real_node.stop_kubelet()
    real_node.start_kubelet()
    for name in ("kubelet", "containerd"):
        pid = real_node.pid(name)
        assert pid is not None, f"{name} not running"
        assert proxy_vars_of(pid) == [], f"{name} has proxy variables {proxy_vars_of(pid)}"
    report.append("proxy variables in kubelet, containerd: none (kubelet restarted with HTTPS_PROXY set)")

    # 4. A pod on the real node: a bridge IP, no default route; no forwarding, no masquerade on the host.
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "routes", "namespace": namespace},
            "spec": {**real_node.pod_placement(), "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": DFS_IMAGE, "imagePullPolicy": "Never",
                                     "command": ["sleep", "3600"]}]}}
    testbed.apply_yaml(json.dumps(body))
    testbed.kubectl("wait", "--for=condition=Ready", "pod/routes", "-n", namespace, "--timeout=60s")
    table = testbed.kubectl("exec", "routes", "-n", namespace, "--", "cat", "/proc/net/route").stdout
    rows = [line.split() for line in table.splitlines()[1:] if line.strip()]
    assert rows, table
    assert all(r[1] != "00000000" for r in rows), f"pod has a default route:\n{table}"
    ip = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True, check=True)
    assert "dftb0" not in ip.stdout
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"
    nat = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert "MASQUERADE" not in nat and "KUBE-" not in nat, nat
    report.append(f"pod routes: {[(r[0], r[1]) for r in rows]} (no 00000000 destination); ip_forward=0; "
                  "iptables: no MASQUERADE, no KUBE- chains")
    # 5. Every image came from the archives the test bed imported: containerd never pulled (a registry is off the
    # machine; a pull would resolve and dial it).
    pulls = [line for line in real_node.log_path("containerd").read_text(errors="replace").splitlines()
             if "PullImage" in line]
    assert pulls == [], pulls[:3]
    report.append("containerd: no PullImage in its log")
    # 6. A pod's resolver is the bridge address, where nothing may answer: a DNS server listening there (or on
    # every address) would forward a pod's lookups off the machine.
    listening = subprocess.run(["ss", "-H", "-lnut"], capture_output=True, text=True, check=True).stdout
    dns = [line for line in listening.splitlines()
           if re.search(rf"\s(0\.0\.0\.0|\*|\[::\]|{re.escape(NODE_IP)}):53\s", line)]
    assert dns == [], dns
    report.append(f"nothing listens on port 53 where pods send their lookups ({NODE_IP}, or every address)")
    print("\n[safety] " + "\n[safety] ".join(report))


def test_a_dead_kubelet_is_not_replaced_by_kwok(testbed: Testbed, real_node: RealNode) -> None:
    """kwok manages only annotated nodes: after the kubelet's lease expires (40 s) nobody renews it.

    With ``--manage-all-nodes=true`` kwok takes over an expired lease and fakes the node Ready.
    """
    lease_path = f"{LEASES}/{NODE_NAME}"

    def lease_made() -> bool:  # a node that just became Ready may not have made its lease yet
        return testbed.api.request("GET", lease_path)[0] == 200

    eventually(lease_made, timeout=30, what="the kubelet's node lease")
    real_node.kill_kubelet()
    killed_at = time.time()
    renew = testbed.api.get(lease_path)["spec"]["renewTime"]
    try:
        time.sleep(50)  # past the 40 s lease
        lease = testbed.api.get(lease_path)["spec"]
        node = testbed.api.get(f"/api/v1/nodes/{NODE_NAME}")
        assert lease["holderIdentity"] == NODE_NAME, lease
        assert lease["renewTime"] == renew, f"someone renewed the dead kubelet's lease: {lease}"
        assert "kwok.x-k8s.io/node" not in (node["metadata"].get("annotations") or {})
        ready = condition(node, "Ready")
        assert ready is not None
        beat = datetime.fromisoformat(ready["lastHeartbeatTime"].replace("Z", "+00:00")).timestamp()
        assert beat <= killed_at + 1, f"a heartbeat after the kubelet died: {ready}"
    finally:
        real_node.start_kubelet()
    ready = condition(testbed.api.get(f"/api/v1/nodes/{NODE_NAME}"), "Ready")
    assert ready is not None and ready["status"] == "True"


def test_start_without_prerequisites_fails_loudly(testbed: Testbed, tmp_path: Path) -> None:
    reasons = preflight(tmp_path / "no-kubelet")
    assert any("kubelet missing" in r and str(tmp_path) in r for r in reasons), reasons
    broken = Testbed.__new__(Testbed)
    broken.__dict__.update(testbed.__dict__)
    broken.binaries = dataclasses.replace(testbed.binaries, kubelet=tmp_path / "no-kubelet")
    with pytest.raises(RealNodeError, match="kubelet missing"):
        RealNode(broken).start()


def test_a_second_real_node_on_the_host_is_refused(testbed: Testbed, real_node: RealNode) -> None:
    """SPEC §14: one real node per host. A second one (another session, another test bed) waits for the host
    lock and then fails loudly, touching nothing of the running node."""
    kubelet = real_node.pid("kubelet")
    second = RealNode(testbed, lock_timeout=1.5)
    with pytest.raises(RealNodeError, match="still held after"):
        second.start()
    assert kubelet and real_node.pid("kubelet") == kubelet
    assert STATE_FILE.exists() and json.loads(STATE_FILE.read_text())["workdir"] == str(real_node.dir)


def test_teardown_restores_the_host_also_after_a_killed_run(testbed: Testbed, real_node: RealNode) -> None:
    """Abandon the live node as a killed session would, start again (recovery), stop, compare with before.

    Last in this module: it restarts the session's node (same object, so later users are unaffected).
    """
    before = json.loads(STATE_FILE.read_text())  # the host as the node's start found it
    old = {n: real_node.pid(n) for n in ("kubelet", "containerd", "apiserver-relay")}
    assert all(old.values()), old
    assert snapshot_host()["sysctls"]["vm/overcommit_memory"] == "1", "the kubelet did change a sysctl"
    real_node.abandon()  # lock released; kubelet, containerd, pods, mounts, bridge, sysctls left behind
    assert STATE_FILE.exists()
    real_node.start()  # must find the state file and undo the abandoned node first
    assert "recovered" in real_node.timings, real_node.timings
    for name, pid in old.items():
        marker = f"bind={real_node.node_ip}," if name == "apiserver-relay" else str(real_node.dir)
        assert not Path(f"/proc/{pid}").exists() or marker not in Path(f"/proc/{pid}/cmdline")\
            .read_bytes().decode(errors="replace"), f"old {name} still running"
    real_node.stop()
    after = snapshot_host()
    try:
        for key in ("sysctls", "absent_paths", "netns", "cgroups", "bridge_existed"):
            assert after[key] == before[key], (key, before[key], after[key])
        mounts = Path("/proc/self/mountinfo").read_text()
        assert str(real_node.dir) not in mounts
        assert not STATE_FILE.exists()
        # The node's own, checked directly too (the snapshot compares with what the host had).
        assert Path(f"/sys/class/net/{BRIDGE}").exists() == before["bridge_existed"]
    finally:
        real_node.start()


def test_https_api_and_a_certificate_rotation_under_load_restart_nothing(
        testbed: Testbed, operator: OperatorProcess, real_node: RealNode, namespace: str) -> None:
    """controlPlane.tls (issue 14, item 1) on a real kubelet: HTTPS probes pass, the operator provisions over
    HTTPS trusting the Secret's ca.crt, and a renewed certificate reaches the running server (kubelet updates
    the mounted Secret, DittoFS reloads it) with no pod restart and no failed request under a steady load."""
    service = f"demo-api.{namespace}.svc"
    ca = new_ca("dittofs-api-ca")

    def tls_secret(pair: KeyPair) -> str:
        return json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                           "metadata": {"name": "api-tls", "namespace": namespace},
                           "data": {k: base64.b64encode(v).decode() for k, v in (
                               ("tls.crt", pair.cert_pem), ("tls.key", pair.key_pem), ("ca.crt", ca.cert_pem))}})

    first = new_leaf(ca, [service])
    testbed.kubectl("apply", "-f", "-", input=tls_secret(first))
    real_server(testbed, real_node, namespace, controlPlane={"tls": {"secretName": "api-tls"}})
    obj = wait_ready(testbed, namespace, timeout=180)
    assert (condition(obj, "Provisioned") or {}).get("status") == "True", "the operator provisioned over HTTPS"
    p = on_real_node(testbed, namespace)
    ip, uid = p["status"]["podIP"], p["metadata"]["uid"]
    probe = p["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    assert probe["scheme"] == "HTTPS"
    trusted = ssl.create_default_context(cadata=ca.cert_pem.decode())

    def serial() -> int:
        with socket.create_connection((ip, 8080), timeout=5) as raw, \
                trusted.wrap_socket(raw, server_hostname=service) as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return int(x509.load_der_x509_certificate(der).serial_number)

    assert serial() == first.cert.serial_number
    stop, results = threading.Event(), {"ok": 0, "failed": 0}

    def load() -> None:
        while not stop.is_set():
            try:
                serial()
                results["ok"] += 1
            except Exception:  # counted: an uncaught one would end the thread, unseen
                results["failed"] += 1
            time.sleep(0.05)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        second = new_leaf(ca, [service])
        testbed.kubectl("apply", "-f", "-", input=tls_secret(second))
        t0 = time.monotonic()
        eventually(lambda: serial() == second.cert.serial_number, timeout=150,
                   what="the renewed certificate served (kubelet sync + DittoFS reload)")
        took = time.monotonic() - t0
        time.sleep(2)
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive()
    after = pod(testbed, namespace)
    assert after["metadata"]["uid"] == uid and after["status"]["containerStatuses"][0]["restartCount"] == 0
    assert results["failed"] == 0 and results["ok"] > 20, results
    assert (condition(wait_ready(testbed, namespace), "Provisioned") or {}).get("status") == "True"
    print(f"\n[real-node] TLS rotation served after {took:.1f}s, {results['ok']} handshakes, "
          f"{results['failed']} failed, pod kept")

    # Mutual TLS: only client certificates from the client CA get in; the operator presents its own, so it
    # keeps provisioning; the kubelet's probes become TCP checks.
    clients = new_ca("dittofs-clients")
    operator_pair = new_leaf(clients, ["dittofs-operator"], client=True)
    for name, kind, data in (("client-ca", "Opaque", {"ca.crt": clients.cert_pem}),
                             ("operator-client", "kubernetes.io/tls",
                              {"tls.crt": operator_pair.cert_pem, "tls.key": operator_pair.key_pem})):
        testbed.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Secret", "type": kind, "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}))
    real_server(testbed, real_node, namespace, controlPlane={"tls": {
        "secretName": "api-tls", "clientCaSecretName": "client-ca", "operatorClientSecretName": "operator-client"}})
    eventually(lambda: pod(testbed, namespace)["metadata"]["uid"] != uid, timeout=90, what="pod rolled to mTLS")
    obj = wait_ready(testbed, namespace, timeout=180)
    assert (condition(obj, "Provisioned") or {}).get("status") == "True", "the operator still provisions"
    mtls_pod = on_real_node(testbed, namespace)
    assert "tcpSocket" in mtls_pod["spec"]["containers"][0]["readinessProbe"]
    ip = mtls_pod["status"]["podIP"]
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        serial_and_get(ip, trusted, service)
    # The support bundle reads DittoFS the way the operator does: over mutual TLS with its certificate.
    _, files = report_bundle(testbed, namespace, Path(testbed.workdir) / f"report-{namespace}.tar.gz")
    names = list(files)
    assert "dittofs/shares.json" in names and not [n for n in names if n.startswith("notes/dittofs")], names


def serial_and_get(ip: str, context: ssl.SSLContext, name: str) -> bytes:
    """A request without a client certificate (TLS 1.3 reports the refusal on the first read)."""
    with socket.create_connection((ip, 8080), timeout=5) as raw, context.wrap_socket(raw, server_hostname=name) as tls:
        tls.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = tls.recv(1)
    if not answer:
        raise ConnectionResetError("closed without an answer")
    return answer


def test_ldap_and_kerberos_serve_from_the_real_pod_and_rotate_without_a_restart(
        testbed: Testbed, operator: OperatorProcess, real_node: RealNode, namespace: str, tmp_path: Path) -> None:
    """identity.ldap/kerberos (issue 14, item 4) in the real pod: dfs (uid 65532) loads the mounted keytab and
    krb5.conf, and DittoFS's own LDAP check (dial + StartTLS verified with the mounted CA + bind with the
    password it stores) passes against a real slapd on the bridge. A bind-password rotation (directory, then
    Secret) is applied over REST with no pod restart; a Kerberos edit rolls the pod once and dfs starts with it."""
    from tests.testbed.ldap import BASE_DN, ROOT_DN, Slapd, keytab

    ca = new_ca("ldap-ca")
    principal = "nfs/files.example.com@EXAMPLE.COM"
    kt = keytab(tmp_path / "krb5.keytab", principal, "keytab-pw")

    def secret(name: str, data: dict[str, bytes]) -> None:
        testbed.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}))

    with Slapd(tmp_path / "slapd", "bind-first-pw", tls=new_leaf(ca, ["ldap.test"], [NODE_IP]), host=NODE_IP) as ldap:
        secret("ldap-bind", {"password": b"bind-first-pw"})
        secret("ldap-ca", {"ca.crt": ca.cert_pem})
        secret("krb", {"keytab": kt, "krb5.conf": b"[libdefaults]\n  default_realm = EXAMPLE.COM\n"})
        identity: dict[str, Any] = {
            "ldap": {"url": ldap.url, "startTls": True, "baseDn": BASE_DN, "bindDn": ROOT_DN,
                     "bindPasswordSecretRef": {"name": "ldap-bind", "key": "password"},
                     "caSecretRef": {"name": "ldap-ca", "key": "ca.crt"}},
            "kerberos": {"servicePrincipal": principal, "keytabSecretRef": {"name": "krb", "key": "keytab"},
                         "krb5ConfSecretRef": {"name": "krb", "key": "krb5.conf"}}}
        real_server(testbed, real_node, namespace, identity=identity)
        wait_ready(testbed, namespace, timeout=180)
        eventually(lambda: (condition(kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace),
                                      "Provisioned") or {}).get("status") == "True", timeout=60, what="Provisioned")
        p = on_real_node(testbed, namespace)
        ip, uid = p["status"]["podIP"], p["metadata"]["uid"]
        log = dfs_log(testbed, namespace)
        assert "LDAP identity provider enabled (seeded from config file/env)" in log
        assert "RPCSEC_GSS (Kerberos) authentication enabled" in log, "the mounted keytab did not load"
        assert "bind-first-pw" not in log
        rest = admin_rest(testbed, namespace, ip)
        _, admin_password = bootstrap_admin(testbed, namespace)

        def ldap_ok() -> bool:
            _, stored = rest.call("GET", "/api/v1/identity-providers/ldap/config")
            _, result = rest.call("POST", "/api/v1/identity-providers/ldap/test", stored)
            return bool(result["ok"])

        assert ldap_ok(), "dfs could not StartTLS + bind with its stored password"
        _, kerberos = rest.call("GET", "/api/v1/identity-providers/kerberos/config")
        _, tested = rest.call("POST", "/api/v1/identity-providers/kerberos/test", kerberos)
        assert tested["ok"] is True, tested
        first_hash = template_hash(testbed, namespace)

        ldap.restart("bind-second-pw")
        assert not ldap_ok()
        rotated_at = time.monotonic()
        secret("ldap-bind", {"password": b"bind-second-pw"})
        eventually(ldap_ok, timeout=60, what="the rotated bind password applied over REST")
        print(f"\n[real-node] LDAP bind password rotation live in {time.monotonic() - rotated_at:.2f} s "
              "(Secret write -> DittoFS binds with it), no restart", file=sys.stderr)
        p = on_real_node(testbed, namespace)
        assert p["metadata"]["uid"] == uid and p["status"]["containerStatuses"][0]["restartCount"] == 0
        assert template_hash(testbed, namespace) == first_hash

        identity["kerberos"]["contextTtl"] = "4h"
        edited_at = time.monotonic()
        real_server(testbed, real_node, namespace, identity=identity)
        eventually(lambda: pod_uid(testbed, namespace) not in (None, uid), timeout=120, what="pod rolled")
        wait_ready(testbed, namespace, timeout=180)
        print(f"[real-node] Kerberos edit applied by one restart, Ready again in {time.monotonic() - edited_at:.1f} s",
              file=sys.stderr)
        assert '"context_ttl":14400000000000' in dfs_log(testbed, namespace), "dfs did not start with the edit"
        assert events(testbed, namespace, "ConfigUpdated")
        rest = DfsRest(on_real_node(testbed, namespace)["status"]["podIP"])
        assert rest.login("admin", admin_password) == 200
        assert ldap_ok(), "the rotated password is the one DittoFS keeps across the restart"

        # The support bundle shows both providers as DittoFS keeps them, and no password in any form.
        _, files = report_bundle(testbed, namespace, Path(testbed.workdir) / f"report-{namespace}.tar.gz")
        assert not [n for n in files if n.startswith("notes/dittofs")], sorted(files)
        stored = json.loads(files["dittofs/identity-providers/ldap.json"])
        assert stored["bind_password"] == "********" and stored["url"] == ldap.url
        assert json.loads(files["dittofs/identity-providers/kerberos.json"])["context_ttl"] == "4h"
        blob = b"".join(files.values())
        for value in (b"bind-first-pw", b"bind-second-pw", base64.b64encode(b"bind-second-pw")):
            assert value not in blob, value


def template_hash(testbed: Testbed, namespace: str, name: str = "demo") -> str:
    sts = kubectl_json(testbed, "get", "statefulset", name, "-n", namespace)
    return str(sts["spec"]["template"]["metadata"]["annotations"]["dittofs.io/config-hash"])


def pod_uid(testbed: Testbed, namespace: str, name: str = "demo-0") -> str | None:
    found = testbed.kubectl("get", "pod", name, "-n", namespace, "-o", "jsonpath={.metadata.uid}", check=False)
    return found.stdout.strip() or None if found.returncode == 0 else None
