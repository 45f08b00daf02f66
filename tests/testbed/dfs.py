"""Run the real DittoFS server (``dfs`` v0.29.0) as a plain process for contract and integration tests.

``DfsServer`` writes the given config file untouched and makes everything host-specific local through
``DITTOFS_*`` environment overrides, which v0.29.0 binds for every config key even when the file lacks it
(``pkg/config/config.go`` ``setupViper``): the API port and host, the SQLite path, the metrics listener, and
``HOME``/``XDG_*``/``TMPDIR`` all point into the work directory or at free loopback ports.

Adapter ports. On first boot dfs seeds NFS on TCP 12049 and SMB on TCP 1445 into its control-plane DB
and binds them on all interfaces. No config key or environment variable moves them (only
``PUT /api/v1/adapters/{type}``), and a bind failure is only logged (``Adapter failed``). So two servers on
one host collide quietly, and a test server would squat on host ports. The default is therefore a
**private network namespace per server** (``isolate_network=None`` means "when the kernel allows it", i.e.
as root or with CAP_SYS_ADMIN): dfs runs under ``nsenter --net=<fd>`` inside a fresh namespace whose
loopback is up, so the adapters bind inside it and never touch the host. The API (and metrics) listener is
published on the host loopback by a small in-process TCP forwarder, so ``base_url`` works for any client
(urllib, curl, the operator under test). Ports of host services that dfs must reach (e.g. PostgreSQL) are
forwarded the other way with ``host_ports``. Without namespace support the server runs on the host network
and two servers must not run at the same time (run them serially: the adapters release their ports on
exit).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

from tests.support.net import free_port

DFS_VERSION = "v0.29.0"
SEEDED_NFS_PORT = 12049  # pkg/controlplane/store/adapters.go EnsureDefaultAdapters
SEEDED_SMB_PORT = 1445  # ditto (models.DefaultSMBPort is 12445, but only for a port of 0)
UNKNOWN_KEYS_MARKER = "config contains unknown keys"
GRACEFUL_STOP_MARKER = "Server stopped gracefully"

_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_T = TypeVar("_T")


class DfsError(RuntimeError):
    """A dfs helper failure."""


class DfsStartError(DfsError):
    """dfs exited or never became healthy; carries its exit code (None if still running) and log."""

    def __init__(self, message: str, returncode: int | None, log: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.log = log


class DfsHTTPError(DfsError):
    """An API call answered with an unexpected HTTP status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


# --------------------------------------------------------------------------------------------------------
# binary, ports, config


def dfs_binary() -> Path:
    """The cached ``dfs`` binary built by ``tests/testbed/build.sh dfs``; raise if it is missing."""
    cache = os.environ.get("DITTOFS_TESTBED_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dittofs-operator" / "testbed"
    )
    version = os.environ.get("DFS_VERSION") or DFS_VERSION
    path = Path(cache) / f"dfs-{version}" / "dfs"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise DfsError(
            f"dfs binary not found at {path}; build it with `bash tests/testbed/build.sh dfs` "
            "(3-8 min cold, cached by version outside the repo)"
        )
    return path


def minimal_config(sqlite_path: Path | str = "/data/controlplane/controlplane.db", port: int = 8080) -> str:
    """TESTBED §6.2's minimal v0.29.0 config (every key is one dfs reads; none is flagged unknown)."""
    return (
        "logging: {level: INFO, format: json, output: stdout}\n"
        "shutdown_timeout: 30s\n"
        f"database: {{type: sqlite, sqlite: {{path: {json.dumps(str(sqlite_path))}}}}}\n"
        "controlplane:\n"
        "  host: 127.0.0.1\n"
        f"  port: {port}\n"
        "  jwt: {access_token_duration: 15m, refresh_token_duration: 168h}\n"
        "admin: {username: admin}\n"
    )


