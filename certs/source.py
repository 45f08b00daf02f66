"""Serving certificate from a directory (tls.crt + tls.key), hot-reloaded without dropping requests.

How the swap works: the listener is created once with a *front* SSLContext that holds no certificate;
its `sni_callback` runs on every ClientHello (also without SNI, as when the apiserver dials an IP) and
points the connection at the current context (`ssl_object.context = current`). A reload builds a brand
new context, loads and checks the pair there, and only then replaces the reference. This was chosen over
calling `load_cert_chain` on the live context because that call is not atomic: it installs the new
certificate before it checks the key, so a bad pair would leave the live context broken, and a pair that
changes between checking and loading could slip in. With the swap, a half-written or mismatched pair is
simply never installed, in-flight handshakes keep the context they started with, and the listener (and its
keep-alive connections) never restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dittoctl.kube.background import Background
from dittoctl.kube.logs import fields

log = logging.getLogger("dittofs.certs")
_Signature = tuple[tuple[int, int, int, int, int], ...]


@dataclass(frozen=True)
class CertificateInfo:
    """What was loaded (never the key)."""

    subject: str
    serial: int
    not_before: datetime
    not_after: datetime
    sha256: str


class CertificateError(ValueError):
    """The files do not hold a usable certificate/key pair."""


def tls_context() -> ssl.SSLContext:
    """A server context with our settings: TLS >= 1.2, HTTP/1.1 via ALPN (aiohttp does not speak h2)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key and block the loop.
    return b""


def check_pair(cert_pem: bytes, key_pem: bytes) -> CertificateInfo:
    """Parse and match a PEM chain and key; raises CertificateError naming the problem."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise CertificateError(f"certificate is not valid PEM ({exc})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"private key is not a valid unencrypted PEM key ({exc})") from None
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (leaf.public_key().public_bytes(serialization.Encoding.DER, spki)
            != key.public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise CertificateError("private key does not match the certificate")
    return CertificateInfo(
        subject=leaf.subject.rfc4514_string(), serial=leaf.serial_number,
        not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc,
        sha256=hashlib.sha256(cert_pem + b"\0" + key_pem).hexdigest(),
    )


class CertificateSource:
    """Polls `cert_dir` and serves the newest valid pair through `server_context()`."""

    def __init__(
        self,
        cert_dir: str | Path,
        *,
        cert_file: str = "tls.crt",
        key_file: str = "tls.key",
        interval: float = 1.0,
        full_check_every: int = 10,
    ) -> None:
        self.cert_path = Path(cert_dir) / cert_file
        self.key_path = Path(cert_dir) / key_file
        self.interval = interval
        self.full_check_every = full_check_every
        self._context: ssl.SSLContext | None = None
        self._info: CertificateInfo | None = None
        self._seen: _Signature | None = None
        self._polls = 0
        self._last_problem: str | None = None
        self._listeners: list[Callable[[CertificateInfo], None]] = []
        self._front: ssl.SSLContext | None = None
        self._loop = Background("webhook-certificate-reload", self._poll)

    # -- state -------------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._context is not None

    @property
    def context(self) -> ssl.SSLContext | None:
        """The context of the pair currently served (None until a valid pair was loaded)."""
        return self._context

    @property
    def info(self) -> CertificateInfo | None:
        return self._info

    def on_load(self, listener: Callable[[CertificateInfo], None]) -> None:
        """Call `listener` after every successful (re)load, and now if a pair is loaded already."""
        self._listeners.append(listener)
        if self._info is not None:
            listener(self._info)

    def server_context(self) -> ssl.SSLContext:
        """The context to give the listener, once; it always serves the current pair."""
        if self._front is None:
            front = tls_context()
            front.sni_callback = self._select
            self._front = front
        return self._front

    def _select(self, conn: ssl.SSLObject, server_name: str | None, front: ssl.SSLContext) -> int | None:
        current = self._context
        if current is None:
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE  # no certificate yet: refuse cleanly
        conn.context = current
        return None

    # -- polling -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        if not self._loop.running:
            self.reload()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.reload()
            except Exception:  # never let the poller die: the next poll may succeed
                log.exception("certificate reload failed")

    def _signature(self) -> _Signature | None:
        try:
            stats = [os.stat(self.cert_path), os.stat(self.key_path)]  # follows kubelet's ..data symlinks
        except OSError:
            return None
        return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns) for s in stats)

    def reload(self) -> bool:
        """Load the pair if it changed and is valid; True when a new pair is now served."""
        self._polls += 1
        if self.full_check_every and self._polls % self.full_check_every == 0:
            self._seen = None  # re-read now and then: a same-size rewrite within one mtime tick is invisible
        signature = self._signature()
        if signature is None:
            self._problem(f"waiting for {self.cert_path} and {self.key_path}")
            return False
        if signature == self._seen:
            return False
        self._seen = signature
        try:
            context, info = self._build()
        except (OSError, ValueError, ssl.SSLError) as exc:
            what = "keeping the current certificate" if self._context else "webhook stays not ready"
            self._problem(f"ignoring certificate files ({exc}); {what}")
            return False
        if self._info is not None and info.sha256 == self._info.sha256:
            return False
        self._context, self._info, self._last_problem = context, info, None
        log.info("webhook certificate loaded", extra=fields(
            subject=info.subject, serial=f"{info.serial:x}", not_after=info.not_after.isoformat()))
        if info.not_after <= datetime.now(UTC):
            log.warning("webhook certificate has expired", extra=fields(not_after=info.not_after.isoformat()))
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                listener(info)
        return True

    def _build(self) -> tuple[ssl.SSLContext, CertificateInfo]:
        cert_pem, key_pem = self.cert_path.read_bytes(), self.key_path.read_bytes()
        info = check_pair(cert_pem, key_pem)
        context = tls_context()
        context.load_cert_chain(self.cert_path, self.key_path, password=_no_password)
        # load_cert_chain re-reads the files: make sure it saw the bytes that were just checked.
        if (self.cert_path.read_bytes(), self.key_path.read_bytes()) != (cert_pem, key_pem):
            raise CertificateError("files changed while loading; retrying on the next poll")
        return context, info

    def _problem(self, message: str) -> None:
        if message != self._last_problem:  # log each distinct problem once, not once per poll
            self._last_problem = message
            log.warning(message, extra=fields(cert_dir=str(self.cert_path.parent)))
