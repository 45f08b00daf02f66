"""``Testbed``: a real Kubernetes control plane (etcd, kube-apiserver, KCM, scheduler, kwok) on 127.0.0.1.

Everything lives in a fresh temp work dir (``<workdir>/logs/<component>.log``, ``pki/``, ``etcd/``,
``admin.kubeconfig``, ``operator.kubeconfig``, ``audit.log``). Ports are chosen dynamically. See
``tests/testbed/README.md`` for the measured behaviour and ``/work/shared/TESTBED.md`` for the recipe.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import ipaddress
import json
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.support.net import free_port

from .api import ApiClient, ApiError
from .node import RealNode
from .paths import Binaries
from .pki import CertificateAuthority, ClusterPKI
from .procs import Components
from .provisioner import PROVISIONER_NAME, FakeProvisioner
from .safety import clean_env, ensure_blackhole_routes

OPERATOR_USER = "dittofs-operator"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
OPERATOR_ADMIN_BINDING = "testbed-dittofs-operator-cluster-admin"
NODE_NAME = "kwok-node-0"
# Ports the recipe reserves for others (Debian etcd, dfs adapters): never handed to a component.
RESERVED_PORTS = frozenset({2379, 2380, 8080, 12049, 1445})
STORAGE_CLASS = "standard"
# User names (CN, all in O=system:masters) of the test bed's own clients. "admin" is left to tests/kubectl.
COMPONENT_USERS = {
    "kube-controller-manager": "system:kube-controller-manager",
    "kube-scheduler": "system:kube-scheduler",
    "kwok": "testbed:kwok",
    "provisioner": "testbed:fake-provisioner",
}
# Start order; teardown runs in reverse (kwok, scheduler, KCM, apiserver, etcd).
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        # Reads of an API that may be missing: audited before routing, so a 404 from no served API is seen
        # (the apiserver's request metric never counts those).
        {"level": "Metadata", "verbs": ["get", "list", "watch"], "resources": [{"group": "monitoring.coreos.com"}]},
        {"level": "None"},
    ],
}


class TestbedError(RuntimeError):
    """The control plane (or one component) failed to start, stop or become ready."""

    __test__ = False  # not a pytest test class


_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork: the child only calls it


def die_with_parent() -> Callable[[], None] | None:
    """Components get SIGKILL when the process that started them dies, so a killed test run (kill -9, a CI
    timeout) leaves no control plane behind eating the machine. The signal follows the starting *thread*,
    so only a main-thread start asks for it."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return lambda: _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class KubectlError(subprocess.CalledProcessError):
    """``kubectl`` exited non-zero; unlike CalledProcessError, str() includes stdout and stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _http_ok(url: str, timeout: float = 2.0) -> str | None:
    """GET ``url`` without verifying TLS (the KCM and scheduler serve self-signed certs)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            body: bytes = resp.read()
            return body.decode("utf-8", "replace") if resp.status == 200 else None
    except OSError:
        return None