def base_env(workdir: Path) -> dict[str, str]:
    """The process environment for dfs: ours without ``DITTOFS_*``, ``AWS_*`` (the AWS SDK reads them: an
    ``AWS_CA_BUNDLE`` breaks every S3 store, docs/DITTOFS_FACTS.md) and proxy variables (nothing may leave the
    machine), with home/XDG/tmp inside ``workdir``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DITTOFS_", "AWS_")) and "proxy" not in k.lower()}
    for key, sub in (
        ("HOME", "home"),
        ("XDG_CONFIG_HOME", "xdg/config"),
        ("XDG_STATE_HOME", "xdg/state"),
        ("XDG_CACHE_HOME", "xdg/cache"),
        ("XDG_DATA_HOME", "xdg/data"),
        ("TMPDIR", "tmp"),
    ):
        d = workdir / sub
        d.mkdir(parents=True, exist_ok=True)
        env[key] = str(d)
    return env


def run_dfs(
    args: Iterable[str], env: Mapping[str, str], workdir: Path, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run a one-shot dfs command (e.g. ``config validate``) with ``base_env`` plus ``env``."""
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = base_env(workdir)
    full_env.update(env)
    return subprocess.run(
        [str(dfs_binary()), *args],
        env=full_env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def validate_config(config_yaml: str, env: Mapping[str, str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """Write ``config_yaml`` to ``workdir/validate.yaml`` and run ``dfs config validate`` on it."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "validate.yaml"
    path.write_text(config_yaml)
    return run_dfs(["config", "validate", "--config", str(path)], env, workdir)


# --------------------------------------------------------------------------------------------------------
# network namespace + forwarders


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _in_thread(fn: Callable[[], _T]) -> _T:
    """Run ``fn`` on a fresh OS thread (namespace changes must not leak into the calling thread)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name="dfs-netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return cast(_T, box["value"])


class NetNamespace:
    """A private network namespace, held open by a file descriptor, with its loopback up.

    Created by ``unshare(CLONE_NEWNET)`` on a throw-away thread (namespaces are per thread, so the rest of
    the process stays on the host network). ``run`` executes a function on a thread that has joined it:
    sockets created there stay in the namespace for their whole life, wherever they are used later.
    """

    def __init__(self) -> None:
        def create() -> int:
            _check(_libc().unshare(_CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                ifr = struct.pack("16sh14x", b"lo", 0)
                flags = struct.unpack("16sh14x", fcntl.ioctl(s, _SIOCGIFFLAGS, ifr))[1]
                fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | _IFF_UP))
            return fd

        self.fd: int = _in_thread(create)

    def run(self, fn: Callable[[], _T]) -> _T:
        def inside() -> _T:
            _check(_libc().setns(self.fd, _CLONE_NEWNET), "setns(CLONE_NEWNET)")
            return fn()

        return _in_thread(inside)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_netns_ok: bool | None = None
_live_servers: set[DfsServer] = set()  # strong refs: an unreferenced running server is still stopped


@atexit.register
def _stop_leaked_servers() -> None:
    """Never leave a dfs behind (e.g. a test that forgot ``stop``): it would squat on 12049/1445."""
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            server.stop(timeout=5)


def netns_supported() -> bool:
    """Whether private network namespaces work here (root or CAP_SYS_ADMIN, plus ``nsenter``).

    ``TESTBED_DFS_NETNS=0`` forces the host network (to reproduce a non-root CI runner).
    """
    global _netns_ok
    if _netns_ok is None:
        if os.environ.get("TESTBED_DFS_NETNS") == "0":
            _netns_ok = False
            return False
        try:
            NetNamespace().close()
            _netns_ok = shutil.which("nsenter") is not None
        except OSError:
            _netns_ok = False
    return _netns_ok


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class TcpForwarder:
    """Accept on ``listener`` and splice each connection to a socket from ``connect_upstream``."""

    def __init__(self, listener: socket.socket, connect_upstream: Callable[[], socket.socket]) -> None:
        self._listener = listener
        self._connect = connect_upstream
        self._closed = False
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.port: int = int(listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept_loop, name=f"fwd-{self.port}", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = self._connect()
        except OSError:
            client.close()
            return
        with self._lock:
            if self._closed:
                client.close()
                upstream.close()
                return
            self._conns.update((client, upstream))
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        with self._lock:
            self._conns.difference_update((client, upstream))
        client.close()
        upstream.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns = list(self._conns)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)


def _listen(host: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(64)
    return s


# --------------------------------------------------------------------------------------------------------
# the server


class DfsServer:
    """The real ``dfs start --foreground --config FILE`` on loopback, as a context manager.

    ``env`` is applied on top of the local overrides, so a caller may deliberately replace any of them
    (``base_url`` and ``metrics_url`` follow ``DITTOFS_CONTROLPLANE_PORT``/``DITTOFS_METRICS_PORT`` only
    when the network is not isolated). ``host_ports`` lists host-loopback ports (e.g. PostgreSQL) that
    must be reachable from inside an isolated namespace at the same port number.
    """

    def __init__(
        self,
        config_yaml: str,
        env: Mapping[str, str],
        workdir: Path,
        *,
        isolate_network: bool | None = None,
        host_ports: Iterable[int] = (),
        startup_timeout: float = 30.0,
        binary: Path | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: the config serves HTTPS; requests verify with this context."""
        self.tls = tls
        self.config_yaml = config_yaml
        self.workdir = workdir
        self.config_path = workdir / "config.yaml"
        self.log_path = workdir / "dfs.log"
        self.startup_timeout = startup_timeout
        self._binary = binary
        self._user_env = dict(env)
        self._host_ports = list(host_ports)
        self.network_isolated = netns_supported() if isolate_network is None else isolate_network
        self._netns: NetNamespace | None = None
        self._forwarders: list[TcpForwarder] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.api_port = 0  # as seen from this process (the forwarder's port when isolated)
        self.metrics_port = 0
        self.returncode: int | None = None
        self._log_offset = 0

    # -- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> DfsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise DfsError("dfs is not started")
        return self._proc.pid

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.api_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def start(self) -> DfsServer:
        """Start dfs and wait for ``/health``; on failure stop everything and raise ``DfsStartError``."""
        if self._proc is not None:
            raise DfsError("dfs already started")
        binary = self._binary or dfs_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_yaml)
        env = base_env(self.workdir)
        # Inside a private namespace any port is free; on the host we need really free ones.
        inner_api = free_port()
        inner_metrics = free_port()
        env.update(
            {
                "DITTOFS_CONTROLPLANE_HOST": "127.0.0.1",
                "DITTOFS_CONTROLPLANE_PORT": str(inner_api),
                "DITTOFS_DATABASE_SQLITE_PATH": str(self.workdir / "controlplane.db"),
                "DITTOFS_METRICS_HOST": "127.0.0.1",
                "DITTOFS_METRICS_PORT": str(inner_metrics),
            }
        )
        env.update(self._user_env)
        self.env = env
        inner_api = int(env["DITTOFS_CONTROLPLANE_PORT"])
        inner_metrics = int(env["DITTOFS_METRICS_PORT"])
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        cmd = [str(binary), "start", "--foreground", "--config", str(self.config_path)]
        pass_fds: tuple[int, ...] = ()
        try:
            if self.network_isolated:
                ns = NetNamespace()
                self._netns = ns
                self.api_port = self._publish(inner_api)
                self.metrics_port = self._publish(inner_metrics)
                for port in self._host_ports:
                    self._reach_host(port)
                cmd = ["nsenter", f"--net=/proc/self/fd/{ns.fd}", "--", *cmd]
                pass_fds = (ns.fd,)
            else:
                self.api_port, self.metrics_port = inner_api, inner_metrics
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    cmd,
                    env=env,
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=pass_fds,
                    start_new_session=True,
                )
            _live_servers.add(self)
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _publish(self, inner_port: int) -> int:
        """Forward a fresh host-loopback port to ``127.0.0.1:inner_port`` inside the namespace."""
        ns = self._netns
        assert ns is not None

        def upstream() -> socket.socket:
            return ns.run(lambda: socket.create_connection(("127.0.0.1", inner_port), timeout=5))

        fwd = TcpForwarder(_listen("127.0.0.1", 0), upstream)
        self._forwarders.append(fwd)
        return fwd.port

    def _reach_host(self, port: int) -> None:
        """Make host ``127.0.0.1:port`` reachable as ``127.0.0.1:port`` inside the namespace."""
        ns = self._netns
        assert ns is not None
        listener = ns.run(lambda: _listen("127.0.0.1", port))
        fwd = TcpForwarder(listener, lambda: socket.create_connection(("127.0.0.1", port), timeout=5))
        self._forwarders.append(fwd)

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        last: str = "no answer yet"
        while True:
            rc = self._proc.poll()
            if rc is not None:
                self.returncode = rc
                raise DfsStartError(
                    f"dfs exited with code {rc} before /health answered\n--- log tail ---\n{self.log_tail()}",
                    rc,
                    self.log_text(),
                )
            try:
                status, body = self.request("GET", "/health", timeout=2)
                # On the host network another process could answer on a reused port: also require our
                # own "API server listening" line.
                if status == 200 and "API server listening" in self.log_text():
                    return
                last = f"HTTP {status}: {body!r}"
            except (OSError, http.client.HTTPException) as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise DfsStartError(
                    f"dfs /health not healthy after {self.startup_timeout:.0f}s (last: {last})\n"
                    f"--- log tail ---\n{self.log_tail()}",
                    None,
                    self.log_text(),
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait ``timeout`` s, then SIGKILL; return the exit code (None if never started)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        if proc is not None:
            self.returncode = proc.returncode
        _live_servers.discard(self)
        for fwd in self._forwarders:
            fwd.close()
        self._forwarders.clear()
        if self._netns is not None:
            self._netns.close()
            self._netns = None
        return self.returncode

    def wait(self, timeout: float) -> int:
        """Wait for dfs to exit on its own and return its exit code."""
        if self._proc is None:
            raise DfsError("dfs is not started")
        self.returncode = self._proc.wait(timeout=timeout)
        return self.returncode

    # -- logs ----------------------------------------------------------------------------------------------

    def log_text(self) -> str:
        """This run's dfs output (the log file is appended to when a work dir is reused)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- HTTP ----------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        timeout: float = 10.0,
        base_url: str | None = None,
    ) -> tuple[int, Any]:
        """One HTTP call; returns ``(status, parsed JSON or text)`` for any status (no raise on 4xx/5xx)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request((base_url or self.base_url) + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.tls) as resp:
                status, raw = int(resp.status), resp.read()
        except urllib.error.HTTPError as err:
            status, raw = int(err.code), err.read()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def _json_ok(self, method: str, path: str, body: Any = None, token: str | None = None) -> dict[str, Any]:
        status, payload = self.request(method, path, body=body, token=token)
        if status != 200 or not isinstance(payload, dict):
            raise DfsHTTPError(method, path, status, json.dumps(payload) if payload is not None else "")
        return cast(dict[str, Any], payload)

    def health(self) -> dict[str, Any]:
        """``GET /health`` (200 for both ``healthy`` and ``degraded``; assert on the body)."""
        return self._json_ok("GET", "/health")

    def ready(self) -> dict[str, Any]:
        """``GET /health/ready``."""
        return self._json_ok("GET", "/health/ready")

    def login(self, username: str, password: str) -> dict[str, Any]:
        """``POST /api/v1/auth/login`` -> access_token, refresh_token, token_type, expires_in/at, user."""
        return self._json_ok("POST", "/api/v1/auth/login", {"username": username, "password": password})

    def metrics_text(self, path: str = "/metrics") -> str:
        """The Prometheus exposition from the metrics listener (only when ``metrics.enabled``)."""
        status, payload = self.request("GET", path, base_url=self.metrics_url)
        if status != 200:
            raise DfsHTTPError("GET", path, status, str(payload))
        return payload if isinstance(payload, str) else json.dumps(payload)


__all__ = [
    "DFS_VERSION",
    "GRACEFUL_STOP_MARKER",
    "SEEDED_NFS_PORT",
    "SEEDED_SMB_PORT",
    "UNKNOWN_KEYS_MARKER",
    "DfsError",
    "DfsHTTPError",
    "DfsServer",
    "DfsStartError",
    "NetNamespace",
    "TcpForwarder",
    "base_env",
    "dfs_binary",
    "minimal_config",
    "netns_supported",
    "run_dfs",
    "validate_config",
]
