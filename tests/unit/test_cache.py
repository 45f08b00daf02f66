"""The cache against a GET that races the watch (a StatefulSet read while the garbage collector deletes it)."""

from __future__ import annotations

from typing import Any, cast

from dittoctl.api.kinds import STATEFULSETS
from dittoctl.kube.gateway import Gateway
from reconciler.handlers import Controller


def sts(version: str, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "demo", "namespace": "ns", "resourceVersion": version,
                            "labels": {"app.kubernetes.io/instance": "demo"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-06T14:36:50Z"
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta, "spec": {"replicas": 1}}


def test_a_get_answered_before_a_deletion_the_watch_delivered_meanwhile_is_not_cached() -> None:
    """The CI saw it: the confirming GET of an orphan-deleted StatefulSet read it (deletionTimestamp set), the
    watch's DELETED was handled before the answer, and the answer put the deleted object back in the cache, where
    no later event would remove it: the pass waited for the deletion forever and never re-created it."""
    controller = Controller(cast(Gateway, object()))
    cache = controller.cache
    cache.begin_read(STATEFULSETS, "ns", "demo")
    controller.on_child(STATEFULSETS, "DELETED", sts("9", deleting=True))
    assert cache.end_read(STATEFULSETS, "ns", "demo", sts("8", deleting=True)) is None
    assert cache.child(STATEFULSETS, "ns", "demo") is None


def test_a_get_the_watch_updated_meanwhile_yields_the_watch_version() -> None:
    controller = Controller(cast(Gateway, object()))
    cache = controller.cache
    cache.begin_read(STATEFULSETS, "ns", "demo")
    controller.on_child(STATEFULSETS, "MODIFIED", sts("9"))
    read = cache.end_read(STATEFULSETS, "ns", "demo", sts("8"))
    assert read is not None and read["metadata"]["resourceVersion"] == "9"
    assert cache.child_version(STATEFULSETS, "ns", "demo") == "9"


def test_a_get_with_a_quiet_watch_is_cached_and_a_miss_is_not() -> None:
    controller = Controller(cast(Gateway, object()))
    cache = controller.cache
    cache.begin_read(STATEFULSETS, "ns", "demo")
    assert cache.end_read(STATEFULSETS, "ns", "demo", sts("8")) is not None
    assert cache.child_version(STATEFULSETS, "ns", "demo") == "8"
    cache.drop_child(STATEFULSETS, ("ns", "demo"))
    cache.begin_read(STATEFULSETS, "ns", "demo")
    assert cache.end_read(STATEFULSETS, "ns", "demo", None) is None
    assert cache.child(STATEFULSETS, "ns", "demo") is None and cache.reading == {}
