"""Contract: LDAP and Kerberos (issue 14, item 4) against the real dfs v0.29.0, a real OpenLDAP slapd and a
keytab written by MIT ktutil.

What the operator renders seeds DittoFS at first boot (no unknown key, both providers loaded), and the
planner converges later edits and password rotations over REST: LDAP live, Kerberos at the next start.
DittoFS's own `POST /identity-providers/ldap/test`, sent the record it stores (password placeholder
included), proves that the *stored* bind password opens a StartTLS session verified with the mounted CA.
The pod's filesystem is a directory here: the rendered `/identity/...` paths are moved under it, in the
config and in the records the planner compares alike.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from certs.selfsigned import new_ca, new_leaf
from dittoctl.api.fileservice import FileService, Kind, Op, Ref, plan
from dittoctl.api.fileservice.planner import reads
from dittoctl.api.models import DittoServer
from dittoctl.api.secrets import digest_of, identity_secrets
from dittoctl.kube.dittofs import DittoFsClient, bootstrap_operator
from reconciler.specs.fileservice import declared, salted, secret_ref
from tests.contract.test_dittofs_client import State
from tests.contract.test_rendered_config import UNKNOWN, generated_secrets, render
from tests.support.prereqs import require
from tests.testbed.dfs import DfsServer
from tests.testbed.ldap import BASE_DN, ROOT_DN, Slapd, SlapdUnavailable, keytab, slapd_binary

PRINCIPAL = "nfs/files.example.com@EXAMPLE.COM"
FIRST_PW, SECOND_PW = "ldap-bind-first-7Qx", "ldap-bind-second-9Lm"
SALT = "contract-salt"
ROOT = "/identity"


@pytest.fixture(scope="module")
def ldap_tools() -> None:
    require("identity", slapd_binary, SlapdUnavailable)


def spec(port: int, **ldap: Any) -> dict[str, Any]:
    return {"identity": {
        "ldap": {"url": f"ldap://127.0.0.1:{port}", "startTls": True, "baseDn": BASE_DN, "bindDn": ROOT_DN,
                 "bindPasswordSecretRef": {"name": "ldap-bind", "key": "password"},
                 "caSecretRef": {"name": "ldap-ca", "key": "ca.crt"}, "realm": "EXAMPLE.COM", **ldap},
        "kerberos": {"servicePrincipal": PRINCIPAL, "keytabSecretRef": {"name": "krb", "key": "keytab"},
                     "krb5ConfSecretRef": {"name": "krb", "key": "krb5.conf"}},
    }}


def relocate(value: Any, root: Path) -> Any:
    """The rendered `/identity/...` paths, moved under ``root`` (the pod's filesystem of this test)."""
    if isinstance(value, str):
        return value.replace(ROOT, str(root))
    if isinstance(value, Mapping):
        return {k: relocate(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [relocate(v, root) for v in value]
    return value


def wanted(raw: dict[str, Any], secrets: dict[str, dict[str, str]], root: Path) -> FileService:
    """The identity part of what the fileservice phase declares, from the same spec the config came from."""
    server = DittoServer.model_validate({"metadata": {"name": "demo", "namespace": "ns", "uid": "u"},
                                         "spec": {"storage": {"metadataSize": "1Gi"}, **raw}})
    digests = {(u.secret, u.key): digest_of(secrets[u.secret][u.key])
               for u in identity_secrets(server.spec).values()}
    want, missing = declared(server.spec, lambda s, k: digests.get((s, k)), SALT)
    assert missing == []
    providers = tuple(dataclasses.replace(p, config=relocate(p.config, root)) for p in want.identity)
    return FileService(identity=providers, operator_name=want.operator_name)


def values(secrets: dict[str, dict[str, str]]) -> dict[str, SecretStr]:
    return {secret_ref(s, k): SecretStr(v) for s, data in secrets.items() for k, v in data.items()}


async def converge(client: DittoFsClient, want: FileService, state: State,
                   secrets: dict[str, dict[str, str]]) -> list[tuple[Op, Kind, str, bool, bool]]:
    """One pass as the fileservice phase makes it: (op, kind, name, needs_restart, carries a password) per
    executed call."""
    seen = await client.observe(reads(want, state.owned, full=True))
    p = plan(want, seen, state.owned, state.applied)
    assert p.problems == ()
    done = await client.execute(p, values(secrets))
    state.owned, state.applied = p.owned_after(done), p.digests_after(state.applied, done)
    return [(c.op, c.kind, c.name, c.needs_restart, bool(c.secrets)) for c in done]


async def ldap_test(client: DittoFsClient) -> dict[str, Any]:
    """DittoFS dials and binds with the record it stores (the redacted password means "the stored one")."""
    stored = await client.request("GET", "/api/v1/identity-providers/ldap/config")
    assert stored["bind_password"] == "********"
    result: dict[str, Any] = await client.request("POST", "/api/v1/identity-providers/ldap/test", stored)
    return result


async def test_seeded_at_first_boot_then_converged_over_rest(ldap_tools: None, dfs_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    root = tmp_path / "pod-identity"
    for sub in ("ldap-ca", "kerberos", "krb5"):
        (root / sub).mkdir(parents=True)
    ca = new_ca("ldap-test-ca")
    (root / "ldap-ca" / "ca.crt").write_bytes(ca.cert_pem)
    keytab(root / "kerberos" / "krb5.keytab", PRINCIPAL, "keytab-key-pw")
    (root / "krb5" / "krb5.conf").write_text("[libdefaults]\n  default_realm = EXAMPLE.COM\n")
    secrets = generated_secrets()
    secrets["ldap-bind"] = {"password": FIRST_PW}
    admin_pw = secrets["demo-admin-bootstrap-credentials"]["password"]

    with Slapd(tmp_path / "slapd", FIRST_PW, tls=new_leaf(ca, ["ldap.test"], ["127.0.0.1"])) as slapd:
        raw = spec(slapd.port)
        config, env = render(raw, secrets)
        assert env["DITTOFS_LDAP_BIND_PASSWORD"] == FIRST_PW and FIRST_PW not in config
        server = DfsServer(relocate(config, root), env, tmp_path / "dfs", host_ports=[slapd.port]).start()
        try:
            log = server.log_text()
            assert UNKNOWN not in log
            assert "LDAP identity provider enabled (seeded from config file/env)" in log
            assert "RPCSEC_GSS (Kerberos) authentication enabled" in log  # the mounted keytab loaded
            assert '"context_ttl":28800000000000' in log  # 8h, the seed
            client = await bootstrap_operator(server.base_url, SecretStr(admin_pw), "dittofs-operator",
                                              SecretStr("operator-pw-identity-1"))
            async with client:
                listed = await client.request("GET", "/api/v1/identity-providers")
                assert {(p["type"], p["enabled"], p["configured"]) for p in listed} == {
                    ("ldap", True, True), ("kerberos", True, True)}
                # The seed is the record the planner wants: Kerberos needs nothing; LDAP gets its password
                # once, because no applied digest is recorded yet (live, no restart).
                state, want = State(), wanted(raw, secrets, root)
                assert await converge(client, want, state, secrets) == [
                    (Op.UPDATE, Kind.IDENTITY_PROVIDER, "ldap", False, True)]
                assert state.owned == {Ref(Kind.IDENTITY_PROVIDER, "ldap"), Ref(Kind.IDENTITY_PROVIDER, "kerberos")}
                assert state.applied == {"identity-provider:ldap/bind_password": salted(SALT, digest_of(FIRST_PW))}
                result = await ldap_test(client)
                assert result["ok"] is True, result  # StartTLS verified with the mounted CA, stored password
                assert await converge(client, want, state, secrets) == []  # settled: reads only

                # The directory's password rotates, then the Secret: one PUT with the new one, live.
                slapd.restart(SECOND_PW)
                assert (await ldap_test(client))["ok"] is False
                secrets["ldap-bind"] = {"password": SECOND_PW}
                want = wanted(raw, secrets, root)
                assert await converge(client, want, state, secrets) == [
                    (Op.UPDATE, Kind.IDENTITY_PROVIDER, "ldap", False, True)]
                assert (await ldap_test(client))["ok"] is True

                # Edits: LDAP's without its password (DittoFS keeps the stored one) and live; Kerberos's
                # marked for a restart (DittoFS binds it at start).
                raw = spec(slapd.port, nestedGroups=True, timeout="30s", idMapping="rid")
                raw["identity"]["kerberos"]["contextTtl"] = "4h"
                want = wanted(raw, secrets, root)
                assert sorted(await converge(client, want, state, secrets)) == [
                    (Op.UPDATE, Kind.IDENTITY_PROVIDER, "kerberos", True, False),
                    (Op.UPDATE, Kind.IDENTITY_PROVIDER, "ldap", False, False)]
                assert (await ldap_test(client))["ok"] is True
                stored = await client.request("GET", "/api/v1/identity-providers/ldap/config")
                assert (stored["nested_groups"], stored["timeout"], stored["idmap"]) == (True, "30s", "rid")
            assert FIRST_PW not in server.log_text() and SECOND_PW not in server.log_text()
            server.stop()

            # The restart the Kerberos edit asked for: DittoFS loads it from its database (the config file
            # still has the first seed, which is ignored), and nothing is left to do.
            config, env = render(raw, secrets)
            server = DfsServer(relocate(config, root), env, tmp_path / "dfs", host_ports=[slapd.port]).start()
            log = server.log_text()
            assert "Kerberos identity provider loaded from control-plane store" in log
            assert "LDAP identity provider loaded from control-plane store" in log
            assert '"context_ttl":14400000000000' in log  # 4h: the REST edit, applied at this start
            client = await bootstrap_operator(server.base_url, SecretStr(admin_pw), "dittofs-operator",
                                              SecretStr("operator-pw-identity-1"))
            async with client:
                kerberos = await client.request("GET", "/api/v1/identity-providers/kerberos/config")
                assert (kerberos["context_ttl"], kerberos["keytab_path"]) == (
                    "4h", str(root / "kerberos" / "krb5.keytab"))
                test = await client.request("POST", "/api/v1/identity-providers/kerberos/test", kerberos)
                assert test["ok"] is True, test  # the mounted keytab and krb5.conf load
                assert await converge(client, want, state, secrets) == []
                assert (await ldap_test(client))["ok"] is True

                # The LDAP CA leaves the spec (the pod no longer mounts it): one live PUT clears DittoFS's
                # ca_cert_file, which it would otherwise go on reading at every dial.
                del raw["identity"]["ldap"]["caSecretRef"]
                want = wanted(raw, secrets, root)
                assert await converge(client, want, state, secrets) == [
                    (Op.UPDATE, Kind.IDENTITY_PROVIDER, "ldap", False, False)]
                stored = await client.request("GET", "/api/v1/identity-providers/ldap/config")
                assert not (stored.get("tls") or {}).get("ca_cert_file"), stored
                assert await converge(client, want, state, secrets) == []

                # LDAP leaves the spec: disabled (the record stays), and no longer the operator's.
                del raw["identity"]["ldap"]
                want = wanted(raw, secrets, root)
                assert await converge(client, want, state, secrets) == [
                    (Op.UPDATE, Kind.IDENTITY_PROVIDER, "ldap", False, False)]
                listed = await client.request("GET", "/api/v1/identity-providers")
                assert {(p["type"], p["enabled"]) for p in listed} == {("ldap", False), ("kerberos", True)}
                assert await converge(client, want, state, secrets) == []
                assert state.owned == {Ref(Kind.IDENTITY_PROVIDER, "kerberos")}
        finally:
            server.stop()


def test_machine_account_and_every_key_are_known_to_dfs(ldap_tools: None, dfs_path: Path, tmp_path: Path) -> None:
    """Every key the operator can render (machine account, CA, durations) is a v0.29.0 key: `dfs config
    validate` reports none unknown and accepts the values."""
    from tests.testbed.dfs import validate_config

    raw = spec(389, userAttribute="uid", idMapping="rid", nestedGroups=True, timeout="1m30s",
               maxGroupResults=50, tlsMinVersion="1.3")
    raw["identity"]["kerberos"].update({"realm": "EXAMPLE.COM", "netbiosDomain": "EXAMPLE",
                                        "dnsDomain": "example.com", "maxClockSkew": "2m", "contextTtl": "1h",
                                        "maxContexts": 50, "machineAccount": {
                                            "accountName": "DITTOFS$", "dcAddresses": ["dc1.example.com"],
                                            "secretRef": {"name": "machine", "key": "password"}}})
    secrets = generated_secrets()
    secrets["ldap-bind"] = {"password": FIRST_PW}
    secrets["machine"] = {"password": "machine-secret-1"}
    config, env = render(raw, secrets)
    assert env["DITTOFS_KERBEROS_MACHINE_ACCOUNT_SECRET"] == "machine-secret-1"
    result = validate_config(config, env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert UNKNOWN not in result.stdout + result.stderr
    assert "machine-secret-1" not in config and FIRST_PW not in config


def stored_row(server: DfsServer, kind: str) -> dict[str, Any]:
    """DittoFS's own database row (sqlite): the only place the write-only secrets can be seen."""
    with sqlite3.connect(server.workdir / "controlplane.db") as db:
        (config,) = db.execute("SELECT config FROM identity_provider_configs WHERE type = ?", (kind,)).fetchone()
    row: dict[str, Any] = json.loads(config)
    return row


async def test_the_machine_account_password_is_seeded_then_rotated_live(ldap_tools: None, dfs_env: dict[str, str],
                                                                        tmp_path: Path) -> None:
    """NTLM pass-through's machine account: its password reaches DittoFS's database from the environment at
    first boot, and a rotation is PUT inside ``machine_account`` without a restart flag (DittoFS swaps the
    NETLOGON credential live); GET never shows it."""
    root = tmp_path / "pod-identity"
    for sub in ("kerberos", "krb5"):
        (root / sub).mkdir(parents=True)
    keytab(root / "kerberos" / "krb5.keytab", PRINCIPAL, "keytab-key-pw")
    (root / "krb5" / "krb5.conf").write_text("[libdefaults]\n  default_realm = EXAMPLE.COM\n")
    raw = {"identity": {"kerberos": {
        "servicePrincipal": PRINCIPAL, "netbiosDomain": "EXAMPLE", "keytabSecretRef": {"name": "krb", "key": "keytab"},
        "krb5ConfSecretRef": {"name": "krb", "key": "krb5.conf"},
        "machineAccount": {"accountName": "DITTOFS$", "dcAddresses": ["127.0.0.1:1"],
                           "secretRef": {"name": "machine", "key": "password"}}}}}
    secrets = generated_secrets()
    secrets["machine"] = {"password": "machine-first-1"}
    config, env = render(raw, secrets)
    server = DfsServer(relocate(config, root), env, tmp_path / "dfs").start()
    try:
        assert UNKNOWN not in server.log_text()
        assert stored_row(server, "kerberos")["machine_account"]["secret"] == "machine-first-1"
        client = await bootstrap_operator(server.base_url, SecretStr(secrets["demo-admin-bootstrap-credentials"][
            "password"]), "dittofs-operator", SecretStr("operator-pw-identity-2"))
        async with client:
            shown = await client.request("GET", "/api/v1/identity-providers/kerberos/config")
            assert shown["machine_account"]["secret"] == "********"
            assert shown["machine_account"]["account_name"] == "DITTOFS$"
            state = State()
            # No applied digest yet: the password is sent once, and only the password changed: no restart.
            want = wanted(raw, secrets, root)
            assert await converge(client, want, state, secrets) == [
                (Op.UPDATE, Kind.IDENTITY_PROVIDER, "kerberos", False, True)]
            assert await converge(client, want, state, secrets) == []
            secrets["machine"] = {"password": "machine-second-2"}
            want = wanted(raw, secrets, root)
            assert await converge(client, want, state, secrets) == [
                (Op.UPDATE, Kind.IDENTITY_PROVIDER, "kerberos", False, True)]
            row = stored_row(server, "kerberos")
            assert row["machine_account"]["secret"] == "machine-second-2"
            assert row["machine_account"]["account_name"] == "DITTOFS$" and row["service_principal"] == PRINCIPAL
            shown = await client.request("GET", "/api/v1/identity-providers/kerberos/config")
            assert shown["machine_account"]["secret"] == "********"
        assert "machine-second-2" not in server.log_text() and "machine-first-1" not in server.log_text()
    finally:
        server.stop()
