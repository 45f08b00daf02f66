"""What keeps a pass cheap (issue 15), pinned: stamps are idempotent, discovery trusts a recent "no", kopf keeps
no per-event essence, and the API client reads its proxy once instead of per request."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import ssl
from pathlib import Path
from typing import Any, cast

import aiohttp
import kopf
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.rest import RESTClientObject

from certs.selfsigned import new_ca
from dittoctl.api.kinds import CERTIFICATES, CONFIGMAPS, SERVICEMONITORS, STATEFULSETS, Kind
from dittoctl.api.models import DittoServerSpec
from dittoctl.api.naming import APPLIED_ANNOTATION, INSTANCE_LABEL
from dittoctl.kube import gateway
from dittoctl.kube.gateway import REQUESTS, ApiError, Gateway, load_client
from dittoctl.kube.heap import pin_mmap_threshold, trimmer
from dittoctl.kube.jsonbytes import dumps
from dittoctl.main import KOPF_WORKER_IDLE, kopf_settings
from reconciler import compare, context
from reconciler.cache import Cache
from reconciler.compare import needs_apply, stamp_manifest
from reconciler.context import Discovery, Memory, Pass, Recent, Shared
from reconciler.handlers import Controller, configure_persistence, due_for_drift, watch_streams
from reconciler.phases.finalizer import ensure_finalizer
from reconciler.queue import WorkQueue
from reconciler.specs import Desired
from reconciler.specs.hashing import manifest_hash
from reconciler.status import pod_problems, settled, statefulset_news
from reconciler.watch import PAGE
from tests.support.admission import write_pair
from tests.support.scripted_api import kubeconfig, response, scripted_api


def test_a_stamp_is_taken_once_and_a_second_stamp_changes_nothing() -> None:
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "n"},
                "data": {"a": "1"}}
    first = copy.deepcopy(stamp_manifest(manifest))
    assert APPLIED_ANNOTATION in first["metadata"]["annotations"]
    assert stamp_manifest(manifest) == first
    other = stamp_manifest({**copy.deepcopy(manifest), "metadata": {"name": "x", "namespace": "n"},
                            "data": {"a": "2"}})
    assert other["metadata"]["annotations"][APPLIED_ANNOTATION] != first["metadata"]["annotations"][APPLIED_ANNOTATION]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(-1e-4, 1e-4)  # where the two encoders spell floats differently
    | st.text() | st.sampled_from(["3e4f", ":1.5", "a\x7fb", "é", "\x1f", "v1.2e-3"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=5))
@example({"cpu": 3e-05, "name": "scale-17"})
@example({"tiny": [1.5e-07], "name": "scale-17"})
@example({"looks": "v0.00001"})
def test_the_manifest_digest_never_changes_spelling(manifest: dict[str, Any]) -> None:
    """Every child carries the digest: a new encoder must give the old digest for every value, or an upgrade would
    re-apply every child once."""
    spelled = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    assert manifest_hash(manifest) == hashlib.sha256(spelled).hexdigest()[:16]


class _Served:
    """The one Gateway method Discovery calls, answering from a dict and counting the questions."""

    def __init__(self) -> None:
        self.answers: dict[str, bool] = {}
        self.asked = 0

    async def served(self, kind: Kind) -> bool:
        self.asked += 1
        return self.answers.get(kind.plural, False)


@pytest.mark.asyncio
async def test_discovery_trusts_a_no_for_a_while_and_a_yes_until_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    api = _Served()
    discovery = Discovery(api)  # type: ignore[arg-type]
    clock = [1000.0]
    monkeypatch.setattr("reconciler.context.time.monotonic", lambda: clock[0])
    assert not await discovery.serves(SERVICEMONITORS)
    assert not await discovery.serves(SERVICEMONITORS)
    assert api.asked == 1, "a fresh 'not served' is not asked again on every pass"
    clock[0] += Discovery.NEGATIVE_TTL + 0.1
    api.answers[SERVICEMONITORS.plural] = True
    assert await discovery.serves(SERVICEMONITORS), "a CRD installed later is noticed once the no is stale"
    assert await discovery.serves(SERVICEMONITORS)
    assert api.asked == 2
    discovery.forget(SERVICEMONITORS)  # a 404 on a write
    api.answers[SERVICEMONITORS.plural] = False
    assert not await discovery.serves(SERVICEMONITORS)
    assert api.asked == 3, "a forgotten kind is asked again at once"


@pytest.mark.asyncio
async def test_a_refresh_asks_about_every_optional_kind_at_once_and_keeps_what_it_could_learn() -> None:
    class Slow(_Served):
        in_flight = peak = 0

        async def served(self, kind: Kind) -> bool:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            await asyncio.sleep(0.01)
            self.in_flight -= 1
            if kind.plural == "certificates":
                raise ApiError(503, "discovery unavailable")
            return await super().served(kind)

    api = Slow()
    api.answers[SERVICEMONITORS.plural] = True
    discovery = Discovery(api)  # type: ignore[arg-type]
    assert await discovery.refresh()
    assert api.peak == len(Discovery.OPTIONAL), "the start waits for one round trip, not one per kind"
    assert discovery.answers[SERVICEMONITORS] is True and discovery.percona_served is False
    assert discovery.answers[CERTIFICATES] is None, "an error leaves the answer unknown"

    class Broken(_Served):
        async def served(self, kind: Kind) -> bool:
            raise RuntimeError("a bug, not an API answer")

    with pytest.raises(RuntimeError):
        await Discovery(Broken()).refresh()  # type: ignore[arg-type]


def test_kopf_lists_in_pages_and_lets_idle_workers_go() -> None:
    """A decoded DittoServer must not outlive its event by long: after a restart at 300 servers, kopf's default
    five idle seconds per object and one unpaged listing measured 8.5 MiB more RSS, and 0.5 s 9 MiB more."""
    settings = kopf.OperatorSettings()
    kopf_settings(settings)
    assert settings.watching.chunk_size == PAGE
    assert settings.queueing.idle_timeout == KOPF_WORKER_IDLE <= 0.1
    assert settings.posting.enabled is False


def test_kopf_keeps_no_essence_and_no_progress_per_event() -> None:
    settings = kopf.OperatorSettings()
    configure_persistence(settings)
    body = kopf.Body({"metadata": {"name": "x", "annotations": {"a": "b"}}, "spec": {"big": list(range(100))}})
    assert settings.persistence.diffbase_storage.build(body=body) == {}
    assert settings.persistence.diffbase_storage.fetch(body=body) is None
    essence = kopf.BodyEssence({"spec": {"x": 1}})
    assert settings.persistence.progress_storage.clear(essence=essence) is essence


@pytest.mark.asyncio
@pytest.mark.parametrize(("host", "env", "proxy"), [
    ("api.cluster.invalid", {"HTTPS_PROXY": "http://proxy.invalid:3128"}, "http://proxy.invalid:3128"),
    ("api.cluster.invalid", {"HTTPS_PROXY": "http://proxy.invalid:3128", "NO_PROXY": "api.cluster.invalid"}, None),
    ("127.0.0.1", {"HTTPS_PROXY": "http://proxy.invalid:3128"}, None),  # loopback never: as Go's net/http
    ("localhost", {"HTTPS_PROXY": "http://proxy.invalid:3128"}, None),
    ("api.cluster.invalid", {}, None),
])
async def test_the_api_client_reads_its_proxy_once_not_per_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str, env: dict[str, str], proxy: str | None) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = kubeconfig(tmp_path)
    path.write_text(path.read_text().replace("127.0.0.1", host))
    api: Any = await load_client(str(path), streams=6)
    try:
        assert api.rest_client.proxy == proxy
        assert api.rest_client.pool_manager.trust_env is False
        assert not api.rest_client.pool_manager.closed
        # A small pool (256 KiB per TLS connection), with room for the watch streams beside the requests.
        assert api.rest_client.pool_manager.connector.limit == REQUESTS + 6
    finally:
        await api.close()


@pytest.mark.asyncio
async def test_an_idle_api_connection_is_closed_soon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A settled operator holds no pooled connection (256 KiB of TLS buffer each) for long after a burst."""
    monkeypatch.setattr(gateway, "IDLE_CONNECTION_SECONDS", 0.3)
    async with scripted_api(tmp_path, lambda _: response("200 OK")) as api:
        assert await Gateway(api.client).text("/version") == "{}"
        assert api.served == [b"/version"]
        await asyncio.wait_for(api.closed.wait(), 5.0)  # the client hung up, not the server


