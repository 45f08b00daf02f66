"""CertificateSource: hot reload without dropped requests; half-written pairs never served."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.selfsigned import KeyPair, new_ca, new_leaf
from certs.source import CertificateSource, load_pair
from dittoctl.api.models import API_VERSION
from tests.support.admission import client_context, pair_files
from tests.support.connections import Connections
from webhook.server import WEBHOOK_PATH, AdmissionHandler, WebhookServer

BODY = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "u", "operation": "CREATE", "namespace": "ns",
    "object": {"apiVersion": API_VERSION, "kind": "DittoServer", "metadata": {"name": "demo"},
               "spec": {"storage": {"metadataSize": "1Gi"}}}}}).encode()


def leaf_for(ca: KeyPair) -> KeyPair:
    return new_leaf(ca, ["localhost"], ["127.0.0.1"])


def install(directory: Path, pair: KeyPair) -> None:
    pair_files(directory, pair.cert_pem, pair.key_pem)


def serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


async def served_serial(port: int, ctx: ssl.SSLContext) -> int:
    """One request over a fresh TLS connection; returns the serial of the certificate presented."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(b"POST " + WEBHOOK_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
        await writer.drain()
        response = await reader.read()
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        assert b'"allowed":true' in response
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[WebhookServer]:
    srv = WebhookServer(AdmissionHandler(), CertificateSource(tmp_path / "certs", interval=0.02),
                        host="127.0.0.1", port=0)
    await srv.start()
    yield srv
    await srv.stop()


# -- pair validation ------------------------------------------------------------------------------------------
def test_load_pair_describes_what_a_client_sees(tmp_path: Path) -> None:
    ca = new_ca()
    a = leaf_for(ca)
    context, info = load_pair(*pair_files(tmp_path, a.cert_pem + ca.cert_pem, a.key_pem))
    assert isinstance(context, ssl.SSLContext)
    assert (info.serial, info.subject) == (serial(a.cert_pem), "commonName=localhost")
    assert (info.not_before, info.not_after) == (a.cert.not_valid_before_utc, a.cert.not_valid_after_utc)
    # An expired pair is still described (the source logs it and keeps the metric honest), not refused.
    then = datetime.now(UTC) - timedelta(days=800)
    old = new_leaf(new_ca(now=then), ["localhost"], now=then)
    _, expired = load_pair(*pair_files(tmp_path / "old", old.cert_pem, old.key_pem))
    assert expired.not_after == old.cert.not_valid_after_utc < datetime.now(UTC)


def test_a_pem_file_with_text_around_its_blocks_loads(tmp_path: Path) -> None:
    """`openssl pkcs12 -nodes` writes "Bag Attributes" before each block, with a UTF-8 friendlyName; OpenSSL (and
    the apiserver) read the blocks and skip the rest."""
    ca = new_ca()
    a = leaf_for(ca)
    bags = "Bag Attributes\n    friendlyName: serveur-étiquette\nsubject=/CN=localhost\n".encode()
    _, info = load_pair(*pair_files(tmp_path, bags + a.cert_pem + bags + ca.cert_pem, a.key_pem))
    assert info.serial == serial(a.cert_pem)


