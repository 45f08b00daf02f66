"""The cache against a GET that races the watch (a StatefulSet read while the garbage collector deletes it, a
Secret read while it is rotated)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from dittoctl.api.kinds import DITTOSERVERS, SECRETS, STATEFULSETS
from dittoctl.kube.gateway import Gateway
from reconciler.cache import secret_digest
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
    with cache.read(STATEFULSETS, "ns", "demo") as read:
        controller.on_child(STATEFULSETS, "DELETED", sts("9", deleting=True))
        assert cache.child_answer(read, sts("8", deleting=True)) is None
    assert cache.child(STATEFULSETS, "ns", "demo") is None and cache.reading == {}


def test_a_get_the_watch_updated_meanwhile_yields_the_watch_version() -> None:
    controller = Controller(cast(Gateway, object()))
    cache = controller.cache
    with cache.read(STATEFULSETS, "ns", "demo") as read:
        controller.on_child(STATEFULSETS, "MODIFIED", sts("9"))
        answer = cache.child_answer(read, sts("8"))
    assert answer is not None and answer["metadata"]["resourceVersion"] == "9"
    assert cache.child_version(STATEFULSETS, "ns", "demo") == "9"


def test_a_get_with_a_quiet_watch_is_cached_and_a_miss_is_not() -> None:
    controller = Controller(cast(Gateway, object()))
    cache = controller.cache
    with cache.read(STATEFULSETS, "ns", "demo") as read:
        controller.on_child(STATEFULSETS, "MODIFIED", {**sts("7"), "metadata": {"name": "other", "namespace": "ns"}})
        assert cache.child_answer(read, sts("8")) is not None
    assert cache.child_version(STATEFULSETS, "ns", "demo") == "8"
    cache.drop_child(STATEFULSETS, ("ns", "demo"))
    with cache.read(STATEFULSETS, "ns", "demo") as read:
        assert cache.child_answer(read, None) is None
    assert cache.child(STATEFULSETS, "ns", "demo") is None and cache.reading == {}


def secret(value: str) -> dict[str, Any]:
    return {"metadata": {"name": "pw", "namespace": "ns"}, "data": {"password": value}}


def test_a_secret_rotated_while_two_passes_read_it_keeps_the_new_value() -> None:
    """Two servers referencing one Secret read it at once; the rotation's event comes before both answers, which
    hold the old value. Both yield to the watch, and the cache keeps the new digest (an old one would hide the
    rotation until the Secret changed again)."""
    controller = Controller(cast(Gateway, object()))
    cache = controller.cache
    cache.set_refs(("ns", "a"), ["pw"])
    cache.set_refs(("ns", "b"), ["pw"])
    old, new = secret_digest(secret("b2xk")), secret_digest(secret("bmV3"))
    with cache.read(SECRETS, "ns", "pw") as first, cache.read(SECRETS, "ns", "pw") as second:
        controller.on_secret("MODIFIED", secret("bmV3"))
        assert cache.secret_answer(first, old) == new
        assert cache.secret_answer(second, old) == new
    assert cache.secrets[("ns", "pw")] == new and cache.reading == {}
    with cache.read(SECRETS, "ns", "pw") as quiet:
        assert cache.secret_answer(quiet, old) == old  # a quiet watch: the answer is the news
    assert cache.secrets[("ns", "pw")] == old


def test_a_secret_read_across_a_watch_reset_is_not_cached() -> None:
    """The Secret watch expired and may have missed a rotation: a GET sent before the reset may answer from before
    it, so its answer serves its pass but is not cached (the passes the reset queues read again)."""
    controller = Controller(cast(Gateway, object()))
    cache = controller.cache
    cache.set_refs(("ns", "a"), ["pw"])
    old = secret_digest(secret("b2xk"))
    with cache.read(SECRETS, "ns", "pw") as read:
        controller.on_secret_reset()
        assert cache.secret_answer(read, old) == old
    assert ("ns", "pw") not in cache.secrets


def server(name: str, version: str) -> dict[str, Any]:
    return {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
            "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}-{version}", "resourceVersion": version,
                         "generation": 1}, "spec": {"storage": {"metadataSize": "1Gi"}}}


class Listing:
    """The one call the drift tick's check makes; ``meanwhile`` runs while the listing is in flight."""

    def __init__(self, keys: tuple[tuple[str, str], ...], meanwhile: Any = None) -> None:
        self.keys, self.meanwhile = keys, meanwhile

    async def list_keys(self, kind: Any, namespace: str | None = None) -> tuple[tuple[str, str], ...]:
        if self.meanwhile is not None:
            self.meanwhile()
        return self.keys