@pytest.mark.asyncio
@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("strict", [True, False])
async def test_the_own_session_trusts_exactly_what_kubernetes_asyncio_would(tmp_path: Path, verify: bool,
                                                                         strict: bool) -> None:
    """The gateway rebuilds the TLS context kubernetes_asyncio derives from a kubeconfig (aiohttp cannot
    change the keep-alive of the connector it already made): the two must not drift apart on an upgrade."""
    ca = new_ca()
    write_pair(tmp_path, ca, "client")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    configuration = k8s.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    configuration.ssl_ca_cert = str(tmp_path / "ca.crt")
    configuration.cert_file, configuration.key_file = str(tmp_path / "tls.crt"), str(tmp_path / "tls.key")
    configuration.verify_ssl = verify
    configuration.disable_strict_ssl_verification = not strict
    rest = RESTClientObject(configuration)
    try:
        connector = rest.pool_manager.connector
        assert isinstance(connector, aiohttp.TCPConnector) and isinstance(connector._ssl, ssl.SSLContext)
        theirs = connector._ssl

        def described(context: ssl.SSLContext) -> tuple[Any, ...]:
            return (context.verify_mode, context.check_hostname, context.verify_flags, context.options,
                    context.minimum_version, context.cert_store_stats(), context.get_ca_certs())

        assert described(gateway._tls_context(configuration)) == described(theirs)
    finally:
        await rest.close()


@pytest.mark.parametrize("namespaces", [None, ["a"], ["a", "b", "c"]])
def test_a_connection_is_reserved_for_every_watch_stream(namespaces: list[str] | None) -> None:
    controller = Controller(cast(Gateway, object()), namespaces=namespaces)
    # The optional kinds may all be served, and then each is watched too.
    followed = len(Discovery.OPTIONAL)
    assert watch_streams(namespaces) == (len(controller.watches) + followed) * len(controller.namespaces)


def test_recent_keeps_a_bounded_number_of_servers_valid_while_their_inputs_are_equal() -> None:
    recent: Recent[str] = Recent(size=2)
    recent.put(("ns", "a"), ("uid-a", 1), "built a")
    recent.put(("ns", "b"), ("uid-b", 1), "built b")
    assert recent.get(("ns", "a"), ("uid-a", 1)) == "built a"  # now the most recent
    assert recent.get(("ns", "a"), ("uid-a", 2)) is None, "a new generation is built again"
    assert recent.get(("ns", "a"), ("uid-other", 1)) is None, "a re-created server (new uid) is built again"
    recent.put(("ns", "c"), ("uid-c", 1), "built c")
    assert recent.get(("ns", "b"), ("uid-b", 1)) is None, "the least recent goes first"
    assert recent.get(("ns", "a"), ("uid-a", 1)) == "built a"
    recent.drop(("ns", "a"))
    assert recent.get(("ns", "a"), ("uid-a", 1)) is None


