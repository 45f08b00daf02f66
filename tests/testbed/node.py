"""One real node, ``real-node-0``, beside kwok's fake one: kubelet + containerd + runc + CNI bridge (SPEC §14).

Follows ``/work/shared/REAL_NODE.md``. The kubelet is built by build.sh from the control plane's wrapper
module; containerd, runc and the CNI plugins come from Debian (scripts/bootstrap.sh); images are built
offline (``images.py``) and imported, never pulled.

Host hygiene. The node touches host-global state the test bed cannot put in its work dir: sysctls the
kubelet rewrites at start, ``kubepods`` cgroups, network namespaces under /run/netns, the bridge, and a
few hard-coded paths. So: at most one real node per host (``flock`` on ``HOST_LOCK``), and before
changing anything ``start()`` writes what the host looked like to ``STATE_FILE``. ``stop()`` restores
from it, and the next ``start()`` does the same if a previous run was killed before it could.

Network safety. The bridge has a private /24 whose .1 is the node IP; the CNI bridge is no gateway and
masquerades nothing, so pods get no default route and ``ip_forward`` stays 0: a pod can reach only the
bridge. Every process starts without proxy variables.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.support.net import free_port
from tests.support.prereqs import on_ci

from .api import ApiError
from .images import build_archive, dfs_image, import_archive, pause_image, pg_isready_image
from .procs import Components
from .safety import clean_env, missing_blackhole_routes

if TYPE_CHECKING:
    from .cluster import Testbed

NODE_NAME = "real-node-0"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
TAINT_KEY = "testbed.local/real-node"
NODE_LABEL = "testbed.local/real-node"
BRIDGE = "dftb0"
SUBNET = "10.88.0.0/24"
NODE_IP = "10.88.0.1"
CNI_NETWORK = "testbed-real-node"
HOST_LOCK = Path("/run/lock/dittofs-testbed-real-node.lock")
STATE_FILE = Path("/run/lock/dittofs-testbed-real-node.json")
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
# What the kubelet sets in setupKernelTunables (plus ip_forward, which must stay 0).
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
)
# Paths outside the work dir that the kubelet or containerd 1.6 hard-code (REAL_NODE.md §3.4).
STRAY_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
    "/run/netns",
    "/opt/containerd",
    "/etc/cni",
)
HOST_TOOLS = {
    "containerd": Path("/usr/bin/containerd"),
    "ctr": Path("/usr/bin/ctr"),
    "runc": Path("/usr/sbin/runc"),
    "CNI bridge plugin": Path("/usr/lib/cni/bridge"),
    "socat": Path("/usr/bin/socat"),
    "CNI host-local plugin": Path("/usr/lib/cni/host-local"),
    "busybox-static": Path("/usr/bin/busybox"),
    "umoci": Path("/usr/bin/umoci"),
    "gcc": Path("/usr/bin/gcc"),
    "iptables": Path("/usr/sbin/iptables"),
}
# What the real-node tests prove; printed when DITTOFS_TESTBED_REAL_NODE=0 disables them.
NOT_PROVEN = (
    "the DittoServer reaches Ready because the real dfs answered its probes",
    "a logging change / Secret rotation restarts the real dfs process",
    "deletion drains dfs (SIGTERM, graceful stop) before the finalizer goes",
    "a file written over NFS survives pod deletion and restart; PVCs writable by uid 65532",
    "generated credentials outlive a delete + re-create of the DittoServer",
    "no packet leaves the machine (blackhole routes, no proxy env, no default route in pods)",
)


class RealNodeError(RuntimeError):
    """The real node could not start (the message says why) or misbehaved."""


def real_node_opted_out() -> bool:
    """``DITTOFS_TESTBED_REAL_NODE=0``, honoured everywhere but on CI (``CI=true``), where all is proven."""
    return os.environ.get("DITTOFS_TESTBED_REAL_NODE") == "0" and not on_ci()


def preflight(kubelet: Path) -> list[str]:
    """Reasons this host cannot run the real node (empty: it can)."""
    reasons: list[str] = []
    if os.geteuid() != 0:
        reasons.append(f"not root (euid {os.geteuid()}); the kubelet and containerd need root")
    for what, path in HOST_TOOLS.items():
        if not os.access(path, os.X_OK):
            reasons.append(f"{what} missing ({path}); run scripts/bootstrap.sh as root")
    if not os.access(kubelet, os.X_OK):
        reasons.append(f"kubelet missing ({kubelet}); run `python -m tests.testbed build`")
    if not (CGROUP_ROOT / "memory").is_dir() and not (CGROUP_ROOT / "cgroup.controllers").is_file():
        reasons.append(f"no usable cgroup hierarchy under {CGROUP_ROOT}")
    return reasons


def _read_sysctl(name: str) -> str:
    return (Path("/proc/sys") / name).read_text().strip()


def _mountpoints() -> list[str]:
    """Mount points in mount order (later mounts last), octal escapes decoded."""
    points: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        raw = line.split()[4]
        points.append(raw.encode().decode("unicode_escape"))
    return points


def _pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kill_pid(pid: int, must_contain: str, grace: float) -> None:
    """SIGTERM then SIGKILL ``pid``, but only if its command line names ``must_contain`` (no PID reuse)."""
    if must_contain not in _pid_cmdline(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and must_contain in _pid_cmdline(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        if must_contain in _pid_cmdline(pid):
            os.kill(pid, signal.SIGKILL)


def _pod_cgroup_pids(ours: dict[str, list[str]] | None = None) -> list[int]:
    """PIDs in the kubepods cgroups; with ``ours`` (the pre-start snapshot), only in those the node made."""
    pids: list[int] = []
    for hierarchy in CGROUP_ROOT.iterdir():
        kubepods = hierarchy / "kubepods"
        if not kubepods.is_dir() or (ours is not None and "kubepods" in ours.get(hierarchy.name, ["kubepods"])):
            continue
        for procs in kubepods.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids += [int(p) for p in procs.read_text().split()]
    return sorted(set(pids))


def snapshot_host() -> dict[str, Any]:
    """What the node will change, as the host has it now. What a kubelet, a CNI or podman of the host's own made
    is part of it and never touched; leftovers of an earlier run are cleaned from that run's kept record."""
    return {
        "sysctls": {name: _read_sysctl(name) for name in SYSCTLS},
        "absent_paths": [p for p in STRAY_PATHS if not os.path.lexists(p)],
        "netns": sorted(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else [],
        "cgroups": {h.name: sorted(c.name for c in h.iterdir() if c.is_dir()) for h in CGROUP_ROOT.iterdir()
                    if h.is_dir() and not h.is_symlink()},
        "bridge_existed": Path(f"/sys/class/net/{BRIDGE}").exists(),
    }


def restore_host(state: dict[str, Any], log: Callable[[str], None]) -> list[str]:
    """Undo everything the node did, from the state ``start()`` recorded; returns what it could not undo.

    Safe to run on a half-started node, on a live one (it kills its processes) and after a killed run.
    """
    problems: list[str] = []
    workdir = state.get("workdir", "")
    sock = state.get("containerd_socket", "")
    # 1. Processes: kubelet, then containers (anything in the kubepods cgroups), shims, containerd.
    if state.get("kubelet_pid") and workdir:
        _kill_pid(int(state["kubelet_pid"]), workdir, grace=10)
    for pid in _pod_cgroup_pids(state.get("cgroups", {})):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if sock:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and "containerd-shim" in (cmd := _pid_cmdline(int(entry.name))) and sock in cmd:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)
    if state.get("containerd_pid") and workdir:
        _kill_pid(int(state["containerd_pid"]), workdir, grace=10)
    if state.get("relay_pid"):
        _kill_pid(int(state["relay_pid"]), f"bind={NODE_IP},", grace=5)
    # 2. Mounts under the work dir and in the stray paths, innermost first.
    roots = [workdir] if workdir else []
    roots += [p for p in STRAY_PATHS if p in state.get("absent_paths", [])]
    roots += [str(NETNS_DIR / n) for n in _new_netns(state)]
    for _ in range(3):
        targets = [m for m in reversed(_mountpoints()) if any(m == r or m.startswith(r + "/") for r in roots)]
        if not targets:
            break
        for m in targets:
            if subprocess.run(["umount", m], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", m], capture_output=True, check=False)
    left = [m for m in _mountpoints() if any(m == r or m.startswith(r + "/") for r in roots)]
    if left:
        problems.append(f"mounts left: {left}")
    # 3. Network: the pods' namespaces (their veths go with them) and the bridge.
    for name in _new_netns(state):
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            (NETNS_DIR / name).unlink()
    if not state.get("bridge_existed") and Path(f"/sys/class/net/{BRIDGE}").exists():
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
    # 4. cgroups the kubelet made (kubepods...), deepest first; killed tasks take a moment to leave.
    before: dict[str, list[str]] = state.get("cgroups", {})
    for hierarchy, names in before.items():
        for name in os.listdir(CGROUP_ROOT / hierarchy) if (CGROUP_ROOT / hierarchy).is_dir() else []:
            top = CGROUP_ROOT / hierarchy / name
            if name in names or not top.is_dir():
                continue
            if not _rmdir_cgroup_tree(top):
                problems.append(f"cgroup left: {top}")
    # 5. sysctls, stray paths.
    for name, value in state.get("sysctls", {}).items():
        try:
            if _read_sysctl(name) != value:
                (Path("/proc/sys") / name).write_text(value)
                log(f"restored sysctl {name}={value}")
        except OSError as exc:
            problems.append(f"sysctl {name} not restored to {value}: {exc}")
    for path in state.get("absent_paths", []):
        if os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)
            if os.path.lexists(path):
                problems.append(f"cannot remove {path}")
    return problems


