"""Builders and stand-ins for the admission webhook: AdmissionReviews, TLS pairs, facts and event sinks.

Shared by the unit tests of the server (tests/unit/test_webhook_server.py) and the 10,000-review fuzz run
(tests/integration/test_admission_fuzz.py), and the one definition of what a well-formed denial is.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from certs.selfsigned import KeyPair, new_leaf
from dittoctl.api.facts import ClusterFacts
from dittoctl.api.models import API_VERSION
from dittoctl.api.parsed import ParsedSpec

GOOD_FACTS = ClusterFacts(storage_classes=frozenset({"standard"}), percona_served=True, secrets={})
# A cause's field: a root the validator reports on, then any path that cannot contain the ": " that
# separates it from the message (the path of an unknown key may hold arbitrary characters).
FIELD_PATH = re.compile(r"^(spec|metadata|apiVersion|kind|object)([.\[]((?!: ).)*)?$")
INTERNAL_ERROR = "internal validation error"


class FakeFacts:
    def __init__(self, facts: ClusterFacts = GOOD_FACTS, fail: bool = False) -> None:
        self.facts = facts
        self.fail = fail
        self.calls: list[tuple[Mapping[str, Any], str | None]] = []

    async def facts_for(self, obj: Mapping[str, Any], *, namespace: str | None = None,
                        old: Mapping[str, Any] | None = None, parsed: ParsedSpec | None = None) -> ClusterFacts:
        self.calls.append((obj, namespace))
        if self.fail:
            raise RuntimeError("boom")
        return self.facts


class FakeRecorder:
    def __init__(self) -> None:
        self.posted: list[tuple[Mapping[str, Any], str, str, str]] = []

    async def post(self, regarding: Mapping[str, Any], type_: str, reason: str, message: str) -> bool:
        self.posted.append((regarding, type_, reason, message))
        return True


def pair_files(directory: Path, cert_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    """A serving pair as a mounted kubernetes.io/tls Secret holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(cert_pem)
    (directory / "tls.key").write_bytes(key_pem)
    return directory / "tls.crt", directory / "tls.key"


def write_pair(directory: Path, ca: KeyPair, *names: str) -> KeyPair:
    leaf = new_leaf(ca, list(names) or ["localhost"], ["127.0.0.1"])
    pair_files(directory, leaf.cert_pem, leaf.key_pem)
    return leaf


def client_context(*cas: KeyPair) -> ssl.SSLContext:
    return ssl.create_default_context(cadata="".join(ca.cert_pem.decode() for ca in cas))


def dittoserver(spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "DittoServer",
            "metadata": {"name": "demo", "namespace": "team", **meta},
            "spec": spec if spec is not None else {"storage": {"metadataSize": "1Gi"}}}


def review(obj: Any, *, operation: str = "CREATE", old: Any = None, dry_run: bool = False,
           uid: str = "1234-uid") -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": uid, "operation": operation, "namespace": "team", "name": "demo", "dryRun": dry_run,
        "kind": {"group": "dittofs.dittofs.com", "version": "v1alpha1", "kind": "DittoServer"},
        "resource": {"group": "dittofs.dittofs.com", "version": "v1alpha1", "resource": "dittoservers"},
        "object": obj,
    }
    if old is not None:
        request["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def denial_causes(response: Mapping[str, Any]) -> list[dict[str, str]]:
    """The causes of a denial, each checked to name a field path and say what is wrong with it.

    The server splits every error at its first ": " into field and message (and puts the whole error in
    both when there is none), so a non-empty field proves nothing: a cause must have a path-shaped field,
    a message of its own, and must not be the validator's catch-all for a crash.
    """
    status = response["status"]
    assert status["code"] == 422 and status["reason"] == "Invalid", status
    causes: list[dict[str, str]] = status["details"]["causes"]
    assert causes, f"a denial without causes: {status}"
    assert status["message"] == "; ".join(f"{c['field']}: {c['message']}" for c in causes), status
    for cause in causes:
        assert FIELD_PATH.match(cause["field"]), f"cause does not name a field path: {cause}"
        assert cause["message"].strip() and cause["message"] != cause["field"], f"cause says nothing: {cause}"
        assert INTERNAL_ERROR not in cause["message"], f"the validator crashed: {cause}"
    return causes
