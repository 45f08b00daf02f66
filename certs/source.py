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
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (the ssl module has no name for it): an expired pair is still described.
_NO_CHECK_TIME = 0x200000
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")


def load_pair(cert_path: Path, key_path: Path) -> tuple[ssl.SSLContext, CertificateInfo]:
    """A serving context for the pair, and the certificate it shows a TLS client; raises CertificateError naming
    the problem.

    The certificate is read by a TLS handshake in memory against the new context, not by an X.509 library: it
    proves the pair serves (a client that trusts the chain accepts it for server auth, whatever the clock
    says), and it keeps `cryptography` out of the serving process (~11 MiB of RSS and 30 ms of start, issue 15).
    """
    cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False  # the names are the apiserver's to check; the pair is ours
    client.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | _NO_CHECK_TIME
    # Only the PEM blocks: text around them (`openssl pkcs12`'s "Bag Attributes", a UTF-8 friendlyName) is what
    # OpenSSL skips too, but would not pass as the ASCII string cadata must be.
    blocks = _PEM_CERTIFICATE.findall(cert_pem)
    try:
        if not blocks:
            raise ValueError("no CERTIFICATE block")
        client.load_verify_locations(cadata=b"\n".join(blocks).decode("ascii"))
    except (ValueError, ssl.SSLError) as exc:
        raise CertificateError(f"certificate is not valid PEM ({getattr(exc, 'reason', None) or exc})") from None
    context = tls_context()
    try:
        context.load_cert_chain(cert_path, key_path, password=_no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise CertificateError("private key does not match the certificate") from None
        raise CertificateError(f"private key is not a valid unencrypted PEM key ({exc.reason or exc})") from None
    # load_cert_chain re-reads the files: make sure it saw the bytes that were just checked.
    if (cert_path.read_bytes(), key_path.read_bytes()) != (cert_pem, key_pem):
        raise CertificateError("files changed while loading; retrying on the next poll")
    peer = _handshake(client, context)
    subject = ",".join(f"{name}={value}" for rdn in peer.get("subject", ()) for name, value in rdn)
    return context, CertificateInfo(
        subject=subject, serial=int(peer["serialNumber"], 16),
        not_before=_when(peer["notBefore"]), not_after=_when(peer["notAfter"]),
        sha256=hashlib.sha256(cert_pem + b"\0" + key_pem).hexdigest(),
    )


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> dict[str, Any]:
    """The certificate a client of `server` verified, over a handshake between two ends in memory."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    near = client.wrap_bio(client_in, client_out)
    far = server.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(4):  # TLS 1.3 needs two flights, 1.2 three
        try:
            near.do_handshake()
            return near.getpeercert() or {}
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLCertVerificationError as exc:
            raise CertificateError(f"a TLS client rejects the certificate ({exc.verify_message})") from None
        server_in.write(client_out.read())
        with contextlib.suppress(ssl.SSLWantReadError):
            far.do_handshake()
        client_in.write(server_out.read())
    raise CertificateError("the pair does not complete a TLS handshake")


def _when(text: str) -> datetime:
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(text), UTC)


class CertificateSource:
    """Polls `cert_dir` and serves the newest valid pair through `server_context()` (an expired pair only while
    nothing better was loaded: it still says what it is, and the log says it has expired)."""

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
        self._loaded: str | None = None  # sha256 of the served pair's files (``CertInfo.sha256``)
        self._polls = 0
        self._last_problem: str | None = None
        self._said_expired = False
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
        self._say_if_expired()
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
            # The periodic re-read finds the same bytes almost always: a digest, not two contexts and a handshake
            # (4-11 ms of the event loop the admissions share).
            files = hashlib.sha256(self.cert_path.read_bytes() + b"\0" + self.key_path.read_bytes()).hexdigest()
        except OSError:
            files = None
        if files is not None and files == self._loaded:
            return False
        try:
            context, info = load_pair(self.cert_path, self.key_path)
        except (OSError, ValueError, ssl.SSLError) as exc:
            what = "keeping the current certificate" if self._context else "webhook stays not ready"
            self._problem(f"ignoring certificate files ({exc}); {what}")
            return False
        if self._info is not None and info.sha256 == self._info.sha256:
            # What is served after all (the files changed between the two reads, and back): the next poll's
            # digest matches, instead of a reload and a handshake every full check from now on.
            self._loaded = info.sha256
            return False
        now = datetime.now(UTC)
        if info.not_after <= now and self._info is not None and self._info.not_after > now:
            # A Secret rotated back to an old pair by mistake: every admission would fail on it.
            self._problem(f"ignoring certificate files (expired {info.not_after.isoformat()}); keeping the current "
                          f"certificate (valid until {self._info.not_after.isoformat()})")
            return False
        self._context, self._info, self._last_problem, self._said_expired = context, info, None, False
        self._loaded = info.sha256  # the bytes loaded, not those of the read before
        log.info("webhook certificate loaded", extra=fields(
            subject=info.subject, serial=f"{info.serial:x}", not_after=info.not_after.isoformat()))
        self._say_if_expired()
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                listener(info)
        return True

    def _say_if_expired(self) -> None:
        """Once per pair: the certificate served has expired (while loaded, too: nothing re-reads unchanged
        files, and TROUBLESHOOTING sends users to this line)."""
        if self._info is not None and not self._said_expired and self._info.not_after <= datetime.now(UTC):
            self._said_expired = True
            log.warning("webhook certificate has expired", extra=fields(not_after=self._info.not_after.isoformat()))

    def _problem(self, message: str) -> None:
        if message != self._last_problem:  # log each distinct problem once, not once per poll
            self._last_problem = message
            log.warning(message, extra=fields(cert_dir=str(self.cert_path.parent)))
