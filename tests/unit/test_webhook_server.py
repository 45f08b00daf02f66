"""The admission server over real TLS on 127.0.0.1 (certificates from certs.selfsigned)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from certs.selfsigned import new_ca
from certs.source import CertificateSource
from dittoctl.api.models import API_VERSION
from dittoctl.cli import parser
from dittoctl.kube.logs import Sparse
from tests.support.admission import (
    FakeFacts,
    FakeRecorder,
    client_context,
    denial_causes,
    dittoserver,
    review,
    write_pair,
)
from tests.support.connections import Connections
from tests.support.poll import until
from tests.support.strategies import spec_strategy
from webhook import server as server_module
from webhook.server import (
    MAX_BODY,
    WEBHOOK_PATH,
    AdmissionHandler,
    BadRequest,
    WebhookServer,
)


class Harness:
    def __init__(self, server: WebhookServer, session: aiohttp.ClientSession, facts: FakeFacts,
                 recorder: FakeRecorder, connections: Connections) -> None:
        self.server, self.session, self.facts, self.recorder = server, session, facts, recorder
        self.connections = connections  # what the session opened

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}{WEBHOOK_PATH}"

    async def post(self, body: Any, *, raw: bytes | None = None,
                   content_type: str = "application/json") -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.session.post(self.url, data=data, headers={"Content-Type": content_type}) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if resp.content_type == "application/json" else text)

    async def respond(self, body: Any) -> dict[str, Any]:
        status, answer = await self.post(body)
        assert status == 200, answer
        assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
        response: dict[str, Any] = answer["response"]
        return response


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    ca = new_ca()
    write_pair(tmp_path / "certs", ca)
    facts, recorder = FakeFacts(), FakeRecorder()
    server = WebhookServer(AdmissionHandler(facts, recorder), CertificateSource(tmp_path / "certs", interval=0.05),
                           host="127.0.0.1", port=0)
    await server.start()
    assert server.ready
    connections = Connections()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(ca)),
                                     trace_configs=[connections.trace]) as session:
        yield Harness(server, session, facts, recorder, connections)
    await server.stop()
    assert not server.ready


# -- answers --------------------------------------------------------------------------------------------------
async def test_valid_object_is_allowed(harness: Harness) -> None:
    response = await harness.respond(review(dittoserver()))
    assert response == {"uid": "1234-uid", "allowed": True}
    assert harness.facts.calls[0][1] == "team"
    await harness.server.handler.flush()
    assert harness.recorder.posted == []


async def test_invalid_object_is_denied_with_every_message(harness: Harness) -> None:
    spec = {"storage": {"metadataSize": "lots", "storageClassName": "gold", "cacheSize": "1Gi"},
            "adapters": {"nfs": {"port": 8080}}, "replicas": 3}
    response = await harness.respond(review(dittoserver(spec)))
    assert response["uid"] == "1234-uid"
    assert response["allowed"] is False
    status = response["status"]
    assert (status["code"], status["reason"], status["status"]) == (422, "Invalid", "Failure")
    fields = [c["field"] for c in status["details"]["causes"]]
    assert fields == ["spec.replicas", "spec.storage.metadataSize", "spec.adapters.nfs.port",
                      "spec.storage.storageClassName"]
    assert status["message"] == "; ".join(f"{c['field']}: {c['message']}" for c in status["details"]["causes"])
    assert status["details"]["kind"] == "DittoServer" and status["details"]["name"] == "demo"
    assert response["warnings"][0].startswith("spec.storage.cacheSize: rename it to contentSize")
    await harness.server.handler.flush()
    [(regarding, type_, reason, message)] = harness.recorder.posted
    assert (type_, reason, message) == ("Warning", "ValidationFailed", status["message"])
    assert regarding["metadata"] == {"name": "demo", "namespace": "team"}  # no uid on CREATE
    assert (regarding["apiVersion"], regarding["kind"]) == (API_VERSION, "DittoServer")


async def test_update_denial_event_carries_the_uid_and_rule_12(harness: Harness) -> None:
    old = dittoserver(uid="u-1")
    new = dittoserver({"storage": {"metadataSize": "512Mi"}}, uid="u-1")
    response = await harness.respond(review(new, operation="UPDATE", old=old))
    assert not response["allowed"]
    assert response["status"]["message"].startswith("spec.storage.metadataSize: cannot shrink a volume "
                                                    "(was '1Gi', now '512Mi')")
    await harness.server.handler.flush()
    assert harness.recorder.posted[0][0]["metadata"]["uid"] == "u-1"


async def test_dry_run_denial_posts_no_event(harness: Harness) -> None:
    response = await harness.respond(review(dittoserver({"replicas": 7}), dry_run=True))
    assert response["allowed"] is False
    await harness.server.handler.flush()
    assert harness.recorder.posted == []


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
async def test_deletes_are_always_allowed(harness: Harness, operation: str) -> None:
    response = await harness.respond(review(None, operation=operation))
    assert response == {"uid": "1234-uid", "allowed": True}


async def test_objects_being_deleted_are_always_allowed(harness: Harness) -> None:
    obj = dittoserver({"replicas": "garbage"}, deletionTimestamp="2024-01-01T00:00:00Z")
    response = await harness.respond(review(obj, operation="UPDATE", old=obj))
    assert response["allowed"] is True
    assert harness.facts.calls == []


async def test_metadata_only_updates_are_allowed_without_lookups(harness: Harness) -> None:
    """What the configuration's matchConditions skip, for a configuration without them: the rules would ratchet
    an unchanged spec anyway, so no lookup is made and nothing is judged."""
    old = dittoserver({"replicas": 7}, uid="u-1")
    new = dittoserver({"replicas": 7}, uid="u-1", finalizers=["dittofs.dittofs.com/finalizer"])
    assert (await harness.respond(review(new, operation="UPDATE", old=old)))["allowed"] is True
    assert harness.facts.calls == []
    changed = dittoserver({"replicas": 9}, uid="u-1")
    assert (await harness.respond(review(changed, operation="UPDATE", old=old)))["allowed"] is False
    assert len(harness.facts.calls) == 1


async def test_foreign_kinds_and_subresources_are_allowed(harness: Harness) -> None:
    body = review({"spec": "whatever"})
    body["request"]["kind"] = {"group": "", "version": "v1", "kind": "Pod"}
    assert (await harness.respond(body))["allowed"] is True
    body = review(dittoserver({"replicas": 9}), operation="UPDATE")
    body["request"]["subResource"] = "status"
    assert (await harness.respond(body))["allowed"] is True


async def test_internal_failure_denies_with_a_message_not_a_500(harness: Harness) -> None:
    harness.facts.fail = True
    response = await harness.respond(review(dittoserver()))
    assert response["allowed"] is False
    assert response["status"]["code"] == 500
    assert "operator log" in response["status"]["message"]



def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"weight": 1}
    for _ in range(depth - 1):
        node = {"k": node}
    return node


@pytest.mark.parametrize(("depth", "field", "fragment"), [
    (40, "spec.affinity", "nests deeper than 32 levels"),
    (900, "spec", "nests too deeply to be examined"),  # past the interpreter's stack, within orjson's 1024
])
async def test_an_object_nested_too_deep_is_denied_naming_the_field_not_a_500(
        harness: Harness, depth: int, field: str, fragment: str) -> None:
    for spec in ({"storage": {"metadataSize": "1Gi"}, "affinity": _nested(depth)},
                 {"storage": {"metadataSize": "lots"}, "affinity": _nested(depth)}):
        response = await harness.respond(review(dittoserver(spec)))
        assert response["allowed"] is False and response["status"]["code"] == 422, response["status"]
        causes = response["status"]["details"]["causes"]
        assert any(c["field"] == field and fragment in c["message"] for c in causes), causes
    # 32 levels are a Kubernetes shape still (an affinity is ~10): judged field by field (here, `k` is no field of
    # an affinity), not refused for its depth.
    judged = await harness.respond(review(dittoserver({"storage": {"metadataSize": "1Gi"},
                                                       "affinity": _nested(32)})))
    causes = judged["status"]["details"]["causes"]
    assert [c["field"] for c in causes] == ["spec.affinity.k"] and "nests" not in str(causes), causes

# -- malformed requests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}}',
     "admission.k8s.io/v1"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "Pod", "request": {"uid": "x"}}', "AdmissionReview"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "no request"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}}',
     "uid"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 7}}', "uid"),
    (json.dumps(review("not an object")).encode(), "request.object"),
    # Any other operation was allowed unexamined: the webhook failed open on a malformed review.
    (json.dumps(review(None, operation="create")).encode(), "request.operation must be CREATE, UPDATE"),
    (json.dumps(review(None, operation=None)).encode(), "request.operation must be CREATE, UPDATE"),  # type: ignore[arg-type]
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b"", "not valid JSON"),
])
async def test_malformed_requests_get_400_with_a_reason(harness: Harness, raw: bytes, reason: str) -> None:
    status, text = await harness.post(None, raw=raw)
    assert status == 400
    assert reason in text


async def test_huge_body_gets_400(harness: Harness) -> None:
    big = review(dittoserver({"storage": {"metadataSize": "1Gi"}, "podAnnotations": {"a": "x" * MAX_BODY}}))
    status, text = await harness.post(big)
    assert status == 400
    assert "larger than" in text


async def test_wrong_content_type_gets_400(harness: Harness) -> None:
    status, text = await harness.post(review(dittoserver()), content_type="text/plain")
    assert (status, "Content-Type" in text) == (400, True)


async def test_metrics_count_requests_by_code(harness: Harness) -> None:
    def count(code: str) -> float:
        return REGISTRY.get_sample_value("controller_runtime_webhook_requests_total",
                                         {"webhook": WEBHOOK_PATH, "code": code}) or 0.0

    ok, bad = count("200"), count("400")
    await harness.respond(review(dittoserver()))
    await harness.post(None, raw=b"nope")
    assert (count("200"), count("400")) == (ok + 1, bad + 1)
    assert REGISTRY.get_sample_value("controller_runtime_webhook_latency_seconds_count",
                                     {"webhook": WEBHOOK_PATH})
    expiry = REGISTRY.get_sample_value("dittofs_operator_webhook_certificate_expiration_timestamp_seconds")
    assert expiry is not None and expiry > 0


@contextlib.asynccontextmanager
async def _serving(tmp_path: Path) -> AsyncIterator[tuple[WebhookServer, ssl.SSLContext]]:
    """A started server with its own CA, and a client context trusting it."""
    ca = new_ca()
    write_pair(tmp_path / "certs", ca)
    server = WebhookServer(AdmissionHandler(FakeFacts(), FakeRecorder()),
                           CertificateSource(tmp_path / "certs", interval=0.05), host="127.0.0.1", port=0)
    await server.start()
    try:
        yield server, client_context(ca)
    finally:
        await server.stop()


async def _held(port: int, context: ssl.SSLContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that sends its headers and 10 of the 1000 bytes it announced, then waits."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    writer.write(f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: 1000\r\n\r\n{\"apiVersi".encode())
    await writer.drain()
    return reader, writer


async def test_a_body_that_never_arrives_is_answered_408_and_its_connection_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp times out headers, never a body: 700 connections holding one open took 445 MiB."""
    monkeypatch.setattr(server_module, "BODY_SECONDS", 0.3)
    monkeypatch.setattr(server_module, "MAX_IN_FLIGHT", 2)
    async with _serving(tmp_path) as (server, context):
        held = [await _held(server.port, context) for _ in range(2)]
        await asyncio.sleep(0.05)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            url = f"https://127.0.0.1:{server.port}{WEBHOOK_PATH}"
            async with session.post(url, json=review(dittoserver())) as resp:
                assert resp.status == 429 and "more than 2 admission requests at once" in await resp.text()
            for reader, writer in held:
                answer = await asyncio.wait_for(reader.read(), 5)  # up to EOF: the server closed it
                assert answer.startswith(b"HTTP/1.1 408 ") and b"not received within 0.3 s" in answer
                writer.close()
            async with session.post(url, json=review(dittoserver())) as resp:
                assert resp.status == 200, "the slots are given back"


