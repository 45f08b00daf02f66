"""Where the test-bed binaries live: the same cache layout and version pins as ``build.sh``.

Layout: ``$CACHE/<component>-<version>/<binary>``, where ``$CACHE`` is ``$DITTOFS_TESTBED_CACHE``, else
``$XDG_CACHE_HOME/dittofs-operator/testbed``, else ``~/.cache/dittofs-operator/testbed``. The version
pins can be overridden with the same environment variables ``build.sh`` reads (``K8S_VERSION`` ...).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .safety import build_env

BUILD_SH = Path(__file__).resolve().parent / "build.sh"

DEFAULT_VERSIONS: dict[str, str] = {
    "K8S_VERSION": "v1.34.4",
    "ETCD_VERSION": "v3.6.16",
    "KWOK_VERSION": "v0.7.0",
    "HELM_VERSION": "v3.19.0",
    "DFS_VERSION": "v0.29.0",
    "KUBECTL_VERSION": "v1.34.0",
    "PROMETHEUS_OPERATOR_VERSION": "v0.85.0",
    "CERT_MANAGER_VERSION": "v1.11.5",
}


def cache_dir() -> Path:
    explicit = os.environ.get("DITTOFS_TESTBED_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "dittofs-operator" / "testbed"


def _version(var: str) -> str:
    return os.environ.get(var) or DEFAULT_VERSIONS[var]


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of every binary the test bed runs or hands to tests."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    etcd: Path
    kwok: Path
    kubectl: Path
    helm: Path
    dfs: Path
    kubelet: Path

    @classmethod
    def discover(cls, cache: Path | None = None) -> Binaries:
        c = cache if cache is not None else cache_dir()
        k8s = c / f"kubernetes-{_version('K8S_VERSION')}"
        return cls(
            kube_apiserver=k8s / "kube-apiserver",
            kube_controller_manager=k8s / "kube-controller-manager",
            kube_scheduler=k8s / "kube-scheduler",
            etcd=c / f"etcd-{_version('ETCD_VERSION')}" / "etcd",
            kwok=c / f"kwok-{_version('KWOK_VERSION')}" / "kwok",
            kubectl=c / f"kubectl-{_version('KUBECTL_VERSION')}" / "kubectl",
            helm=c / f"helm-{_version('HELM_VERSION')}" / "helm",
            dfs=c / f"dfs-{_version('DFS_VERSION')}" / "dfs",
            kubelet=k8s / "kubelet",
        )

    def all(self) -> dict[str, Path]:
        return {
            "kube-apiserver": self.kube_apiserver,
            "kube-controller-manager": self.kube_controller_manager,
            "kube-scheduler": self.kube_scheduler,
            "etcd": self.etcd,
            "kwok": self.kwok,
            "kubectl": self.kubectl,
            "helm": self.helm,
            "dfs": self.dfs,
            "kubelet": self.kubelet,
        }

    def control_plane(self) -> dict[str, Path]:
        """The binaries ``Testbed.start()`` cannot run without."""
        return {k: v for k, v in self.all().items() if k not in ("helm", "dfs", "kubelet")}

    def missing(self, names: list[str] | None = None) -> list[str]:
        wanted = self.all() if names is None else {n: self.all()[n] for n in names}
        return [n for n, p in wanted.items() if not (p.is_file() and os.access(p, os.X_OK))]

    def bin_dirs(self) -> list[Path]:
        """Directories to prepend to PATH (deduplicated, in a stable order)."""
        out: list[Path] = []
        for p in self.all().values():
            if p.parent not in out:
                out.append(p.parent)
        return out


def _crd(directory: str, file: str, cache: Path | None) -> Path:
    """A CRD file ``build.sh crds`` fetched from its project's module (on demand)."""
    path = (cache if cache is not None else cache_dir()) / directory / file
    if not path.is_file():
        run_build("crds")
    if not path.is_file():
        raise RuntimeError(f"build.sh crds did not produce {path}")
    return path


def servicemonitor_crd(cache: Path | None = None) -> Path:
    """The Prometheus Operator's ServiceMonitor CRD."""
    return _crd(f"prometheus-operator-{_version('PROMETHEUS_OPERATOR_VERSION')}",
                "monitoring.coreos.com_servicemonitors.yaml", cache)


def certificate_crd(cache: Path | None = None) -> Path:
    """cert-manager's Certificate CRD (its Helm-templated labels dropped)."""
    return _crd(f"cert-manager-{_version('CERT_MANAGER_VERSION')}", "crd-certificates.yaml", cache)


def cert_manager_crds(cache: Path | None = None) -> list[Path]:
    """All six of cert-manager's CRDs (what its controller watches)."""
    directory = (cache if cache is not None else cache_dir()) / f"cert-manager-{_version('CERT_MANAGER_VERSION')}"
    certificate_crd(cache)
    found = sorted(directory.glob("crd-*.yaml"))
    if len(found) != 6:
        run_build("crds")
        found = sorted(directory.glob("crd-*.yaml"))
    if len(found) != 6:
        raise RuntimeError(f"build.sh crds left {len(found)} cert-manager CRDs in {directory}, expected 6")
    return found


def cert_manager_binary(name: str, cache: Path | None = None) -> Path:
    """cert-manager's ``controller`` or ``cainjector``, built from its module (on demand)."""
    path = (cache if cache is not None else cache_dir()) / f"cert-manager-bin-{_version('CERT_MANAGER_VERSION')}" / name
    if not path.is_file():
        run_build("cert-manager")
    if not path.is_file():
        raise RuntimeError(f"build.sh cert-manager did not produce {path}")
    return path


def run_build(what: str = "all") -> None:
    """Run ``build.sh`` (which skips cached binaries), streaming its progress to stderr.

    build.sh serialises concurrent builds of one component with a lock file, so calling this while another
    build of the same component runs waits for it instead of clobbering its ``.tmp`` directory.
    """
    print(f"[testbed] running {BUILD_SH} {what} (a cold Kubernetes build takes 15-30 min)", file=sys.stderr)
    subprocess.run(["bash", str(BUILD_SH), what], check=True, stdout=sys.stderr, stderr=sys.stderr,
                   env=build_env())


def ensure_binaries(names: list[str] | None = None) -> Binaries:
    """Return the binaries, building whatever is missing first; raise if a build did not produce them."""
    bins = Binaries.discover()
    missing = bins.missing(names)
    if missing:
        print(f"[testbed] missing binaries: {', '.join(missing)}; building", file=sys.stderr)
        run_build("all")
        still = bins.missing(names)
        if still:
            raise RuntimeError(f"build.sh finished but these binaries are still missing: {still}")
    return bins
