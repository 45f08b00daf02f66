"""Structured logging: one JSON object per line, with namespace/name when known."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime

from aiohttp.http_exceptions import HttpProcessingError

from dittoctl.kube.jsonbytes import dumps

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def fields(**values: object) -> dict[str, object]:
    """`log.info(msg, extra=fields(namespace=..., name=...))`: LogRecord reserves `name`, so the
    structured fields travel in one attribute and the formatter unpacks them."""
    return {"fields": values}


_ABOUT: ContextVar[tuple[str, str] | None] = ContextVar("dittofs_log_object", default=None)


@contextlib.contextmanager
def about(namespace: str, name: str) -> Iterator[None]:
    """Lines logged within (and by the tasks started within) name this object unless they name one: a pass's
    DittoFS calls log through a client that knows only an address."""
    token = _ABOUT.set((namespace, name))
    try:
        yield
    finally:
        _ABOUT.reset(token)


def _structured(record: logging.LogRecord) -> dict[str, object]:
    values = dict(getattr(record, "fields", None) or {})
    current = _ABOUT.get()
    if current is not None and "name" not in values and "namespace" not in values:
        values["namespace"], values["name"] = current
    return values


def described(exc: BaseException, limit: int = 300) -> str:
    """An error as logs, events and /readyz show it: its type and message, bounded."""
    return f"{type(exc).__name__}: {exc}"[:limit]


class Sparse:
    """A line that whoever reaches a port can cause, written at most once per ``every`` seconds with how many
    were left out before it: else any client could fill the log."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._every, self._clock = every, clock
        self._next = float("-inf")
        self._left_out = 0

    def due(self) -> int | None:
        """None: leave this one out; else write it, saying how many were left out since the last."""
        now = self._clock()
        if now < self._next:
            self._left_out += 1
            return None
        self._next = now + self._every
        left_out, self._left_out = self._left_out, 0
        return left_out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = dict(vars(record))
        extra.pop("fields", None)
        structured = _structured(record)
        for key, value in extra.items():
            if key not in _RESERVED and not key.startswith("_") and key not in entry:
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        for key, value in structured.items():
            entry.setdefault(key, value if isinstance(value, (str, int, float, bool, type(None))) else str(value))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human lines that still name the object: `... applied ConfigMap apps/demo-config action=create`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        structured = {k: _one_line(v) for k, v in _structured(record).items()}
        namespace, name = structured.pop("namespace", None), structured.pop("name", None)
        if name is not None:
            line += f" {namespace}/{name}" if namespace else f" {name}"
        elif namespace is not None:
            line += f" namespace={namespace}"
        return line + "".join(f" {key}={value}" for key, value in structured.items())


def _one_line(value: object) -> object:
    """A field value as one line: names and kinds may come from whoever reaches the webhook, and a newline in
    them would forge a log line."""
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        return value.encode("unicode_escape").decode("ascii")
    return value


class _ClientHttpErrors(logging.Filter):
    """aiohttp logs each malformed HTTP request (already answered 400) as an ERROR with a traceback: any client
    that reaches the webhook port could fill the log with them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], HttpProcessingError))


_CLIENT_HTTP_ERRORS = _ClientHttpErrors()


class _KopfRetries(logging.Filter):
    """kopf logs each request it retries at ERROR ("Request attempt #1/9 failed; will retry"), routine while a CRD
    is applied (the apiserver answers 429 as its storage re-initialises): a WARNING here, so that an alert on
    ERROR records fires when kopf gives up ("escalating"), not on every upgrade (a real-node session)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.levelno == logging.ERROR and record.name.startswith("kopf.") and isinstance(record.msg, str)
                and "failed; " in record.msg and "; will re" in record.msg):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_KOPF_RETRIES = _KopfRetries()


def configure(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_KOPF_RETRIES)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Neither format shows them; each record would look them up (3 % of the CPU of a 300-server burst went to
    # our log lines).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root.setLevel(level.upper())
    # kopf is chatty at INFO about every watch event; our own logs say what happened.
    kopf_level = os.environ.get("DITTOFS_KOPF_LOG_LEVEL", "").upper()  # troubleshooting kopf's own machinery
    known = kopf_level in logging.getLevelNamesMapping()
    logging.getLogger("kopf").setLevel(kopf_level if known else max(logging.WARNING, root.level))
    if kopf_level and not known:
        logging.getLogger("dittofs").warning(f"DITTOFS_KOPF_LOG_LEVEL={kopf_level!r} is not a log level; using "
                                             "WARNING (DEBUG, INFO, WARNING or ERROR)")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if _CLIENT_HTTP_ERRORS not in (server := logging.getLogger("aiohttp.server")).filters:
        server.addFilter(_CLIENT_HTTP_ERRORS)
    # The client's DEBUG lines carry whole response bodies (Secrets included, base64): never below INFO,
    # whatever --log-level says. Our own lines say which call failed.
    for noisy in ("kubernetes_asyncio", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
