"""The contract floor's writes (bench/floor.py): what a perfect operator sends for a new server, rendered by the
operator's own builders."""

from __future__ import annotations

from typing import Any

from bench.floor import bind, children, contract_plan
from bench.kube import condition, server_ready
from bench.objects import dittoserver
from dittoctl.api.conditions import EventReason
from dittoctl.api.naming import FINALIZER, MANAGED_BY_LABEL
from dittoctl.api.secrets import ADMIN_PASSWORD_KEY, JWT_KEY

UID = "5b0c3c36-7d1e-4c6f-9a53-0f4f2b0f8d11"


def _created(name: str = "demo", namespace: str = "ns") -> dict[str, Any]:
    doc = dittoserver(name, namespace)
    doc["metadata"].update(uid=UID, resourceVersion="41", generation=1)
    return doc


def test_the_plan_makes_every_write_the_contract_asks_for_a_new_server() -> None:
    created = _created()
    plan = contract_plan(created)
    assert plan.finalizer == {"metadata": {"finalizers": [FINALIZER], "resourceVersion": "41"}}
    secrets = {s["metadata"]["name"]: s for s in plan.secrets}
    assert set(secrets) == {"demo-jwt", "demo-admin-bootstrap-credentials"}
    assert len(secrets["demo-jwt"]["stringData"][JWT_KEY]) == 64
    assert len(secrets["demo-admin-bootstrap-credentials"]["stringData"][ADMIN_PASSWORD_KEY]) >= 24
    assert plan.event["reason"] == EventReason.CREATED and plan.event["involvedObject"]["uid"] == UID
    assert plan.event["metadata"]["namespace"] == "ns"
    # Beyond the children: the create, the finalizer, both Secrets, the two statuses and the Event.
    assert plan.requests() == {"DittoServer create, through the webhook": 1, "DittoServer finalizer patch": 1,
                               "DittoServer status patch": 2, "Secret create": 2, "Event create": 1}


def test_the_children_are_the_floors_owned_by_the_server() -> None:
    plan = contract_plan(_created())
    bare = children("demo", "ns")
    assert [c["kind"] for c in plan.children] == [c["kind"] for c in bare]
    for owned, plain in zip(plan.children, bare, strict=True):
        refs = owned["metadata"].pop("ownerReferences")
        assert refs == [{"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer", "name": "demo",
                         "uid": UID, "controller": True, "blockOwnerDeletion": True}]
        assert owned["metadata"]["labels"][MANAGED_BY_LABEL] == "dittofs-operator"
        assert owned == plain


def test_the_first_status_waits_and_the_second_is_ready_at_the_servers_generation() -> None:
    created = _created()
    plan = contract_plan(created)
    first = {"metadata": created["metadata"], **plan.progressing}
    second = {"metadata": created["metadata"], **plan.ready}
    assert not server_ready(first) and server_ready(second)
    assert first["status"]["phase"] == "Pending" and second["status"]["phase"] == "Running"
    assert second["status"]["ready"] == "1/1" and second["status"]["configHash"] == first["status"]["configHash"]
    assert second["status"]["endpoints"]["nfs"] == "demo-file.ns.svc:12049"
    # A condition that did not flip keeps the transition time the first status gave it.
    configured = [condition(s, "ConfigReady") for s in (first, second)]
    assert configured[0] == configured[1] and configured[0] is not None and configured[0]["status"] == "True"


def test_a_plan_rendered_before_the_create_binds_to_what_the_create_returned() -> None:
    created = _created()
    early = contract_plan({**created, "metadata": {**created["metadata"], "uid": "x", "resourceVersion": "y"}})
    bound, direct = bind(early, created), contract_plan(created)
    assert bound.finalizer == direct.finalizer and bound.children == direct.children
    assert bound.event["involvedObject"] == direct.event["involvedObject"]
    assert early.children[0]["metadata"]["ownerReferences"][0]["uid"] == "x"  # the early plan is left as it was
