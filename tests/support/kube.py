"""Reading and writing DittoServers on the test bed through its `kubectl` (what users type)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from tests.support.poll import eventually


def kubectl_json(testbed: Any, *args: str) -> Any:
    result = testbed.kubectl(*args, "-o", "json")
    return json.loads(result.stdout)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions", []):
        if cond.get("type") == kind:
            found: dict[str, Any] = cond
            return found
    return None


def apply_server(testbed: Any, namespace: str, name: str = "demo", **spec: Any) -> None:
    body = {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"storage": {"metadataSize": "1Gi", "contentSize": "2Gi"}, **spec}}
    testbed.kubectl("apply", "-f", "-", input=json.dumps(body))


def enforce_restricted(testbed: Any, namespace: str) -> None:
    """Pod Security "restricted" on ``namespace``: a pod that does not pass it is never created."""
    testbed.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")


def absent(testbed: Any, kind: str, name: str, namespace: str | None = None) -> bool:
    """Whether the object does not exist. Only NotFound says so: a Forbidden, an unknown kind or an apiserver
    hiccup is an error (``kubectl get``'s failing exit status read as "gone" made a check that could not fail)."""
    where = ["-n", namespace] if namespace else []
    proc = testbed.kubectl("get", kind, name, *where, "--ignore-not-found", "-o", "name", check=False)
    if proc.returncode != 0:
        raise AssertionError(f"kubectl get {kind} {name}: {proc.stderr.strip()}")
    return not proc.stdout.strip()


def server(testbed: Any, namespace: str, name: str = "demo") -> dict[str, Any]:
    obj: dict[str, Any] = kubectl_json(testbed, "get", "dittoserver", name, "-n", namespace)
    return obj


def wait_ready(testbed: Any, namespace: str, name: str = "demo", timeout: float = 90) -> dict[str, Any]:
    """Wait for Ready=True at the current generation (a stale Ready from before an edit does not count)."""
    def ready() -> dict[str, Any] | None:
        obj = server(testbed, namespace, name)
        cond = condition(obj, "Ready")
        status = obj.get("status") or {}
        fresh = status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if cond and cond["status"] == "True" and fresh else None

    try:
        result: dict[str, Any] = eventually(ready, timeout=timeout, what=f"DittoServer {namespace}/{name} Ready")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnosis(testbed, namespace, name)}") from None
    return result


def _diagnosis(testbed: Any, namespace: str, name: str) -> str:
    """What a timed-out wait saw last: the server's conditions, its StatefulSet's rollout and its pods."""
    lines: list[str] = []
    try:
        obj = server(testbed, namespace, name)
        status = obj.get("status") or {}
        lines.append(f"generation {obj['metadata']['generation']}, observed {status.get('observedGeneration')}, "
                     f"phase {status.get('phase')}")
        lines += [f"  {c['type']}={c['status']} {c.get('reason')}: {c.get('message', '')[:300]}"
                  for c in status.get("conditions") or []]
        sts = kubectl_json(testbed, "get", "statefulset", name, "-n", namespace)
        lines.append(f"statefulset status: {json.dumps(sts.get('status'))}")
        pods = kubectl_json(testbed, "get", "pods", "-n", namespace)["items"]
        for p in pods:
            phase = p.get("status", {}).get("phase")
            ready = [c.get("status") for c in p.get("status", {}).get("conditions") or [] if c["type"] == "Ready"]
            lines.append(f"pod {p['metadata']['name']}: {phase}, ready {ready}, node {p['spec'].get('nodeName')}, "
                         f"image {p['spec']['containers'][0]['image']}, "
                         f"revision {p['metadata'].get('labels', {}).get('controller-revision-hash')}")
            lines += [f"  {c['type']}={c['status']} {c.get('reason')}: {c.get('message', '')[:300]}"
                      for c in p.get("status", {}).get("conditions") or [] if c.get("status") != "True"]
        # An unscheduled pod is most often an unbound claim: say which.
        claims = kubectl_json(testbed, "get", "pvc", "-n", namespace)["items"]
        for c in claims:
            node = c["metadata"].get("annotations", {}).get("volume.kubernetes.io/selected-node")
            lines.append(f"pvc {c['metadata']['name']}: {c.get('status', {}).get('phase')}, "
                         f"class {c['spec'].get('storageClassName')}, selected node {node}")
        for e in [e for e in events(testbed, namespace) if e.get("type") == "Warning"][-10:]:
            about = e.get("involvedObject", {})
            lines.append(f"event {about.get('kind')}/{about.get('name')} {e.get('reason')}: "
                         f"{e.get('message', '')[:200]}")
    except Exception as exc:  # diagnostics must never hide the timeout itself
        lines.append(f"(diagnosis failed: {exc!r})")
    return "\n".join(lines)


def events(testbed: Any, namespace: str, reason: str | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl_json(testbed, "get", "events", "-n", namespace)["items"]
    return [e for e in items if reason is None or e.get("reason") == reason]


def report_bundle(testbed: Any, namespace: str, out: Path, name: str = "demo") -> tuple[str, dict[str, bytes]]:
    """`dittoctl report` as a user runs it from this machine (DittoFS at its pod IP); (stdout, bundle files)."""
    proc = subprocess.run([sys.executable, "-m", "dittoctl", "report", name, "-n", namespace, "-o", str(out),
                           "--server-address", "pod", "--kubeconfig", str(testbed.kubeconfig)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(out) as tar:
        files = {m.name: f.read() for m in tar.getmembers() if m.isfile() and (f := tar.extractfile(m)) is not None}
    return proc.stdout, files