class Testbed(Components):
    """A throw-away Kubernetes control plane. Use as a context manager, or ``start()`` / ``stop()``."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        binaries: Binaries | None = None,
        timeout: float = 90.0,
        keep: bool | None = None,
        real_node: bool = False,
    ) -> None:
        self.binaries = binaries or Binaries.discover()
        self.timeout = timeout
        self.keep = keep if keep is not None else os.environ.get("DITTOFS_TESTBED_KEEP") == "1"
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="dittofs-testbed-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs_dir = self.workdir / "logs"
        self.pki_dir = self.workdir / "pki"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.operator_kubeconfig = self.workdir / "operator.kubeconfig"
        self.audit_log = self.workdir / "audit.log"
        self.operator_user = OPERATOR_USER
        self.node_name = NODE_NAME
        self.storage_class = STORAGE_CLASS
        taken = set(RESERVED_PORTS)
        self.ports: dict[str, int] = {
            "etcd": free_port(avoid=taken),
            "etcd-peer": free_port(avoid=taken),
            "kube-apiserver": free_port(avoid=taken),
            "kube-controller-manager": free_port(avoid=taken),
            "kube-scheduler": free_port(avoid=taken),
        }
        self.api_url = f"https://127.0.0.1:{self.ports['kube-apiserver']}"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._pki: ClusterPKI | None = None
        self._api: ApiClient | None = None
        self._provisioner: FakeProvisioner | None = None
        self._stopped = False
        self.timings: dict[str, float] = {}
        self.want_real_node = real_node
        self.node: RealNode | None = None
        self.volumes_dir = self.workdir / "volumes"
        # Blackhole routes this test bed added ([] if they were already there); they stay at teardown.
        self.added_routes: list[str] = []
        self.routes_installed = False

    # ------------------------------------------------------------------ public properties

    @property
    def pki(self) -> ClusterPKI:
        if self._pki is None:
            raise TestbedError("the test bed has not been started")
        return self._pki

    @property
    def ca(self) -> CertificateAuthority:
        return self.pki.ca

    @property
    def ca_pem(self) -> bytes:
        return self.pki.ca.cert_pem

    @property
    def ca_b64(self) -> str:
        """The CA PEM, base64-encoded: what a webhook ``clientConfig.caBundle`` wants."""
        return base64.b64encode(self.ca_pem).decode()

    @property
    def ca_cert_path(self) -> Path:
        return self.pki.ca_files.cert

    @property
    def api(self) -> ApiClient:
        """A REST client authenticated as admin (system:masters)."""
        if self._api is None:
            raise TestbedError("the test bed has not been started")
        return self._api

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Testbed:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Bring the whole control plane up and wait until the fake node is Ready and untainted."""
        missing = self.binaries.missing(list(self.binaries.control_plane()))
        if missing:
            raise TestbedError(f"missing binaries {missing}; run `python -m tests.testbed build`")
        atexit.register(self.stop)
        t0 = time.monotonic()
        try:
            self._install_routes()
            self._prepare()
            self.timings["pki"] = time.monotonic() - t0
            self.start_component("etcd")
            self.timings["etcd"] = time.monotonic() - t0
            self.start_component("kube-apiserver")
            self.timings["kube-apiserver"] = time.monotonic() - t0
            self._bootstrap_objects()
            for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
                self._spawn(name)
            prov = self.pki.components["provisioner"]
            self._provisioner = FakeProvisioner(
                ApiClient(self.api_url, self.pki.ca_files.cert, prov.cert, prov.key),
                self.logs_dir / "provisioner.log",
                self.volumes_dir,
            )
            self._provisioner.start()
            self._wait_ready("kube-controller-manager")
            self._wait_ready("kube-scheduler")
            self.timings["kcm+scheduler"] = time.monotonic() - t0
            self._wait_ready("kwok")
            self.timings["node-ready"] = time.monotonic() - t0
            self._wait(
                "default ServiceAccount in namespace default",
                lambda: self._exists("/api/v1/namespaces/default/serviceaccounts/default"),
                logs=("kube-controller-manager",),
            )
            self.timings["ready"] = time.monotonic() - t0
            if self.want_real_node:
                self.start_real_node()
        except BaseException:
            # Keep the work dir of a failed start: the error names its logs.
            if self._own_workdir and not self.keep:
                self.keep = True
                print(f"[testbed] start failed; keeping {self.workdir} for its logs", file=sys.stderr)
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything (reverse start order, by recorded PID) and remove the work dir unless kept."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if self.node is not None:
            self.stop_real_node()
        if self._provisioner is not None:
            self._provisioner.stop()
            if self.is_running("kube-apiserver"):
                with contextlib.suppress(Exception):
                    self._provisioner.delete_created()
            self._provisioner.client.close()
        if self._api is not None:
            self._api.close()
        for name in reversed(COMPONENTS):
            self.stop_component(name)
        if self.keep:
            print(f"[testbed] keeping {self.workdir}", file=sys.stderr)
        elif self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def start_real_node(self) -> RealNode:
        """Start ``real-node-0`` (kubelet + containerd, see node.py) on this running control plane."""
        if self.node is None:
            node = RealNode(self)
            node.start()
            self.node = node
        return self.node

    def stop_real_node(self) -> None:
        """Stop the real node and restore the host (sysctls, cgroups, mounts, netns, bridge, paths)."""
        node, self.node = self.node, None
        if node is not None:
            node.stop()

    def _install_routes(self) -> None:
        try:
            self.added_routes = ensure_blackhole_routes()
        except PermissionError as exc:
            raise TestbedError(str(exc)) from None
        self.routes_installed = True

    def stop_component(self, name: str, grace: float = 10.0) -> int | None:
        """SIGTERM the component by recorded PID, wait ``grace`` s, then SIGKILL; returns the exit code."""
        self._check_name(name)
        proc = self._procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)
        self._write_pids()
        return proc.returncode

    def start_component(self, name: str) -> None:
        """(Re)start one component with its original flags and ports, and wait until it is ready."""
        self._check_name(name)
        if self.is_running(name):
            raise TestbedError(f"{name} is already running (pid {self.pid(name)})")
        self._spawn(name)
        self._wait_ready(name)

    def restart_apiserver(self, with_etcd: bool = False) -> None:
        """Stop kube-apiserver (then etcd too if ``with_etcd``) and start them again (etcd first).

        The KCM, scheduler and kwok stay up and reconnect by themselves; this waits for ``/readyz`` and
        for the fake node to still be Ready and untainted.
        """
        self.stop_component("kube-apiserver")
        if with_etcd:
            self.stop_component("etcd")
            self.start_component("etcd")
        self.start_component("kube-apiserver")
        self._wait_ready("kwok")

    # ------------------------------------------------------------------ helpers for tests

    def env(self) -> dict[str, str]:
        """os.environ without proxy variables, plus KUBECONFIG (admin) and PATH with every test-bed binary
        directory first."""
        env = clean_env()
        env["KUBECONFIG"] = str(self.kubeconfig)
        dirs = [str(d) for d in self.binaries.bin_dirs()]
        env["PATH"] = os.pathsep.join([*dirs, env.get("PATH", "")])
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl as admin (or with ``kubeconfig``); raise ``KubectlError`` on failure if ``check``."""
        argv = [str(self.binaries.kubectl), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        proc = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False, env=self.env()
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    def secret_data(self, namespace: str, name: str) -> dict[str, bytes]:
        """A Secret's decoded values (for a test's own use: never print them)."""
        secret = json.loads(self.kubectl("get", "secret", name, "-n", namespace, "-o", "json").stdout)
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    def wait_crd(self, name: str, timeout: float = 60.0) -> None:
        """Until the CRD is Established. Not `kubectl wait`: right after creation the CRD's status has no
        conditions yet and kubectl 1.34 fails at once ("accessor error: <nil>") instead of waiting, which
        a loaded machine turns from rare into routine."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self.kubectl("get", "crd", name, "-o",
                                'jsonpath={.status.conditions[?(@.type=="Established")].status}', check=False)
            if proc.returncode == 0 and proc.stdout.strip() == "True":
                return
            if time.monotonic() > deadline:
                raise KubectlError(proc.returncode or 1, ["wait-crd", name], proc.stdout,
                                   proc.stderr or f"CRD {name} not Established after {timeout:.0f}s")
            time.sleep(0.2)

    def create_namespace(self, name: str, timeout: float = 30.0) -> None:
        """Create ``name`` and wait for its ``default`` ServiceAccount, which pod admission requires."""
        self.kubectl("create", "namespace", name)
        path = f"/api/v1/namespaces/{name}/serviceaccounts/default"
        deadline = time.monotonic() + timeout
        while self.api.request("GET", path)[0] != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"namespace {name}: no default ServiceAccount after {timeout:.0f}s (is the "
                                   "controller-manager running?)")
            time.sleep(0.05)

    def apply_yaml(self, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` of a (multi-document) YAML string."""
        return self.kubectl("apply", "-f", "-", *extra, input=text)

    def issue_serving_cert(self, dir: Path, cn: str = "127.0.0.1", name: str = "tls") -> tuple[Path, Path]:
        """A serving cert signed by the test CA, SANs IP:127.0.0.1 + DNS:localhost (+ ``cn`` if other).

        Writes ``<dir>/<name>.crt`` and ``<dir>/<name>.key``; returns (cert_path, key_path).
        """
        dns, ips = ["localhost"], ["127.0.0.1"]
        try:
            ipaddress.ip_address(cn)
            if cn not in ips:
                ips.append(cn)
        except ValueError:
            if cn not in dns:
                dns.append(cn)
        pair = self.ca.issue(Path(dir), name, cn, server=True, dns_names=tuple(dns), ips=tuple(ips))
        return pair.cert, pair.key

    def audit_line_count(self) -> int:
        """Lines in the audit log so far; pass it to ``audit_events(since_line=...)`` later."""
        try:
            with self.audit_log.open("rb") as fh:
                return sum(1 for _ in fh)
        except FileNotFoundError:
            return 0

    def audit_events(self, user: str | None = None, since_line: int = 0) -> list[dict[str, Any]]:
        """Parsed audit events (JSON lines) from line ``since_line`` on, optionally only ``user``'s."""
        events: list[dict[str, Any]] = []
        try:
            with self.audit_log.open("r", errors="replace") as fh:
                lines = fh.readlines()
        except FileNotFoundError:
            return events
        for line in lines[since_line:]:
            if not line.endswith("\n"):
                break  # a line still being written
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if user is None or event.get("user", {}).get("username") == user:
                events.append(event)
        return events

    def operator_writes(self, since_line: int = 0, namespace: str | None = None) -> list[dict[str, Any]]:
        """The operator's audited writes from line ``since_line`` on, optionally only those in ``namespace``."""
        return [e for e in self.audit_events(user=OPERATOR_USER, since_line=since_line)
                if e.get("verb") in WRITE_VERBS
                and (namespace is None or (e.get("objectRef") or {}).get("namespace") == namespace)]

    def wait_for(
        self, what: str, check: Callable[[], bool], timeout: float | None = None, interval: float = 0.25
    ) -> None:
        """Poll ``check`` until true; on timeout raise TestbedError naming ``what``."""
        self._wait(what, check, timeout=timeout, interval=interval)

    # ------------------------------------------------------------------ internals

    def _check_name(self, name: str) -> None:
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r}; expected one of {COMPONENTS}")

    def admin_client(self) -> ApiClient:
        """A new admin client with its own connection (for a thread beside the test's ``api``)."""
        return self._new_admin_client()

    def _new_admin_client(self) -> ApiClient:
        return ApiClient(self.api_url, self.pki.ca_files.cert, self.pki.admin.cert, self.pki.admin.key)

    def _prepare(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._pki = ClusterPKI.create(self.pki_dir, OPERATOR_USER, COMPONENT_USERS)
        self.write_kubeconfig(self.kubeconfig, "admin", self.pki.admin.cert, self.pki.admin.key)
        for name, user in COMPONENT_USERS.items():
            pair = self.pki.components[name]
            self.write_kubeconfig(self.component_kubeconfig(name), user, pair.cert, pair.key)
        self.write_kubeconfig(self.operator_kubeconfig, OPERATOR_USER, self.pki.operator.cert, self.pki.operator.key)
        (self.workdir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY, sort_keys=False))
        sched = {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": {"kubeconfig": str(self.component_kubeconfig("kube-scheduler"))},
            "leaderElection": {"leaderElect": False},
        }
        (self.workdir / "scheduler.yaml").write_text(yaml.safe_dump(sched, sort_keys=False))
        self.ca.issue(self.pki_dir, "apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                      orgs=("system:masters",), client=True)
        self._api = self._new_admin_client()

    def component_kubeconfig(self, name: str) -> Path:
        return self.workdir / "kubeconfig" / f"{name}.kubeconfig"

    def write_kubeconfig(self, path: Path, user: str, cert: Path, key: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "testbed",
                    "cluster": {"server": self.api_url, "certificate-authority": str(self.pki.ca_files.cert)},
                }
            ],
            "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
            "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": user}}],
            "current-context": "testbed",
        }
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        path.chmod(0o600)

    def _argv(self, name: str) -> list[str]:
        b, w, p, pki = self.binaries, self.workdir, self.ports, self.pki
        kc = str(self.component_kubeconfig(name)) if name in COMPONENT_USERS else ""
        open_paths = "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics"
        if name == "etcd":
            peer = f"http://127.0.0.1:{p['etcd-peer']}"
            client = f"http://127.0.0.1:{p['etcd']}"
            return [
                str(b.etcd),
                "--name=testbed",
                f"--data-dir={w / 'etcd'}",
                "--unsafe-no-fsync",
                "--quota-backend-bytes=2147483648",
                "--auto-compaction-retention=1",
                f"--initial-cluster=testbed={peer}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                "--log-level=warn",
            ]
        if name == "kube-apiserver":
            return [
                str(b.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p['kube-apiserver']}",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={w / 'apiserver'}",
                f"--tls-cert-file={pki.apiserver.cert}",
                f"--tls-private-key-file={pki.apiserver.key}",
                f"--client-ca-file={pki.ca_files.cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.service_account.cert}",
                f"--service-account-signing-key-file={pki.service_account.key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=RBAC",
                # As OpenShift and hardened clusters run it: a child naming its owner with blockOwnerDeletion
                # needs `update` on the owner's finalizers (the chart must grant it; test_chart.py proves it).
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                "--allow-privileged=true",
                # ServiceAccount admission is on, as in a real cluster: in-cluster clients (the chart's operator
                # on the real node) get their token volume. Pods wait for the namespace's `default` account.
                # Webhooks behind a Service are called at the Service's endpoints (there is no kube-proxy, and
                # a ClusterIP is blackholed): the real node's pods are reachable on its bridge.
                "--enable-aggregator-routing=true",
                # SIGTERM with clients still watching (restart_apiserver): without this the HTTP server
                # waits out --request-timeout (60 s) for hijacked watch streams; with it, 2 s after drain.
                "--shutdown-send-retry-after=true",
                # The real node (node.py): reach its kubelet by IP on the bridge, both sides with test-CA certs.
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-certificate-authority={pki.ca_files.cert}",
                f"--kubelet-client-certificate={self.pki_dir / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={self.pki_dir / 'apiserver-kubelet-client.key'}",
                f"--audit-policy-file={w / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                # No rotation: audit_line_count()/since_line index one ever-growing file.
                "--audit-log-maxsize=0",
                "--audit-log-maxbackup=0",
                "--audit-log-maxage=0",
            ]
        if name == "kube-controller-manager":
            return [
                str(b.kube_controller_manager),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                open_paths,
                "--bind-address=127.0.0.1",
                f"--secure-port={p['kube-controller-manager']}",
                "--leader-elect=false",
                "--controllers=*",
                # The default client limit (20 QPS) makes the StatefulSet controller, not the operator
                # under test, the bottleneck when hundreds of StatefulSets are created at once.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--use-service-account-credentials=false",
                f"--root-ca-file={pki.ca_files.cert}",
                f"--service-account-private-key-file={pki.service_account.key}",
                f"--cluster-signing-cert-file={pki.ca_files.cert}",
                f"--cluster-signing-key-file={pki.ca_files.key}",
            ]
        if name == "kube-scheduler":
            return [
                str(b.kube_scheduler),
                f"--config={w / 'scheduler.yaml'}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                open_paths,
                "--bind-address=127.0.0.1",
                f"--secure-port={p['kube-scheduler']}",
                # Upstream race (kubernetes#93552, open): a PVC update can requeue a pod before the volume
                # binder's cache sees it, so the pod fails again on stale data and, with no event left, waits
                # the default 5 min flush. A CI run lost a test to it; 10 s bounds the wait to ~40 s (the
                # flush runs every 30 s). Deprecated but still read in 1.34.
                "--pod-max-in-unschedulable-pods-duration=10s",
            ]
        if name == "kwok":
            return [
                str(b.kwok),
                f"--kubeconfig={kc}",
                # Only its own node: with manage-all, kwok takes over an expired kubelet lease (a crashed
                # real node) and fakes it Ready with fake pods, hiding the failure.
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.244.0.1/16",  # safety.KWOK_POD_CIDR, blackholed
                "--node-lease-duration-seconds=40",
            ]
        raise ValueError(name)

    def _spawn(self, name: str) -> None:
        argv = self._argv(name)
        log = self.logs_dir / f"{name}.log"
        with log.open("ab") as fh:
            fh.write(f"=== testbed {time.strftime('%H:%M:%S')}: {shlex.join(argv)}\n".encode())
            fh.flush()
            # Own session: a Ctrl-C on the terminal reaches only us, and we stop components in order.
            self._procs[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                env=clean_env(),
                preexec_fn=die_with_parent(),
            )
        self._write_pids()

    def _write_pids(self) -> None:
        lines = [f"{n} {p.pid}" for n, p in self._procs.items() if p.poll() is None]
        with contextlib.suppress(OSError):
            (self.workdir / "pids").write_text("".join(f"{line}\n" for line in lines))

    def _wait(
        self,
        what: str,
        check: Callable[[], bool],
        logs: Sequence[str] = (),
        timeout: float | None = None,
        interval: float = 0.2,
    ) -> None:
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        last_error = ""
        while True:
            for name in logs:
                proc = self._procs.get(name)
                if proc is not None and proc.poll() is not None:
                    raise TestbedError(
                        f"{name} exited with code {proc.returncode} while waiting for {what}\n" + self._tails(logs)
                    )
            try:
                if check():
                    return
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise TestbedError(
                    f"timed out after {limit:.0f}s waiting for {what}"
                    + (f" (last error: {last_error})" if last_error else "")
                    + "\n"
                    + self._tails(logs)
                )
            time.sleep(interval)

    def _tails(self, names: Sequence[str]) -> str:
        return "\n".join(
            f"--- tail of {self.logs_dir / (n + '.log')} ---\n{_tail(self.logs_dir / (n + '.log'))}" for n in names
        )

    def _exists(self, path: str) -> bool:
        status, _ = self.api.request("GET", path)
        return status == 200

    def _node_ready(self) -> bool:
        status, node = self.api.request("GET", f"/api/v1/nodes/{NODE_NAME}")
        if status != 200:
            return False
        conditions = node.get("status", {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        return ready and not node.get("spec", {}).get("taints")

    def _wait_ready(self, name: str) -> None:
        if name == "etcd":
            url = f"http://127.0.0.1:{self.ports['etcd']}/health"

            def etcd_ok() -> bool:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return bool(json.load(resp).get("health") == "true")

            self._wait("etcd /health", etcd_ok, logs=("etcd",))
        elif name == "kube-apiserver":
            self._wait(
                "kube-apiserver /readyz",
                lambda: self.api.request("GET", "/readyz")[0] == 200,
                logs=("kube-apiserver", "etcd"),
            )
        elif name in ("kube-controller-manager", "kube-scheduler"):
            url = f"https://127.0.0.1:{self.ports[name]}/healthz"
            self._wait(f"{name} /healthz", lambda: _http_ok(url) == "ok", logs=(name,))
        elif name == "kwok":
            self._wait(
                f"node {NODE_NAME} Ready with no taints",
                self._node_ready,
                logs=("kwok", "kube-controller-manager"),
            )

    def _bootstrap_objects(self) -> None:
        """Objects that must exist before the controllers start: the node, the storage class, RBAC."""
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
        }
        storage_class = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER_NAME,
            "reclaimPolicy": "Retain",
            "volumeBindingMode": "Immediate",
        }
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": OPERATOR_ADMIN_BINDING, "labels": {"testbed.local/bootstrap": "true"}},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}],
        }
        for path, obj in (
            ("/api/v1/nodes", node),
            ("/apis/storage.k8s.io/v1/storageclasses", storage_class),
            ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding),
        ):
            try:
                self.api.call("POST", path, obj, ok=(409,))
            except ApiError as exc:
                raise TestbedError(f"cannot create bootstrap object: {exc}") from exc

    def revoke_operator_admin(self) -> None:
        """Delete the bootstrap cluster-admin binding of the operator user (to test real, chart-made RBAC)."""
        self.api.call(
            "DELETE",
            f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{OPERATOR_ADMIN_BINDING}",
            ok=(404,),
        )

    def rss_bytes(self) -> dict[str, int]:
        """Resident set size per running component (from /proc), for measurements."""
        out: dict[str, int] = {}
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                continue
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[name] = int(line.split()[1]) * 1024
            except OSError:
                continue
        return out
