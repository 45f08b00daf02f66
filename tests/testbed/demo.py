"""`make demo`: the product's main job on the embedded local control plane.

Starts the control plane, installs the CRD and the ValidatingWebhookConfiguration (pointing at
127.0.0.1, TLS from the test CA), runs `dittoctl run` under its own identity, applies the sample
DittoServer and shows it reaching Ready. Then keeps running until Ctrl-C so you can use kubectl.

When it can (root, containerd & co. installed: node.preflight), the sample runs on the test bed's real
node, so the real dfs serves it: the sample then also declares SMB and a user with read-write access to the
share; the demo writes a file over NFS, reads it back over NFS and SMB, and prints the commands to do the
same (nfs-cp/nfs-cat, smbclient). Otherwise it says plainly that the pod is simulated by kwok.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from tests.support.net import free_port
from tests.support.paths import CRD, CRD_NAME, ROOT, SAMPLES

from .cluster import Testbed
from .fileservice import SHARE, admin_rest, nfs_get, nfs_put, nfs_url, smb_get
from .node import SUBNET, RealNode, preflight, real_node_opted_out
from .paths import Binaries, ensure_binaries
from .safety import clean_env
from .webhook import install_webhook

SAMPLE = SAMPLES / "dittoserver-minimal.yaml"
# On the real node the sample also declares a user with read-write access to the share (NFS uid, SMB login).
DEMO_USER, DEMO_UID, DEMO_SECRET = "demo", 1000, "demo-user-password"
SMB_PORT = 1445


def _operator_args(tb: Testbed, certs: Path, health: int, hook: int | None) -> list[str]:
    args = [sys.executable, "-m", "dittoctl", "run", "--kubeconfig", str(tb.operator_kubeconfig),
            "--health-host", "127.0.0.1", "--health-port", str(health), "--log-format", "text",
            "--server-address", "pod", "--provision-networks", SUBNET]
    return args + (["--webhook-host", "127.0.0.1", "--webhook-port", str(hook), "--cert-dir", str(certs),
                    "--tls-mode", "provided"] if hook is not None else ["--no-webhook"])


def operator_command(tb: Testbed, workdir: Path, hook: int) -> str:
    """The shell line that starts the operator again exactly as the demo did (same webhook port and certs)."""
    return shlex.join(_operator_args(tb, workdir / "certs", free_port(), hook))


def start_operator(tb: Testbed, workdir: Path, *, webhook: bool = True) -> tuple[subprocess.Popen[bytes], int, int]:
    """`dittoctl run` as a child process; returns (process, health port, webhook port)."""
    health, hook = free_port(), free_port()
    certs = workdir / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    tb.issue_serving_cert(certs, name="tls")
    args = _operator_args(tb, certs, health, hook if webhook else None)
    log = (workdir / "operator.log").open("ab")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=clean_env(PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"operator exited; see {workdir / 'operator.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return proc, health, hook
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"operator not ready after 60 s; see {workdir / 'operator.log'}")


def real_node_reasons(bins: Binaries) -> list[str]:
    """Why the demo cannot use the real node (empty: it can)."""
    if real_node_opted_out():
        return ["DITTOFS_TESTBED_REAL_NODE=0"]
    return preflight(bins.kubelet)


def sample_manifest(node: RealNode | None) -> str:
    """The sample DittoServer. On the real node it also serves SMB and declares a user with read-write access
    to the share, so that the file can be read back through both protocols."""
    docs = [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d]
    if node is not None:
        for doc in docs:
            doc["spec"].update(node.pod_placement())
            doc["spec"].update({
                "adapters": {"smb": {"enabled": True}},
                "users": [{"name": DEMO_USER, "uid": DEMO_UID, "gid": DEMO_UID,
                           "passwordSecretRef": {"name": DEMO_SECRET, "key": "password"}}],
                "shares": [{"name": SHARE, "permissions": [{"user": DEMO_USER, "level": "read-write"}]}]})
    return yaml.safe_dump_all(docs, sort_keys=False)


def user_secret() -> str:
    """The demo user's password Secret, a fresh password each run (applied from stdin: never in argv)."""
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": DEMO_SECRET},
                       "stringData": {"password": secrets.token_urlsafe(18)}})