def test_a_running_server_whose_pass_reports_nothing_new_keeps_nothing_derived() -> None:
    """After a restart at 300 servers every first pass is such a pass. Their parsed specs and builds, kept to the
    end of the wave, raised the heap's peak for good: RSS 10 s after the restart 85 -> 78 MiB without them."""
    running = {"phase": "Running", "observedGeneration": 3, "conditions": [{"type": "Ready", "status": "True"}]}
    assert settled(running, dict(running))
    assert not settled({}, running), "it has just turned Running: the write's echo and the pods may follow"
    assert not settled(running, {**running, "observedGeneration": 4}), "an edit was taken up: more may follow"
    assert not settled({"phase": "Pending"}, {"phase": "Pending"}), "converging: its next pass comes soon"

    shared = Shared(cast(Gateway, object()), Cache(), cast(Any, None), cast(Any, None))
    for name in ("a", "b"):
        shared.parsed.put(("ns", name), ("uid", 1), cast(Any, f"parsed {name}"))
        shared.built.put(("ns", name), ("uid", 1), cast(Any, f"built {name}"))
    shared.forget(("ns", "a"))
    assert shared.parsed.get(("ns", "a"), ("uid", 1)) is None and shared.built.get(("ns", "a"), ("uid", 1)) is None
    assert shared.parsed.get(("ns", "b"), ("uid", 1)) and shared.built.get(("ns", "b"), ("uid", 1))
    shared.forget()
    assert shared.parsed.get(("ns", "b"), ("uid", 1)) is None and shared.built.get(("ns", "b"), ("uid", 1)) is None


def test_a_cached_child_is_kept_compact_and_read_back_whole() -> None:
    cache = Cache()
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "demo", "namespace": "ns", "resourceVersion": "42", "managedFields": [{"m": 1}]},
           "spec": {"replicas": 1, "template": {"metadata": {"annotations": {"h": "ü"}}}},
           "status": {"readyReplicas": 1}}
    cache.put_child(STATEFULSETS, sts)
    assert isinstance(cache.children[("statefulsets", "ns", "demo")].raw, bytes)
    read = cache.child(STATEFULSETS, "ns", "demo")
    assert read == {**sts, "metadata": {"name": "demo", "namespace": "ns", "resourceVersion": "42"}}
    assert read is not None
    read["spec"]["replicas"] = 5  # a reader's change never reaches the cache
    assert cache.child(STATEFULSETS, "ns", "demo")["spec"]["replicas"] == 1  # type: ignore[index]
    assert cache.child_version(STATEFULSETS, "ns", "demo") == "42"
    assert cache.child(STATEFULSETS, "ns", "other") is None and cache.child_version(STATEFULSETS, "ns", "x") is None


def test_a_status_event_does_not_parse_the_spec_again_a_new_generation_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    controller = Controller(cast(Gateway, object()))
    parsed: list[int] = []
    validate = DittoServerSpec.model_validate

    def counting(value: Any, *args: Any, **kwargs: Any) -> DittoServerSpec:
        parsed.append(1)
        return validate(value, *args, **kwargs)

    monkeypatch.setattr(DittoServerSpec, "model_validate", counting)

    def server(generation: int, version: str, secret: str, phase: str = "") -> dict[str, Any]:
        return {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
                "metadata": {"namespace": "ns", "name": "demo", "uid": "u1", "generation": generation,
                             "resourceVersion": version},
                "spec": {"storage": {"metadataSize": "1Gi"},
                         "identity": {"jwt": {"secretRef": {"name": secret, "key": "k"}}}},
                "status": {"phase": phase} if phase else {}}

    controller.on_server("ADDED", server(1, "1", "jwt-a"))
    controller.on_server("MODIFIED", server(1, "2", "jwt-a", phase="Running"))
    assert len(parsed) == 1 and controller.cache.server_refs[("ns", "demo")] >= {"jwt-a"}
    controller.on_server("MODIFIED", server(2, "3", "jwt-b"))
    assert len(parsed) == 2
    refs = controller.cache.server_refs[("ns", "demo")]
    assert "jwt-b" in refs and "jwt-a" not in refs


def test_the_heap_trimmer_is_glibcs_malloc_trim_here() -> None:
    trim = trimmer()
    assert trim is not None, "the operator image and this machine use glibc"
    trim()  # returns the freed heap; must not raise


def test_large_blocks_are_kept_out_of_the_heap_here() -> None:
    assert pin_mmap_threshold(), "glibc's mallopt: the operator image and this machine use glibc"


_PACKING = """
import random, resource, sys
from reconciler.cache import Packed
from dittoctl.kube.jsonbytes import dumps
from dittoctl.kube.heap import trimmer

def rss_mib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

random.seed(15)
def child(n):
    env = [{"name": f"E{i}", "value": "y" * random.randint(20, 60)} for i in range(random.randint(5, 80))]
    return {"metadata": {"name": f"x{n}", "resourceVersion": str(n)}, "spec": {"env": env}}

cache, junk, base = {}, [], rss_mib()
for _ in range(10):  # every child replaced ten times, small objects allocated in between (a burst)
    for n in range(2400):
        cache[n] = Packed.of(child(n))
        junk.append(str(n) * 3)
        if len(junk) > 5000:
            del junk[:2500]
trimmer()()
print(sum(len(p.raw) for p in cache.values()) / 2**20, rss_mib() - base)
"""


