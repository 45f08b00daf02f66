"""`python -m dittoctl run` (reconciler + webhook, one process) as the benchmarks run it.

Like the operator of ``make demo`` (webhook on 127.0.0.1, TLS from the test CA, the operator's own
identity), plus what measuring needs: a fixed drift interval, a fine-grained ``/readyz`` poll so that
start -> ready is timed to a few milliseconds, and readers for ``/proc/<pid>/{stat,status}`` and
``/metrics``.
"""

from __future__ import annotations

import compileall
import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from tests.support.net import free_port
from tests.support.paths import ROOT, packages
from tests.testbed import Testbed
from tests.testbed.cluster import die_with_parent
from tests.testbed.node import SUBNET as REAL_NODE_SUBNET
from tests.testbed.safety import clean_env

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def sigterm_as_ctrl_c() -> None:
    """A SIGTERM (a timeout, kill) tears down like Ctrl-C: the operator and test beds stop, work dirs go."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


def compile_packages() -> None:
    """Byte-compile the operator's packages, as its image does (`pip install --compile`). From a source tree
    with PYTHONDONTWRITEBYTECODE set (this machine's default), every start would compile ~100 modules first:
    ~60 ms of start -> ready that no installed operator pays."""
    for package in packages():
        if not compileall.compile_dir(ROOT / package, quiet=1):
            raise OperatorError(f"{package} does not compile")


class OperatorError(RuntimeError):
    pass


@dataclass(frozen=True)
class CpuSample:
    wall: float  # time.monotonic()
    cpu: float  # utime + stime of the process, seconds


class Operator:
    """One operator process; ``start()`` may be called again after ``stop()`` (same ports and flags)."""

    def __init__(self, tb: Testbed, workdir: Path, *, drift_interval: float, webhook: bool = True,
                 log_level: str = "INFO", extra: list[str] | None = None) -> None:
        self.extra = list(extra or [])
        self.tb = tb
        self.workdir = workdir
        self.drift_interval = drift_interval
        self.webhook = webhook
        self.log_level = log_level
        self.health_port = free_port()
        self.webhook_port = free_port()
        self.cert_dir = workdir / "certs"
        self.log_path = workdir / "operator.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def argv(self) -> list[str]:
        args = [sys.executable, "-m", "dittoctl", "run", "--kubeconfig", str(self.tb.operator_kubeconfig),
                "--health-host", "127.0.0.1", "--health-port", str(self.health_port),
                "--log-format", "text", "--log-level", self.log_level,
                "--drift-interval", str(self.drift_interval),
                # Out of cluster, like the tests: kwok pods are outside the real node's subnet, so they are
                # never dialled (and no Service DNS name is ever looked up).
                "--server-address", "pod", "--provision-networks", REAL_NODE_SUBNET]
        if self.webhook:
            args += ["--webhook-host", "127.0.0.1", "--webhook-port", str(self.webhook_port),
                     "--cert-dir", str(self.cert_dir), "--tls-mode", "provided"]
        else:
            args.append("--no-webhook")
        return args + self.extra

    @property
    def pid(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            raise OperatorError(f"operator is not running; see {self.log_path}")
        return self.proc.pid

    def start(self, timeout: float = 60.0, poll: float = 0.005) -> float:
        """Start the process; returns seconds from spawn to the first `/readyz` 200."""
        if self.proc is not None and self.proc.poll() is None:
            raise OperatorError("operator already running")
        if self.webhook and not (self.cert_dir / "tls.crt").exists():
            self.cert_dir.mkdir(parents=True, exist_ok=True)
            self.tb.issue_serving_cert(self.cert_dir, name="tls")
        if self.starts == 0:
            compile_packages()
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"=== bench start #{self.starts}\n".encode())
            log.flush()
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(self.argv(), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=clean_env(PYTHONUNBUFFERED="1"),
                                         preexec_fn=die_with_parent())  # a killed bench leaves no operator
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise OperatorError(f"operator exited with {self.proc.returncode}: {self.log_tail()}")
            if self.ready():
                return time.perf_counter() - t0
            time.sleep(poll)
        raise OperatorError(f"operator not ready after {timeout:.0f}s: {self.log_tail()}")

    def ready(self) -> bool:
        return self._get("/readyz")[0] == 200

    def _get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.health_port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        except OSError:
            return 0, ""
        finally:
            conn.close()

    @contextlib.contextmanager
    def webhook_only(self) -> Iterator[None]:
        """The process restarted as the admission webhook alone (``--no-reconciler``): the writes a measurement
        makes get admitted, and nothing reconciles them. Stopped again at the end; the caller restarts it."""
        self.stop()
        self.extra.append("--no-reconciler")
        try:
            self.start()
            yield
        finally:
            self.stop()
            self.extra.remove("--no-reconciler")

    def stop(self, grace: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    # -- observations ------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """The Prometheus text of /metrics as {`name{labels}`: value} (no HELP/TYPE lines)."""
        status, text = self._get("/metrics", timeout=5.0)
        if status != 200:
            raise OperatorError(f"/metrics answered {status}")
        out: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                continue
        return out

    def reconciles(self) -> float:
        """controller_runtime_reconcile_total summed over results."""
        return sum(v for k, v in self.metrics().items() if k.startswith("controller_runtime_reconcile_total{"))

    def cpu(self) -> CpuSample:
        """utime+stime from /proc/<pid>/stat (fields 14 and 15, after the parenthesised comm)."""
        raw = Path(f"/proc/{self.pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2:].split()
        # fields[0] is field 3 (state); utime is field 14, stime field 15.
        utime, stime = int(fields[11]), int(fields[12])
        return CpuSample(time.monotonic(), (utime + stime) / CLOCK_TICKS)

    def status_kib(self) -> dict[str, int]:
        """VmRSS, VmHWM, RssAnon, RssFile, Threads ... from /proc/<pid>/status (kB values)."""
        out: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmSize", "Threads") and parts:
                out[key] = int(parts[0])
        return out

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class NotSettled(RuntimeError):
    """The operator never went quiet: a window measured now would hold the work before it."""


def settle(op: Operator, quiet: float = 5.0, timeout: float = 90.0) -> float:
    """Wait until no reconcile finished for `quiet` seconds (drift passes excepted: they may run); the seconds
    waited. Raises NotSettled after `timeout` (the experiment's figures fail instead of measuring noise)."""
    t0 = time.monotonic()
    last = op.reconciles()
    since = time.monotonic()
    while time.monotonic() - t0 < timeout:
        time.sleep(0.5)
        now = op.reconciles()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return time.monotonic() - t0
    raise NotSettled(f"the operator still finished reconciles after {timeout:.0f}s (no {quiet:.0f}s without one)")
