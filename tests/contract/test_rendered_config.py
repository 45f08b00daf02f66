"""Contract: what the operator renders (config.yaml + container environment) starts the real dfs v0.29.0.

The StatefulSet's `secretKeyRef`s are resolved against the Secrets the operator would generate (or the
user's), exactly as the kubelet would, and the result is handed to the real binary.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from pydantic import SecretStr

from certs.selfsigned import KeyPair, new_ca, new_leaf
from dittoctl.api.fileservice.types import OPERATOR_ACCOUNT
from dittoctl.api.models import DittoServer
from dittoctl.api.naming import Names
from dittoctl.api.secrets import (
    API_TLS_DIR,
    CLIENT_CA_DIR,
    LDAP_BIND_PASSWORD,
    POSTGRES_DATABASE,
    POSTGRES_HOST,
    POSTGRES_USER,
    TLS_CA_KEY,
    TLS_CERT_KEY,
    TLS_KEY_KEY,
    ValueBounds,
    bounded_values,
    consumed_keys,
    digest_of,
)
from dittoctl.kube.dittofs import DittoFsCertificateRejected, DittoFsClient, TlsTarget, bootstrap_operator
from reconciler import specs
from reconciler.specs.secrets import admin_secret, jwt_secret, new_jwt_value, new_password
from tests.support.prereqs import require
from tests.testbed.dfs import DfsServer, DfsStartError
from tests.testbed.postgres import PostgresServer, PostgresUnavailable

UNKNOWN = "unknown keys"


def render(spec: dict[str, Any], secrets: dict[str, dict[str, str]]) -> tuple[str, dict[str, str]]:
    """(config.yaml, container env) with secretKeyRefs resolved from `secrets` like the kubelet does."""
    server = DittoServer.model_validate({"metadata": {"name": "demo", "namespace": "ns", "uid": "u"},
                                         "spec": {"storage": {"metadataSize": "1Gi"}, **spec}})
    names = Names.of(server)
    digests = {(secret, key): digest_of(secrets.get(secret, {}).get(key, ""))
               for secret, key in consumed_keys(server.spec, names)}
    desired = specs.build(server.spec, names, digests)
    container = desired.statefulset["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        value = secrets.get(ref["name"], {}).get(ref["key"])
        if value is None:
            assert ref.get("optional"), f"{var['name']} needs {ref} which is missing"
            continue
        env[var["name"]] = value
    config: str = desired.config_map["data"]["config.yaml"]
    return config, env


def generated_secrets() -> dict[str, dict[str, str]]:
    names = Names("demo", "ns", "u")
    jwt = jwt_secret(names, new_jwt_value())
    admin = admin_secret(names, "admin", new_password())
    return {jwt["metadata"]["name"]: jwt["stringData"], admin["metadata"]["name"]: admin["stringData"]}


def check(server: DfsServer, password: str) -> None:
    health = server.health()
    assert health["status"] == "healthy"
    assert health["data"]["control_plane_db"] == "reachable"
    assert server.ready()["status"] == "healthy"
    login = server.login("admin", password)
    assert login["access_token"] and login["user"]["username"] == "admin"
    assert UNKNOWN not in server.log_text()


@pytest.mark.parametrize("spec", [
    {},
    {"metrics": {"enabled": True}, "logging": {"level": "DEBUG", "format": "text"},
     "identity": {"jwt": {"accessTokenDuration": "5m", "refreshTokenDuration": "24h"}}},
], ids=["minimal", "metrics-debug-text"])
def test_sqlite_config_and_environment_start_dfs(dfs_path: Path, tmp_path: Path, spec: dict[str, Any]) -> None:
    secrets = generated_secrets()
    config, env = render(spec, secrets)
    assert env["DITTOFS_CONTROLPLANE_SECRET"] == secrets["demo-jwt"]["jwt-secret"]
    with DfsServer(config, env, tmp_path) as server:
        check(server, secrets["demo-admin-bootstrap-credentials"]["password"])
        if spec.get("metrics"):
            assert "# TYPE" in server.metrics_text("/metrics")  # metrics listen on the rendered host/path
        code = server.stop()
    assert code == 0
    assert "Server stopped gracefully" in server.log_text()


def test_external_postgres_secret_starts_dfs(dfs_path: Path, tmp_path: Path) -> None:
    # Only missing binaries are a missing prerequisite; any other start failure is a plain failure.
    postgres = require("postgres", lambda: PostgresServer(password="pg-contract-pw-1"), PostgresUnavailable)
    try:
        postgres.start()
        pg_env = postgres.dittofs_env(sslmode="disable")
        secrets = generated_secrets()
        secrets["pg"] = {
            "host": pg_env["DITTOFS_DATABASE_POSTGRES_HOST"], "port": pg_env["DITTOFS_DATABASE_POSTGRES_PORT"],
            "database": pg_env["DITTOFS_DATABASE_POSTGRES_DATABASE"],
            "user": pg_env["DITTOFS_DATABASE_POSTGRES_USER"],
            "password": pg_env["DITTOFS_DATABASE_POSTGRES_PASSWORD"], "sslmode": "disable",
        }
        config, env = render({"database": {"postgresSecretRef": {"name": "pg"}}}, secrets)
        assert "postgres" in config and "pg-contract-pw-1" not in config
        with DfsServer(config, env, tmp_path, host_ports=[int(secrets["pg"]["port"])]) as server:
            check(server, secrets["demo-admin-bootstrap-credentials"]["password"])
    finally:
        postgres.stop()
        postgres.cleanup()


EMPTY_VALUE_SPECS: dict[str, dict[str, Any]] = {
    "postgres": {"database": {"type": "postgres", "postgresSecretRef": {"name": "pg"}}},
    "ldap": {"identity": {"ldap": {"url": "ldaps://127.0.0.1:1", "baseDn": "dc=example,dc=com",
                                   "bindDn": "cn=svc,dc=example,dc=com",
                                   "bindPasswordSecretRef": {"name": "ldap-bind", "key": "password"}}}},
}


@pytest.mark.parametrize(("bounds", "spec", "refusal"), [
    (POSTGRES_HOST, "postgres", "postgres host is required"),
    (POSTGRES_DATABASE, "postgres", "postgres database is required"),
    (POSTGRES_USER, "postgres", "postgres user is required"),
    (LDAP_BIND_PASSWORD, "ldap", "ldap.bind_password is required"),
], ids=lambda value: value.what if isinstance(value, ValueBounds) else None)
def test_an_empty_value_the_webhook_refuses_stops_dfs_at_every_start(dfs_path: Path, tmp_path: Path,
                                                                     bounds: ValueBounds, spec: str,
                                                                     refusal: str) -> None:
    """Why bounded_values holds these keys to "not empty": the kubelet passes an empty Secret value as an empty
    variable, DittoFS reads it as unset, and its config check refuses the start (every start, not only the
    first). The other keys hold values that start DittoFS (nothing listens on port 1: the check comes first)."""
    raw = EMPTY_VALUE_SPECS[spec]
    secrets = generated_secrets()
    secrets["pg"] = {"host": "127.0.0.1", "port": "1", "database": "dittofs", "user": "dittofs", "password": "pw"}
    secrets["ldap-bind"] = {"password": "bind-pw-1"}
    refs = [ref for _, ref, b in bounded_values(DittoServer.model_validate(
        {"metadata": {"name": "demo"}, "spec": {"storage": {"metadataSize": "1Gi"}, **raw}}).spec) if b == bounds]
    assert len(refs) == 1, refs
    secrets[refs[0].name][refs[0].key] = ""
    config, env = render(raw, secrets)
    server = DfsServer(config, env, tmp_path)
    with pytest.raises(DfsStartError) as info:
        server.start()
    assert info.value.returncode == 1, info.value.log
    assert refusal in info.value.log, info.value.log


def test_percona_user_secret_environment_starts_dfs(dfs_path: Path, tmp_path: Path) -> None:
    """Exactly what the StatefulSet renders from a Percona `<cluster>-pguser-dittofs` Secret, sslmode
    `require` included, against a real PostgreSQL with TLS on."""
    postgres = require("postgres", lambda: PostgresServer(password="percona-contract-pw", ssl=True),
                       PostgresUnavailable)
    try:
        postgres.start()
        secrets = generated_secrets()
        secrets["demo-postgres-pguser-dittofs"] = {
            "host": postgres.host, "port": str(postgres.port), "dbname": postgres.database,
            "user": postgres.user, "password": postgres.password,
            "uri": f"postgresql://{postgres.user}:{postgres.password}@{postgres.host}:{postgres.port}/dittofs",
        }
        config, env = render({"percona": {"enabled": True, "image": "pg:16"}}, secrets)
        assert env["DITTOFS_DATABASE_POSTGRES_SSLMODE"] == "require"
        assert env["DITTOFS_DATABASE_POSTGRES_DATABASE"] == "dittofs"
        with DfsServer(config, env, tmp_path, host_ports=[postgres.port]) as server:
            check(server, secrets["demo-admin-bootstrap-credentials"]["password"])
            encrypted = postgres.psql(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                "WHERE s.ssl AND a.usename = 'dittofs';").strip()
            assert int(encrypted) >= 1, "dfs must hold TLS connections (sslmode=require)"
    finally:
        postgres.stop()
        postgres.cleanup()


def test_api_tls_serves_https_and_reloads_a_rotated_pair(dfs_path: Path, tmp_path: Path) -> None:
    """controlPlane.tls (issue 14, item 1): the rendered cert_file/key_file/min_version are v0.29.0 keys (no
    unknown-key warning), dfs serves HTTPS with them, picks up a rotated pair without a restart (as when the
    kubelet updates the mounted Secret), and the operator's client provisions over it trusting ca.crt while
    dialling an IP the certificate does not name (it verifies the API Service's name)."""
    ca = new_ca("api-test-ca")
    service = "demo-api.ns.svc"
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()

    def install(pair: KeyPair) -> None:
        for name, data in ((TLS_CERT_KEY, pair.cert_pem), (TLS_KEY_KEY, pair.key_pem)):
            tmp = tls_dir / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, tls_dir / name)  # atomic, like the kubelet's symlink swap

    first = new_leaf(ca, [service], ["127.0.0.1"])
    install(first)
    secrets = generated_secrets()
    config, env = render({"controlPlane": {"tls": {"secretName": "api-tls", "minVersion": "1.2"}}}, secrets)
    assert f"{API_TLS_DIR}/{TLS_CERT_KEY}" in config
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    with DfsServer(config.replace(API_TLS_DIR, str(tls_dir)), env, tmp_path / "dfs", tls=context) as server:
        check(server, secrets["demo-admin-bootstrap-credentials"]["password"])
        assert served_serial(server.api_port) == first.cert.serial_number

        second = new_leaf(ca, [service], ["127.0.0.1"])
        time.sleep(1.1)  # a new mtime (the reloader compares modification times)
        install(second)
        assert served_serial(server.api_port) == second.cert.serial_number, "rotated pair not picked up"

        async def provision() -> list[str]:
            target = TlsTarget(context, service)
            password = SecretStr(secrets["demo-admin-bootstrap-credentials"]["password"])
            client = await bootstrap_operator(f"https://127.0.0.1:{server.api_port}", password,
                                              OPERATOR_ACCOUNT, SecretStr(new_password()), tls=target)
            async with client:
                return list((await client.observe()).users)

        assert OPERATOR_ACCOUNT in asyncio.run(provision())
        untrusted = ssl.create_default_context()  # system CAs only: the test CA is not among them
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl_handshake(server.api_port, untrusted, service)

        async def login(target: TlsTarget) -> None:
            password = SecretStr(secrets["demo-admin-bootstrap-credentials"]["password"])
            async with DittoFsClient(f"https://127.0.0.1:{server.api_port}", "admin", password, tls=target) as c:
                await c.login()

        # What the operator reports for a certificate it must not trust: the name it wanted, OpenSSL's reason.
        for target, why in ((TlsTarget(context, "other-api.ns.svc"), "Hostname mismatch"),
                            (TlsTarget(untrusted, service), "unable to get local issuer certificate")):
            with pytest.raises(DittoFsCertificateRejected) as rejected:
                asyncio.run(login(target))
            assert str(rejected.value).startswith("POST /api/v1/auth/login: the server's certificate was rejected "
                                                  f"(expected name {target.server_hostname}): {why}"), rejected.value
        assert UNKNOWN not in server.log_text()


