"""Reading and writing DittoServers on the test bed through its `kubectl` (what users type)."""

from __future__ import annotations

import json
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

    result: dict[str, Any] = eventually(ready, timeout=timeout, what=f"DittoServer {namespace}/{name} Ready")
    return result


def events(testbed: Any, namespace: str, reason: str | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl_json(testbed, "get", "events", "-n", namespace)["items"]
    return [e for e in items if reason is None or e.get("reason") == reason]
