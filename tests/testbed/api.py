"""A tiny synchronous Kubernetes REST client (``http.client`` + ``ssl``), for the test bed's own use.

It exists so that readiness checks and the fake PV provisioner can run without spawning ``kubectl`` every
half second and without adding a dependency. One keep-alive HTTPS connection per client, guarded by a lock.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import urllib.parse
from pathlib import Path
from typing import Any


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status
        self.body = body


class ApiClient:
    def __init__(
        self,
        base_url: str,
        ca_file: Path,
        cert_file: Path,
        key_file: Path,
        timeout: float = 15.0,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme != "https" or parts.hostname is None:
            raise ValueError(f"expected an https:// URL, got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 443
        self.timeout = timeout
        self._ctx = ssl.create_default_context(cafile=str(ca_file))
        self._ctx.load_cert_chain(str(cert_file), str(key_file))
        self._conn: http.client.HTTPSConnection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=self.timeout)
        return self._conn

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """Send one request; returns (status, decoded JSON or text). Retries once on a dead connection."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        with self._lock:
            for attempt in (1, 2):
                reused = self._conn is not None
                conn = self._connection()
                try:
                    conn.request(method, path, body=data, headers=headers)
                    resp = conn.getresponse()
                    raw = resp.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    self._conn = None
                    # A keep-alive connection the server closed (e.g. across an apiserver restart) fails
                    # on first use; retry once on a fresh one. A fresh connection failing is real.
                    if attempt == 2 or not reused:
                        raise
                    continue
                if resp.getheader("Content-Type", "").startswith("application/json"):
                    return resp.status, json.loads(raw or b"null")
                return resp.status, raw.decode("utf-8", "replace")
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (),
             content_type: str = "application/json") -> Any:
        """Like ``request`` but raise ``ApiError`` unless the status is 2xx or listed in ``ok``."""
        status, payload = self.request(method, path, body, content_type)
        if 200 <= status < 300 or status in ok:
            return payload
        raise ApiError(method, path, status, payload)

    def get(self, path: str) -> Any:
        return self.call("GET", path)