async def test_large_bodies_arriving_at_once_are_bounded_in_bytes(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Slow 3 MiB bodies, each ~1.8x its size while it arrives: a few dozen passed the pod's memory limit before
    MAX_IN_FLIGHT stopped them. The declared bytes being received are bounded instead."""
    monkeypatch.setattr(server_module, "BODY_SECONDS", 2.0)
    monkeypatch.setattr(server_module, "BODY_BUDGET", 2000)  # two bodies of 1000 bytes (_held), not three
    monkeypatch.setattr(server_module, "SMALL_BODY", 999)
    async with _serving(tmp_path) as (server, context):
        held = [await _held(server.port, context) for _ in range(2)]
        await asyncio.sleep(0.05)
        third = await _held(server.port, context)
        answer = await asyncio.wait_for(third[0].read(), 5)
        assert answer.startswith(b"HTTP/1.1 429 ") and b"too many large admission requests" in answer
        assert b"\r\nRetry-After: 1\r\n" in answer, "client-go retries a 429 only when told when"
        third[1].close()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            url = f"https://127.0.0.1:{server.port}{WEBHOOK_PATH}"
            body = json.dumps(review(dittoserver())).encode()
            assert len(body) <= 999
            # A review of the apiserver's size is served while the budget is full: 8 connections declaring 3 MiB
            # and sending one byte had every admission answered 429.
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == 200
        for reader, writer in held:
            assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 408 ")
            writer.close()
        assert server._receiving == 0, "the bytes are given back"


async def test_a_connection_that_never_finishes_its_handshake_is_closed(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's default handshake timeout is 60 s: idle TCP connections (~52 KiB each) piled up until then."""
    monkeypatch.setattr(server_module, "HANDSHAKE_SECONDS", 0.3)
    async with _serving(tmp_path) as (server, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # TCP only, no ClientHello
        assert await asyncio.wait_for(reader.read(), 5) == b"", "closed by the server"
        writer.close()


async def test_keep_alive_connection_serves_many_requests(harness: Harness) -> None:
    for _ in range(50):
        assert (await harness.respond(review(dittoserver())))["allowed"]
    assert harness.connections.opened == 1, "all 50 requests went over one kept-alive connection"


async def test_a_draining_server_closes_each_connection_after_its_answer(harness: Harness) -> None:
    """Stopping: the apiserver's pooled connection to this pod must not be closed under a review it sends (a POST
    it never retries: the admission failed with EOF), so each answer closes its own connection instead."""
    assert (await harness.respond(review(dittoserver())))["allowed"]
    harness.server.drain()
    async with harness.session.post(harness.url, data=json.dumps(review(dittoserver())).encode(),
                                    headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 200 and resp.headers.get("Connection", "").lower() == "close"
    for _ in range(3):
        assert (await harness.respond(review(dittoserver())))["allowed"]
    # The kept-alive connection carried the first draining answer and closed; each later answer had its own.
    assert harness.connections.opened == 4, harness.connections.opened


# -- readiness without a certificate --------------------------------------------------------------------------
async def test_server_without_certificate_is_not_ready_until_one_appears(tmp_path: Path) -> None:
    server = WebhookServer(AdmissionHandler(), CertificateSource(tmp_path / "empty", interval=0.05),
                           host="127.0.0.1", port=0)
    await server.start()
    try:
        assert not server.ready
        ca = new_ca()
        connector = aiohttp.TCPConnector(ssl=client_context(ca), force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            url = f"https://127.0.0.1:{server.port}{WEBHOOK_PATH}"
            with pytest.raises(aiohttp.ClientError):
                await session.post(url, json=review(dittoserver()))
            write_pair(tmp_path / "empty", ca)
            for _ in range(100):
                if server.ready:
                    break
                await asyncio.sleep(0.05)
            assert server.ready
            async with session.post(url, json=review(dittoserver())) as resp:
                assert resp.status == 200
                assert (await resp.json())["response"]["allowed"] is True
    finally:
        await server.stop()


async def test_tls_1_2_is_the_minimum(harness: Harness) -> None:
    assert harness.server.certs.server_context().minimum_version == ssl.TLSVersion.TLSv1_2
    current = harness.server.certs.context
    assert current is not None and current.minimum_version == ssl.TLSVersion.TLSv1_2
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1; the server must say no
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await asyncio.open_connection("127.0.0.1", harness.server.port, ssl=old)
    tls12 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls12.check_hostname, tls12.verify_mode = False, ssl.CERT_NONE
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    _, writer = await asyncio.open_connection("127.0.0.1", harness.server.port, ssl=tls12)
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    writer.close()


# -- fuzz: no input makes the handler crash -------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=15)
objects = st.just(dittoserver()) | json_values | st.builds(dittoserver, json_values) | st.builds(
    dittoserver, spec_strategy())
well_formed = st.builds(
    lambda op, obj, old, dry: review(obj, operation=op, old=old, dry_run=dry),
    st.sampled_from(["CREATE", "UPDATE", "DELETE"]), objects, st.none() | objects, st.booleans())
envelopes = st.fixed_dictionaries({
    "apiVersion": st.sampled_from(["admission.k8s.io/v1", "v1"]) | json_values,
    "kind": st.just("AdmissionReview") | json_values,
    "request": st.fixed_dictionaries({"uid": st.just("u") | json_values}, optional={
        "operation": st.sampled_from(["CREATE", "UPDATE", "DELETE"]) | json_values, "object": objects,
        "oldObject": objects, "dryRun": json_values, "namespace": json_values, "kind": json_values,
        "subResource": json_values,
    }) | json_values,
})
reviews = well_formed | envelopes


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=reviews | json_values)
async def test_handler_answers_or_rejects_every_input(body: Any) -> None:
    handler = AdmissionHandler(FakeFacts(), FakeRecorder())
    try:
        answer = await handler.review(json.dumps(body).encode())
    except BadRequest as exc:
        reason = str(exc)
        assert reason  # a 400 always says why
        return
    response = answer["response"]
    assert isinstance(response["allowed"], bool)
    assert response.get("status", {}).get("code") != 500, response
    if not response["allowed"]:
        denial_causes(response)  # every cause names a field path and says what is wrong
    await handler.flush()


async def test_denial_events_are_rate_limited() -> None:
    """Whatever reaches the port can send reviews naming any namespace: the Events they cause are bounded (a
    burst, then one per EVENT_SECONDS), while every denial still reaches its caller."""
    now = [1000.0]
    recorder = FakeRecorder()
    handler = AdmissionHandler(FakeFacts(), recorder, clock=lambda: now[0])

    async def deny(count: int) -> None:
        for i in range(count):
            body = json.dumps(review(dittoserver({"replicas": 7}, name=f"s{i}"), uid=f"u{i}")).encode()
            assert (await handler.review(body))["response"]["allowed"] is False
        await handler.flush()

    await deny(server_module.EVENT_BURST + 10)
    assert len(recorder.posted) == server_module.EVENT_BURST
    now[0] += 3 * server_module.EVENT_SECONDS
    await deny(10)
    assert len(recorder.posted) == server_module.EVENT_BURST + 3


async def test_requests_abandoned_mid_body_are_answered_but_logged_sparsely(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Whoever reaches the port can abandon requests mid-body as fast as it likes: each is still answered and
    counted, but the log gets one line per UNREADABLE_LOG_SECONDS, saying how many it left out."""
    def unreadable() -> list[Any]:
        return [r for r in caplog.records if r.getMessage() == "unreadable admission request"]

    def abandoned() -> float:
        return REGISTRY.get_sample_value("controller_runtime_webhook_requests_total",
                                         {"webhook": WEBHOOK_PATH, "code": "400"}) or 0.0

    async def abandon(port: int, context: ssl.SSLContext, count: int) -> None:
        for _ in range(count):
            _, writer = await _held(port, context)
            await asyncio.sleep(0.05)  # the server is reading the body
            writer.transport.abort()
        await until(lambda: abandoned() >= before + count, timeout=5)  # answered once the server sees it gone

    now = [1000.0]
    monkeypatch.setattr(server_module, "Sparse", lambda every: Sparse(every, clock=lambda: now[0]))
    async with _serving(tmp_path) as (server, context):
        before = abandoned()
        await abandon(server.port, context, 3)
        assert [r.fields["left_out"] for r in unreadable()] == [0]
        now[0] += server_module.UNREADABLE_LOG_SECONDS
        before = abandoned()
        await abandon(server.port, context, 2)
        assert [r.fields["left_out"] for r in unreadable()] == [0, 2]


@pytest.mark.parametrize("host", [None, "::", "[::]"])
async def test_by_default_the_webhook_answers_on_ipv6_and_ipv4(tmp_path: Path, host: str | None) -> None:
    """The apiserver of an IPv6-only or IPv6-first cluster reaches the webhook Service's IPv6 address: on IPv4
    alone, with failurePolicy Fail, every DittoServer create or update was refused. "::" means every address too
    (as in Go): it listened on IPv6 alone, and "[::]" did not resolve."""
    assert socket.has_dualstack_ipv6(), "this machine has no IPv6 loopback: the test cannot show anything"
    if host is not None:  # the health listener's address is read the same way
        assert parser().parse_args(["run", f"--health-host={host}"]).health_host == ""
    ca = new_ca()
    write_pair(tmp_path / "certs", ca)
    server = WebhookServer(AdmissionHandler(FakeFacts(), FakeRecorder()),
                           CertificateSource(tmp_path / "certs", interval=0.05), port=0,
                           # None: the default the chart's pod runs with
                           host=parser().parse_args(["run", *([] if host is None else [f"--webhook-host={host}"])
                                                     ]).webhook_host)
    await server.start()
    try:
        for host in ("127.0.0.1", "::1"):
            _, writer = await asyncio.open_connection(host, server.port, ssl=client_context(ca),
                                                      server_hostname="localhost")
            writer.close()
            await writer.wait_closed()
    finally:
        await server.stop()


async def test_a_closed_connection_whose_client_never_answers_is_dropped_soon(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """After keep-alive closes an idle connection, the event loop waited 30 s for the client's close_notify:
    each connection (with its 256 KiB TLS read buffer) was held three times as long as keep-alive says."""
    monkeypatch.setattr(server_module, "KEEPALIVE_SECONDS", 0.2)
    monkeypatch.setattr(server_module, "SHUTDOWN_SECONDS", 0.3)
    async with _serving(tmp_path) as (server, context):
        def silent_client() -> float:
            """Handshakes and sends one request, then reads raw TCP: never answers the server's close_notify.
            Returns the seconds from the server's close_notify to its FIN."""
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
                incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
                tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
                while True:
                    try:
                        tls.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        raw.sendall(outgoing.read())
                        incoming.write(raw.recv(65536))
                raw.sendall(outgoing.read())
                body = json.dumps(review(dittoserver())).encode()
                tls.write(f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                raw.sendall(outgoing.read())
                answered: float | None = None
                while raw.recv(65536):
                    answered = answered or time.monotonic()  # the answer, then close_notify at keep-alive's end
                    last = time.monotonic()
                assert answered is not None
                return time.monotonic() - last

        held = await asyncio.to_thread(silent_client)
    assert held < 2.0, f"FIN {held:.1f} s after close_notify"
