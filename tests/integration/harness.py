"""Run the real `dittoctl run` process against the test bed, and small polling helpers for tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "config" / "crd" / "dittoservers.yaml"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def eventually(check: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.3, what: str = "") -> T:
    """Poll until `check` returns a truthy value; fail with the last value/exception."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
            last = value
            if value:
                return value
        except Exception as exc:  # the condition may raise until the object exists
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: last={last!r}")


class OperatorProcess:
    """`python -m dittoctl run` as a child process with its own log file."""

    def __init__(self, kubeconfig: str, workdir: Path, *, extra: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.extra = extra or []
        self.env = env or {}
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"operator-{self.health_port}.log"
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        args = [sys.executable, "-m", "dittoctl", "run", "--kubeconfig", self.kubeconfig,
                "--health-host", "127.0.0.1", "--health-port", str(self.health_port), *self.extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        eventually(self.ready, timeout=60, what=f"operator readiness (log {self.log_path})")

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited: {self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5) as resp:
            text: str = resp.read().decode()
            return text

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


def kubectl_json(testbed: Any, *args: str) -> Any:
    result = testbed.kubectl(*args, "-o", "json")
    return json.loads(result.stdout)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions", []):
        if cond.get("type") == kind:
            found: dict[str, Any] = cond
            return found
    return None
