"""The validating admission webhook: AdmissionReview v1 over HTTPS (aiohttp, on the operator's loop).

`AdmissionHandler` turns a request body into a response (transport-free, so it is easy to test);
`WebhookServer` serves it over TLS from a hot-reloading `CertificateSource`. Malformed requests get
HTTP 400 with a reason; nothing a client sends produces a 500.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import Counter

from certs.source import CertificateInfo, CertificateSource
from dittoctl.api.conditions import EventReason
from dittoctl.api.facts import ClusterFacts
from dittoctl.api.models import API_VERSION, GROUP, KIND, MAX_NESTING
from dittoctl.api.parsed import ParsedSpec, parse_spec
from dittoctl.api.rules import Verdict, validate
from dittoctl.kube.events import EventType
from dittoctl.kube.logs import Sparse, described, fields
from webhook import metrics

log = logging.getLogger("dittofs.webhook")

WEBHOOK_PATH = "/validate-dittofs-dittofs-com-v1alpha1-dittoserver"
# The configuration's matchConditions (the chart's and the test bed's): only writes that touch the spec reach us.
MATCH_CONDITIONS = [{"name": "spec-changed", "expression": "request.operation != 'UPDATE' || !has(oldObject.spec) "
                     "|| !has(object.spec) || object.spec != oldObject.spec"}]
ADMISSION_API_VERSION = "admission.k8s.io/v1"
# The apiserver caps objects at ~1.5 MiB; an UPDATE review carries two of them plus the envelope.
MAX_BODY = 3 * 1024 * 1024
# The API server keeps its connections to the webhook open between admissions, each with asyncio's 256 KiB TLS
# read buffer here: a 300-server burst left 25 of them, 6 MiB of RSS, for aiohttp's default of 75 s. Go's client
# drops a pooled connection once it sees our close, so a shorter keep-alive costs a handshake. It does not retry a
# POST written into a connection we close at that very moment (Go retries only requests it wrote nothing of):
# a rare race, traded for the memory; the apiserver's own idle timeout is 90 s.
KEEPALIVE_SECONDS = 15.0
# The apiserver sends a review in one go and gives up after the webhook's timeoutSeconds (<= 30 s). A body still
# arriving after this long is a client holding the connection (aiohttp times out headers, never a body): 700
# such connections held 445 MiB, past the pod's memory limit.
BODY_SECONDS = 10.0
HANDSHAKE_SECONDS = 5.0  # a TLS handshake on loopback or in-cluster takes milliseconds
# Closing a TLS connection waits this long for the peer's close_notify (the event loop's default of 30 s kept an
# idle connection, and its 256 KiB read buffer, three times as long as keep-alive).
SHUTDOWN_SECONDS = 2.0
# Requests served at once; more are answered 429 at once, so a flood of them cannot take the process's memory
# (the reconciler's too). A 300-server burst peaks far below.
MAX_IN_FLIGHT = 256
# Request bodies being received at once, in declared bytes (a chunked one counts as MAX_BODY). Each costs ~1.8x its
# size while it arrives: 40 slow 3 MiB bodies took 215 MiB within a second, 256 would pass the pod's limit. The
# apiserver's reviews are a few KiB each.
BODY_BUDGET = 8 * MAX_BODY
# Bodies declared this small (every review the apiserver sends) stay outside that budget: 8 connections declaring
# 3 MiB and sending one byte had every admission answered 429 (MAX_IN_FLIGHT bounds them: ~30 MiB at most).
SMALL_BODY = 64 * 1024
# 429s say when to come back: client-go retries a request answered 429 only when the answer has Retry-After.
RETRY_AFTER = {"Retry-After": "1"}
# After an answer to a request whose body was not read (refused above), aiohttp reads and drops the rest for up to
# this long before it closes the connection (10 s by default: the slow client's hold, doubled).
LINGER_SECONDS = 1.0
# ValidationFailed Events: a burst of this many, then one per EVENT_SECONDS. Anything that reaches the port can
# send a review naming any namespace (the apiserver is not the only possible caller): it must not be able to
# have the operator write Events without bound. The denial itself always reaches the caller.
EVENT_BURST = 25
EVENT_SECONDS = 1.0
# A request that fails to be read (the client went away mid-body) is logged at most this often.
UNREADABLE_LOG_SECONDS = 60.0



class _Site(web.SockSite):
    """aiohttp's SockSite with a bound on the TLS handshake: the event loop's default of 60 s let connections that
    never finish one pile up (~52 KiB each), beyond keep-alive's reach."""

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog,
            ssl_handshake_timeout=HANDSHAKE_SECONDS, ssl_shutdown_timeout=SHUTDOWN_SECONDS)