def test_packed_objects_do_not_fragment_the_heap() -> None:
    """A burst replaces each cached object several times; what stays after a trim is about what is live. With
    orjson's shrunk-in-place buffers kept as they are, it was three times that."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _PACKING], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    live, grown = map(float, out.stdout.split())
    assert 5 < live < 10
    assert grown < 1.5 * live + 2, f"RSS grew {grown:.1f} MiB for {live:.1f} MiB of packed objects"


async def test_freed_memory_is_released_once_after_work_and_never_while_settled() -> None:
    calls: list[int] = []
    done = asyncio.Event()

    async def worker(key: tuple[str, str]) -> float | None:
        await asyncio.sleep(0)
        done.set()
        return None

    controller = Controller(cast(Gateway, object()))
    controller.queue = WorkQueue(worker, concurrency=1)
    controller.trim = lambda: calls.append(controller.queue.passes)
    built = controller.reconciler.shared.built
    controller.queue.start()
    task = asyncio.create_task(controller._release_memory(every=0.02))
    try:
        desired = cast(Any, object())
        built.put(("ns", "demo"), "inputs", desired)
        await asyncio.sleep(0.1)
        assert calls == []  # no pass yet: nothing to release
        assert built.get(("ns", "demo"), "inputs") is desired
        controller.queue.add(("ns", "demo"))
        await asyncio.wait_for(done.wait(), 5)
        await asyncio.sleep(0.1)
        assert calls == [1]  # once after the work, not again while settled
        assert built.get(("ns", "demo"), "inputs") is None  # settled: the builds are dropped
    finally:
        task.cancel()
        await controller.queue.stop()


async def test_an_unchanged_child_is_compared_once_per_build_even_when_the_build_is_remade(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass skips decoding and comparing a cached child whose very version already held the same build; a new
    version (anyone's write) is compared again, and a drifted one is applied."""
    applied: list[dict[str, Any]] = []

    class _Gateway:
        async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
            applied.append(manifest)
            return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": str(len(applied) + 100)}}

    cache = Cache()
    shared = Shared(cast(Gateway, _Gateway()), cache, cast(Any, None), cast(Any, None))
    manifest = stamp_manifest({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "demo-config", "namespace": "ns"}, "data": {"a": "1"}})
    desired = Desired(config_text="", config_hash="", config_map=manifest, services=[], statefulset={})
    cache.put_child(CONFIGMAPS, {**copy.deepcopy(manifest), "metadata": {
        **manifest["metadata"], "resourceVersion": "7", "uid": "c1"}})
    compared: list[int] = []

    def counting(desired: Any, observed: Any) -> bool:
        compared.append(1)
        return needs_apply(desired, observed)

    monkeypatch.setattr(context, "needs_apply", counting)

    memory = Memory()

    def one_pass(build: str = "build-1") -> Pass:
        ctx = Pass(shared, ("ns", "demo"), {"metadata": {"name": "demo"}}, memory, fresh=False)
        ctx.desired, ctx.in_sync = desired, memory.marks(build)  # as Reconciler._desired sets them
        return ctx

    assert await one_pass().apply(manifest) == (False, cache.child(CONFIGMAPS, "ns", "demo-config"))
    assert await one_pass().apply(manifest) == (False, None)
    assert (len(compared), applied) == (1, [])  # the second pass did not even decode it
    drifted = cache.child(CONFIGMAPS, "ns", "demo-config")
    assert drifted is not None
    drifted["data"] = {"a": "2"}
    drifted["metadata"]["resourceVersion"] = "8"
    cache.put_child(CONFIGMAPS, drifted)  # someone's edit arrives on the watch
    written, before = await one_pass().apply(manifest)
    assert written and before == drifted and applied == [manifest] and len(compared) == 2
    assert await one_pass().apply(manifest) == (False, cache.child(CONFIGMAPS, "ns", "demo-config"))
    assert len(compared) == 3  # our write's result is compared once, then trusted
    assert await one_pass().apply(manifest) == (False, None)
    assert await one_pass("build-2").apply(manifest) == (False, cache.child(CONFIGMAPS, "ns", "demo-config"))
    assert len(compared) == 4  # another build (a rotated Secret, a new generation) compares it again


