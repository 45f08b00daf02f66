"""The README's first command, end to end: `python -m tests.testbed demo` reaches a Ready DittoServer, and
the cluster outlives the operator (restarting it is what people do while trying things)."""

from __future__ import annotations

import base64
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

import pytest

from tests.support import prereqs
from tests.support.paths import ROOT
from tests.testbed.node import real_node_opted_out

pytestmark = pytest.mark.integration


def read_until(stream: IO[str], marker: str, seen: list[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            raise AssertionError("demo ended early:\n" + "".join(seen[-40:]))
        seen.append(line)
        if marker in line:
            return line
    raise AssertionError(f"no {marker!r} within {timeout}s:\n" + "".join(seen[-40:]))


def test_demo_reaches_ready_and_survives_an_operator_exit(request: pytest.FixtureRequest) -> None:
    demo = subprocess.Popen([sys.executable, "-m", "tests.testbed", "demo"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    seen: list[str] = []
    try:
        assert demo.stdout is not None
        read_until(demo.stdout, "DittoServer demo Ready", seen, 300)
        kubeconfig = read_until(demo.stdout, "export KUBECONFIG=", seen, 60).split("=", 1)[1].strip()
        read_until(demo.stdout, "Ctrl-C tears everything down", seen, 30)
        text = "".join(seen)
        assert "1/1" in text and "Running" in text
        if real_node_opted_out():
            assert "pods are SIMULATED by kwok" in text, text
            prereqs.partly_unproven(request.node.nodeid, "real node", "NOT PROVEN (opted out by "
                                    "DITTOFS_TESTBED_REAL_NODE=0): the demo's file I/O over NFS and SMB")
        else:
            # The real dfs served the declared user over both protocols, and the demo says how, never with a
            # password in it.
            assert "wrote over NFS, read back over NFS and SMB" in text, text
            assert "nfs-cp /tmp/hi.txt 'nfs://" in text and "nfs-cat 'nfs://" in text, text
            assert re.search(r"PASSWD=.*kubectl get secret demo-user-password .* smbclient //\S+/export -p 1445 "
                             r"-U demo", text), text
            path = re.search(r'export PATH="(\S+):\$PATH"', text)
            assert path, text
            kubectl = next(Path(d) / "kubectl" for d in path.group(1).split(os.pathsep)
                           if (Path(d) / "kubectl").exists())
            password = subprocess.run(
                [str(kubectl), "--kubeconfig", kubeconfig, "get", "secret", "demo-user-password", "-o",
                 "jsonpath={.data.password}"], capture_output=True, text=True, timeout=30, check=True).stdout
            assert password and base64.b64decode(password).decode() not in text
        workdir = re.search(r"operator running \(log: (\S+)/operator\.log\)", text)
        assert workdir, text
        # The demo's operator logs text: every line about an object names it (namespace/name).
        oplog = (Path(workdir.group(1)) / "operator.log").read_text()
        assert re.search(r" INFO dittofs\.reconciler applied StatefulSet default/demo ", oplog), oplog[-2000:]

        # The operator dies: the demo says so, keeps the cluster and prints how to restart it.
        pids = subprocess.run(["pgrep", "-f", f"dittoctl run .*{workdir.group(1)}"], capture_output=True,
                              text=True, check=False).stdout.split()
        assert len(pids) == 1, pids
        os.kill(int(pids[0]), signal.SIGTERM)
        read_until(demo.stdout, "the operator exited", seen, 60)
        restart = read_until(demo.stdout, "dittoctl run", seen, 10).strip()
        assert demo.poll() is None, "the demo must keep running"
        # The cluster is still there for the user's tools.
        status = subprocess.run([sys.executable, "-m", "dittoctl", "status", "demo", "--kubeconfig", kubeconfig],
                                capture_output=True, text=True, timeout=60, check=False)
        assert status.returncode == 0 and "Running" in status.stdout, status.stderr

        # The printed command brings the operator back against the same cluster.
        again = subprocess.Popen(shlex.split(restart), cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            port = re.search(r"--health-port (\d+)", restart)
            assert port, restart

            def ready() -> bool:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/readyz", timeout=2) as resp:
                        return bool(resp.status == 200)
                except OSError:
                    return False

            deadline = time.monotonic() + 60
            while not ready():
                assert time.monotonic() < deadline and again.poll() is None, "restarted operator never ready"
                time.sleep(0.5)
        finally:
            again.terminate()
            again.wait(30)
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(120)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait(30)
    assert demo.returncode == 0, "".join(seen[-40:])
