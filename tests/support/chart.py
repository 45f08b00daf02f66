"""The Helm chart as the integration tests install it: release names, CRD adoption, a clean uninstall."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

from tests.support.kube import kubectl_json
from tests.support.paths import CRD_NAME

RELEASE = "dittofs-operator"  # default names: Deployment/SA/VWC dittofs-operator, Service dittofs-operator-webhook
SERVICE = f"{RELEASE}-webhook"

Helm = Callable[..., Any]


def helm_runner(testbed: Any) -> Helm:
    """``helm(*args, check=True)`` against the test bed; a failure raises with helm's output."""
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(testbed.binaries.helm), "--kubeconfig", str(testbed.kubeconfig), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=testbed.env(), check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


def adopt_crd(testbed: Any, namespace: str) -> None:
    """An earlier test may have applied the CRD with kubectl: hand it to this release (Helm's adoption)."""
    if testbed.kubectl("get", "crd", CRD_NAME, check=False).returncode != 0:
        return
    testbed.kubectl("label", "--overwrite", "crd", CRD_NAME, "app.kubernetes.io/managed-by=Helm")
    testbed.kubectl("annotate", "--overwrite", "crd", CRD_NAME, f"meta.helm.sh/release-name={RELEASE}",
                    f"meta.helm.sh/release-namespace={namespace}")


def uninstall(helm: Helm, namespace: str) -> None:
    """Always run (finally): a failed test must not leave a failurePolicy=Fail webhook behind."""
    helm("uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "60s", "--ignore-not-found", check=False)


def assert_uninstalled(testbed: Any) -> None:
    left = testbed.kubectl("get", "validatingwebhookconfiguration", RELEASE, check=False)
    assert left.returncode != 0, "helm uninstall left the ValidatingWebhookConfiguration behind"
    for kind, name in (("clusterrole", RELEASE), ("clusterrole", f"{RELEASE}-cluster"),
                       ("clusterrolebinding", RELEASE), ("clusterrolebinding", f"{RELEASE}-cluster")):
        assert testbed.kubectl("get", kind, name, check=False).returncode != 0, f"{kind} {name} left behind"
    crd = kubectl_json(testbed, "get", "crd", CRD_NAME)  # crds.keep (default): the CRD and all data stay
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
