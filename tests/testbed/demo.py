"""`make demo`: the product's main job on the embedded local control plane.

Starts the control plane, installs the CRD and the ValidatingWebhookConfiguration (pointing at
127.0.0.1, TLS from the test CA), runs `dittoctl run` under its own identity, applies the sample
DittoServer and shows it reaching Ready. Then keeps running until Ctrl-C so you can use kubectl.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType

from tests.support.net import free_port
from tests.support.paths import CRD, ROOT, SAMPLES

from .cluster import Testbed
from .paths import ensure_binaries
from .webhook import install_webhook

SAMPLE = SAMPLES / "dittoserver-minimal.yaml"


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