def _listening_socket(host: str, port: int) -> socket.socket:
    """``host`` "": every address, on one dual-stack socket where the kernel has IPv6 (an IPv6-only or IPv6-first
    cluster reaches the pod by its IPv6 address), else IPv4's."""
    if not host:
        if socket.has_dualstack_ipv6():
            return socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=512)
        host = "0.0.0.0"  # noqa: S104 - the kernel has no IPv6
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=512)


class FactProvider(Protocol):
    async def facts_for(self, obj: Mapping[str, Any], *, namespace: str | None = None,
                        old: Mapping[str, Any] | None = None, parsed: ParsedSpec | None = None) -> ClusterFacts: ...


class EventSink(Protocol):
    async def post(self, regarding: Mapping[str, Any], type_: EventType, reason: EventReason, message: str) -> bool: ...


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class BadRequest(Exception):
    """The body is not an AdmissionReview v1 we can answer (HTTP 400)."""


class Refused(Exception):
    """Not served, and the connection closed: too many at once (429), a body too slow (408)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AdmissionHandler:
    """AdmissionReview in, AdmissionReview out. Runs the fact lookups and the shared rules."""

    def __init__(self, facts: FactProvider | None = None, recorder: EventSink | None = None, *,
                 facts_timeout: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.facts = facts
        self.recorder = recorder
        self.facts_timeout = facts_timeout  # lookups are 2 s-bounded and parallel; stays inside timeoutSeconds
        self._pending: set[asyncio.Task[Any]] = set()
        self._clock = clock
        self._event_tokens, self._event_refilled = float(EVENT_BURST), clock()
        self._events_dropped = 0

    async def review(self, body: bytes) -> dict[str, Any]:
        """The response AdmissionReview for `body`; raises BadRequest for malformed input."""
        request = parse_review(body)
        try:
            response = await self.decide(request)
        except BadRequest:
            raise
        except RecursionError:  # an object nested past the interpreter's stack: the user's to fix, not a 500
            response = {"allowed": False, "status": {
                "status": "Failure", "code": 422, "reason": "Invalid",
                "message": "the object nests too deeply to be examined; no DittoServer field needs more than "
                           f"{MAX_NESTING} levels"}}
        except Exception:  # a bug must not become a 500 or let the object through unexamined
            log.exception("admission failed", extra=fields(**_who(request)))
            response = {"allowed": False, "status": {
                "status": "Failure", "code": 500, "reason": "InternalError",
                "message": "internal error in the dittofs-operator webhook; see the operator log"}}
        response["uid"] = request["uid"]
        return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}

    async def decide(self, request: Mapping[str, Any]) -> dict[str, Any]:
        operation = request.get("operation")
        if operation in ("DELETE", "CONNECT"):
            return {"allowed": True}  # deletion never depends on the webhook
        if operation not in ("CREATE", "UPDATE"):
            raise BadRequest(f"request.operation must be CREATE, UPDATE, DELETE or CONNECT "
                             f"(got {str(operation)[:60]!r})")
        kind = request.get("kind")
        if isinstance(kind, Mapping) and (kind.get("group"), kind.get("kind")) != (GROUP, KIND):
            # A misconfigured rule must not turn into an outage for other resources.
            log.warning("admission request for a foreign kind allowed", extra=fields(kind=str(kind)[:253]))
            return {"allowed": True}
        if request.get("subResource"):
            return {"allowed": True}  # status writes are the operator's own
        obj = request.get("object")
        if not isinstance(obj, Mapping):
            raise BadRequest(f"request.object must be an object for {operation}")
        meta = obj.get("metadata")
        if isinstance(meta, Mapping) and meta.get("deletionTimestamp"):
            return {"allowed": True}  # finalizer removal during deletion must always pass
        old = request.get("oldObject") if operation == "UPDATE" else None
        namespace = request.get("namespace") if isinstance(request.get("namespace"), str) else None
        previous = old if isinstance(old, Mapping) else None
        if previous is not None and "spec" in previous and obj.get("spec") == previous.get("spec"):
            # The rules read the spec alone, and ratchet what an UPDATE did not change: a metadata-only write
            # (labels, the operator's finalizer) is allowed anyway. The configuration's matchConditions keep
            # the apiserver from even sending it; this covers a configuration without them.
            return {"allowed": True}
        # Parsed once: the fact lookups read its references, the rules the rest (a parse is ~30 us).
        parsed = parse_spec(obj.get("spec"))
        facts = await self._facts(obj, namespace, previous, parsed)
        verdict = validate(obj, previous, facts, parsed=parsed)
        response: dict[str, Any] = {"allowed": verdict.allowed}
        if verdict.warnings:
            response["warnings"] = verdict.warnings
        if not verdict.allowed:
            response["status"] = denial_status(verdict, obj)
            log.info("admission denied", extra=fields(**_who(request, obj), errors=len(verdict.errors)))
            if request.get("dryRun") is not True:
                self._post_event(obj, namespace, response["status"]["message"])
        else:
            log.debug("admission allowed", extra=fields(**_who(request, obj), warnings=len(verdict.warnings)))
        return response

    async def _facts(self, obj: Mapping[str, Any], namespace: str | None,
                     old: Mapping[str, Any] | None, parsed: ParsedSpec) -> ClusterFacts:
        if self.facts is None:
            return ClusterFacts.offline()
        try:
            async with asyncio.timeout(self.facts_timeout):
                return await self.facts.facts_for(obj, namespace=namespace, old=old, parsed=parsed)
        except TimeoutError:
            log.warning("cluster fact lookups timed out; validating without them")
            return ClusterFacts()

    def _event_allowed(self) -> bool:
        now = self._clock()
        self._event_tokens = min(float(EVENT_BURST), self._event_tokens + (now - self._event_refilled) / EVENT_SECONDS)
        self._event_refilled = now
        if self._event_tokens < 1:
            self._events_dropped += 1
            if self._events_dropped == 1 or self._events_dropped % 1000 == 0:
                log.warning("ValidationFailed events dropped: more denials than the event rate allows",
                            extra=fields(dropped=self._events_dropped))
            return False
        self._event_tokens -= 1
        self._events_dropped = 0  # the next flood is logged again
        return True

    def _post_event(self, obj: Mapping[str, Any], namespace: str | None, message: str) -> None:
        if self.recorder is None or not self._event_allowed():
            return
        meta = _metadata(obj)
        regarding_meta = {"name": meta.get("name"), "namespace": meta.get("namespace") or namespace}
        if meta.get("uid"):  # absent on CREATE: the Event then refers to the object by name/namespace
            regarding_meta["uid"] = meta["uid"]
        regarding = {"apiVersion": API_VERSION, "kind": KIND, "metadata": regarding_meta}
        # Posted in the background: the admission answer must not wait for an Event write.
        task = asyncio.create_task(self.recorder.post(regarding, "Warning", EventReason.VALIDATION_FAILED, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        """Wait for events still being posted (tests, shutdown)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


