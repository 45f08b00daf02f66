"""The declared file service on the real node (SPEC §13, §14): the operator provisions shares, users and
groups over the real dfs's REST API, a file goes through NFS, an unchanged server costs no writes, and a
share removed from the spec is removed from DittoFS."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import re
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dittoctl.api.naming import ADOPT_ANNOTATION
from tests.support.kube import apply_server, condition, events, kubectl_json, report_bundle, wait_ready
from tests.support.operator import OPERATOR_NAMESPACE, OperatorProcess
from tests.support.poll import eventually
from tests.support.s3 import ACCESS_KEY_ID, MotoServer
from tests.testbed import Testbed
from tests.testbed.fileservice import (
    DfsRest,
    admin_rest,
    bootstrap_admin,
    dfs_pid,
    nfs_get,
    nfs_put,
    smb,
    smb_get,
)
from tests.testbed.node import NODE_IP, RealNode

pytestmark = pytest.mark.integration


def requests_sent(operator: OperatorProcess) -> dict[str, float]:
    """dittofs_operator_dittofs_requests_total by HTTP method."""
    found: dict[str, float] = {}
    for method, value in re.findall(r'^dittofs_operator_dittofs_requests_total\{method="([A-Z]+)"\} (\S+)$',
                                    operator.metrics(), re.M):
        found[method] = float(value)
    return found


def admin_as(ip: str, password: str) -> DfsRest:
    rest = DfsRest(ip)
    assert rest.login("admin", password) == 200
    return rest


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_declared_share_and_user_are_served_and_kept(testbed: Testbed, operator: OperatorProcess,
                                                     real_node: RealNode, namespace: str, tmp_path: Path) -> None:
    testbed.kubectl("create", "secret", "generic", "alice-pw", "-n", namespace, "--from-literal=password=first-pass")
    spec: dict[str, Any] = {
        **real_node.pod_placement(),
        "groups": [{"name": "team"}],
        "users": [{"name": "alice", "passwordSecretRef": {"name": "alice-pw", "key": "password"}, "groups": ["team"]}],
        "shares": [
            {"name": "/export", "defaultPermission": "read-write"},
            {"name": "/team", "defaultPermission": "read-write",
             "permissions": [{"user": "alice", "level": "read-write"}, {"group": "team", "level": "read"}]},
        ],
    }
    apply_server(testbed, namespace, **spec)
    obj = wait_ready(testbed, namespace, timeout=180)
    provisioned = condition(obj, "Provisioned")
    assert provisioned is not None and provisioned["status"] == "True", provisioned
    assert provisioned["reason"] == "Converged"
    status = obj["status"]
    assert {"share:/export", "share:/team", "user:alice", "group:team", "metadata-store:default",
            "local-store:default", "permission:/team#user:alice", "permission:/team#group:team"} \
        <= set(status["provisioned"]), status["provisioned"]
    pod = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)
    ip = pod["status"]["podIP"]
    assert {s["name"]: s["nfs"] for s in status["shares"]} == {
        "/export": f"nfs://{ip}:12049/export", "/team": f"nfs://{ip}:12049/team"}
    assert "alice-pw/password" not in str(status["appliedSecrets"].values())  # digests only, keyed
    assert "first-pass" not in str(status)
    pod_ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    lag = stamp(provisioned["lastTransitionTime"]) - stamp(pod_ready["lastTransitionTime"])
    print(f"\n[fileservice] pod Ready -> Provisioned=True in {lag:.0f} s", file=sys.stderr)
    assert lag < 30, lag

    # What DittoFS really holds, seen as the bootstrap admin and as alice herself.
    rest = admin_rest(testbed, namespace, ip)
    assert {"/export", "/team"} <= rest.shares()
    _, grants = rest.call("GET", "/api/v1/shares/team/permissions")
    assert sorted((g["type"], g["name"], g["level"]) for g in grants) == [
        ("group", "team", "read"), ("user", "alice", "read-write")]
    assert DfsRest(ip).login("alice", "first-pass") == 200
    reasons = [e["reason"] for e in events(testbed, namespace)]
    assert reasons.count("Provisioned") == 1 and reasons.count("ShareCreated") == 2 and "UserCreated" in reasons

    # A file through NFS into the declared share, read back.
    payload = f"through the declared share in {namespace} at {time.time()}\n".encode() * 50
    local = tmp_path / "team.txt"
    local.write_bytes(payload)
    def put() -> bool:
        nfs_put(ip, local, "team.txt", share="/team")
        return True

    eventually(put, timeout=30, what="nfs-cp into /team")
    assert nfs_get(ip, "team.txt", share="/team") == payload

    # Drift passes over the unchanged server: reads only, and nothing written to Kubernetes (once status
    # reports the file just written: usedBytes is part of it).
    def counted() -> bool:
        shares = kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace)["status"]["shares"]
        return any(s["name"] == "/team" and s.get("usedBytes", 0) >= len(payload) for s in shares)

    eventually(counted, timeout=60, what="status.shares counting team.txt")
    time.sleep(3)
    before, mark = requests_sent(operator), testbed.audit_line_count()
    time.sleep(12)  # more than two drift passes (interval 5 s)
    after = requests_sent(operator)
    assert after.get("GET", 0) > before.get("GET", 0), "drift passes read DittoFS"
    dfs_writes = {m: after.get(m, 0) - before.get(m, 0) for m in after if m != "GET"}
    assert not any(dfs_writes.values()), f"an unchanged server got DittoFS writes: {dfs_writes}"
    assert testbed.operator_writes(mark, namespace) == [], "an unchanged server got Kubernetes writes"
    reads = (after["GET"] - before["GET"])
    print(f"[fileservice] 12 s of drift passes: {reads:.0f} GETs, 0 writes", file=sys.stderr)

    # A new password is applied live: alice logs in with it, the pod is not restarted.
    uid = pod["metadata"]["uid"]
    testbed.kubectl("patch", "secret", "alice-pw", "-n", namespace, "-p",
                    '{"stringData": {"password": "second-pass"}}')
    eventually(lambda: DfsRest(ip).login("alice", "second-pass") == 200, timeout=60, what="alice's new password")
    assert kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["metadata"]["uid"] == uid

    # A share left out of the spec is deleted in DittoFS; the other share and its file stay.
    local.write_bytes(b"kept\n")
    nfs_put(ip, local, "kept.txt")
    apply_server(testbed, namespace, **{**spec, "shares": [spec["shares"][0]]})
    eventually(lambda: "/team" not in rest.shares(), timeout=60, what="/team deleted in DittoFS")
    assert "/export" in rest.shares()
    obj = wait_ready(testbed, namespace, timeout=60)
    assert not [r for r in obj["status"]["provisioned"] if r.startswith(("share:/team", "permission:/team"))]
    assert [s["name"] for s in obj["status"]["shares"]] == ["/export"]
    assert nfs_get(ip, "kept.txt") == b"kept\n"
    assert events(testbed, namespace, "ShareDeleted")

    # A human changes the bootstrap admin's password: the operator works as its own account, unaffected.
    _, current = bootstrap_admin(testbed, namespace)
    rest.call("POST", "/api/v1/users/me/password",
              {"current_password": current, "new_password": "changed-by-a-human-1"})
    assert DfsRest(ip).login("admin", current) == 401
    apply_server(testbed, namespace, **spec)  # /team again
    eventually(lambda: "/team" in admin_as(ip, "changed-by-a-human-1").shares(), timeout=60,
               what="/team provisioned after the admin password changed")
    provisioned = condition(wait_ready(testbed, namespace, timeout=60), "Provisioned")
    assert provisioned is not None and provisioned["reason"] == "Converged"

    # Stopped: the shares stay (in DittoFS, on the volumes), at no address. Started: served again, files kept.
    apply_server(testbed, namespace, **{**spec, "replicas": 0})

    def stopped() -> list[dict[str, Any]] | None:
        o = kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace)
        return o["status"]["shares"] if o["status"].get("phase") == "Stopped" else None

    shares = eventually(stopped, timeout=120, what="phase Stopped")
    assert [s["name"] for s in shares] == ["/export", "/team"], shares
    assert not [s for s in shares if {"nfs", "smb"} & set(s)], shares
    apply_server(testbed, namespace, **spec)
    wait_ready(testbed, namespace, timeout=180)
    ip = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["status"]["podIP"]

    def served() -> list[str | None]:
        return [s.get("nfs") for s in kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace)[
            "status"]["shares"]]

    eventually(lambda: served() == [f"nfs://{ip}:12049/export", f"nfs://{ip}:12049/team"], timeout=60,
               what="the shares' addresses back, on the new pod")
    assert nfs_get(ip, "kept.txt") == b"kept\n"


def test_drift_is_repaired_and_hand_made_objects_are_left_alone(testbed: Testbed, operator: OperatorProcess,
                                                                real_node: RealNode, namespace: str) -> None:
    apply_server(testbed, namespace, **real_node.pod_placement())
    obj = wait_ready(testbed, namespace, timeout=180)
    assert [s["name"] for s in obj["status"]["shares"]] == ["/export"]  # the default share
    ip = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["status"]["podIP"]
    rest = admin_rest(testbed, namespace, ip)

    # A human deletes the declared share: the next drift pass puts it back and says so.
    rest.call("DELETE", "/api/v1/shares/export")
    assert "/export" not in rest.shares()
    eventually(lambda: "/export" in rest.shares(), timeout=30, what="/export re-created by a drift pass")
    eventually(lambda: events(testbed, namespace, "DriftRepaired"), timeout=30, what="DriftRepaired event")

    # A share made by hand is never touched, and declaring its name is reported, not taken over. This one is
    # read-only, so DittoFS refuses its writes for good (it loaded it so): declared writable, even the user's
    # consent to adopt leaves it alone, rather than PUT it back and report a writable share whose writes fail.
    rest.call("POST", "/api/v1/shares", {"name": "/manual", "metadata_store_id": "default",
                                         "local_block_store": "default", "read_only": True})
    apply_server(testbed, namespace, **real_node.pod_placement(),
                 shares=[{"name": "/export", "defaultPermission": "read-write"}, {"name": "/manual"}])

    def not_owned() -> dict[str, Any] | None:
        cond = condition(kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace), "Provisioned")
        return cond if cond and cond["reason"] == "NotOwned" else None

    cond = eventually(not_owned, timeout=60, what="Provisioned=False/NotOwned")
    assert cond["status"] == "False" and "share:/manual" in cond["message"]
    ready = condition(kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace), "Ready")
    assert ready is not None and ready["status"] == "False" and "Provisioned" in ready["message"]
    assert events(testbed, namespace, "ProvisioningFailed")
    testbed.kubectl("annotate", "dittoserver", "demo", "-n", namespace, "dittofs.dittofs.com/adopt=true")

    def refused() -> dict[str, Any] | None:
        obj = kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace)
        cond = condition(obj, "Provisioned")
        used = ADOPT_ANNOTATION not in (obj["metadata"].get("annotations") or {})
        return cond if cond and cond["reason"] == "Immutable" and used else None

    cond = eventually(refused, timeout=60, what="Provisioned=False/Immutable, the consent used")
    assert "share:/manual" in cond["message"] and "made by hand, not adopted: served read-only" in cond["message"]
    assert "share:/manual" not in kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace)[
        "status"]["provisioned"]
    assert rest.call("GET", "/api/v1/shares/manual")[1]["read_only"] is True
    apply_server(testbed, namespace, **real_node.pod_placement())  # back to the default share
    obj = wait_ready(testbed, namespace, timeout=60)
    assert "share:/manual" not in obj["status"]["provisioned"]
    assert "/manual" in rest.shares(), "the hand-made share is still there"
    provisioned = condition(obj, "Provisioned")
    assert provisioned is not None and "it also serves /manual, not declared" in provisioned["message"], provisioned


def test_lost_credentials_fail_once_with_backoff_and_recover(testbed: Testbed, operator: OperatorProcess,
                                                             real_node: RealNode, namespace: str) -> None:
    """AuthFailed is one Warning however often the operator retries (capped backoff), and a lost operator
    account is re-created through the bootstrap admin."""
    apply_server(testbed, namespace, **real_node.pod_placement())
    wait_ready(testbed, namespace, timeout=180)
    admin_secret = kubectl_json(testbed, "get", "secret", "demo-admin-bootstrap-credentials", "-n", namespace)
    good = admin_secret["data"]["password"]

    def pod_uid() -> str | None:
        found = testbed.kubectl("get", "pod", "demo-0", "-n", namespace, "-o", "json", check=False)
        return str(json.loads(found.stdout)["metadata"]["uid"]) if found.returncode == 0 else None

    # The operator's own password is gone and the admin Secret no longer matches DittoFS's admin (dfs read it
    # at first boot only); the changed Secret rolls the pod, and the new pod gets a fresh login: nothing can
    # log in.
    first = pod_uid()
    testbed.kubectl("delete", "secret", "demo-operator-credentials", "-n", namespace)
    testbed.kubectl("patch", "secret", "demo-admin-bootstrap-credentials", "-n", namespace, "-p",
                    '{"stringData": {"password": "not-the-first-boot-password"}}')
    eventually(lambda: pod_uid() not in (None, first), timeout=120, what="pod rolled for the changed Secret")

    def auth_failed() -> dict[str, Any] | None:
        cond = condition(kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace), "Provisioned")
        return cond if cond and cond["reason"] == "AuthFailed" else None

    cond = eventually(auth_failed, timeout=180, what="Provisioned=False/AuthFailed")
    assert cond["status"] == "False" and "not-the-first-boot-password" not in cond["message"]
    assert "account dittofs-operator cannot log in" in cond["message"], cond
    assert "Secret demo-admin-bootstrap-credentials key password" in cond["message"], cond
    time.sleep(30)  # retries at 5, 10, 20 s: still one event
    warnings = events(testbed, namespace, "ProvisioningFailed")
    assert len(warnings) == 1 and warnings[0].get("count", 1) == 1, warnings
    # ... while the metric an admin alerts on counts every failed pass (a real-node session saw none of them).
    failed = re.search(r'^dittofs_operator_provisioning_failures_total\{reason="AuthFailed"\} (\S+)$',
                       operator.metrics(), re.MULTILINE)
    assert failed is not None and float(failed.group(1)) >= 3, "retries at 5, 10 and 20 s"
    ready = condition(kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace), "Ready")
    assert ready is not None and ready["status"] == "False" and "Provisioned" in ready["message"]

    # The right admin password back: the operator re-creates its account through admin and converges.
    testbed.kubectl("patch", "secret", "demo-admin-bootstrap-credentials", "-n", namespace, "-p",
                    json.dumps({"data": {"password": good}}))
    obj = wait_ready(testbed, namespace, timeout=240)
    assert condition(obj, "Provisioned")["reason"] == "Converged"  # type: ignore[index]
    ip = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["status"]["podIP"]
    rest = admin_rest(testbed, namespace, ip)
    assert "/export" in rest.shares()

    # Disabled by hand, the account gets 403 on login (a lost one gets 401): the operator's next login (after a
    # restart, without waiting for its token to expire) makes it an enabled admin again.
    rest.call("PUT", "/api/v1/users/dittofs-operator", {"enabled": False}, ok=(200,))
    operator.kill()
    operator.start()

    def restored() -> dict[str, Any] | None:
        user = rest.call("GET", "/api/v1/users/dittofs-operator", ok=(200,))[1]
        return user if user["enabled"] and user["role"] == "admin" else None

    eventually(restored, timeout=120, what="the operator's account enabled again")
    assert condition(wait_ready(testbed, namespace, timeout=120), "Provisioned")["reason"] == "Converged"  # type: ignore[index]


def test_s3_tiering_smb_and_a_live_port_move(testbed: Testbed, operator: OperatorProcess, real_node: RealNode,
                                             namespace: str, tmp_path: Path) -> None:
    """SPEC §13 end to end: a user, a share tiered to S3 (moto on the bridge), NFS in, SMB out, the block in
    the bucket; the NFS port moves live; a rotated password changes the SMB login; a share removed and
    declared again serves its files again."""
    with MotoServer(tmp_path, host=NODE_IP) as s3:
        s3.create_bucket("dittofs-blocks")
        testbed.kubectl("create", "secret", "generic", "s3-creds", "-n", namespace,
                        f"--from-literal=accessKeyId={ACCESS_KEY_ID}", "--from-literal=secretAccessKey=moto-key-1")
        testbed.kubectl("create", "secret", "generic", "alice-pw", "-n", namespace,
                        "--from-literal=password=smb-pass-1")
        share = {"name": "/export", "remoteBlockStore": "s3",
                 "permissions": [{"user": "alice", "level": "read-write"}]}
        spec: dict[str, Any] = {
            **real_node.pod_placement(),
            "adapters": {"smb": {"enabled": True}},
            "s3": {"credentialsSecretRef": {"secretName": "s3-creds"}, "bucket": "dittofs-blocks"},
            "stores": {"remote": [{"name": "s3", "endpoint": s3.endpoint, "allowPrivateEndpoint": True,
                                   "prefix": "demo/"}]},
            "shares": [share],
            "users": [{"name": "alice", "passwordSecretRef": {"name": "alice-pw", "key": "password"},
                       "uid": 1000, "gid": 1000}],
        }
        apply_server(testbed, namespace, **spec)
        obj = wait_ready(testbed, namespace, timeout=180)
        status = obj["status"]
        assert "remote-store:s3" in status["provisioned"], status["provisioned"]
        assert status["adapters"] == [{"type": "nfs", "port": 12049, "enabled": True, "listening": True},
                                      {"type": "smb", "port": 1445, "enabled": True, "listening": True}]
        ready = condition(obj, "AdaptersReady")
        assert ready is not None and ready["status"] == "True", ready
        pod = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)
        ip, uid = pod["status"]["podIP"], pod["metadata"]["uid"]
        env_names = [e["name"] for e in pod["spec"]["containers"][0].get("env", [])]
        assert not [n for n in env_names if n.startswith("AWS_")], env_names
        assert "moto-key-1" not in json.dumps(obj) and "smb-pass-1" not in json.dumps(obj)

        # NFS in as alice (uid 1000), SMB out with her password: the same bytes.
        payload = f"tiered to S3 from {namespace} at {time.time()}\n".encode() * 400
        local = tmp_path / "tiered.bin"
        local.write_bytes(payload)
        def put() -> bool:
            nfs_put(ip, local, "tiered.bin", uid=1000)
            return True

        eventually(put, timeout=30, what="nfs-cp as alice")
        assert smb_get(ip, 1445, "/export", "alice", "smb-pass-1", "tiered.bin", tmp_path) == payload

        # DittoFS v0.29.0 counts no pending uploads, whatever waits for the bucket: the bytes at risk are
        # `unsynced_bytes`, which is why status.shares[] has no pendingUploads (docs/DITTOFS_FACTS.md).
        rest = admin_rest(testbed, namespace, ip)
        _, stats = rest.call("GET", "/api/v1/shares/export/blockstore/stats")
        uploaded = s3.keys("dittofs-blocks", "demo/")
        assert stats["totals"]["has_remote"] is True and stats["totals"]["pending_uploads"] == 0, stats
        assert uploaded or stats["totals"]["unsynced_bytes"] > 0, (uploaded, stats)

        # The block reaches the bucket (drained now instead of waiting for DittoFS's upload delay).
        rest.call("POST", "/api/v1/system/drain-uploads", {})
        eventually(lambda: bool(s3.keys("dittofs-blocks", "demo/")), timeout=60, what="a block in the bucket")

        def usage() -> dict[str, Any] | None:
            shares = kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace)["status"]["shares"]
            return shares[0] if shares[0].get("usedBytes", 0) >= len(payload) else None

        used = eventually(usage, timeout=60, what="status.shares[0].usedBytes counting the file")
        assert used["remoteHealthy"] is True, used

        # The NFS port moves live: same pod, new listener, Services and status follow.
        events_before = len(events(testbed, namespace, "AdapterReconfigured"))
        apply_server(testbed, namespace, **{**spec, "adapters": {"nfs": {"port": 2049}, "smb": {"enabled": True}}})

        def moved() -> bool:
            o = kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace)
            return {"type": "nfs", "port": 2049, "enabled": True, "listening": True} in (o["status"].get(
                "adapters") or []) and (condition(o, "Ready") or {}).get("status") == "True"

        eventually(moved, timeout=60, what="NFS listening on 2049 and Ready")
        assert nfs_get(ip, "tiered.bin", port=2049, uid=1000) == payload
        assert kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["metadata"]["uid"] == uid
        file_svc = kubectl_json(testbed, "get", "service", "demo-file", "-n", namespace)
        assert {(p["name"], p["port"], p["targetPort"]) for p in file_svc["spec"]["ports"]} == {
            ("nfs", 2049, 2049), ("smb", 1445, 1445)}
        reconfigured = events(testbed, namespace, "AdapterReconfigured")
        assert len(reconfigured) == events_before + 1 and any(
            e["message"].endswith(": nfs port 2049") for e in reconfigured), [e["message"] for e in reconfigured]
        spec["adapters"] = {"nfs": {"port": 2049}, "smb": {"enabled": True}}

        # A rotated password changes the SMB login, live.
        repairs = len(events(testbed, namespace, "DriftRepaired"))
        testbed.kubectl("patch", "secret", "alice-pw", "-n", namespace, "-p",
                        '{"stringData": {"password": "smb-pass-2"}}')

        def rotated() -> bool:
            return smb(ip, 1445, "/export", "alice", "smb-pass-2", "ls", tmp_path).returncode == 0

        eventually(rotated, timeout=60, what="SMB login with the new password")
        old = smb(ip, 1445, "/export", "alice", "smb-pass-1", "ls", tmp_path)
        assert old.returncode != 0 and "NT_STATUS_LOGON_FAILURE" in old.stdout + old.stderr, old  # not a timeout

        # A rotated S3 key reaches the store config, which DittoFS applies only at start: the pod rolls once.
        testbed.kubectl("patch", "secret", "s3-creds", "-n", namespace, "-p",
                        '{"stringData": {"secretAccessKey": "moto-key-2"}}')

        def rolled() -> dict[str, Any] | None:
            o = kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace)
            p = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)
            fresh = p["metadata"]["uid"] != uid and (condition(o, "Ready") or {}).get("status") == "True"
            return o if fresh and o["status"].get("storeRevision") == 1 else None

        eventually(rolled, timeout=180, what="storeRevision 1, a new pod, Ready again")
        pod = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)
        uid, ip = pod["metadata"]["uid"], pod["status"]["podIP"]
        rest = admin_rest(testbed, namespace, ip)
        assert events(testbed, namespace, "ConfigUpdated"), "the roll is explained by an event"
        assert len(events(testbed, namespace, "DriftRepaired")) == repairs, "a rotated Secret is no drift"
        assert smb_get(ip, 1445, "/export", "alice", "smb-pass-2", "tiered.bin", tmp_path) == payload

        # Removed: gone from DittoFS. Declared again: the same files, from the same stores.
        apply_server(testbed, namespace, **{**spec, "shares": []})
        eventually(lambda: "/export" not in rest.shares(), timeout=60, what="/export deleted in DittoFS")
        apply_server(testbed, namespace, **spec)
        eventually(lambda: "/export" in rest.shares(), timeout=60, what="/export declared again")
        wait_ready(testbed, namespace, timeout=60)
        assert smb_get(ip, 1445, "/export", "alice", "smb-pass-2", "tiered.bin", tmp_path) == payload
        assert kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["metadata"]["uid"] == uid

        # SMB on 445: the pod gets the safe sysctl (one restart), and uid 65532 binds it.
        apply_server(testbed, namespace, **{**spec, "adapters": {"nfs": {"port": 2049},
                                                                 "smb": {"enabled": True, "port": 445}}})

        def on_445() -> bool:
            o = kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace)
            return {"type": "smb", "port": 445, "enabled": True, "listening": True} in (
                o["status"].get("adapters") or []) and (condition(o, "Ready") or {}).get("status") == "True"

        eventually(on_445, timeout=180, what="SMB listening on 445 and Ready")
        pod = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)
        assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in pod["spec"]["securityContext"][
            "sysctls"]
        assert smb_get(pod["status"]["podIP"], 445, "/export", "alice", "smb-pass-2", "tiered.bin",
                       tmp_path) == payload

        # The S3 key and both passwords went to DittoFS only: not in status, events, ConfigMaps or logs.
        seen = "\n".join([json.dumps(kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace)),
                          json.dumps(events(testbed, namespace)),
                          json.dumps(kubectl_json(testbed, "get", "configmaps", "-n", namespace)),
                          operator.log_text()])
        for planted in ("moto-key-1", "moto-key-2", "smb-pass-1", "smb-pass-2"):
            assert planted not in seen, f"{planted} leaked"

        # The support bundle (issue 14, item 6): everything a maintainer needs, no secret in any form. DittoFS
        # itself shows the access key id in GET /store/block/remote; a base64 form is planted in an annotation.
        b64 = base64.b64encode(b"smb-pass-2").decode()
        testbed.kubectl("annotate", "dittoserver", "demo", "-n", namespace, f"support.test/note={b64}")
        check_report(testbed, namespace, tmp_path, planted=(ACCESS_KEY_ID, "moto-key-2", "smb-pass-2"))


def check_report(testbed: Testbed, namespace: str, tmp_path: Path, planted: tuple[str, ...]) -> None:
    stdout, bundle = report_bundle(testbed, namespace, tmp_path / "report.tar.gz")
    assert "values redacted" in stdout, stdout
    files = {name: data.decode() for name, data in bundle.items()}
    for wanted in ("dittoserver.yaml", "statefulsets/demo.yaml", "pods/demo-0.yaml", "config/config.yaml",
                   "events.yaml", "logs/demo-0.dittofs.log", "dittofs/shares.json", "dittofs/users.json",
                   "dittofs/store/block/remote.json", "dittofs/adapters.json", "dittofs/health.json"):
        assert wanted in files, f"{wanted} missing from the bundle: {sorted(files)}"
    assert "/export" in files["dittofs/shares.json"] and "alice" in files["dittofs/users.json"]
    assert "<redacted>" in files["dittofs/store/block/remote.json"], "the access key id DittoFS shows"
    assert "<redacted>" in files["dittoserver.yaml"], "the base64 form in the annotation"
    assert not any(p.startswith("secrets/") for p in files), "Secret objects are never bundled"
    assert not [p for p in files if p.startswith("notes/dittofs")], "every DittoFS read succeeded"
    # The session's operator is a process, not a pod: the bundle says why it has no operator log.
    assert "no operator pod" in files.get("notes/operator_logs.txt", ""), sorted(files)
    text = "\n".join(files.values())
    for value in planted:
        raw = value.encode()
        for form in (value, base64.b64encode(raw).decode(), base64.b64encode(raw).decode().rstrip("="),
                     base64.urlsafe_b64encode(raw).decode()):
            assert form not in text, f"a form of a planted secret leaked into the bundle: {form[:4]}..."


def test_kill_9_mid_provisioning_leaves_nothing_unowned(testbed: Testbed, operator: OperatorProcess,
                                                        real_node: RealNode, namespace: str) -> None:
    """12 rounds: the spec gains a share, then the operator is SIGKILLed a random moment later (often between
    DittoFS's 201 and the status write); twice the server's pod is deleted instead. Every object it created
    stays owned: the server converges, with no NotOwned, and DittoFS holds exactly what is declared."""
    for user in ("u0", "u1", "u2"):
        testbed.kubectl("create", "secret", "generic", f"{user}-pw", "-n", namespace,
                        f"--from-literal=password={user}-password-kill9")
    base: dict[str, Any] = {
        **real_node.pod_placement(),
        "groups": [{"name": "g0"}, {"name": "g1"}],
        "users": [{"name": u, "passwordSecretRef": {"name": f"{u}-pw", "key": "password"}, "groups": ["g0"]}
                  for u in ("u0", "u1", "u2")],
        "shares": [{"name": f"/b{i}", "permissions": [{"user": f"u{i % 3}", "level": "read-write"},
                                                      {"group": "g1", "level": "read"}]} for i in range(4)],
    }
    apply_server(testbed, namespace, **base)
    def scheduled() -> bool:
        got = testbed.kubectl("get", "pod", "demo-0", "-n", namespace, "-o", "jsonpath={.status.podIP}", check=False)
        return got.returncode == 0 and bool(got.stdout.strip())

    eventually(scheduled, timeout=120, what="pod demo-0 scheduled")
    rng = random.Random(99)
    shares = list(base["shares"])
    for round_ in range(12):
        shares = [*shares, {"name": f"/r{round_}", "permissions": [{"user": "u1", "level": "read"}]}]
        if round_ % 3 == 2:
            shares = [s for s in shares if s["name"] != f"/r{round_ - 2}"]  # and one is pruned
        apply_server(testbed, namespace, **{**base, "shares": shares})
        time.sleep(rng.uniform(0.05, 0.8))
        if round_ in (4, 8):  # the server restarts mid-provisioning instead
            testbed.kubectl("delete", "pod", "demo-0", "-n", namespace, "--wait=false")
            continue
        operator.kill()
        operator.start()
    obj = wait_ready(testbed, namespace, timeout=180)
    provisioned = condition(obj, "Provisioned")
    assert provisioned is not None and provisioned["reason"] == "Converged", provisioned
    declared = {s["name"] for s in shares}
    ip = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["status"]["podIP"]
    rest = admin_rest(testbed, namespace, ip)
    assert rest.shares() == declared
    owned = set(obj["status"]["provisioned"])
    assert {f"share:{n}" for n in declared} | {"user:u0", "user:u1", "user:u2", "group:g0", "group:g1"} <= owned
    assert not [r for r in owned if r.startswith("share:") and r[len("share:"):] not in declared], owned
    mine = [line for line in operator.log_text().splitlines() if namespace in line]
    assert not [line for line in mine if "NotOwned" in line or "Traceback" in line], mine

    # Events on transitions only: a restart of a converged operator posts no second Provisioned.
    posted = len(events(testbed, namespace, "Provisioned"))
    operator.kill()
    operator.start()
    time.sleep(12)  # the first pass after the start, and more than one drift pass (interval 5 s)
    obj = wait_ready(testbed, namespace, timeout=60)
    assert condition(obj, "Provisioned")["reason"] == "Converged"  # type: ignore[index]
    assert len(events(testbed, namespace, "Provisioned")) == posted, "a restart posted Provisioned again"


def test_an_unreachable_api_is_reported_once_and_recovers(testbed: Testbed, operator: OperatorProcess,
                                                          real_node: RealNode, namespace: str) -> None:
    """The server stops answering (SIGSTOP: connections hang) while its pod is still Ready: the operator
    reports ApiUnreachable with one ProvisioningFailed event, retries with backoff, and converges once the
    server answers again."""
    spec: dict[str, Any] = {**real_node.pod_placement()}
    apply_server(testbed, namespace, **spec)
    wait_ready(testbed, namespace, timeout=180)
    pod_uid = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["metadata"]["uid"]
    pid = dfs_pid(pod_uid)
    os.kill(pid, signal.SIGSTOP)
    try:
        apply_server(testbed, namespace, **spec, shares=[{"name": "/export", "defaultPermission": "read-write"},
                                                        {"name": "/later", "defaultPermission": "read"}])

        def unreachable() -> list[dict[str, Any]]:
            return [e for e in events(testbed, namespace, "ProvisioningFailed") if "unreachable" in e["message"]]

        (event,) = eventually(unreachable, timeout=60, what="a ProvisioningFailed event saying unreachable")
        assert event["type"] == "Warning"

        def reported() -> dict[str, Any] | None:  # the pass that posted the event writes the status last
            cond = condition(kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace), "Provisioned")
            return cond if cond and (cond["status"], cond["reason"]) == ("False", "ApiUnreachable") else None

        eventually(reported, timeout=30, what="Provisioned=False/ApiUnreachable")
        time.sleep(12)  # at least one more failed attempt (backoff 5 s, then a 10 s timeout)
        assert len(events(testbed, namespace, "ProvisioningFailed")) == 1, "one event, however often it retries"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    obj = wait_ready(testbed, namespace, timeout=180)
    provisioned = condition(obj, "Provisioned")
    assert provisioned is not None and provisioned["reason"] == "Converged", provisioned
    assert [s["name"] for s in obj["status"]["shares"]] == ["/export", "/later"]


def test_a_call_dittofs_refuses_is_reported_with_its_own_message(testbed: Testbed, operator: OperatorProcess,
                                                                  real_node: RealNode, namespace: str) -> None:
    """SPEC §13.3 ``Rejected``: a declared badger store whose directory a store made by hand already holds.
    The webhook cannot know that; DittoFS refuses the POST (400, its directory lock). The condition and one
    ProvisioningFailed event carry DittoFS's own message; declaring another store converges, and the hand-made
    store is left alone."""
    placement: dict[str, Any] = {**real_node.pod_placement()}
    apply_server(testbed, namespace, **placement)
    wait_ready(testbed, namespace, timeout=180)
    ip = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["status"]["podIP"]
    admin = admin_rest(testbed, namespace, ip)
    status, _ = admin.call("POST", "/api/v1/store/metadata", {
        "name": "manual", "type": "badger", "config": json.dumps({"path": "/data/store/metadata/extra"})})
    assert status == 201

    apply_server(testbed, namespace, **placement, stores={"metadata": [{"name": "default"}, {"name": "extra"}]})

    def rejected() -> dict[str, Any] | None:
        cond = condition(kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace), "Provisioned")
        return cond if cond and (cond["status"], cond["reason"]) == ("False", "Rejected") else None

    cond = eventually(rejected, timeout=60, what="Provisioned=False/Rejected")
    # DittoFS's own words, from badger's directory lock.
    assert cond["message"].startswith("create metadata-store extra (POST /api/v1/store/metadata): "), cond
    assert "Another process is using this Badger database" in cond["message"], cond
    assert "delete pod" not in cond["message"], "not ours: restarting would not free the directory"
    (event,) = eventually(lambda: events(testbed, namespace, "ProvisioningFailed"), timeout=30,
                          what="a ProvisioningFailed event")
    assert event["type"] == "Warning" and "Another process is using this Badger database" in event["message"], event
    ready = condition(kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace), "Ready")
    assert ready is not None and ready["status"] == "False", ready
    time.sleep(12)  # retried with backoff (5 s, then 10 s): the same message posts no second event
    assert len(events(testbed, namespace, "ProvisioningFailed")) == 1

    apply_server(testbed, namespace, **placement, stores={"metadata": [{"name": "default"}, {"name": "other"}]})
    obj = wait_ready(testbed, namespace, timeout=120)
    provisioned = condition(obj, "Provisioned")
    assert provisioned is not None and provisioned["reason"] == "Converged", provisioned
    assert "metadata-store:other" in obj["status"]["provisioned"], obj["status"]["provisioned"]
    assert "metadata-store:extra" not in obj["status"]["provisioned"]
    _, stores = admin.call("GET", "/api/v1/store/metadata")
    assert {s["name"] for s in stores} == {"default", "manual", "other"}, stores

    # A store of ours deleted by hand: DittoFS keeps its badger database open, so re-creating it fails on the
    # lock until the server restarts, which the condition says; once the pod is deleted, it is re-created.
    assert admin.call("DELETE", "/api/v1/store/metadata/other")[0] == 204
    cond = eventually(rejected, timeout=60, what="Provisioned=False/Rejected for the store deleted by hand")
    assert cond["message"].startswith("create metadata-store other (POST /api/v1/store/metadata): "), cond
    assert "Another process is using this Badger database" in cond["message"], cond
    assert cond["message"].endswith("delete pod demo-0 and it is re-created"), cond
    testbed.kubectl("delete", "pod", "demo-0", "-n", namespace, "--wait=false")
    obj = wait_ready(testbed, namespace, timeout=180)
    assert condition(obj, "Provisioned")["reason"] == "Converged"  # type: ignore[index]
    ip = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["status"]["podIP"]
    _, stores = admin_rest(testbed, namespace, ip).call("GET", "/api/v1/store/metadata")
    assert {s["name"] for s in stores} == {"default", "manual", "other"}, stores


def test_a_share_with_snapshots_that_leaves_the_spec_is_disabled_and_its_data_kept(
        testbed: Testbed, operator: OperatorProcess, real_node: RealNode, namespace: str, tmp_path: Path) -> None:
    """DittoFS deletes a share's snapshots with the share. Dropping a share that has one disables it instead,
    reported as Provisioned=False/Rejected (HoldsSnapshots); declared again, it serves its file; once its
    snapshot is deleted by hand, the next pass deletes the share and the server converges."""
    placement: dict[str, Any] = {**real_node.pod_placement()}
    both = [{"name": "/export", "defaultPermission": "read-write"},
            {"name": "/scratch", "defaultPermission": "read-write"}]
    apply_server(testbed, namespace, **placement, shares=both)
    wait_ready(testbed, namespace, timeout=180)
    ip = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["status"]["podIP"]
    admin = admin_rest(testbed, namespace, ip)
    local = tmp_path / "kept.txt"
    local.write_bytes(b"in a share with a snapshot\n" * 100)

    def put() -> bool:
        nfs_put(ip, local, "kept.txt", share="/scratch")
        return True

    eventually(put, timeout=30, what="nfs-cp into /scratch")
    status, _ = admin.call("POST", "/api/v1/shares/scratch/snapshots", {})
    assert status in (201, 202), status

    def snapshots() -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = admin.call("GET", "/api/v1/shares/scratch/snapshots")[1]
        return listed

    (snap,) = eventually(lambda: [s for s in snapshots() if s.get("state") == "ready"], timeout=60,
                         what="the snapshot ready")

    def held() -> dict[str, Any] | None:
        cond = condition(kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace), "Provisioned")
        return cond if cond and (cond["status"], cond["reason"]) == ("False", "Rejected") else None

    apply_server(testbed, namespace, **placement, shares=both[:1])
    cond = eventually(held, timeout=60, what="Provisioned=False/Rejected for the held share")
    assert cond["message"].startswith("share:/scratch: left the spec, but DittoFS would delete its 1 snapshot(s)"), cond
    _, share = admin.call("GET", "/api/v1/shares/scratch")
    assert share["enabled"] is False, share
    assert [s["id"] for s in snapshots()] == [snap["id"]]
    (event,) = eventually(lambda: events(testbed, namespace, "ProvisioningFailed"), timeout=30,
                          what="a ProvisioningFailed event")
    assert event["type"] == "Warning" and "snapshot" in event["message"], event
    time.sleep(12)  # retried with backoff (5 s, then 10 s): the same message posts no second event
    assert len(events(testbed, namespace, "ProvisioningFailed")) == 1
    obj = kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace)
    assert "share:/scratch" in obj["status"]["provisioned"], "a held share stays ours"
    assert not events(testbed, namespace, "ShareDeleted")

    # Declared again: enabled, and the file written before is still served.
    apply_server(testbed, namespace, **placement, shares=both)
    wait_ready(testbed, namespace, timeout=60)
    assert admin.call("GET", "/api/v1/shares/scratch")[1]["enabled"] is True
    assert nfs_get(ip, "kept.txt", share="/scratch") == local.read_bytes()

    # Dropped again, then its snapshot deleted by hand: the share goes, and the server converges.
    apply_server(testbed, namespace, **placement, shares=both[:1])
    eventually(held, timeout=60, what="held again")
    assert admin.call("DELETE", f"/api/v1/shares/scratch/snapshots/{snap['id']}")[0] == 204
    eventually(lambda: "/scratch" not in admin.shares(), timeout=60, what="/scratch deleted in DittoFS")
    obj = wait_ready(testbed, namespace, timeout=60)
    assert condition(obj, "Provisioned")["reason"] == "Converged"  # type: ignore[index]
    assert "share:/scratch" not in obj["status"]["provisioned"]
    assert events(testbed, namespace, "ShareDeleted")


def test_a_store_change_dittofs_applies_at_start_rolls_the_pod_at_once(
        testbed: Testbed, operator: OperatorProcess, real_node: RealNode, namespace: str, tmp_path: Path) -> None:
    """The pass that sends a store config DittoFS reads only at start (here a local store's cap) applied the
    StatefulSet before it knew: the next pass rolls the pod at once. With the default drift interval (this
    operator's, 5 min) the roll waited for the next drift pass."""
    operator.stop()  # the only reconciler of this namespace: one at the default drift interval
    own = OperatorProcess(operator.kubeconfig, tmp_path, extra=["--no-webhook", "--namespaces", namespace,
                                                                "--operator-namespace", OPERATOR_NAMESPACE])
    try:
        own.start()
        local = {"name": "default", "maxSize": "1Gi"}
        apply_server(testbed, namespace, **real_node.pod_placement(), stores={"local": [local]})
        wait_ready(testbed, namespace, timeout=180)
        before = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["metadata"]["uid"]
        revision = kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace)["status"].get("storeRevision")
        smaller = {"local": [{**local, "maxSize": "512Mi"}]}
        apply_server(testbed, namespace, **real_node.pod_placement(), stores=smaller)
        eventually(lambda: kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["metadata"]["uid"] != before,
                   timeout=45, what="the pod rolled with the new cap")
        server = wait_ready(testbed, namespace, timeout=120)
        assert server["status"]["storeRevision"] == (revision or 0) + 1
        ip = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["status"]["podIP"]
        _, stats = admin_rest(testbed, namespace, ip).call("GET", "/api/v1/shares/export/blockstore/stats")
        assert stats["totals"]["local_disk_max"] == 512 << 20, stats
    finally:
        own.stop()
        operator.start()


def test_a_share_made_read_only_refuses_writes_after_one_roll(
        testbed: Testbed, operator: OperatorProcess, real_node: RealNode, namespace: str, tmp_path: Path) -> None:
    """DittoFS v0.29.0 enforces read-only from a store option it sets only when it loads a share: the update
    rolls the pod (the way back is the webhook's to refuse: tests/unit/test_rules.py; docs/DITTOFS_FACTS.md)."""
    shares = [{"name": "/export", "defaultPermission": "read-write"}]
    apply_server(testbed, namespace, **real_node.pod_placement(), shares=shares)
    wait_ready(testbed, namespace, timeout=180)
    before = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["metadata"]["uid"]
    local = tmp_path / "w.txt"
    local.write_bytes(b"written while read-write\n")
    ip = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["status"]["podIP"]

    def put() -> bool:
        nfs_put(ip, local, "w.txt")
        return True

    eventually(put, timeout=30, what="a write while read-write")
    apply_server(testbed, namespace, **real_node.pod_placement(), shares=[{**shares[0], "readOnly": True}])
    eventually(lambda: kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["metadata"]["uid"] != before,
               timeout=60, what="the pod rolled to enforce read-only")
    wait_ready(testbed, namespace, timeout=120)
    ip = kubectl_json(testbed, "get", "pod", "demo-0", "-n", namespace)["status"]["podIP"]
    assert eventually(lambda: nfs_get(ip, "w.txt"), timeout=30, what="the file, read back") == local.read_bytes()
    with pytest.raises(RuntimeError, match="ROFS"):
        nfs_put(ip, local, "after.txt")

    # Declared read-write again past the webhook (a namespace opted out): reported, never called converged.
    testbed.kubectl("label", "namespace", namespace, "dittofs.dittofs.com/validation=disabled", "--overwrite")
    apply_server(testbed, namespace, **real_node.pod_placement(), shares=shares)

    def immutable() -> dict[str, Any] | None:
        cond = condition(kubectl_json(testbed, "get", "dittoserver", "demo", "-n", namespace), "Provisioned")
        return cond if cond and (cond["status"], cond["reason"]) == ("False", "Immutable") else None

    cond = eventually(immutable, timeout=60, what="Provisioned=False/Immutable")
    assert "refuses its writes for good" in cond["message"], cond
    with pytest.raises(RuntimeError, match="ROFS"):
        nfs_put(ip, local, "still.txt")
