"""A real cert-manager v1.11.5 controller against the test bed (built from its module by ``build.sh``).

It runs out of the cluster (``--kubeconfig``), like the operator, scoped to one namespace (``--namespace``:
namespaced Issuers only, so it never touches another test's objects), without leader election, its
metrics on a free loopback port. With ``cainjector=True`` cert-manager's cainjector runs beside it, scoped
the same way: it fills the ``caBundle`` of webhook configurations annotated ``cert-manager.io/inject-ca-from``.
Its six CRDs are applied first and deleted by ``remove_crds`` (a test that
proves the operator's answer to a cluster *without* cert-manager must not find them).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.net import free_port
from tests.support.process import stop_process
from tests.testbed.cluster import die_with_parent
from tests.testbed.paths import cert_manager_binary, cert_manager_crds
from tests.testbed.safety import clean_env

CRD_NAMES = ("certificaterequests", "certificates", "challenges", "clusterissuers", "issuers", "orders")


class CertManager:
    def __init__(self, testbed: Any, namespace: str, workdir: Path, *, cainjector: bool = False) -> None:
        self.testbed, self.namespace = testbed, namespace
        self.binary = cert_manager_binary("controller")
        self.cainjector = cert_manager_binary("cainjector") if cainjector else None
        self.log_path = workdir / f"cert-manager-{namespace}.log"
        self.cainjector_log_path = workdir / f"cainjector-{namespace}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.injector: subprocess.Popen[bytes] | None = None

    def start(self) -> CertManager:
        for crd in cert_manager_crds():
            self.testbed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        for name in CRD_NAMES:
            self.testbed.wait_crd(f"{name}.cert-manager.io" if name not in ("challenges", "orders")
                                  else f"{name}.acme.cert-manager.io")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "--kubeconfig", str(self.testbed.kubeconfig), "--leader-elect=false",
             f"--namespace={self.namespace}", f"--cluster-resource-namespace={self.namespace}",
             f"--metrics-listen-address=127.0.0.1:{free_port()}", "--v=2"],
            stdout=log, stderr=subprocess.STDOUT, env=clean_env(), preexec_fn=die_with_parent())
        log.close()
        if self.cainjector is not None:
            log = self.cainjector_log_path.open("ab")
            self.injector = subprocess.Popen(
                [str(self.cainjector), "--kubeconfig", str(self.testbed.kubeconfig), "--leader-elect=false",
                 f"--namespace={self.namespace}", "--v=2"],
                stdout=log, stderr=subprocess.STDOUT, env=clean_env(), preexec_fn=die_with_parent())
            log.close()
        return self

    def remove_crds(self) -> None:
        for crd in cert_manager_crds():
            self.testbed.kubectl("delete", "-f", str(crd), "--ignore-not-found", "--timeout=60s", check=False)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        for proc in (self.proc, self.injector):
            stop_process(proc, grace=15)
        self.proc = self.injector = None

    def __enter__(self) -> CertManager:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
