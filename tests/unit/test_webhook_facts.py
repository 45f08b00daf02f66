"""FactSource: what gets looked up, caching, and failures turning into "unknown" (fake gateway)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, cast

import pytest

from dittoctl.api.facts import ClusterFacts
from dittoctl.api.kinds import SECRETS, STORAGECLASSES, Kind
from dittoctl.api.models import API_VERSION
from dittoctl.api.rules import validate
from dittoctl.kube.gateway import ApiError, Gateway, NotFound
from tests.support.parses import count_spec_parses
from webhook.facts import FactSource
from webhook.server import AdmissionHandler


class FakeGateway:
    def __init__(self) -> None:
        self.classes = {"standard"}
        self.expandable: set[str] = set()
        self.default_class: str | None = None
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.percona: bool | Exception = False
        self.fail_secrets: set[str] = set()
        self.slow: set[str] = set()
        self.calls: list[str] = []

    async def list(self, kind: Kind, namespace: str | None = None, **_: Any) -> list[dict[str, Any]]:
        self.calls.append(f"list {kind.plural}")
        assert kind is STORAGECLASSES
        return [self._class(n) for n in sorted(self.classes)]

    def _class(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = {"metadata": {"name": name}}
        if name == self.default_class:
            found["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
        if name in self.expandable:
            found["allowVolumeExpansion"] = True
        return found

    async def get(self, kind: Kind, name: str, namespace: str | None = None, *,
                  timeout: float | None = None) -> dict[str, Any]:
        self.calls.append(f"get {kind.plural}/{name}")
        assert timeout is not None and timeout <= 2.0
        if name in self.slow:
            await asyncio.sleep(10)
        if kind is STORAGECLASSES:
            if name in self.classes:
                return self._class(name)
            raise NotFound(name)
        assert kind is SECRETS and namespace is not None
        if name in self.fail_secrets:
            raise ApiError(403, "forbidden")
        if (namespace, name) not in self.secrets:
            raise NotFound(name)
        return self.secrets[(namespace, name)]

    async def served(self, kind: Kind) -> bool:
        self.calls.append("discovery")
        assert (kind.group, kind.version, kind.plural) == ("pgv2.percona.com", "v2", "perconapgclusters")
        if isinstance(self.percona, Exception):
            raise self.percona
        return self.percona


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def source(gw: FakeGateway, clock: Clock | None = None) -> FactSource:
    return FactSource(cast(Gateway, gw), timeout=0.2, clock=clock or Clock())


def obj(spec: dict[str, Any], namespace: str = "team") -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "DittoServer", "metadata": {"name": "d", "namespace": namespace},
            "spec": {"storage": {"metadataSize": "1Gi"}, **spec}}


def test_offline_facts_are_all_unknown() -> None:
    facts = ClusterFacts.offline()
    assert (facts.storage_classes, facts.percona_served, dict(facts.secrets), facts.online) == (None, None, {}, False)


async def test_nothing_referenced_means_no_api_calls() -> None:
    gw = FakeGateway()
    facts = await source(gw).facts_for(obj({}))
    assert gw.calls == []
    assert facts.secrets == {} and facts.percona_served is None


async def test_secrets_by_point_get_keep_only_key_names() -> None:
    gw = FakeGateway()
    gw.secrets[("team", "s3")] = {"data": {"accessKeyId": "QUtJQQ==", "secretAccessKey": "c2VjcmV0"}}
    gw.secrets[("team", "jwt")] = {"stringData": {"k": "v"}}
    gw.fail_secrets.add("admin")
    spec = {"s3": {"credentialsSecretRef": {"secretName": "s3"}},
            "identity": {"jwt": {"secretRef": {"name": "jwt", "key": "k"}},
                         "admin": {"passwordSecretRef": {"name": "admin", "key": "p"}}},
            "database": {"type": "postgres", "postgresSecretRef": {"name": "pg"}}}
    facts = await source(gw).facts_for(obj(spec))
    assert dict(facts.secrets) == {"s3": frozenset({"accessKeyId", "secretAccessKey"}), "jwt": frozenset({"k"}),
                                   "pg": None}  # "admin" failed: unknown, left out
    assert "c2VjcmV0" not in repr(facts)
    verdict = validate(obj(spec), None, facts)
    assert any('could not verify Secret "admin"' in w for w in verdict.warnings)
    assert any('create Secret "pg"' in w for w in verdict.warnings)


async def test_namespace_override_is_used_for_secrets() -> None:
    gw = FakeGateway()
    gw.secrets[("other", "s3")] = {"data": {"accessKeyId": "", "secretAccessKey": ""}}
    facts = await source(gw).facts_for(obj({"s3": {"credentialsSecretRef": {"secretName": "s3"}}}, namespace=""),
                                       namespace="other")
    assert facts.secrets["s3"] == frozenset({"accessKeyId", "secretAccessKey"})


async def test_slow_secret_lookup_times_out_as_unknown() -> None:
    gw = FakeGateway()
    gw.slow.add("s3")
    facts = await source(gw).facts_for(obj({"s3": {"credentialsSecretRef": {"secretName": "s3"}}}))
    assert "s3" not in facts.secrets


async def test_storage_classes_from_cache_with_get_on_miss() -> None:
    gw, clock = FakeGateway(), Clock()
    src = source(gw, clock)
    assert await src.refresh_storage_classes()
    gw.calls.clear()
    facts = await src.facts_for(obj({"storage": {"metadataSize": "1Gi", "storageClassName": "standard"}}))
    assert facts.storage_classes == frozenset({"standard"}) and gw.calls == []  # served from the cache

    gw.classes.add("fast")  # created after the last list: found by a point GET on the miss
    facts = await src.facts_for(obj({"storage": {"metadataSize": "1Gi", "storageClassName": "fast"}}))
    assert facts.storage_classes == frozenset({"standard", "fast"})
    assert gw.calls == ["get storageclasses/fast"]

    gw.calls.clear()
    missing = obj({"storage": {"metadataSize": "1Gi", "storageClassName": "gold"}})
    for _ in range(3):
        facts = await src.facts_for(missing)
        assert facts.storage_classes is not None and "gold" not in facts.storage_classes
    assert gw.calls == ["get storageclasses/gold"]  # a 404 is trusted for a few seconds
    clock.now += 10
    await src.facts_for(missing)
    assert gw.calls == ["get storageclasses/gold"] * 2


async def test_storage_class_lookup_failure_is_unknown() -> None:
    gw = FakeGateway()
    gw.slow.add("gold")
    facts = await source(gw).facts_for(obj({"storage": {"metadataSize": "1Gi", "storageClassName": "gold"}}))
    assert facts.storage_classes is None


async def test_percona_discovery_caches_yes_long_and_no_briefly() -> None:
    gw, clock = FakeGateway(), Clock()
    src = source(gw, clock)
    enabled = obj({"percona": {"enabled": True}})
    assert (await src.facts_for(enabled)).percona_served is False
    assert (await src.facts_for(enabled)).percona_served is False
    assert gw.calls.count("discovery") == 1
    gw.percona = True  # the Percona operator gets installed
    clock.now += 5
    assert (await src.facts_for(enabled)).percona_served is True
    clock.now += 30
    assert (await src.facts_for(enabled)).percona_served is True
    assert gw.calls.count("discovery") == 2
    gw.percona = ApiError(0, "unreachable")
    clock.now += 120
    assert (await src.facts_for(enabled)).percona_served is None


async def test_background_resync_keeps_the_cache_warm() -> None:
    """The loop lists again and again: a class that appears after the first list reaches the cache without a
    lookup (a loop that listed once would keep the first answer for good)."""
    gw = FakeGateway()
    src = FactSource(cast(Gateway, gw), resync_seconds=0.02)

    async def cached_after(count: int) -> frozenset[str] | None:
        """The cache once the loop has made ``count`` lists (``storage_classes()`` reads it, never the API)."""
        for _ in range(250):
            if gw.calls.count("list storageclasses") >= count:
                break
            await asyncio.sleep(0.02)
        return await src.storage_classes()

    await src.start()
    try:
        assert await cached_after(1) == frozenset({"standard"})
        gw.classes = {"late"}
        assert await cached_after(gw.calls.count("list storageclasses") + 2) == frozenset({"late"})
    finally:
        await src.stop()
    assert set(gw.calls) == {"list storageclasses"}, "the cache was filled by the loop's lists only"


async def test_garbage_objects_never_raise() -> None:
    src = source(FakeGateway())
    for garbage in ({}, {"spec": 5}, {"metadata": [], "spec": {"s3": "x"}}, {"spec": {"storage": None}}):
        assert isinstance(await src.facts_for(garbage), ClusterFacts)


async def test_a_short_jwt_secret_is_known_by_length_only() -> None:
    gw = FakeGateway()
    short, long = base64.b64encode(b"x" * 31).decode(), base64.b64encode(b"y" * 32).decode()
    gw.secrets[("team", "jwt")] = {"data": {"k": short, "ok": long}}
    spec = {"identity": {"jwt": {"secretRef": {"name": "jwt", "key": "k"}}}}
    facts = await source(gw).facts_for(obj(spec))
    assert {k: dict(v) for k, v in facts.key_lengths.items()} == {"jwt": {"k": 31, "ok": 32}}
    assert short not in repr(facts) and "xxxx" not in repr(facts)
    verdict = validate(obj(spec), None, facts)
    assert [m.split(": ")[0] for m in verdict.messages] == ["spec.identity.jwt.secretRef"]
    fine = await source(gw).facts_for(obj({"identity": {"jwt": {"secretRef": {"name": "jwt", "key": "ok"}}}}))
    assert validate(obj({"identity": {"jwt": {"secretRef": {"name": "jwt", "key": "ok"}}}}), None, fine).allowed


async def test_expansion_support_and_the_default_class_come_from_the_storageclasses() -> None:
    gw = FakeGateway()
    gw.classes, gw.expandable, gw.default_class = {"standard", "fast"}, {"fast"}, "standard"
    src = source(gw)
    facts = await src.facts_for(obj({}))
    assert (facts.expandable_classes, facts.default_storage_class) == (None, None), "nothing listed: unknown"
    assert gw.calls == [], "no class referenced and no size change: nothing looked up"
    old, new = obj({"storage": {"metadataSize": "1Gi"}}), obj({"storage": {"metadataSize": "2Gi"}})
    facts = await src.facts_for(new, old=old)  # a size change lists the classes, even with none named
    assert (facts.expandable_classes, facts.default_storage_class) == (frozenset({"fast"}), "standard")
    assert gw.calls == ["list storageclasses"]
    verdict = validate(new, old, facts)
    assert verdict.messages and "StorageClass \"standard\" does not allow volume expansion" in verdict.messages[0]
    fast = obj({"storage": {"metadataSize": "2Gi", "storageClassName": "fast"}})
    fast_old = obj({"storage": {"metadataSize": "1Gi", "storageClassName": "fast"}})
    assert validate(fast, fast_old, await src.facts_for(fast, old=fast_old)).allowed


async def test_an_admission_parses_the_spec_once_for_its_lookups_and_its_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    parses = count_spec_parses(monkeypatch)
    gw = FakeGateway()
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "operation": "CREATE", "namespace": "team",
        "kind": {"group": "dittofs.dittofs.com", "version": "v1alpha1", "kind": "DittoServer"},
        "object": obj({"storage": {"metadataSize": "1Gi", "storageClassName": "standard"}})}}
    answer = await AdmissionHandler(source(gw)).review(json.dumps(body).encode())
    assert answer["response"]["allowed"] is True
    assert gw.calls == ["list storageclasses"]  # the lookups did read the parsed references
    assert len(parses) == 1


async def test_a_class_cached_as_unable_to_expand_is_read_again_before_a_resize_is_denied() -> None:
    """The denial's own fix is 'set allowVolumeExpansion: true on it': the next apply must see it, not the cached
    answer of up to a minute ago (an exploratory session waited ~50 s). A fresh 'no' is trusted briefly."""
    gw, clock = FakeGateway(), Clock()
    gw.default_class = "standard"
    src = source(gw, clock)
    old, new = obj({"storage": {"metadataSize": "1Gi"}}), obj({"storage": {"metadataSize": "2Gi"}})
    assert not validate(new, old, await src.facts_for(new, old=old)).allowed
    assert gw.calls == ["list storageclasses"], "just listed: no second read"
    gw.expandable.add("standard")  # the user's fix
    clock.now += 1  # a retry at once: still within the 3 s a fresh 'no' is trusted
    assert not validate(new, old, await src.facts_for(new, old=old)).allowed
    clock.now += 5
    assert validate(new, old, await src.facts_for(new, old=old)).allowed
    assert gw.calls == ["list storageclasses", "get storageclasses/standard"]
