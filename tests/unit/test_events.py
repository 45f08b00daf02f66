"""SPEC §6: events name the reporting component, are deduplicated for 10 minutes per (object, reason, message),
and never raise (a failed post is forgotten, so the next transition tries again)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from dittoctl.api.conditions import EventReason
from dittoctl.api.kinds import Kind
from dittoctl.kube.events import COMPONENT, DEDUP_SECONDS, EventRecorder, event_body
from dittoctl.kube.gateway import ApiError, Gateway

SERVER = {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
          "metadata": {"name": "demo", "namespace": "apps", "uid": "u-1"}}


class Posted:
    """Stands in for the gateway's create (plain data: what would have been sent)."""

    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = fail

    async def create(self, kind: Kind, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        if self.fail:
            self.fail -= 1
            raise ApiError(500, "etcd is away")
        self.bodies.append(obj)
        return obj


def recorder(gateway: Posted) -> EventRecorder:
    return EventRecorder(cast(Gateway, gateway))  # only create() is used


def test_an_event_names_the_component_and_its_object_and_caps_the_message() -> None:
    body = event_body(SERVER, "Warning", EventReason.RECONCILE_FAILED, "x" * 5000)
    assert body["reportingComponent"] == COMPONENT == body["source"]["component"] == "dittofs-operator"
    assert body["involvedObject"] == {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
                                      "name": "demo", "namespace": "apps", "uid": "u-1"}
    assert body["reason"] == "ReconcileFailed" and body["type"] == "Warning" and len(body["message"]) == 1024
    assert body["metadata"] == {"generateName": "demo.", "namespace": "apps"}


def test_the_same_event_posts_once_per_window(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # the recorder's clock
    sent = Posted()
    rec = recorder(sent)

    async def post(message: str) -> bool:
        return await rec.post(SERVER, "Normal", EventReason.CONFIG_UPDATED, message)

    async def run() -> list[bool]:
        results = [await post("ConfigMap demo-config updated"), await post("ConfigMap demo-config updated"),
                   await post("ConfigMap demo-config updated (hash 2)")]
        clock[0] += DEDUP_SECONDS - 1
        results.append(await post("ConfigMap demo-config updated"))
        clock[0] += 2
        results.append(await post("ConfigMap demo-config updated"))
        return results

    assert asyncio.run(run()) == [True, False, True, False, True]
    assert DEDUP_SECONDS == 600.0
    assert [b["message"] for b in sent.bodies] == ["ConfigMap demo-config updated",
                                                   "ConfigMap demo-config updated (hash 2)",
                                                   "ConfigMap demo-config updated"]
    # A server deleted and re-created under the same name is another object: its events are its own.
    again = {**SERVER, "metadata": {**SERVER["metadata"], "uid": "uid-of-the-new-one"}}  # type: ignore[dict-item]
    assert asyncio.run(rec.post(again, "Normal", EventReason.CONFIG_UPDATED, "ConfigMap demo-config updated"))


def test_a_failed_post_never_raises_and_is_tried_again() -> None:
    sent = Posted(fail=1)
    rec = recorder(sent)

    async def run() -> list[bool]:
        return [await rec.post(SERVER, "Warning", EventReason.PERCONA_NOT_READY, "PerconaPGCluster demo-postgres"),
                await rec.post(SERVER, "Warning", EventReason.PERCONA_NOT_READY, "PerconaPGCluster demo-postgres")]

    assert asyncio.run(run()) == [False, True]
    assert len(sent.bodies) == 1


def test_a_post_cancelled_midway_is_not_suppressed() -> None:
    """A pass cancelled (the Lease lost) while its event was in flight: the next pass posts it."""
    class Slow(Posted):
        calls = 0

        async def create(self, kind: Kind, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
            self.calls += 1
            if self.calls == 1:
                await asyncio.sleep(5)  # in flight until cancelled
            return await super().create(kind, obj, namespace)

    sent = Slow()
    rec = recorder(sent)

    async def run() -> bool:
        first = asyncio.ensure_future(rec.post(SERVER, "Normal", EventReason.CREATED, "StatefulSet demo created"))
        await asyncio.sleep(0.05)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await rec.post(SERVER, "Normal", EventReason.CREATED, "StatefulSet demo created")

    assert asyncio.run(run()) is True and len(sent.bodies) == 1
