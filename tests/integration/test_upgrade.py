"""Operator upgrades (issue 14, item 7): a new operator taking over servers made by the previous one writes only
what is new, and restarts pods only when their template changed, as docs/INSTALL.md "Upgrade" says.

From PREVIOUS the new operator re-creates each server's StatefulSet once around its pod (podManagementPolicy
became Parallel, an immutable field), and the StatefulSet then replaces the pod once with the new template (the
startup budget of an hour, fsGroupChangePolicy): no other child is written, and the
config hash is unchanged. Bump PREVIOUS when an upgrade from it no longer says what matters, and say in
docs/INSTALL.md what the upgrade restarts."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import apply_server, kubectl_json, wait_ready
from tests.support.operator import OPERATOR_NAMESPACE, OperatorProcess
from tests.support.paths import CRD, ROOT
from tests.support.poll import eventually

pytestmark = pytest.mark.integration
# The previous version (the server pod's enableServiceLinks: false; StatefulSets still OrderedReady).
PREVIOUS = "a3588e2"
SERVERS = 4


@pytest.fixture
def previous_tree(tmp_path: Path) -> Iterator[Path]:
    """A checkout of the previous version. A clone without that history fails the test loudly."""
    tree = tmp_path / "previous"
    proc = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), PREVIOUS],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"cannot check out the previous version {PREVIOUS} (a shallow clone?): {proc.stderr.strip()}")
    yield tree
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False,
                   capture_output=True)


def _pods(testbed: Any, namespace: str) -> dict[str, tuple[str, int]]:
    """Pod name -> (uid, restarts)."""
    return {p["metadata"]["name"]: (p["metadata"]["uid"],
                                    sum(c.get("restartCount", 0) for c in p["status"].get("containerStatuses", [])))
            for p in kubectl_json(testbed, "get", "pods", "-n", namespace)["items"]}


def _rolled(testbed: Any, namespace: str, before: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]] | None:
    """The pods (as ``_pods``) once each of ``before`` is replaced (a new uid) by its StatefulSet's current
    template; else None."""
    revisions = {s["metadata"]["name"]: s["status"].get("updateRevision")
                 for s in kubectl_json(testbed, "get", "statefulsets", "-n", namespace)["items"]}
    pods = kubectl_json(testbed, "get", "pods", "-n", namespace)["items"]
    if sorted(p["metadata"]["name"] for p in pods) != sorted(before) or not all(
            p["metadata"]["uid"] != before[p["metadata"]["name"]][0]
            and p["metadata"]["labels"].get("controller-revision-hash") == revisions.get(p["metadata"]["name"][:-2])
            for p in pods):
        return None
    return _pods(testbed, namespace)


def _statefulsets(testbed: Any, namespace: str) -> dict[str, tuple[str, str]]:
    """StatefulSet name -> (podManagementPolicy, config hash of the pod template)."""
    return {s["metadata"]["name"]: (s["spec"]["podManagementPolicy"],
                                    s["spec"]["template"]["metadata"]["annotations"]["dittofs.io/config-hash"])
            for s in kubectl_json(testbed, "get", "statefulsets", "-n", namespace)["items"]}


def test_a_new_operator_takes_over_and_rolls_each_pod_once_by_the_new_template(
        testbed: Any, operator: OperatorProcess, namespace: str, previous_tree: Path, tmp_path: Path) -> None:
    operator.stop()  # the session's operator must not touch these servers
    old = new = None
    try:
        # The previous version, with its own CRD, as a cluster would have run it.
        testbed.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                        str(previous_tree / "config" / "crd" / "dittoservers.yaml"))
        flags = ["--no-webhook", "--drift-interval", "5", "--namespaces", namespace,
                 "--operator-namespace", OPERATOR_NAMESPACE]  # the NetworkPolicy admits the operator's namespace
        old = OperatorProcess(operator.kubeconfig, tmp_path, root=previous_tree, extra=flags)
        old.start()
        names = [f"up{i}" for i in range(SERVERS)]
        for name in names:
            apply_server(testbed, namespace, name=name)
        for name in names:
            wait_ready(testbed, namespace, name)
        time.sleep(6)  # one drift pass: the previous version is settled
        old.stop()
        pods, stses = _pods(testbed, namespace), _statefulsets(testbed, namespace)
        assert len(pods) == len(stses) == SERVERS

        # The upgrade: the new CRD, then the new operator.
        testbed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        mark = testbed.audit_line_count()
        new = OperatorProcess(operator.kubeconfig, tmp_path, extra=flags)
        new.start()
        # Each pod replaced once by the new template, then two drift passes (the passes are counted below: a stuck
        # operator would also have written nothing).
        rolled = eventually(lambda: _rolled(testbed, namespace, pods), timeout=120, what="each pod replaced")
        for name in names:
            wait_ready(testbed, namespace, name)
        settled = testbed.audit_line_count()
        time.sleep(11)
        assert testbed.operator_writes(settled, namespace) == [], "writes once every server was Ready again"
        assert _pods(testbed, namespace) == rolled, "a pod was restarted or replaced again"
        assert {restarts for _, restarts in rolled.values()} == {0}

        assert {n: ("Parallel", h) for n, (_, h) in stses.items()} == _statefulsets(testbed, namespace)
        assert {p for p, _ in stses.values()} == {"OrderedReady"}, "the previous version's policy"
        writes = testbed.operator_writes(mark, namespace)
        by_kind = Counter((e["verb"], e["objectRef"]["resource"] + (
            "/" + e["objectRef"]["subresource"] if e["objectRef"].get("subresource") else "")) for e in writes)
        # Each StatefulSet deleted (orphaning its pod) and created again (an apply) once; no other child. Status:
        # each step of the re-creation and of the pod's replacement (Progressing, the pod gone, starting, Ready;
        # 6-8 a server seen). A write loop would have shown once settled, above.
        assert by_kind[("patch", "dittoservers/status")] <= 10 * SERVERS, by_kind
        assert by_kind[("delete", "statefulsets")] == by_kind[("patch", "statefulsets")] == SERVERS, by_kind
        assert set(by_kind) <= {("patch", "dittoservers/status"), ("delete", "statefulsets"),
                                ("patch", "statefulsets")}, by_kind
        assert new.reconcile_passes() >= 3 * SERVERS, "the new operator did not make its drift passes"
        print(f"\n[upgrade] {PREVIOUS} -> this tree over {SERVERS} servers: writes {dict(by_kind)}, each pod "
              "replaced once")
    finally:
        for proc in (old, new):
            if proc is not None:
                proc.stop()
        testbed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        operator.start()
