"""Fixtures shared by the integration tests: the CRD, the operator process, a namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.chart import Helm, helm_runner
from tests.support.kube import enforce_restricted
from tests.support.operator import OPERATOR_NAMESPACE, OperatorProcess
from tests.support.paths import CRD, CRD_NAME

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `pytestmark` in a conftest marks nothing: every test here needs the real control plane.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def crd(testbed: Any) -> Any:
    testbed.kubectl("apply", "--server-side", "-f", str(CRD))
    testbed.wait_crd(CRD_NAME)
    return testbed


@pytest.fixture(scope="session")
def operator(crd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator under its own (non-admin) identity, reconciler only; drift pass every 5 s; it says it runs
    in OPERATOR_NAMESPACE (what each server's NetworkPolicy lets in)."""
    workdir: Path = tmp_path_factory.mktemp("operator")
    proc = OperatorProcess(str(crd.operator_kubeconfig), workdir,
                           extra=["--no-webhook", "--drift-interval", "5", "--log-level", "INFO",
                                  "--operator-namespace", OPERATOR_NAMESPACE])
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def quiet_operator(operator: OperatorProcess) -> Iterator[OperatorProcess]:
    """The shared cluster-admin operator, stopped for one test that needs to be the only reconciler."""
    operator.stop()
    try:
        yield operator
    finally:
        operator.start()


@pytest.fixture
def namespace(testbed: Any) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    testbed.create_namespace(name)
    yield name
    testbed.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def helm(testbed: Any) -> Helm:
    return helm_runner(testbed)


@pytest.fixture
def release_ns(testbed: Any) -> Iterator[str]:
    """The release namespace, enforcing Pod Security "restricted" (the chart's pod must pass it)."""
    name = f"dfs-sys-{uuid.uuid4().hex[:6]}"
    testbed.create_namespace(name)
    enforce_restricted(testbed, name)
    yield name
    testbed.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def workload_ns(testbed: Any) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    testbed.create_namespace(name)
    yield name
    testbed.kubectl("delete", "namespace", name, "--wait=false", check=False)