def show_file_service(tb: Testbed, workdir: Path) -> None:
    """Check what the operator provisioned (admin login, the share), write a file over NFS as the declared
    user, read it back over NFS and SMB; print how to do it by hand (never a password)."""
    pod: dict[str, Any] = json.loads(tb.kubectl("get", "pod", "demo-0", "-o", "json").stdout)
    ip = pod["status"]["podIP"]
    rest = admin_rest(tb, "default", ip)
    if SHARE not in rest.shares():
        raise RuntimeError(f"the operator did not provision {SHARE} (kubectl describe ditto demo)")
    sample = workdir / "hello.txt"
    sample.write_text(f"hello from make demo at {time.ctime()}\n")
    nfs_put(ip, sample, "hello.txt", uid=DEMO_UID)
    over_nfs = nfs_get(ip, "hello.txt", uid=DEMO_UID)
    user_password = tb.secret_data("default", DEMO_SECRET)["password"].decode()
    over_smb = smb_get(ip, SMB_PORT, SHARE, DEMO_USER, user_password, "hello.txt", workdir)
    if over_nfs != sample.read_bytes() or over_smb != over_nfs:
        raise RuntimeError(f"hello.txt read back differently over NFS ({over_nfs!r}) and SMB ({over_smb!r})")
    print(f"[demo] real dfs at {ip}: share {SHARE} and user {DEMO_USER} provisioned by the operator; wrote over "
          f"NFS, read back over NFS and SMB: {over_nfs.decode().strip()!r}", file=sys.stderr)
    url = nfs_url(ip, "hi.txt", uid=DEMO_UID)
    password = f"kubectl get secret {DEMO_SECRET} -o jsonpath='{{.data.password}}' | base64 -d"
    print(f"[demo] write and read a file yourself as {DEMO_USER} (uid {DEMO_UID}):", file=sys.stderr)
    print(f"  NFS (libnfs-utils, no kernel mount): echo hi > /tmp/hi.txt && nfs-cp /tmp/hi.txt '{url}'",
          file=sys.stderr)
    print(f"    nfs-cat '{url}'", file=sys.stderr)
    print(f"  SMB: PASSWD=\"$({password})\" smbclient //{ip}{SHARE} -p {SMB_PORT} -U {DEMO_USER} "
          "-c 'get hi.txt -; ls'", file=sys.stderr)
    print(f"  REST: curl -s http://{ip}:8080/health; admin password: kubectl get secret "
          "demo-admin-bootstrap-credentials -o jsonpath='{.data.password}' | base64 -d", file=sys.stderr)


def main() -> int:
    bins = ensure_binaries(["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "kwok",
                            "kubectl"])
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="dittofs-demo-"))
    reasons = real_node_reasons(bins)
    if not reasons and bins.missing(["kubelet"]):
        ensure_binaries(["kubelet"])
    tb = Testbed(binaries=bins, real_node=not reasons)
    t0 = time.monotonic()
    tb.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        print(f"[demo] control plane up in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        if tb.node is not None:
            print(f"[demo] real node {tb.node.name} Ready in {tb.node.timings['ready']:.1f}s: the sample runs the "
                  "real dfs under a real kubelet", file=sys.stderr)
        else:
            print("[demo] NOTE: pods are SIMULATED by kwok here (no real dfs runs), because: "
                  + "; ".join(reasons), file=sys.stderr)
        tb.kubectl("apply", "--server-side", "-f", str(CRD))
        tb.wait_crd(CRD_NAME)
        proc, _health, hook = start_operator(tb, workdir)
        install_webhook(tb, hook)
        print(f"[demo] operator running (log: {workdir / 'operator.log'}); webhook on 127.0.0.1:{hook}",
              file=sys.stderr)
        if tb.node is not None:
            tb.kubectl("apply", "-f", "-", input=user_secret())
        tb.kubectl("apply", "-f", "-", input=sample_manifest(tb.node))
        t1 = time.monotonic()
        tb.kubectl("wait", "--for=condition=Ready", "dittoserver/demo", "--timeout=120s")
        print(f"[demo] DittoServer demo Ready {time.monotonic() - t1:.1f}s after apply", file=sys.stderr)
        if tb.node is not None:
            show_file_service(tb, workdir)
        print(tb.kubectl("get", "ditto", "-o", "wide").stdout)
        print(tb.kubectl("get", "statefulset,pods,pvc,svc", "-l", "app.kubernetes.io/instance=demo").stdout)
        path = os.pathsep.join(str(d) for d in bins.bin_dirs())
        print(f"export KUBECONFIG={tb.kubeconfig}")
        print(f'export PATH="{path}:$PATH"', flush=True)
        print("[demo] try: kubectl get ditto; .venv/bin/dittoctl status demo; Ctrl-C tears everything down",
              file=sys.stderr)
        if os.environ.get("DEMO_EXIT"):
            return 0
        restart = operator_command(tb, workdir, hook)
        while not stop.wait(1.0):
            if proc is not None and proc.poll() is not None:
                # Restarting the operator is what people do while trying things: the cluster stays.
                print(f"[demo] the operator exited (code {proc.returncode}; log {workdir / 'operator.log'}). "
                      "The control plane, the webhook configuration and the DittoServer stay up.\n"
                      f"[demo] restart the operator in another shell with:\n  {restart}\n"
                      "[demo] Ctrl-C here tears everything down.", file=sys.stderr, flush=True)
                proc = None
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        tb.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # the operator's log and its webhook certificate and key
