"""The operator's own watch streams: listing, streaming from the listing's version, and catching up after
the stream expired (410) without missing a deletion. The gateway here is a script of plain API answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from dittoctl.api.kinds import SECRETS, SERVICEMONITORS, STATEFULSETS, Kind
from dittoctl.api.naming import selector_string
from dittoctl.kube.gateway import ApiError, Gateway, NotFound
from reconciler.context import Memory, Pass
from reconciler.handlers import Controller
from reconciler.owned import SELECTOR
from reconciler.watch import PAGE, STALE_SECONDS, Watch


def obj(name: str, version: str, instance: str = "demo") -> dict[str, Any]:
    return {"metadata": {"namespace": "apps", "name": name, "resourceVersion": version,
                         "labels": {"app.kubernetes.io/instance": instance}}}


class Script:
    """Answers `pages` and `watch` from queues of plain data; a watch ends when its script runs out."""

    def __init__(self, listings: list[list[dict[str, Any]]], streams: list[list[Any]]) -> None:
        self.listings = listings
        self.streams = streams
        self.calls: list[tuple[str, Any]] = []
        self.done = asyncio.Event()

    async def pages(self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None,
                    limit: int = 500) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("list", (label_selector, limit)))
        items = self.listings.pop(0)
        half = len(items) // 2  # two pages of one snapshot
        yield {"metadata": {"resourceVersion": "10", "continue": "more"}, "items": items[:half]}
        yield {"metadata": {"resourceVersion": "10"}, "items": items[half:]}

    async def watch(self, kind: Kind, resource_version: str, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("watch", resource_version))
        if not self.streams:
            self.done.set()
            await asyncio.Event().wait()  # an idle stream
        for event in self.streams.pop(0):
            if isinstance(event, Exception):
                raise event  # the watch request itself answered with an error status
            yield event


async def run_until_done(watch: Watch, script: Script) -> None:
    task = asyncio.create_task(watch.run())
    try:
        await asyncio.wait_for(script.done.wait(), 5)
    finally:
        task.cancel()


async def test_lists_then_streams_from_the_listing_and_reports_what_vanished_while_expired() -> None:
    script = Script(
        listings=[[obj("a", "5"), obj("b", "6")], [obj("b", "6"), obj("c", "12", "other")]],
        streams=[
            [{"type": "MODIFIED", "object": obj("b", "11")},
             {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}],
            [{"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}}],
        ])
    seen: list[tuple[str, str, str]] = []
    typed: list[tuple[str, str]] = []

    def on_event(kind: str, o: dict[str, Any]) -> None:
        seen.append((kind, o["metadata"]["name"], o["metadata"]["labels"]["app.kubernetes.io/instance"]))
        typed.append((o.get("apiVersion", ""), o.get("kind", "")))

    watch = Watch(cast(Gateway, script), STATEFULSETS, on_event, label_selector="managed=us")
    await run_until_done(watch, script)
    assert watch.started.is_set()
    # The listing's version, then the bookmark's after the stream ended; after the 410 a new listing.
    assert script.calls == [("list", ("managed=us", PAGE)), ("watch", "10"), ("watch", "15"),
                            ("list", ("managed=us", PAGE)), ("watch", "10")]
    assert seen == [("ADDED", "a", "demo"), ("ADDED", "b", "demo"), ("MODIFIED", "b", "demo"),
                    ("ADDED", "b", "demo"), ("ADDED", "c", "other"),
                    ("DELETED", "a", "demo")]  # with its labels, so its server is queued again
    # Listed items get their type (a list's items have none), so they compare equal to a manifest.
    assert typed[:2] == [("apps/v1", "StatefulSet")] * 2


async def test_a_watch_refused_410_as_a_status_lists_again_instead_of_retrying_the_version() -> None:
    """An expired version may be answered as HTTP 410 rather than as an ERROR event in the stream; retried as it
    was, it failed forever and nothing vanished meanwhile was ever reported."""
    script = Script(listings=[[obj("a", "5"), obj("b", "6")], [obj("b", "6")]],
                    streams=[[ApiError(410, "too old resource version")]])
    seen: list[tuple[str, str]] = []
    watch = Watch(cast(Gateway, script), STATEFULSETS, lambda kind, o: seen.append((kind, o["metadata"]["name"])))
    await run_until_done(watch, script)
    assert [c[0] for c in script.calls] == ["list", "watch", "list", "watch"]
    assert seen[-1] == ("DELETED", "a") and watch.error is None


async def test_a_version_only_watch_lists_nothing_and_resets_after_expiry() -> None:
    script = Script(listings=[[], []],
                    streams=[[{"type": "ADDED", "object": obj("s", "11")},
                              {"type": "ERROR", "object": {"code": 410}}]])
    seen: list[str] = []
    resets: list[bool] = []
    watch = Watch(cast(Gateway, script), SECRETS, lambda kind, o: seen.append(kind), listing=False,
                  on_reset=lambda: resets.append(True))
    await run_until_done(watch, script)
    assert seen == ["ADDED"] and resets == [True]
    assert [c for c in script.calls if c[0] == "list"] == [("list", (None, 1))] * 2


async def test_a_watch_with_a_prerequisite_lists_only_once_it_is_met() -> None:
    script = Script(listings=[[obj("generated-a", "5"), obj("generated-b", "6")]], streams=[])
    seen: list[str] = []
    known = asyncio.Event()
    watch = Watch(cast(Gateway, script), SECRETS, lambda _type, o: seen.append(o["metadata"]["name"]),
                  label_selector="managed=us", after=known)
    task = asyncio.create_task(watch.run())
    try:
        for _ in range(5):
            await asyncio.sleep(0)
        assert script.calls == [] and seen == [] and not watch.started.is_set()
        known.set()
        await asyncio.wait_for(script.done.wait(), 5)
        assert watch.started.is_set()
        assert script.calls == [("list", ("managed=us", PAGE)), ("watch", "10")]
        assert seen == ["generated-a", "generated-b"]
    finally:
        task.cancel()


async def test_a_failing_listing_is_kept_as_the_watchs_error_until_one_succeeds() -> None:
    class Refused(Script):
        refusals = 1

        async def pages(self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None,
                        limit: int = 500) -> AsyncIterator[dict[str, Any]]:
            if self.refusals:
                self.refusals -= 1
                raise ApiError(403, "statefulsets.apps is forbidden")
            async for page in super().pages(kind, namespace, label_selector=label_selector, limit=limit):
                yield page

    script = Refused(listings=[[obj("demo", "5")]], streams=[])
    watch = Watch(cast(Gateway, script), STATEFULSETS, lambda _type, o: None)
    task = asyncio.create_task(watch.run())
    try:
        for _ in range(20):
            await asyncio.sleep(0)
        assert watch.error == "ApiError: HTTP 403: statefulsets.apps is forbidden" and not watch.started.is_set()
        await asyncio.wait_for(script.done.wait(), 5)  # retried after its backoff
        assert watch.started.is_set() and watch.error is None
    finally:
        task.cancel()


def test_waiting_for_a_prerequisite_is_not_silence_but_silence_after_it_is() -> None:
    known = asyncio.Event()
    watch = Watch(cast(Gateway, Script([], [])), SECRETS, lambda _type, o: None, after=known)
    watch.last_activity -= STALE_SECONDS + 60  # constructed long ago: the CRD was missing all along
    assert watch.stale_for() is None
    known.set()
    silent = watch.stale_for()
    assert silent is not None and silent > STALE_SECONDS
    assert Watch(cast(Gateway, Script([], [])), SECRETS, lambda _type, o: None).stale_for() is None


def test_the_two_secret_streams_select_a_label_and_its_complement() -> None:
    assert selector_string(SELECTOR) == "app.kubernetes.io/managed-by=dittofs-operator"
    assert selector_string(SELECTOR, negated=True) == "app.kubernetes.io/managed-by!=dittofs-operator"


class Unserved(Script):
    """Lists answer 404 (the kind's CRD is not installed) `refusals` times, then as scripted."""

    def __init__(self, refusals: int, listings: list[list[dict[str, Any]]]) -> None:
        super().__init__(listings, [])
        self.refusals = refusals

    async def pages(self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None,
                    limit: int = 500) -> AsyncIterator[dict[str, Any]]:
        if self.refusals:
            self.refusals -= 1
            self.calls.append(("list", "404"))
            raise NotFound("the server could not find the requested resource")
        async for page in super().pages(kind, namespace, label_selector=label_selector, limit=limit):
            yield page


async def test_a_watch_of_an_optional_kind_ends_when_its_listing_finds_the_kind_gone() -> None:
    script = Unserved(refusals=2, listings=[])
    gone: list[bool] = []
    watch = Watch(cast(Gateway, script), SERVICEMONITORS, lambda _type, o: None, namespaces=["a", "b"],
                  on_gone=lambda: gone.append(True))
    await asyncio.wait_for(watch.run(), 5)  # ends by itself: no retry loop against a missing API
    assert gone == [True, True] and not watch.started.is_set()  # told once per namespace
    assert script.calls == [("list", "404")] * 2


async def test_any_other_watch_retries_a_missing_kind_with_backoff_not_in_a_tight_loop() -> None:
    script = Unserved(refusals=3, listings=[[obj("demo", "5")]])
    watch = Watch(cast(Gateway, script), STATEFULSETS, lambda _type, o: None)
    task = asyncio.create_task(watch.run())
    try:
        await asyncio.sleep(0.2)
        assert script.calls == [("list", "404")], "a 404 listing waits before it asks again"
        assert watch.error is not None and "NotFound" in watch.error
        await asyncio.wait_for(script.done.wait(), 10)  # 0.5 + 1 + 2 s of backoff
        assert watch.started.is_set() and [c for c in script.calls if c[0] == "list"][-1] == ("list", (None, PAGE))
    finally:
        task.cancel()


async def test_an_optional_kind_is_watched_while_served_and_then_read_from_the_cache() -> None:
    class Cluster(Script):
        """Also answers discovery and point GETs (recorded)."""

        async def served(self, kind: Kind) -> bool:
            return True

        async def get_or_none(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any] | None:
            self.calls.append(("get", name))
            return None

    script = Cluster(listings=[[obj("demo-metrics", "7")]], streams=[])
    controller = Controller(cast(Gateway, script))
    shared = controller.reconciler.shared
    ctx = Pass(shared, ("apps", "demo"), {"metadata": {"namespace": "apps", "name": "demo"}}, Memory(), fresh=False)
    try:
        assert await ctx.optional_child(SERVICEMONITORS, "demo-metrics") is None  # not served yet: a GET
        assert script.calls == [("get", "demo-metrics")]
        assert await controller.reconciler.discovery.serves(SERVICEMONITORS)
        await asyncio.wait_for(script.done.wait(), 5)  # listed, then streaming
        assert shared.follows(SERVICEMONITORS)
        found = await ctx.optional_child(SERVICEMONITORS, "demo-metrics")
        assert found is not None and found["metadata"]["resourceVersion"] == "7"
        assert await ctx.optional_child(SERVICEMONITORS, "absent") is None
        assert [c[0] for c in script.calls] == ["get", "list", "watch"], "read from the cache: no GET"
        _, task = controller.followed[SERVICEMONITORS]

        controller.reconciler.discovery.forget(SERVICEMONITORS)  # a 404: the CRD went away
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled() and not shared.follows(SERVICEMONITORS) and SERVICEMONITORS not in controller.followed
        assert controller.cache.child(SERVICEMONITORS, "apps", "demo-metrics") is None, "its cache went with it"
    finally:
        await controller.stop()


async def test_an_optional_kind_the_role_may_not_list_is_read_with_gets_not_watched_in_a_403_loop(
        caplog: pytest.LogCaptureFixture) -> None:
    class OlderRole(Script):
        """A ClusterRole from before these watches: get, but no list or watch, on ServiceMonitors."""

        async def served(self, kind: Kind) -> bool:
            return True

        async def pages(self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None,
                        limit: int = 500) -> AsyncIterator[dict[str, Any]]:
            self.calls.append(("list", "403"))
            raise ApiError(403, 'servicemonitors.monitoring.coreos.com is forbidden: cannot list resource')
            yield {}  # pragma: no cover - an async generator that refuses

        async def get_or_none(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any] | None:
            self.calls.append(("get", name))
            return None

    script = OlderRole(listings=[], streams=[])
    controller = Controller(cast(Gateway, script))
    shared = controller.reconciler.shared
    ctx = Pass(shared, ("apps", "demo"), {"metadata": {"namespace": "apps", "name": "demo"}}, Memory(), fresh=False)
    try:
        assert await controller.reconciler.discovery.serves(SERVICEMONITORS)
        _, task = controller.followed[SERVICEMONITORS]
        await asyncio.gather(task, return_exceptions=True)  # ends: no retry loop against the refusal
        assert SERVICEMONITORS not in controller.followed and not shared.follows(SERVICEMONITORS)
        assert await ctx.optional_child(SERVICEMONITORS, "demo-metrics") is None
        assert script.calls == [("list", "403"), ("get", "demo-metrics")], "one refused listing, then a GET"
        refusals = [r for r in caplog.records if "no permission to list and watch" in r.getMessage()]
        assert len(refusals) == 1 and refusals[0].levelname == "WARNING"
        assert "monitoring.coreos.com" in refusals[0].getMessage()  # names what to grant
    finally:
        await controller.stop()


async def test_a_stream_that_worked_and_then_dropped_is_resumed_at_once_not_after_a_grown_backoff(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy cutting idle connections drops every stream after some events: each was a working stream, so the
    wait before resuming stays the first one (it doubled to 30 s, and each kind's news came that late)."""
    drops = 6
    script = Script(listings=[[obj("demo", "5")]],
                    streams=[[{"type": "MODIFIED", "object": obj("demo", str(6 + i))}, ApiError(0, "cut")]
                             for i in range(drops)])
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr("reconciler.watch.asyncio.sleep", sleep)
    await run_until_done(Watch(cast(Gateway, script), STATEFULSETS, lambda _type, o: None), script)
    assert sleeps == [0.5] * drops


async def test_a_listing_that_keeps_failing_is_retrying_not_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Liveness reads silence as a stuck loop and restarts the pod: a loop retrying an unreachable API is not
    stuck (its error is readiness's to report), and a restart would only add the kubelet's backoff."""
    class Failing(Script):
        async def pages(self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None,
                        limit: int = 500) -> AsyncIterator[dict[str, Any]]:
            raise ApiError(0, "connection refused")
            yield {}

    retries = asyncio.Event()
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        retries.set()
        await real_sleep(0)

    monkeypatch.setattr("reconciler.watch.asyncio.sleep", sleep)
    watch = Watch(cast(Gateway, Failing([], [])), STATEFULSETS, lambda _type, o: None)
    task = asyncio.create_task(watch.run())
    try:
        await asyncio.wait_for(retries.wait(), 5)
        watch.last_activity -= STALE_SECONDS + 60  # as if it had been failing for that long
        retries.clear()
        await asyncio.wait_for(retries.wait(), 5)
        assert watch.stale_for() is None and watch.error is not None
    finally:
        task.cancel()


async def test_a_defect_in_handling_an_event_does_not_end_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ended, one namespace's stream went silent while the others kept the shared liveness clock going."""
    script = Script(listings=[[obj("demo", "5")]], streams=[[{"type": "MODIFIED", "object": obj("demo", "6")}],
                                                           [{"type": "MODIFIED", "object": obj("demo", "7")}]])
    seen: list[str] = []

    def handle(_type: str, o: dict[str, Any]) -> None:
        seen.append(o["metadata"]["resourceVersion"])
        if len(seen) == 2:
            raise TypeError("a bug")

    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        await real_sleep(0)

    monkeypatch.setattr("reconciler.watch.asyncio.sleep", sleep)
    await run_until_done(Watch(cast(Gateway, script), STATEFULSETS, handle), script)
    assert seen == ["5", "6", "7"]
