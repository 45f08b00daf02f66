"""Structured JSON logs carry namespace/name (LogRecord reserves `name`, hence `fields`)."""

from __future__ import annotations

import json
import logging

import pytest

from dittoctl.kube.logs import JsonFormatter, TextFormatter, about, fields


def test_fields_are_unpacked_into_the_json_line() -> None:
    record = logging.LogRecord("dittofs.test", logging.INFO, __file__, 1, "applied %s", ("Service",), None)
    for key, value in fields(namespace="ns", name="demo-api", action="create").items():
        setattr(record, key, value)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "applied Service"
    assert (entry["namespace"], entry["name"], entry["action"]) == ("ns", "demo-api", "create")
    assert entry["logger"] == "dittofs.test" and entry["level"] == "info"


def test_a_line_logged_during_a_pass_names_its_server_unless_it_names_an_object() -> None:
    """The DittoFS client knows only an address: its lines, logged within a pass, name the pass's server
    (an exploratory session could not tell which server 'dittofs create user demo' was for)."""
    def line(formatter: logging.Formatter, **named: object) -> str:
        record = logging.LogRecord("dittoctl.dittofs", logging.INFO, __file__, 1, "dittofs create user bob", (), None)
        for key, value in fields(**named).items():
            setattr(record, key, value)
        return formatter.format(record)

    with about("apps", "demo"):
        entry = json.loads(line(JsonFormatter()))
        assert (entry["namespace"], entry["name"]) == ("apps", "demo")
        assert line(TextFormatter()).endswith("dittofs create user bob apps/demo")
        assert json.loads(line(JsonFormatter(), namespace="apps", name="demo-api"))["name"] == "demo-api"
    assert "namespace" not in json.loads(line(JsonFormatter()))  # outside a pass: nothing added


def test_any_field_value_makes_a_json_line() -> None:
    record = logging.LogRecord("dittofs.test", logging.INFO, __file__, 1, "héllo", (), None)
    for key, value in fields(big=2**70, other=object, text="ü").items():
        setattr(record, key, value)
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["msg"], entry["big"], entry["text"]) == ("héllo", 2**70, "ü")
    assert entry["other"] == "<class 'object'>"


def test_logging_with_fields_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    """`name` is a LogRecord attribute: passed as a plain extra it would raise when the record is made, so the
    logger must really make one (INFO enabled) and the fields must be on it."""
    caplog.set_level(logging.INFO, logger="dittofs.test")
    logging.getLogger("dittofs.test").info("x", extra=fields(name="n", namespace="ns"))
    [record] = [r for r in caplog.records if r.name == "dittofs.test"]
    assert (record.getMessage(), getattr(record, "fields", None)) == ("x", {"name": "n", "namespace": "ns"})
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["logger"], entry["name"], entry["namespace"]) == ("dittofs.test", "n", "ns")


def test_text_lines_name_the_object() -> None:
    record = logging.LogRecord("dittofs.test", logging.INFO, __file__, 1, "applied %s", ("Service",), None)
    for key, value in fields(namespace="apps", name="demo-api", action="create").items():
        setattr(record, key, value)
    line = TextFormatter().format(record)
    assert line.endswith(" INFO dittofs.test applied Service apps/demo-api action=create"), line


def test_a_text_line_stays_one_line_whatever_a_caller_names() -> None:
    record = logging.LogRecord("dittofs.webhook", logging.INFO, __file__, 1, "admission denied", (), None)
    for key, value in fields(namespace="apps", name="x\n2026-12-07 INFO forged", kind="a\rb").items():
        setattr(record, key, value)
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line
    assert line.endswith(" apps/x\\n2026-12-07 INFO forged kind=a\\rb"), line


def test_debug_logging_never_lets_the_client_log_response_bodies() -> None:
    from dittoctl.kube.logs import configure

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure("DEBUG", "text")
        client = logging.getLogger("kubernetes_asyncio.client.rest")
        assert not client.isEnabledFor(logging.DEBUG), "response bodies (Secrets) would reach the log"
        assert logging.getLogger("dittofs.reconciler").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name in ("kubernetes_asyncio", "urllib3", "kopf", "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_a_clients_malformed_http_is_not_an_error_with_a_traceback_but_other_errors_are() -> None:
    """aiohttp answers a bad Content-Length with a 400 and logs it as an ERROR with a traceback: a client
    that reaches the webhook port could fill the log with them."""
    from aiohttp.http_exceptions import BadHttpMessage

    from dittoctl.kube.logs import configure

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    server = logging.getLogger("aiohttp.server")
    try:
        configure("INFO", "json")
        configure("INFO", "json")
        assert len(server.filters) == 1, "installed once"

        def record(exc: BaseException) -> logging.LogRecord:
            return server.makeRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (),
                                     (type(exc), exc, None))

        assert not server.filter(record(BadHttpMessage("Content-Length can't be present with Transfer-Encoding")))
        assert server.filter(record(RuntimeError("a handler of ours failed")))
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        server.filters.clear()
        for name in ("kubernetes_asyncio", "urllib3", "kopf", "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_a_request_kopf_retries_is_a_warning_and_one_it_gives_up_on_an_error() -> None:
    """kopf logs each retried request at ERROR; the apiserver answers 429 while a CRD is applied, so every
    upgrade wrote ERROR lines an alert on ERROR records would fire on (a real-node session)."""
    from dittoctl.kube.logs import configure

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure("INFO", "json")
        [handler] = root.handlers
        kopf = logging.getLogger("kopf._cogs.clients.watching")

        def level(message: str, name: str = kopf.name) -> str:
            record = kopf.makeRecord(name, logging.ERROR, __file__, 1, message, (), None)
            assert handler.filter(record)
            return str(json.loads(handler.format(record))["level"])

        what = "GET /apis/dittofs.dittofs.com/v1alpha1/dittoservers?watch=true"
        assert level(f"Request attempt #1/9 failed; will retry: {what} -> APITooManyRequestsError(429)") == "warning"
        assert level(f"Request attempt #2/9 failed; TCP closed; will re-authenticate: {what}") == "warning"
        assert level(f"Request attempt #9/9 failed; escalating: {what} -> APIForbiddenError(403)") == "error"
        assert level("Request attempt #1/9 failed; will retry: x", name="dittofs.main") == "error", "ours stay"
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name in ("kubernetes_asyncio", "urllib3", "kopf", "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.NOTSET)