def _new_netns(state: dict[str, Any]) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith("cni-") and n not in state.get("netns", []))


def _rmdir_cgroup_tree(top: Path, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if not top.exists():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


class RealNode(Components):
    """``real-node-0``: start it on a running ``Testbed`` with ``start()``, undo everything with ``stop()``."""

    __test__ = False

    def __init__(self, tb: Testbed, lock_timeout: float = 600.0) -> None:
        self.tb = tb
        self.name = NODE_NAME
        self.node_ip = NODE_IP
        self.dir = tb.workdir / "node"
        self.containerd_dir = self.dir / "containerd"
        self.socket = self.containerd_dir / "containerd.sock"
        self.kubelet_root = self.dir / "kubelet"
        self.lock_timeout = lock_timeout
        self.timings: dict[str, float] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._abandoned: list[subprocess.Popen[bytes]] = []
        self._lock_fd: int | None = None
        self._state: dict[str, Any] | None = None
        self.healthz_port = 0

    # ------------------------------------------------------------------ public

    @property
    def ctr(self) -> list[str]:
        return [str(HOST_TOOLS["ctr"]), "--address", str(self.socket)]

    @property
    def taint(self) -> dict[str, str]:
        return {"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}

    def pod_placement(self) -> dict[str, Any]:
        """The spec fields that put a pod (or a DittoServer) on this node and nowhere else."""
        return {
            "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
            "tolerations": [{"key": TAINT_KEY, "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
        }

    def log(self, msg: str) -> None:
        print(f"[real-node] {msg}", file=sys.stderr, flush=True)

    def start(self) -> None:
        reasons = preflight(self.tb.binaries.kubelet)
        if missing := missing_blackhole_routes():  # a pod could otherwise reach a ClusterIP or kwok pod IP
            reasons.append(f"the blackhole routes {missing} are missing (the control plane installs them)")
        if reasons:
            raise RealNodeError("the real node cannot start on this host:\n  - " + "\n  - ".join(reasons))
        if self._lock_fd is not None:
            raise RealNodeError(f"{NODE_NAME} is already running")
        t0 = time.monotonic()
        self.timings = {}
        self._acquire_lock()
        try:
            if self._recover_previous():
                self.timings["recovered"] = time.monotonic() - t0
                self._reap_abandoned()
            self._state = {"workdir": str(self.dir), "containerd_socket": str(self.socket), **snapshot_host()}
            self._save_state()
            self.timings["lock+recover"] = time.monotonic() - t0
            self._setup_network()
            self._start_containerd()
            self._start_api_relay()
            self.timings["containerd"] = time.monotonic() - t0
            self._import_images()
            self.timings["images"] = time.monotonic() - t0
            self._bootstrap_rbac()
            self.start_kubelet()
            self.timings["ready"] = time.monotonic() - t0
            self.log(f"{NODE_NAME} Ready in {self.timings['ready']:.1f}s ({self.timings})")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Drain the node, stop its processes and restore the host; idempotent."""
        if self._lock_fd is None:
            return
        try:
            if self._state is not None:
                if self.is_running("kubelet"):
                    with contextlib.suppress(Exception):  # the apiserver may be gone; the host comes first
                        self._drain()
                self.stop_kubelet()
                self._kill_tasks()
                self._stop_proc("containerd", grace=10)
                self._stop_proc("apiserver-relay", grace=5)
                problems = restore_host(self._state, self.log)
                with contextlib.suppress(Exception):
                    self.tb.api.call("DELETE", f"/api/v1/nodes/{NODE_NAME}", ok=(404,))
                if problems:  # the record stays: the next start retries from the host's real baseline
                    self.log(f"TEARDOWN LEFT: {'; '.join(problems)} (kept {STATE_FILE}; the next start retries)")
                else:
                    STATE_FILE.unlink(missing_ok=True)
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None
            self._state = None

    def abandon(self) -> None:
        """For tests: drop the node as a killed session would (lock released, everything left running)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._abandoned += list(self._procs.values())
        self._procs = {}
        self._state = None

    def _reap_abandoned(self) -> None:
        for proc in self._abandoned:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._abandoned = []

    @property
    def api_port(self) -> int:
        return int(self.tb.ports["kube-apiserver"])

    def in_cluster_env(self) -> list[dict[str, str]]:
        """Env for an in-cluster client on this node: the apiserver at the node's bridge address.

        What kube-proxy would do for the ``kubernetes`` Service's ClusterIP (blackholed here); the kubelet's
        own service env names the ClusterIP, and a container's explicit env wins over it.
        """
        return [{"name": "KUBERNETES_SERVICE_HOST", "value": NODE_IP},
                {"name": "KUBERNETES_SERVICE_PORT", "value": str(self.api_port)}]

    def kill_kubelet(self) -> None:
        """SIGKILL the kubelet (a crash, for tests); containers keep running under their shims."""
        proc = self._procs.get("kubelet")
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def stop_kubelet(self) -> None:
        self._stop_proc("kubelet", grace=15)

    def start_kubelet(self) -> None:
        """(Re)start the kubelet and wait until the node is Ready and this kubelet has renewed its lease: after a
        restart the node may still read Ready from the killed one (the controller-manager waits 50 s)."""
        before = self._lease_renewed()
        self._spawn("kubelet", self._kubelet_argv())
        if self._state is not None:
            self._state["kubelet_pid"] = self._procs["kubelet"].pid
            self._save_state()
        self.tb.wait_for(f"node {NODE_NAME} Ready", lambda: self._node_ready() and self._lease_renewed() != before,
                         timeout=90)

    def _lease_renewed(self) -> str | None:
        status, lease = self.tb.api.request("GET", f"{LEASES}/{NODE_NAME}")
        return str(lease["spec"].get("renewTime")) if status == 200 else None

    def rss_bytes(self) -> dict[str, int]:
        """RSS of kubelet, containerd, all shims, and each container process, by name."""
        out: dict[str, int] = {}
        for name, proc in self._procs.items():
            if proc.poll() is None:
                out[name] = _rss(proc.pid)
        shims = 0
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                cmd = _pid_cmdline(int(entry.name))
                if "containerd-shim" in cmd and str(self.socket) in cmd:
                    shims += _rss(int(entry.name))
        out["shims"] = shims
        for pid in _pod_cgroup_pids():
            comm = _comm(pid)
            out[f"pod:{comm}"] = out.get(f"pod:{comm}", 0) + _rss(pid)
        return out

    def log_path(self, name: str) -> Path:
        return self.tb.logs_dir / f"{name}.log"

    # ------------------------------------------------------------------ start-up steps

    def _acquire_lock(self) -> None:
        HOST_LOCK.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(HOST_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.lock_timeout
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    self.log(f"another real node holds {HOST_LOCK}; waiting up to {self.lock_timeout:.0f}s")
                    announced = True
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RealNodeError(f"{HOST_LOCK} still held after {self.lock_timeout:.0f}s") from None
                time.sleep(1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _recover_previous(self) -> bool:
        """A state file under the lock means a run died before its teardown: undo what it left."""
        if not STATE_FILE.exists():
            return False
        try:
            old = json.loads(STATE_FILE.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RealNodeError(f"unreadable {STATE_FILE} from a killed run ({exc}); inspect and delete it") from exc
        self.log(f"a previous run (work dir {old.get('workdir')}) did not tear down; restoring the host")
        problems = restore_host(old, self.log)
        if problems:
            raise RealNodeError(f"cannot clean up after the killed run: {problems}")
        if old.get("workdir"):
            shutil.rmtree(old["workdir"], ignore_errors=True)
        STATE_FILE.unlink()
        return True

    def _save_state(self) -> None:
        tmp = STATE_FILE.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=1))
        tmp.replace(STATE_FILE)

    def _setup_network(self) -> None:
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            raise RealNodeError(f"bridge {BRIDGE} already exists and is not ours; remove it first")
        for argv in (["ip", "link", "add", BRIDGE, "type", "bridge"],
                     ["ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE],
                     ["ip", "link", "set", BRIDGE, "up"]):
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RealNodeError(f"{' '.join(argv)}: {proc.stderr.strip()}")

    def _write_configs(self) -> None:
        d, c = self.dir, self.containerd_dir
        for sub in ("cni/net.d", "cni/ipam", "pod-logs", "pki"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        c.mkdir(parents=True, exist_ok=True)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (c / "config.toml").write_text(f"""version = 2
root = "{c / 'root'}"
state = "{c / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{c / 'opt'}"
[{cri}]
  sandbox_image = "{pause_image().ref}"
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  disable_apparmor = true
  # This VM drops CAP_SYS_RESOURCE: a negative oom_score_adj makes runc fail (REAL_NODE.md §3.1).
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "{HOST_TOOLS['runc']}"
        Root = "{c / 'runc'}"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d / 'cni/net.d'}"
    max_conf_num = 1
""")
        conflist = {
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK,
            "plugins": [
                # No gateway and no masquerade: pods get no default route, nothing is forwarded off the bridge.
                {"type": "bridge", "bridge": BRIDGE, "isGateway": False, "isDefaultGateway": False,
                 "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "dataDir": str(d / "cni/ipam"),
                          "ranges": [[{"subnet": SUBNET, "gateway": NODE_IP}]]}},
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": False},
            ],
        }
        (d / "cni/net.d/10-testbed.conflist").write_text(json.dumps(conflist, indent=1))
        ca = self.tb.ca
        client = ca.issue(d / "pki", "kubelet-client", f"system:node:{NODE_NAME}", orgs=("system:nodes",),
                          client=True)
        serving = ca.issue(d / "pki", "kubelet-serving", NODE_NAME, server=True, dns_names=(NODE_NAME,),
                           ips=(NODE_IP,))
        kubeconfig = d / "kubelet.kubeconfig"
        self.tb.write_kubeconfig(kubeconfig, f"system:node:{NODE_NAME}", client.cert, client.key)
        self.healthz_port = free_port(avoid=set(self.tb.ports.values()))
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # 10250 only on the private bridge; the apiserver reaches it there with a client cert.
            "address": NODE_IP,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.healthz_port,
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(self.tb.ca_cert_path)}},
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "failCgroupV1": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "podLogsDir": str(d / "pod-logs"),
            "resolvConf": "",
            "clusterDomain": "cluster.local",
            "clusterDNS": [NODE_IP],  # nothing answers there; it only silences MissingClusterDNS events
            "registerWithTaints": [self.taint],
            # Imported images can never be pulled again: never garbage-collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "maxPods": 20,
            "makeIPTablesUtilChains": False,
            "serializeImagePulls": False,
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
        }
        (d / "kubelet-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def _kubelet_argv(self) -> list[str]:
        return [
            str(self.tb.binaries.kubelet),
            f"--config={self.dir / 'kubelet-config.yaml'}",
            f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}",
            f"--root-dir={self.kubelet_root}",
            f"--cert-dir={self.dir / 'pki'}",
            f"--node-ip={NODE_IP}",
            f"--hostname-override={NODE_NAME}",
            f"--node-labels={NODE_LABEL}=true",
            "--v=1",
        ]

    def _start_api_relay(self) -> None:
        # The apiserver listens on loopback only; pods reach it at the bridge address through socat
        # (a fork per connection), never through the Service's ClusterIP.
        self._spawn("apiserver-relay", [str(HOST_TOOLS["socat"]),
                                        f"TCP-LISTEN:{self.api_port},bind={NODE_IP},fork,reuseaddr",
                                        f"TCP:127.0.0.1:{self.api_port}"])
        if self._state is not None:  # a killed run's relay is stopped by the next start (restore_host)
            self._state["relay_pid"] = self._procs["apiserver-relay"].pid
            self._save_state()

    def _start_containerd(self) -> None:
        self._write_configs()
        self._spawn("containerd", [str(HOST_TOOLS["containerd"]), "--config", str(self.containerd_dir / "config.toml")])
        if self._state is not None:
            self._state["containerd_pid"] = self._procs["containerd"].pid
            self._save_state()

        def answers() -> bool:
            if not self.is_running("containerd"):
                raise RealNodeError(f"containerd exited; see {self.log_path('containerd')}")
            return subprocess.run([*self.ctr, "version"], capture_output=True, check=False).returncode == 0

        self.tb.wait_for("containerd answering", answers, timeout=30, interval=0.1)

    def _import_images(self) -> None:
        specs = [pause_image(), dfs_image(self.tb.binaries.dfs)]
        if os.access("/usr/lib/postgresql/15/bin/pg_isready", os.X_OK):
            specs.append(pg_isready_image())
        for spec in specs:
            import_archive(self.ctr, build_archive(spec))

    def _bootstrap_rbac(self) -> None:
        # The apiserver runs RBAC without the Node authorizer: grant the node group system:node.
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "testbed-system-nodes", "labels": {"testbed.local/bootstrap": "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
        }
        try:
            self.tb.api.call("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding, ok=(409,))
        except ApiError as exc:
            raise RealNodeError(f"cannot bind system:node: {exc}") from exc

    def _node_ready(self) -> bool:
        if "kubelet" in self._procs and not self.is_running("kubelet"):
            raise RealNodeError(
                f"kubelet exited ({self._procs['kubelet'].returncode}); see {self.log_path('kubelet')}")
        status, node = self.tb.api.request("GET", f"/api/v1/nodes/{NODE_NAME}")
        if status != 200:
            return False
        conditions = node.get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    # ------------------------------------------------------------------ teardown steps

    def _drain(self) -> None:
        """Force-delete the node's pods so the kubelet stops their sandboxes (CNI DEL) before it goes."""
        status, pods = self.tb.api.request("GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{NODE_NAME}")
        if status != 200:
            return
        for pod in pods.get("items", []):
            meta = pod["metadata"]
            self.tb.api.request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                                {"gracePeriodSeconds": 0})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self._running_tasks():
            time.sleep(0.5)

    def _running_tasks(self) -> list[str]:
        proc = subprocess.run([*self.ctr, "-n", "k8s.io", "tasks", "ls", "-q"], capture_output=True, text=True,
                              check=False)
        return proc.stdout.split() if proc.returncode == 0 else []

    def _kill_tasks(self) -> None:
        if not self.is_running("containerd"):
            return
        for task in self._running_tasks():
            subprocess.run([*self.ctr, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", task], capture_output=True,
                           check=False)
        time.sleep(0.3)
        for task in self._running_tasks():
            subprocess.run([*self.ctr, "-n", "k8s.io", "tasks", "delete", "-f", task], capture_output=True,
                           check=False)

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, argv: list[str]) -> None:
        if self.is_running(name):
            raise RealNodeError(f"{name} is already running (pid {self.pid(name)})")
        log = self.log_path(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as fh:
            fh.write(f"=== testbed {time.strftime('%H:%M:%S')}: {' '.join(argv)}\n".encode())
            fh.flush()
            self._procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, cwd=self.dir,
                start_new_session=True, env=clean_env(),
            )

    def _stop_proc(self, name: str, grace: float) -> None:
        proc = self._procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        # The whole session: socat's per-connection children go with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