async def test_a_server_deleted_while_kopf_relisted_is_forgotten_at_the_next_drift_tick() -> None:
    """kopf lists again after a 410 and sends what exists, never a DELETED for what is gone: the server stayed
    cached, and every drift tick and lead taken re-applied its children under an owner that no longer exists."""
    listing = Listing((("team", "a"),))
    controller = Controller(cast(Gateway, listing))
    for name, version in (("a", "10"), ("b", "11")):
        controller.on_server(None, server(name, version))
    controller.on_server(None, server("a", "10"))  # kopf's relist: only "a" is left
    assert sorted(controller.cache.servers) == [("team", "a"), ("team", "b")]
    await controller._forget_vanished()
    assert sorted(controller.cache.servers) == [("team", "a")]
    # A server of that name created while the listing was in flight is the new one: kept.
    listing.meanwhile = lambda: controller.on_server("ADDED", server("a", "12"))
    listing.keys = ()
    await controller._forget_vanished()
    assert controller.cache.server_version(("team", "a")) == "12"
    await controller.stop()


def named(uid: str, version: str) -> dict[str, Any]:
    return {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
            "metadata": {"name": "demo", "namespace": "team", "uid": uid, "resourceVersion": version,
                         "generation": 1}, "spec": {"storage": {"metadataSize": "1Gi"}}}


def test_a_server_deleted_and_created_again_during_a_failed_write_stays_cached() -> None:
    """A new server's finalizer patch in flight; the user deletes it (no finalizer yet: gone at once) and applies
    it again. The patch fails; dropped, the new server would never be reconciled until edited."""
    controller = Controller(cast(Gateway, object()))
    cache = controller.cache
    cache.put_server(named("u1", "5"))
    cache.begin_write(DITTOSERVERS, "team", "demo")
    controller.on_server("DELETED", named("u1", "6"))
    controller.on_server("ADDED", named("u2", "7"))
    assert cache.end_write(DITTOSERVERS, "team", "demo", None) is True
    assert (cache.server(("team", "demo")) or {})["metadata"]["uid"] == "u2"


def test_a_deletion_after_the_write_s_echo_drops_the_object() -> None:
    controller = Controller(cast(Gateway, object()))
    cache = controller.cache
    cache.begin_write(DITTOSERVERS, "team", "demo")
    controller.on_server("MODIFIED", named("u1", "6"))
    controller.on_server("DELETED", named("u1", "7"))
    cache.end_write(DITTOSERVERS, "team", "demo", named("u1", "6"))
    assert cache.server(("team", "demo")) is None


def test_an_earlier_namesake_s_deletion_handled_late_leaves_its_successor() -> None:
    """kopf runs one worker per uid, so the old uid's DELETED may be handled after the new uid's ADDED."""
    controller = Controller(cast(Gateway, object()))
    controller.on_server("ADDED", named("u2", "7"))
    controller.on_server("DELETED", named("u1", "6"))
    assert (controller.cache.server(("team", "demo")) or {})["metadata"]["uid"] == "u2"
    controller.on_server("DELETED", named("u2", "8"))
    assert controller.cache.server(("team", "demo")) is None


def test_a_child_written_while_a_deletion_was_seen_is_read_again() -> None:
    """No echo yet and a DELETED held: which came last is unknown, so the next read asks the apiserver."""
    controller = Controller(cast(Gateway, object()))
    cache = controller.cache
    cache.begin_write(STATEFULSETS, "ns", "demo")
    controller.on_child(STATEFULSETS, "DELETED", sts("5"))
    cache.end_write(STATEFULSETS, "ns", "demo", sts("6"))
    assert cache.child(STATEFULSETS, "ns", "demo") is None


def labelled_secret(version: str, managed: bool) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "dittofs-operator"} if managed else {}
    return {"metadata": {"name": "pw", "namespace": "ns", "resourceVersion": version, "labels": labels},
            "data": {"k": "dmFsdWU="}}


def test_a_secret_moved_between_the_two_secret_streams_by_a_label_edit_is_not_deleted() -> None:
    """The stream it leaves says DELETED (with its old content), the one it joins ADDED, at one resourceVersion
    and in no fixed order: handled last, the DELETED left the server waiting for a Secret that exists."""
    for order in (("ADDED", "DELETED"), ("DELETED", "ADDED")):
        controller = Controller(cast(Gateway, object()))
        cache = controller.cache
        cache.set_refs(("ns", "demo"), ["pw"])
        controller.on_secret("ADDED", labelled_secret("5", managed=True))
        for event_type in order:
            controller.on_secret(event_type, labelled_secret("6", managed=event_type == "DELETED"))
        assert cache.secrets[("ns", "pw")] == secret_digest(labelled_secret("6", managed=False)), order
        controller.on_secret("DELETED", labelled_secret("7", managed=False))  # deleted for real
        assert cache.secrets[("ns", "pw")] is None


async def test_a_discovery_that_fails_oddly_does_not_end_the_drift_timer(monkeypatch: Any) -> None:
    """Nothing watches the timer: ended by a TypeError from an odd discovery answer, no server was compared
    again until a restart."""
    controller = Controller(cast(Gateway, Listing(())), drift_interval=0.01)
    asked = asyncio.Event()
    calls: list[int] = []

    async def refresh() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise TypeError("'NoneType' object is not iterable")
        asked.set()
        return False

    monkeypatch.setattr(controller.reconciler.discovery, "refresh", refresh)
    task = asyncio.create_task(controller._drift())
    try:
        await asyncio.wait_for(asked.wait(), 5)
    finally:
        task.cancel()
    assert len(calls) >= 2