async def test_a_child_known_to_hold_the_build_costs_no_digest_and_any_other_is_stamped_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The applied digest (``stamp_manifest``) is taken by a pass that compares or writes the child, never by one
    that knows the child's very version held this build: in a burst most passes remake the build and find every
    child in sync."""
    applied: list[dict[str, Any]] = []

    class _Gateway:
        async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
            applied.append(manifest)
            return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": "9"}}

    digests: list[str] = []

    def counting(manifest: Any) -> str:
        digests.append(manifest["metadata"]["name"])
        return manifest_hash(manifest)

    monkeypatch.setattr(compare, "manifest_hash", counting)
    cache = Cache()
    shared = Shared(cast(Gateway, _Gateway()), cache, cast(Any, None), cast(Any, None))
    memory = Memory()

    def built() -> dict[str, Any]:  # what each remade build holds: a fresh, unstamped manifest
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "demo-config", "namespace": "ns"},
                "data": {"a": "1"}}

    live = stamp_manifest(built())
    digests.clear()
    cache.put_child(CONFIGMAPS, {**live, "metadata": {**live["metadata"], "resourceVersion": "7"}})

    def one_pass(build: str) -> Pass:
        ctx = Pass(shared, ("ns", "demo"), {"metadata": {"name": "demo"}}, memory, fresh=False)
        ctx.in_sync = memory.marks(build)
        return ctx

    first = built()
    assert (await one_pass("build-1").apply(first))[0] is False
    assert digests == ["demo-config"] and first["metadata"]["annotations"] == live["metadata"]["annotations"]
    again = built()
    assert await one_pass("build-1").apply(again) == (False, None)
    assert digests == ["demo-config"] and "annotations" not in again["metadata"]  # known in sync: no digest
    changed = {**built(), "data": {"a": "2"}}
    assert (await one_pass("build-2").apply(changed))[0] is True
    assert applied == [changed] and APPLIED_ANNOTATION in changed["metadata"]["annotations"]  # written stamped
    assert len(digests) == 2


def test_request_bodies_are_json_and_big_integers_still_go_out() -> None:
    """The gateway encodes bodies itself (orjson); what orjson refuses falls back to json, never fails."""
    body = {"metadata": {"name": "a"}, "spec": {"replicas": 1, "ratio": 0.5, "note": "é"}}
    assert json.loads(dumps(body)) == body
    huge = {"data": {"n": 2**70}}
    assert json.loads(dumps(huge)) == huge


async def test_service_writes_take_a_lane_and_a_full_lane_defers_instead_of_waiting() -> None:
    """At most the lane's size of Service writes are in flight; a pass that finds the lane full does not wait
    (it would hold a worker, and the StatefulSets of the servers behind it): the write is deferred, and the
    server is queued again once a slot frees. Other kinds never take the lane."""
    in_flight: dict[str, int] = {"Service": 0, "StatefulSet": 0}
    peak: dict[str, int] = {"Service": 0, "StatefulSet": 0}
    woken: list[tuple[str, str]] = []

    class _Gateway:
        async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
            kind = manifest["kind"]
            in_flight[kind] += 1
            peak[kind] = max(peak[kind], in_flight[kind])
            await asyncio.sleep(0.02)
            in_flight[kind] -= 1
            return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": "1"}}

    lane = context.Lane(2)
    lane.wake = woken.append
    shared = Shared(cast(Gateway, _Gateway()), Cache(), cast(Any, None), cast(Any, None), service_lane=lane)

    def child(kind: str, name: str) -> dict[str, Any]:
        return {"apiVersion": "v1" if kind == "Service" else "apps/v1", "kind": kind,
                "metadata": {"name": name, "namespace": "ns"}}

    def one_pass(name: str) -> Pass:
        return Pass(shared, ("ns", name), {"metadata": {"name": name}}, Memory(), fresh=True)

    first, second = one_pass("a"), one_pass("b")
    results = await asyncio.gather(
        *(first.apply(child("Service", f"a{i}"), lane=lane) for i in range(2)),
        *(second.apply(child("Service", f"b{i}"), lane=lane) for i in range(2)),
        *(second.apply(child("StatefulSet", f"b{i}")) for i in range(3)), return_exceptions=True)
    deferred = [r for r in results if isinstance(r, context.Deferred)]
    assert [d.name for d in deferred] == ["b0", "b1"]
    assert all(r[0] for r in results if not isinstance(r, BaseException))
    assert peak == {"Service": 2, "StatefulSet": 3}
    # b's pass tells the lane what it left; both slots were free again by then, so they are set aside for b at once
    lane.defer(("ns", "b"), 2)
    assert woken == [("ns", "b")] and lane.free == 0 and not lane.waiting
    assert not lane.enter(("ns", "c"))  # a newcomer does not take b's slots
    assert await second.apply(child("Service", "b0"), lane=lane) == (True, None)
    assert await second.apply(child("Service", "b1"), lane=lane) == (True, None)
    assert lane.free == 2 and lane.held == {("ns", "b"): (0, 1)}
    lane.release(("ns", "b"), started=1)
    assert lane.free == 2 and not lane.held


def test_the_lane_sets_slots_aside_for_the_first_waiting_server_until_all_its_writes_fit() -> None:
    woken: list[tuple[str, str]] = []
    lane = context.Lane(4)
    lane.wake = woken.append
    a, b, c = ("ns", "a"), ("ns", "b"), ("ns", "c")
    assert all(lane.enter(a) for _ in range(4)) and not lane.enter(b)
    lane.defer(b, 3)
    lane.defer(c, 1)
    lane.leave()
    lane.leave()
    assert woken == [] and lane.free == 2  # b needs 3; c, behind it, waits too
    lane.leave()
    assert woken == [b] and lane.held[b] == (3, 1) and lane.free == 0
    lane.leave()
    assert woken == [b, c] and lane.held[c] == (1, 2)


def test_slots_set_aside_go_back_when_the_pass_they_were_for_ends_unused() -> None:
    """Whatever ends the woken pass (its server deleted, an error), unused slots go back; but a pass that began
    before the wake-up keeps them for the pass the wake-up queued."""
    woken: list[tuple[str, str]] = []
    lane = context.Lane(2)
    lane.wake = woken.append
    a, b = ("ns", "a"), ("ns", "b")
    assert lane.enter(a) and lane.enter(a)
    started_before = lane.wakes
    lane.defer(b, 2)
    lane.leave()
    lane.leave()
    assert woken == [b] and lane.held[b] == (2, 1)
    lane.release(b, started=started_before)  # b's deferring pass ends after the wake-up: kept
    assert lane.held[b] == (2, 1) and lane.free == 0
    lane.release(b, started=lane.wakes)  # the woken pass ends without writing (say, the server is gone)
    assert lane.free == 2 and not lane.held
    assert lane.enter(a)



def test_a_server_that_gets_no_pass_holds_no_slot_and_waits_for_none() -> None:
    """Deleted, or its woken pass dropped because the lead was lost: its slots go back, its place in the line
    goes, and the next in line is woken."""
    woken: list[tuple[str, str]] = []
    lane = context.Lane(2)
    lane.wake = woken.append
    a, b, c = ("ns", "a"), ("ns", "b"), ("ns", "c")
    assert lane.enter(a) and lane.enter(a)
    lane.defer(b, 2)
    lane.defer(c, 2)
    lane.leave()
    lane.leave()
    assert woken == [b] and lane.held[b] == (2, 1) and lane.free == 0
    lane.forget(b)  # its pass will not run: c, waiting behind it, gets the slots
    assert woken == [b, c] and b not in lane.held and lane.held[c] == (2, 2)
    lane.forget(c)
    assert lane.free == 2 and not lane.held and not lane.waiting
    assert lane.enter(a) and lane.enter(a)
    lane.defer(b, 1)
    lane.forget(b)  # waiting, not woken yet: gone from the line, and nobody is woken for it
    lane.leave()
    assert not lane.waiting and woken == [b, c] and lane.free == 1

def test_without_a_wake_up_the_lane_only_counts() -> None:
    lane = context.Lane(1)
    assert lane.enter(("ns", "a")) and not lane.enter(("ns", "b"))
    lane.defer(("ns", "b"), 1)
    lane.leave()
    assert lane.enter(("ns", "b"))



def _pod(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "demo-0", "namespace": "ns", "uid": "p1", "resourceVersion": "1",
                         "labels": {INSTANCE_LABEL: "demo"}, "creationTimestamp": "2026-12-03T10:00:00Z"},
            "spec": {"containers": [{"name": "dfs"}]}, "status": status}


def test_a_pod_update_that_changes_nothing_a_pass_reads_wakes_no_pass() -> None:
    """A starting pod is updated several times (scheduled, container started, timestamps, restart counts); a pass
    reads its phase, IP, Ready condition, waiting reasons and identity only, so only those changes queue one."""
    controller = Controller(cast(Gateway, object()))
    controller.cache.put_server({"metadata": {"namespace": "ns", "name": "demo", "resourceVersion": "1"}})
    queued = controller.queue._queued
    controller.on_pod("ADDED", _pod(phase="Pending"))
    assert queued == {("ns", "demo")}
    queued.clear()
    scheduled = _pod(phase="Pending", conditions=[{"type": "PodScheduled", "status": "True"}])
    scheduled["spec"]["nodeName"] = "kwok-node-0"
    controller.on_pod("MODIFIED", scheduled)
    assert not queued, "the schedule alone (a node name, PodScheduled) queues nothing"
    running = {"name": "dfs", "ready": False, "restartCount": 0, "state": {"running": {"startedAt": "t1"}}}
    controller.on_pod("MODIFIED", _pod(phase="Pending", containerStatuses=[running],
                                       conditions=[{"type": "Ready", "status": "False", "lastProbeTime": None}]))
    assert queued == {("ns", "demo")}  # the Ready condition appeared (False)
    queued.clear()
    controller.on_pod("MODIFIED", _pod(phase="Pending", containerStatuses=[{**running, "restartCount": 1}],
                                       conditions=[{"type": "Ready", "status": "False", "lastTransitionTime": "t2"}]))
    assert not queued
    for changed in (_pod(phase="Running", podIP="10.0.0.1", containerStatuses=[running],
                         conditions=[{"type": "Ready", "status": "False"}]),
                    _pod(phase="Running", podIP="10.0.0.1", containerStatuses=[running],
                         conditions=[{"type": "Ready", "status": "True"}]),
                    _pod(phase="Running", podIP="10.0.0.1", conditions=[{"type": "Ready", "status": "True"}],
                         containerStatuses=[{"name": "dfs", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])):
        controller.on_pod("MODIFIED", changed)
        assert queued == {("ns", "demo")}, changed
        queued.clear()
    pods = controller.cache.pods_of("ns", "demo")
    assert pod_problems(pods) == ["pod demo-0 container dfs: CrashLoopBackOff (`kubectl logs demo-0 -n ns -c dfs "
                                  "--previous` says why)"] and pods[0]["status"]["podIP"]
    assert _pod()["metadata"]["name"] == pods[0]["metadata"]["name"]


async def test_a_childs_own_write_coming_back_before_the_response_wakes_no_pass() -> None:
    """The watch may deliver a pass's own write before its response: that echo queues nothing. Anything else seen
    while the write was in flight queues the server again, and the cache keeps the newest version: a later one
    than the echo, else the response. A deletion seen meanwhile drops the cached copy."""
    controller = Controller(cast(Gateway, object()))
    cache = controller.cache
    cache.put_server({"metadata": {"namespace": "ns", "name": "demo", "resourceVersion": "1"}})
    requeued: list[tuple[str, str]] = []
    meanwhile: list[tuple[str, str]] = []  # what the watch delivers during the next write: (event, version)
    fail = False

    class _Gateway:
        async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
            result = {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": "10"}}
            for event, version in meanwhile:
                controller.on_child(CONFIGMAPS, event, {**result, "metadata": {
                    **result["metadata"], "resourceVersion": version}})
            if fail:
                raise RuntimeError("the write failed")
            return result

    shared = Shared(cast(Gateway, _Gateway()), cache, cast(Any, None), cast(Any, None), requeue=requeued.append)

    async def write() -> None:
        manifest = stamp_manifest({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": str(len(requeued))},
                                   "metadata": {"name": "demo-config", "namespace": "ns",
                                                "labels": {INSTANCE_LABEL: "demo"}}})
        cache.drop_child(CONFIGMAPS, ("ns", "demo-config"))
        written, _ = await Pass(shared, ("ns", "demo"), {"metadata": {"name": "demo"}}, Memory(), fresh=True
                                ).apply(manifest)
        assert written and not cache.writing

    meanwhile[:] = [("ADDED", "10")]
    await write()
    assert not requeued and not controller.queue._queued
    assert cache.child_version(CONFIGMAPS, "ns", "demo-config") == "10"
    meanwhile[:] = [("ADDED", "10"), ("MODIFIED", "11")]  # someone's edit right after ours
    await write()
    assert requeued == [("ns", "demo")] and cache.child_version(CONFIGMAPS, "ns", "demo-config") == "11"
    meanwhile[:] = [("MODIFIED", "9")]  # an edit before ours; our echo is still to come
    await write()
    assert requeued == [("ns", "demo")] * 2 and cache.child_version(CONFIGMAPS, "ns", "demo-config") == "10"
    meanwhile[:] = [("ADDED", "10"), ("DELETED", "12")]
    await write()
    assert requeued == [("ns", "demo")] * 3 and cache.child(CONFIGMAPS, "ns", "demo-config") is None
    assert not controller.queue._queued  # the pass itself asks; the watch events did not
    meanwhile[:] = []
    await write()
    assert len(requeued) == 3 and cache.child_version(CONFIGMAPS, "ns", "demo-config") == "10"
    fail, meanwhile[:] = True, [("MODIFIED", "13")]  # a failed write: what the watch said is all we know
    with pytest.raises(RuntimeError):
        await write()
    assert len(requeued) == 4 and cache.child_version(CONFIGMAPS, "ns", "demo-config") == "13"
    assert not cache.writing


async def test_the_servers_own_status_and_finalizer_writes_coming_back_wake_no_pass() -> None:
    """The same for the DittoServer's own writes (its finalizer, its status): the echo queues nothing; a user's
    edit seen during the write is kept and queues a pass; a deletion seen during it drops the server."""
    controller = Controller(cast(Gateway, object()))
    cache = controller.cache
    server = {"metadata": {"namespace": "ns", "name": "demo", "resourceVersion": "1", "generation": 1,
                           "uid": "u1"}, "spec": {}}
    controller.on_server("ADDED", copy.deepcopy(server))
    controller.queue._queued.clear()
    requeued: list[tuple[str, str]] = []
    meanwhile: list[tuple[str, dict[str, Any]]] = []

    class _Gateway:
        async def merge_patch(self, kind: Kind, name: str, patch: dict[str, Any], namespace: str,
                              subresource: str | None = None) -> dict[str, Any]:
            current = cache.server(("ns", "demo")) or {}
            version = str(int(current["metadata"]["resourceVersion"]) + 1)
            result = {**current, **patch, "metadata": {**current["metadata"], **patch.get("metadata", {}),
                                                       "resourceVersion": version}}
            result["metadata"].pop("managedFields", None)
            for event, change in [("MODIFIED", result), *meanwhile]:
                controller.on_server(event, {**result, **change, "metadata": {
                    **result["metadata"], **change.get("metadata", {})}})
            return result

    shared = Shared(cast(Gateway, _Gateway()), cache, cast(Any, None), cast(Any, None), requeue=requeued.append)

    def ctx() -> Pass:
        return Pass(shared, ("ns", "demo"), cache.server(("ns", "demo")) or {}, Memory(), fresh=False)

    await ensure_finalizer(ctx())
    await ctx().write_status({"phase": "Pending"})
    assert not requeued and not controller.queue._queued and not cache.writing
    stored = cache.server(("ns", "demo")) or {}
    assert stored["metadata"]["finalizers"] and stored["status"] == {"phase": "Pending"}
    meanwhile[:] = [("MODIFIED", {"metadata": {"resourceVersion": "99", "generation": 2}, "spec": {"replicas": 0}})]
    await ctx().write_status({"phase": "Running"})
    stored = cache.server(("ns", "demo")) or {}
    assert requeued == [("ns", "demo")] and stored["spec"] == {"replicas": 0} and not controller.queue._queued
    meanwhile[:] = [("DELETED", {"metadata": {"resourceVersion": "100"}})]
    await ctx().write_status({"phase": "Failed"})
    assert requeued == [("ns", "demo")] * 2 and cache.server(("ns", "demo")) is None


def test_a_generated_secret_coming_back_on_the_watch_wakes_no_pass() -> None:
    """A Secret whose digests the cache already holds (one a pass just generated and stored) queues nothing; a
    changed value, a deletion or a first sighting does."""
    controller = Controller(cast(Gateway, object()))
    cache = controller.cache
    cache.set_refs(("ns", "demo"), ["demo-jwt"])
    cache.put_server({"metadata": {"namespace": "ns", "name": "demo", "resourceVersion": "1"}})
    secret = {"metadata": {"namespace": "ns", "name": "demo-jwt", "resourceVersion": "5"}, "data": {"k": "YQ=="}}
    controller.on_secret("ADDED", secret)
    assert controller.queue._queued == {("ns", "demo")}
    controller.queue._queued.clear()
    controller.on_secret("MODIFIED", {**secret, "metadata": {**secret["metadata"], "resourceVersion": "6"}})
    assert not controller.queue._queued
    for version, (event, data) in enumerate((("MODIFIED", {"k": "Yg=="}), ("DELETED", {"k": "Yg=="}),
                                              ("ADDED", {"k": "Yg=="})), start=7):
        controller.on_secret(event, {"metadata": {**secret["metadata"], "resourceVersion": str(version)},
                                     "data": data})
        assert controller.queue._queued == {("ns", "demo")}, event
        controller.queue._queued.clear()


def test_a_drift_tick_skips_servers_a_pass_compared_in_the_last_half_interval() -> None:
    """In a burst, the servers busy anyway get no extra pass from the timer; settled, the timer's own passes
    (begun right after the previous tick) never hide a server from the next one; a changed answer about the
    optional APIs queues every server."""
    a, b, c = ("ns", "a"), ("ns", "b"), ("ns", "c")
    interval, now = 30.0, 1000.0
    since = now - interval / 2
    compared = {a: now - 2.0, b: now - interval + 0.5}  # a: an event's pass just now; b: the last tick's pass
    assert due_for_drift([a, b, c], compared, since=since) == [b, c]
    assert due_for_drift([a, b, c], compared, since=since, everything=True) == [a, b, c]
    assert due_for_drift([a], {a: since}, since=since) == []


def test_a_statefulset_status_update_wakes_a_pass_only_when_what_a_pass_derives_moves() -> None:
    """The controller-manager counting a pod the pod watch already showed ready changes nothing a pass reads;
    a count the pods do not prove yet, a rollout's progress, or any change outside the status does."""
    def sts(generation: int = 1, **status: Any) -> dict[str, Any]:
        return {"metadata": {"name": "demo", "namespace": "ns", "generation": generation, "resourceVersion": "1",
                             "labels": {INSTANCE_LABEL: "demo"}},
                "spec": {"replicas": 1},
                "status": {"observedGeneration": generation, "replicas": 1, "updateRevision": "r1",
                           "currentRevision": "r1", "updatedReplicas": 1, **status}}

    def moved(new: dict[str, Any]) -> dict[str, Any]:
        return {**new, "metadata": {**new["metadata"], "resourceVersion": "2"}}

    ready_pod = {"metadata": {"name": "demo-0", "labels": {"controller-revision-hash": "r1"}},
                 "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    counted = moved(sts(readyReplicas=1, availableReplicas=1))
    assert statefulset_news(None, counted)
    assert not statefulset_news(sts(), counted, [ready_pod])  # the pods already showed it
    assert statefulset_news(sts(), counted)  # news: no pod showed it
    assert not statefulset_news(sts(), moved(sts(currentReplicas=1)), [ready_pod])  # a field no pass reads
    assert statefulset_news(sts(), moved({**sts(), "status": {**sts()["status"], "replicas": 2}}), [ready_pod])
    rolled = sts(generation=2)
    assert statefulset_news({**rolled, "status": {**rolled["status"], "observedGeneration": 1}}, moved(rolled),
                            [ready_pod])  # the controller saw the new generation: a rollout can be done
    relabelled = moved(sts())
    relabelled["metadata"] = {**relabelled["metadata"], "annotations": {"a": "b"}}
    assert statefulset_news(sts(), relabelled, [ready_pod])
    # The controller-manager counting the pod it just created, which the pod watch already showed: no news (once
    # per new server, 11 % of the 300 burst's passes). Stopped, the raw count is what the phase reads: news.
    pending_pod = {"metadata": {"name": "demo-0", "labels": {"controller-revision-hash": "r1"}}, "status": {}}
    created = sts(replicas=0, updatedReplicas=0)
    assert not statefulset_news(created, moved(sts(currentReplicas=1)), [pending_pod])
    assert statefulset_news(created, moved(sts(currentReplicas=1)))  # news: no pod showed it
    draining = {**sts(), "spec": {"replicas": 0}}
    gone = {**draining, "status": {**draining["status"], "replicas": 0}}
    assert statefulset_news(draining, moved(gone))
    assert not statefulset_news(draining, moved(draining))


def test_a_server_waiting_for_its_service_lane_is_queued_only_by_changes_to_what_it_owns() -> None:
    """Its last pass left Service writes for the lane and wrote no status; the pass its wake-up queues reads every
    pod and StatefulSet anew. Until then a pod event or a StatefulSet's status queues nothing (in the 300 burst
    ~350 such passes deferred again and wrote nothing), but a change outside the StatefulSet's status, a deletion
    and the wake-up itself do; once woken, the server's pods queue passes again."""
    controller = Controller(cast(Gateway, object()))
    key = ("ns", "demo")
    controller.cache.put_server({"metadata": {"namespace": "ns", "name": "demo", "resourceVersion": "1"}})
    queued = controller.queue._queued
    lane = controller.reconciler.shared.service_lane
    while lane.enter(("ns", "other")):
        pass  # another server's Service writes fill the lane
    lane.defer(key, 4)
    assert key in lane.waiting and not queued

    controller.on_pod("ADDED", _pod(phase="Pending"))
    controller.on_pod("MODIFIED", _pod(phase="Running", podIP="10.0.0.1",
                                       conditions=[{"type": "Ready", "status": "True"}]))
    meta = {"name": "demo", "namespace": "ns", "generation": 1, "labels": {INSTANCE_LABEL: "demo"}}
    sts = {"metadata": {**meta, "resourceVersion": "1"}, "spec": {"replicas": 1}, "status": {"replicas": 0}}
    controller.on_child(STATEFULSETS, "ADDED", sts)
    queued.clear()  # a first sighting is news
    counted = {**sts, "metadata": {**meta, "resourceVersion": "2"}, "status": {"replicas": 1, "readyReplicas": 1}}
    controller.on_child(STATEFULSETS, "MODIFIED", counted)
    assert not queued
    # The cache still follows: the wake-up's pass reads the pod ready and the StatefulSet's new status.
    assert controller.cache.pods_of(*key)[0]["status"]["podIP"] == "10.0.0.1"
    assert (controller.cache.child(STATEFULSETS, *key) or {})["status"] == counted["status"]

    edited = {**counted, "metadata": {**meta, "resourceVersion": "3"}, "spec": {"replicas": 2}}
    controller.on_child(STATEFULSETS, "MODIFIED", edited)
    assert queued == {key}  # drift: the pass puts the StatefulSet back without waiting for the lane
    queued.clear()
    controller.on_child(STATEFULSETS, "DELETED", edited)
    assert queued == {key}
    queued.clear()

    while key in lane.waiting:
        lane.leave()  # the other server's writes end: slots are set aside for this one, and it is woken
    assert queued == {key}
    queued.clear()
    controller.on_pod("MODIFIED", _pod(phase="Running", podIP="10.0.0.2",
                                       conditions=[{"type": "Ready", "status": "True"}]))
    assert queued == {key}


class _Session:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def test_a_deleted_server_leaves_no_memory_and_a_new_one_of_its_name_starts_afresh() -> None:
    """Per-server memory (and its DittoFS session) was freed only by a pass that found the server gone, and
    none was queued on DELETED: it stayed, ~2.5 KiB (+25 KiB with a session) per deleted server, and a new
    server of that name inherited it (its predecessor's reported states hid its own events)."""
    controller = Controller(cast(Gateway, object()))
    reconciler, key = controller.reconciler, ("ns", "demo")
    server = {"metadata": {"namespace": "ns", "name": "demo", "resourceVersion": "1", "uid": "u1"}, "spec": {}}
    controller.on_server("ADDED", copy.deepcopy(server))
    first = await reconciler.memory_for(key, "u1")
    first.waiting, first.fileservice = "Secret admin not found", _Session()
    assert await reconciler.memory_for(key, "u1") is first
    controller.queue._queued.clear()

    controller.on_server("DELETED", copy.deepcopy(server))
    assert key in controller.queue._queued, "the pass that frees it is queued"
    assert await reconciler.reconcile(key) is None
    assert key not in reconciler.memory and first.fileservice.closed

    # Re-created under the same name before any pass saw it gone: a new uid gets nothing of the old one.
    reconciler.memory[key] = first
    first.fileservice = _Session()
    second = await reconciler.memory_for(key, "u2")
    assert second is not first and second.uid == "u2" and second.waiting is None and first.fileservice.closed


async def test_stopping_closes_every_dittofs_session() -> None:
    controller = Controller(cast(Gateway, object()))
    sessions = [_Session() for _ in range(3)]
    for i, session in enumerate(sessions):
        memory = await controller.reconciler.memory_for(("ns", f"s{i}"), f"u{i}")
        memory.fileservice = session
    await controller.stop()
    assert all(s.closed for s in sessions) and controller.reconciler.memory == {}