def parse_review(body: bytes) -> dict[str, Any]:
    """Check the envelope of an AdmissionReview v1 request; BadRequest names what is wrong."""
    if len(body) > MAX_BODY:
        raise BadRequest(f"request body is larger than {MAX_BODY} bytes")
    try:
        review = orjson.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(review, dict):
        raise BadRequest("request body must be a JSON object (an AdmissionReview)")
    if review.get("apiVersion") != ADMISSION_API_VERSION or review.get("kind") != "AdmissionReview":
        raise BadRequest(f"expected apiVersion {ADMISSION_API_VERSION} and kind AdmissionReview "
                         f"(got {str(review.get('apiVersion'))[:60]!r}, {str(review.get('kind'))[:60]!r})")
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadRequest("AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadRequest("request.uid is missing")
    return request


def denial_status(verdict: Verdict, obj: Mapping[str, Any]) -> dict[str, Any]:
    """A metav1.Status like the apiserver's own validation errors: 422 Invalid with one cause per field.

    kubectl renders that as `The DittoServer "x" is invalid:` followed by one "* field: message" line per
    cause; other clients see `message`, every error joined with "; ".
    """
    meta = _metadata(obj)
    causes = [{"type": "FieldValueInvalid", "field": e.path, "message": e.message} for e in verdict.errors]
    return {
        "status": "Failure", "code": 422, "reason": "Invalid",
        "message": "; ".join(verdict.messages),
        "details": {"name": str(meta.get("name") or ""), "group": GROUP, "kind": KIND, "causes": causes},
    }


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _who(request: Mapping[str, Any], obj: Mapping[str, Any] | None = None) -> dict[str, Any]:
    # request.name is empty on a CREATE; the object's own metadata names it then.
    name = request.get("name") or (_metadata(obj).get("name") if isinstance(obj, Mapping) else None)
    # Any caller can write these: bounded to what Kubernetes allows a name (253), not the body's 3 MiB.
    return {"namespace": str(request.get("namespace") or "")[:253], "name": str(name or "")[:253],
            "operation": str(request.get("operation") or "")[:16]}


class WebhookServer:
    """HTTPS listener for the admission handler. Also starts/stops the `services` it depends on."""

    def __init__(
        self,
        handler: AdmissionHandler,
        certs: CertificateSource,
        *,
        host: str = "",  # every address: the apiserver reaches the pod through its Service, IPv4 or IPv6
        port: int = 9443,
        path: str = WEBHOOK_PATH,
        services: Sequence[Service] = (),
    ) -> None:
        self.handler = handler
        self.certs = certs
        self.host = host
        self.port = port
        self.path = path
        self.services = list(services)
        self._runner: web.AppRunner | None = None
        self._listening = False
        # The path's metric children, looked up once: labels() takes a lock and hashes its values each time.
        self._in_flight = metrics.IN_FLIGHT.labels(path)
        self._latency = metrics.LATENCY.labels(path)
        self._answered: dict[int, Counter] = {}  # status -> its counter, made on first use
        self._unreadable = Sparse(UNREADABLE_LOG_SECONDS)
        self._serving = 0
        self._receiving = 0  # declared bytes of the bodies being read
        self._draining = False

    def drain(self) -> None:
        """Stopping soon: every answer closes its connection. The apiserver pools connections per Service and
        keeps using one to this pod after its endpoint is gone; closed by us at the stop while it sent a review
        (a POST, never retried), that admission failed with EOF. Closed after an answer instead, the next review
        dials again, and reaches a pod that stays."""
        self._draining = True

    @property
    def ready(self) -> bool:
        """Listening with a valid certificate loaded."""
        return self._listening and self.certs.ready

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(self.path, self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        self._in_flight.inc()
        self._serving += 1
        status = 200
        try:
            if self._serving > MAX_IN_FLIGHT:
                raise Refused(429, f"more than {MAX_IN_FLIGHT} admission requests at once; retry")
            if request.content_length is not None and request.content_length > MAX_BODY:
                raise BadRequest(f"request body is larger than {MAX_BODY} bytes")
            if request.content_type != "application/json":
                raise BadRequest(f"Content-Type must be application/json (got {request.content_type[:60]})")
            size = request.content_length if request.content_length is not None else MAX_BODY
            size = 0 if size <= SMALL_BODY else size
            if self._receiving + size > BODY_BUDGET:
                raise Refused(429, "too many large admission requests arriving at once; retry")
            self._receiving += size
            try:
                async with asyncio.timeout(BODY_SECONDS):
                    body = await request.read()
            except TimeoutError:
                raise Refused(408, f"request body not received within {BODY_SECONDS:g} s") from None
            finally:
                self._receiving -= size
            review = await self.handler.review(body)
            answer = web.Response(body=orjson.dumps(review), content_type="application/json")
            if self._draining:
                answer.force_close()
            return answer
        except BadRequest as exc:
            status = 400
            bad = web.Response(status=400, text=str(exc))
            if self._draining:
                bad.force_close()
            return bad
        except Refused as exc:
            status = exc.status
            refused = web.Response(status=exc.status, text=str(exc),
                                   headers=RETRY_AFTER if exc.status == 429 else None)
            refused.force_close()  # the unread body would keep the connection
            return refused
        except web.HTTPRequestEntityTooLarge:
            status = 400
            return web.Response(status=400, text=f"request body is larger than {MAX_BODY} bytes")
        except Exception as exc:  # e.g. the client went away mid-body; still never a 500
            status = 400
            if (left_out := self._unreadable.due()) is not None:
                log.warning("unreadable admission request", extra=fields(error=described(exc), left_out=left_out))
            return web.Response(status=400, text="request could not be read")
        finally:
            self._serving -= 1
            self._in_flight.dec()
            if (answered := self._answered.get(status)) is None:
                answered = self._answered[status] = metrics.REQUESTS.labels(self.path, str(status))
            answered.inc()
            self._latency.observe(time.perf_counter() - started)

    async def start(self) -> None:
        """Bind and serve. Without a certificate the port is open but handshakes are refused (not ready)."""
        self.certs.on_load(_expiry_metric)
        await self.certs.start()
        for service in self.services:
            await service.start()
        sock = _listening_socket(self.host, self.port)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]  # the real port when 0 was asked for
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=5.0,
                                     keepalive_timeout=KEEPALIVE_SECONDS, lingering_time=LINGER_SECONDS)
        await self._runner.setup()
        await _Site(self._runner, sock, ssl_context=self.certs.server_context()).start()
        self._listening = True
        log.info("webhook listening", extra=fields(host=self.host, port=self.port, path=self.path,
                                             certificate_loaded=self.certs.ready))

    async def stop(self) -> None:
        self._listening = False
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.handler.flush()
        for service in reversed(self.services):
            await service.stop()
        await self.certs.stop()


def _expiry_metric(info: CertificateInfo) -> None:
    metrics.CERT_EXPIRY.set(info.not_after.timestamp())