def ssl_handshake(port: int, context: ssl.SSLContext, name: str) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(sock, server_hostname=name)


def served_serial(port: int) -> int:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with ssl_handshake(port, context, "demo-api.ns.svc") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_mutual_tls_admits_only_the_operator_s_client_certificate(dfs_path: Path, tmp_path: Path) -> None:
    """clientCaSecretName: dfs demands a client certificate from that CA (rendered client_ca is a v0.29.0
    key); the operator presents its own and provisions, a caller without one is refused."""
    ca, client_ca = new_ca("api-ca"), new_ca("client-ca")
    service = "demo-api.ns.svc"
    tls_dir, ca_dir = tmp_path / "tls", tmp_path / "client-ca"
    for directory, files in ((tls_dir, {TLS_CERT_KEY: (leaf := new_leaf(ca, [service], ["127.0.0.1"])).cert_pem,
                                        TLS_KEY_KEY: leaf.key_pem}),
                             (ca_dir, {TLS_CA_KEY: client_ca.cert_pem})):
        directory.mkdir()
        for name, data in files.items():
            (directory / name).write_bytes(data)
    operator_pair = new_leaf(client_ca, ["dittofs-operator"], client=True)
    secrets = generated_secrets()
    config, env = render({"controlPlane": {"tls": {"secretName": "api-tls", "clientCaSecretName": "client-ca",
                                                   "operatorClientSecretName": "operator-client"}}}, secrets)
    assert f"{CLIENT_CA_DIR}/{TLS_CA_KEY}" in config
    config = config.replace(API_TLS_DIR, str(tls_dir)).replace(CLIENT_CA_DIR, str(ca_dir))
    target = TlsTarget.of(service, ca.cert_pem.decode(), (operator_pair.cert_pem.decode(),
                                                          operator_pair.key_pem.decode()))
    context = target.context
    with DfsServer(config, env, tmp_path / "dfs", tls=context) as server:
        check(server, secrets["demo-admin-bootstrap-credentials"]["password"])

        async def provision() -> list[str]:
            password = SecretStr(secrets["demo-admin-bootstrap-credentials"]["password"])
            client = await bootstrap_operator(f"https://127.0.0.1:{server.api_port}", password,
                                              OPERATOR_ACCOUNT, SecretStr(new_password()),
                                              tls=TlsTarget(context, service))
            async with client:
                return list((await client.observe()).users)

        assert OPERATOR_ACCOUNT in asyncio.run(provision())
        anonymous = ssl.create_default_context(cadata=ca.cert_pem.decode())  # trusts the server, no client cert
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            anonymous_get(server.api_port, anonymous, service)
        assert UNKNOWN not in server.log_text()


def anonymous_get(port: int, context: ssl.SSLContext, name: str) -> bytes:
    """One request without a client certificate; with TLS 1.3 the refusal arrives on the first read."""
    with ssl_handshake(port, context, name) as tls:
        tls.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = tls.recv(1)
    if not answer:
        raise ConnectionResetError("closed without an answer")
    return answer
