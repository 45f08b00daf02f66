"""The real `python -m dittoctl run` process as a child of the test session, with its own log file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.net import free_port
from tests.support.paths import ROOT
from tests.support.poll import eventually
from tests.testbed.cluster import die_with_parent
from tests.testbed.node import SUBNET as REAL_NODE_SUBNET
from tests.testbed.safety import clean_env

OPERATOR_NAMESPACE = "operator-home"  # what the session's operator is told its namespace is


class OperatorProcess:
    """`python -m dittoctl run` as a child process with its own log file."""

    def __init__(self, kubeconfig: str, workdir: Path, *, extra: list[str] | None = None,
                 env: dict[str, str] | None = None, root: Path = ROOT) -> None:
        """``root``: the source tree to run (another version's checkout, for upgrade tests)."""
        self.root = root
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.extra = extra or []
        self.env = env or {}
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"operator-{self.health_port}.log"
        self.starts = 0

    def start(self, *, wait: bool = True) -> None:
        """``wait``: until /readyz answers 200."""
        self.starts += 1
        # Out of the cluster the operator reaches a server by its pod IP, and only on the real node's bridge
        # (kwok pods have blackholed IPs: never dialled).
        args = [sys.executable, "-m", "dittoctl", "run", "--kubeconfig", self.kubeconfig,
                "--health-host", "127.0.0.1", "--health-port", str(self.health_port),
                "--server-address", "pod", "--provision-networks", REAL_NODE_SUBNET, *self.extra]
        env = {**clean_env(), "PYTHONUNBUFFERED": "1", **self.env}  # no proxy: its API traffic stays here
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     preexec_fn=die_with_parent())
        log.close()
        if wait:
            eventually(self.ready, timeout=60, what=f"operator readiness (log {self.log_path})")

    def ready(self) -> bool:
        return self.readiness() == []

    def readiness(self) -> list[str] | None:
        """What /readyz says is missing ([] when ready); None while it does not answer."""
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited: {self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        except OSError:
            return None
        problems: list[str] = json.loads(body)["problems"]
        return problems

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5) as resp:
            text: str = resp.read().decode()
            return text

    def reconcile_passes(self) -> float:
        """Reconcile passes so far (every result): proof that a window with no writes had passes in it."""
        return sum(float(line.rpartition(" ")[2]) for line in self.metrics().splitlines()
                   if line.startswith("controller_runtime_reconcile_total{"))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