def test_load_pair_names_what_is_wrong(tmp_path: Path) -> None:
    ca = new_ca()
    a, b = leaf_for(ca), leaf_for(ca)
    with pytest.raises(ValueError, match="does not match"):
        load_pair(*pair_files(tmp_path, a.cert_pem, b.key_pem))
    with pytest.raises(ValueError, match="not valid PEM"):
        load_pair(*pair_files(tmp_path, a.cert_pem[: len(a.cert_pem) // 2], a.key_pem))
    with pytest.raises(ValueError, match="private key"):
        load_pair(*pair_files(tmp_path, a.cert_pem, b""))
    encrypted = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(ValueError, match="private key"):
        load_pair(*pair_files(tmp_path, a.cert_pem, encrypted))
    # A client certificate (extended key usage clientAuth only) is one the apiserver would refuse to talk to.
    client = new_leaf(ca, ["localhost"], client=True)
    with pytest.raises(ValueError, match="TLS client rejects"):
        load_pair(*pair_files(tmp_path, client.cert_pem, client.key_pem))


def test_the_periodic_re_read_of_unchanged_files_builds_no_context(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import certs.source as source_module

    loads: list[Path] = []

    def counted(cert: Path, key: Path) -> tuple[ssl.SSLContext, source_module.CertificateInfo]:
        loads.append(cert)
        return load_pair(cert, key)

    monkeypatch.setattr(source_module, "load_pair", counted)
    ca = new_ca()
    install(tmp_path, leaf_for(ca))
    source = CertificateSource(tmp_path, full_check_every=1)  # every poll re-reads
    assert source.reload() and len(loads) == 1
    for _ in range(5):
        assert not source.reload()
    assert len(loads) == 1, "same bytes: no second load"
    install(tmp_path, leaf_for(ca))
    assert source.reload() and len(loads) == 2


def test_files_that_changed_again_between_two_reads_are_not_reloaded_for_ever(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The digest recorded was that of the read before loading: a second swap in between left it naming bytes
    never served, and every full check from then on built two contexts and a handshake."""
    import certs.source as source_module

    ca = new_ca()
    first, second, third = leaf_for(ca), leaf_for(ca), leaf_for(ca)
    install(tmp_path, first)
    loads: list[Path] = []

    def swapped_again(cert: Path, key: Path) -> tuple[ssl.SSLContext, source_module.CertificateInfo]:
        loads.append(cert)
        if len(loads) == 2:
            install(tmp_path, third)  # the Secret's `..data` swapped again between the digest and the load
        return load_pair(cert, key)

    monkeypatch.setattr(source_module, "load_pair", swapped_again)
    source = CertificateSource(tmp_path, full_check_every=1)
    assert source.reload()
    install(tmp_path, second)
    assert source.reload() and len(loads) == 2
    assert source.info is not None and serial(third.cert_pem) == source.info.serial
    for _ in range(5):
        assert not source.reload()
    assert len(loads) == 2, "the bytes served: no further load"


def test_half_written_or_mismatched_pair_is_ignored(tmp_path: Path) -> None:
    ca = new_ca()
    a, b = leaf_for(ca), leaf_for(ca)
    source = CertificateSource(tmp_path, full_check_every=0)
    assert not source.reload() and not source.ready  # nothing there yet
    install(tmp_path, a)
    assert source.reload() and source.ready
    first = source.context
    assert source.info is not None and source.info.serial == serial(a.cert_pem)

    (tmp_path / "tls.crt").write_bytes(b.cert_pem)  # new cert, old key: mismatched
    assert not source.reload()
    (tmp_path / "tls.key").write_bytes(b.key_pem[:40])  # key half written
    assert not source.reload()
    assert source.context is first and source.info.serial == serial(a.cert_pem)

    (tmp_path / "tls.key").write_bytes(b.key_pem)
    assert source.reload()
    assert source.context is not first and source.info is not None and source.info.serial == serial(b.cert_pem)
    assert not source.reload()  # unchanged files: nothing to do


def test_an_expired_pair_never_replaces_a_valid_one_and_expiry_is_said_once_while_served(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A Secret rotated back to an old pair was served at once (every admission then failed); and a pair that
    expired while loaded was never said to have expired (nothing re-reads unchanged files)."""
    then = datetime.now(UTC) - timedelta(days=800)
    old = new_leaf(new_ca(now=then), ["localhost"], now=then)
    short = new_leaf(new_ca(), ["localhost"], days=1)
    source = CertificateSource(tmp_path, full_check_every=0)
    install(tmp_path, short)
    assert source.reload()
    install(tmp_path, old)
    assert not source.reload() and source.info is not None and source.info.serial == serial(short.cert_pem)
    assert "ignoring certificate files (expired" in caplog.text
    # The day passes while it is served: said once, not once per poll.
    caplog.clear()
    source._info = replace(source.info, not_after=datetime.now(UTC) - timedelta(seconds=1))
    for _ in range(3):
        source.reload()
    assert caplog.text.count("webhook certificate has expired") == 1
    # With nothing better loaded, an expired pair is served (it still says what it is) and said to be expired.
    fresh = CertificateSource(tmp_path, full_check_every=0)
    caplog.clear()
    assert fresh.reload() and "webhook certificate has expired" in caplog.text


def test_deleted_files_keep_the_last_good_pair(tmp_path: Path) -> None:
    install(tmp_path, leaf_for(new_ca()))
    source = CertificateSource(tmp_path)
    assert source.reload()
    (tmp_path / "tls.crt").unlink()
    assert not source.reload()
    assert source.ready


def test_kubelet_style_symlink_swap_is_noticed(tmp_path: Path) -> None:
    ca = new_ca()
    a, b = leaf_for(ca), leaf_for(ca)
    install(tmp_path / "..v1", a)
    os.symlink("..v1", tmp_path / "..data")
    for name in ("tls.crt", "tls.key"):
        os.symlink(f"..data/{name}", tmp_path / name)
    source = CertificateSource(tmp_path, full_check_every=0)
    assert source.reload() and source.info is not None and source.info.serial == serial(a.cert_pem)
    install(tmp_path / "..v2", b)
    os.symlink("..v2", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # what the kubelet does: one atomic rename
    assert source.reload() and source.info is not None and source.info.serial == serial(b.cert_pem)


# -- under load -----------------------------------------------------------------------------------------------
async def test_rotation_under_load_drops_no_request(tmp_path: Path, server: WebhookServer) -> None:
    ca1, ca2 = new_ca(), new_ca()
    pairs = [leaf_for(ca1), leaf_for(ca2), leaf_for(ca1), leaf_for(ca2)]
    install(tmp_path / "certs", pairs[0])
    for _ in range(100):
        if server.ready:
            break
        await asyncio.sleep(0.02)
    ctx = client_context(ca1, ca2)
    seen: list[int] = []
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            try:
                seen.append(await served_serial(server.port, ctx))
            except Exception as exc:  # any failure is a dropped admission
                failures.append(exc)

    async def rotate() -> None:
        for pair in pairs[1:] * 2:
            await asyncio.sleep(0.3)
            # Deliberately non-atomic: cert first, then (after a pause) the key.
            (tmp_path / "certs" / "tls.crt").write_bytes(pair.cert_pem)
            await asyncio.sleep(0.05)
            (tmp_path / "certs" / "tls.key").write_bytes(pair.key_pem)
        await asyncio.sleep(0.3)
        stop.set()

    clients = [asyncio.create_task(client()) for _ in range(4)]
    await rotate()
    await asyncio.gather(*clients)
    assert failures == []
    assert len(seen) > 50
    assert {serial(p.cert_pem) for p in pairs} <= set(seen)


async def test_keep_alive_connections_survive_a_rotation(tmp_path: Path, server: WebhookServer) -> None:
    """A connection opened before the rotation keeps serving after the new pair is loaded: one connection for
    every request, none of them refused or answered on a fresh connection."""
    ca = new_ca()
    first, second = leaf_for(ca), leaf_for(ca)
    install(tmp_path / "certs", first)
    for _ in range(100):
        if server.ready:
            break
        await asyncio.sleep(0.02)
    url = f"https://127.0.0.1:{server.port}{WEBHOOK_PATH}"
    headers = {"Content-Type": "application/json"}
    connections = Connections()
    served_after_the_rotation = 0
    connector = aiohttp.TCPConnector(ssl=client_context(ca), limit=1)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[connections.trace]) as session:
        deadline = time.monotonic() + 1.0
        rotated = False
        while time.monotonic() < deadline:
            loaded = server.certs.info
            async with session.post(url, data=BODY, headers=headers) as resp:
                assert resp.status == 200
            if not rotated:
                install(tmp_path / "certs", second)
                rotated = True
            elif loaded is not None and loaded.serial == serial(second.cert_pem):
                served_after_the_rotation += 1
    info = server.certs.info
    assert info is not None and info.serial == serial(second.cert_pem), "the rotation was loaded"
    assert served_after_the_rotation >= 5
    assert connections.opened == 1, "each request after the first went over the same kept-alive connection"
