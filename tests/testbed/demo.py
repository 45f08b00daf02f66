"""`make demo`: the product's main job on the embedded local control plane.

Starts the control plane, installs the CRD and the ValidatingWebhookConfiguration (pointing at
127.0.0.1, TLS from the test CA), runs `dittoctl run` under its own identity, applies the sample
DittoServer and shows it reaching Ready. Then keeps running until Ctrl-C so you can use kubectl.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

from .cluster import Testbed
from .paths import ensure_binaries

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "config" / "crd" / "dittoservers.yaml"
SAMPLE = ROOT / "config" / "samples" / "dittoserver-minimal.yaml"
WEBHOOK_PATH = "/validate-dittofs-dittofs-com-v1alpha1-dittoserver"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def webhook_configuration(port: int, ca_b64: str, name: str = "dittofs-operator") -> dict[str, Any]:
    """The chart's configuration, with the Service reference replaced by a loopback URL (TESTBED §5)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "vdittoserver.dittofs.dittofs.com",
            "clientConfig": {"url": f"https://127.0.0.1:{port}{WEBHOOK_PATH}", "caBundle": ca_b64},
            "rules": [{"apiGroups": ["dittofs.dittofs.com"], "apiVersions": ["v1alpha1"],
                       "operations": ["CREATE", "UPDATE"], "resources": ["dittoservers"], "scope": "Namespaced"}],
            "failurePolicy": "Fail", "sideEffects": "NoneOnDryRun", "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10, "matchPolicy": "Equivalent",
            "namespaceSelector": {"matchExpressions": [{"key": "dittofs.dittofs.com/validation",
                                                        "operator": "NotIn", "values": ["disabled"]}]},
        }],
    }


def start_operator(tb: Testbed, workdir: Path, *, webhook: bool = True) -> tuple[subprocess.Popen[bytes], int, int]:
    """`dittoctl run` as a child process; returns (process, health port, webhook port)."""
    health, hook = free_port(), free_port()
    certs = workdir / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    tb.issue_serving_cert(certs, name="tls")
    args = [sys.executable, "-m", "dittoctl", "run", "--kubeconfig", str(tb.operator_kubeconfig),
            "--health-host", "127.0.0.1", "--health-port", str(health), "--log-format", "text"]
    args += ["--webhook-host", "127.0.0.1", "--webhook-port", str(hook), "--cert-dir", str(certs),
             "--tls-mode", "provided"] if webhook else ["--no-webhook"]
    log = (workdir / "operator.log").open("ab")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
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


def install_webhook(tb: Testbed, port: int) -> None:
    tb.kubectl("apply", "-f", "-", input=json.dumps(webhook_configuration(port, tb.ca_b64)))
    bad = {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
           "metadata": {"name": "probe", "namespace": "default"},
           "spec": {"storage": {"metadataSize": "1Gi"}, "controlPlane": {"port": 12049}}}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the apiserver loads webhook configurations asynchronously
        result = tb.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(bad), check=False)
        if "spec.controlPlane.port" in result.stderr:  # our message, so our webhook answered
            return
        time.sleep(0.5)
    raise RuntimeError(f"the apiserver did not call the webhook within 30 s: {result.stderr.strip()}")


def main() -> int:
    bins = ensure_binaries(["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "kwok",
                            "kubectl"])
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="dittofs-demo-"))
    tb = Testbed(binaries=bins)
    t0 = time.monotonic()
    tb.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        print(f"[demo] control plane up in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        tb.kubectl("apply", "--server-side", "-f", str(CRD))
        tb.kubectl("wait", "--for=condition=Established", "crd/dittoservers.dittofs.dittofs.com", "--timeout=60s")
        proc, _health, hook = start_operator(tb, workdir)
        install_webhook(tb, hook)
        print(f"[demo] operator running (log: {workdir / 'operator.log'}); webhook on 127.0.0.1:{hook}",
              file=sys.stderr)
        tb.kubectl("apply", "-f", str(SAMPLE))
        t1 = time.monotonic()
        tb.kubectl("wait", "--for=condition=Ready", "dittoserver/demo", "--timeout=120s")
        print(f"[demo] DittoServer demo Ready {time.monotonic() - t1:.1f}s after apply", file=sys.stderr)
        print(tb.kubectl("get", "ditto", "-o", "wide").stdout)
        print(tb.kubectl("get", "statefulset,pods,pvc,svc", "-l", "app.kubernetes.io/instance=demo").stdout)
        path = os.pathsep.join(str(d) for d in bins.bin_dirs())
        print(f"export KUBECONFIG={tb.kubeconfig}")
        print(f'export PATH="{path}:$PATH"', flush=True)
        print("[demo] try: kubectl get ditto; .venv/bin/dittoctl status demo; Ctrl-C tears everything down",
              file=sys.stderr)
        if os.environ.get("DEMO_EXIT"):
            return 0
        while not stop.wait(1.0):
            if proc.poll() is not None:
                print(f"[demo] operator exited; see {workdir / 'operator.log'}", file=sys.stderr)
                return 1
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        tb.stop()
