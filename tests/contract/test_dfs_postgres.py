"""Contract: dfs v0.29.0 on PostgreSQL set ONLY through ``DITTOFS_DATABASE_POSTGRES_*`` (SPEC §4.2/§4.3).

Needs the Debian ``postgresql`` package (installed by `make bootstrap`, tests/testbed/README-postgres.txt);
without it these tests fail (or, with DITTOFS_TEST_WITHOUT=postgres, are listed as not proven).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.prereqs import require
from tests.testbed.dfs import (
    GRACEFUL_STOP_MARKER,
    UNKNOWN_KEYS_MARKER,
    DfsServer,
    DfsStartError,
    validate_config,
)
from tests.testbed.postgres import PostgresServer, PostgresUnavailable

ADMIN_PASSWORD = "it-admin-password-1"  # = conftest.dfs_env

# SPEC §4.2 for a Postgres server: no connection keys in the file at all.
SPEC_POSTGRES_CONFIGMAP = (
    "logging: {level: INFO, format: json, output: stdout}\n"
    "shutdown_timeout: 30s\n"
    "database:\n"
    "  type: postgres\n"
    "controlplane:\n"
    "  host: 0.0.0.0\n"
    "  port: 8080\n"
    "  jwt: {access_token_duration: 15m, refresh_token_duration: 168h}\n"
)


@pytest.fixture
def pg() -> Iterator[PostgresServer]:
    server = require("postgres", PostgresServer, PostgresUnavailable)
    with server:
        yield server


def _wait_for(server: DfsServer, predicate: str, timeout: float = 20.0) -> dict[str, Any]:
    """Poll /health until ``data.control_plane_db == predicate`` (the DB status is cached for 5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        health = server.health()
        if health["data"]["control_plane_db"] == predicate or time.monotonic() > deadline:
            return health
        time.sleep(0.5)


def test_postgres_from_env_only(dfs_env: dict[str, str], pg: PostgresServer, tmp_path: Path) -> None:
    env = {**dfs_env, **pg.dittofs_env()}

    res = validate_config(SPEC_POSTGRES_CONFIGMAP, env, tmp_path / "validate")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Database type:   postgres" in res.stdout
    assert UNKNOWN_KEYS_MARKER not in res.stdout + res.stderr

    with DfsServer(SPEC_POSTGRES_CONFIGMAP, env, tmp_path, host_ports=[pg.port]) as server:
        health = server.health()
        assert health["status"] == "healthy", health
        assert health["data"]["control_plane_db"] == "reachable", health
        assert server.ready()["status"] == "healthy"
        login = server.login("admin", ADMIN_PASSWORD)
        assert login["user"]["must_change_password"] is False

        # The control plane really lives in Postgres (and SQLite was never opened).
        users = pg.psql("SELECT username FROM users;", database=pg.database).split()
        assert users == ["admin"]
        assert not (tmp_path / "controlplane.db").exists()

        # DB down: liveness stays 200 but reports degraded/unreachable; readiness does not look at the DB.
        pg.stop()
        health = _wait_for(server, "unreachable")
        assert health["status"] == "degraded", health
        assert health["data"]["control_plane_db"] == "unreachable", health
        assert server.ready()["status"] == "healthy"

        # DB back on the same port: the pool reconnects without a restart.
        pg.start()
        health = _wait_for(server, "reachable")
        assert health["status"] == "healthy", health

    assert server.returncode == 0, server.log_tail()
    assert GRACEFUL_STOP_MARKER in server.log_text()
    assert UNKNOWN_KEYS_MARKER not in server.log_text()


def test_postgres_placeholders_in_file_are_overridden_by_env(
    dfs_env: dict[str, str], pg: PostgresServer, tmp_path: Path
) -> None:
    """The alternative rendering (placeholder keys in the file, real values from env) also works."""
    cfg = SPEC_POSTGRES_CONFIGMAP.replace(
        "  type: postgres\n",
        "  type: postgres\n"
        "  postgres: {host: placeholder, port: 5432, database: placeholder, user: placeholder,"
        " password: placeholder, sslmode: require}\n",
    )
    with DfsServer(cfg, {**dfs_env, **pg.dittofs_env()}, tmp_path, host_ports=[pg.port]) as server:
        assert server.health()["data"]["control_plane_db"] == "reachable"
    assert server.returncode == 0
    assert UNKNOWN_KEYS_MARKER not in server.log_text()


def test_postgres_bad_password_exits_one(dfs_env: dict[str, str], pg: PostgresServer, tmp_path: Path) -> None:
    env = {**dfs_env, **pg.dittofs_env(), "DITTOFS_DATABASE_POSTGRES_PASSWORD": "wrong"}
    server = DfsServer(SPEC_POSTGRES_CONFIGMAP, env, tmp_path, host_ports=[pg.port])
    with pytest.raises(DfsStartError) as info:
        server.start()
    assert info.value.returncode == 1
    assert "failed to initialize control plane store" in info.value.log
    assert "password authentication failed" in info.value.log


def test_postgres_without_env_exits_one(dfs_env: dict[str, str], tmp_path: Path) -> None:
    server = DfsServer(SPEC_POSTGRES_CONFIGMAP, dfs_env, tmp_path)
    with pytest.raises(DfsStartError) as info:
        server.start()
    assert info.value.returncode == 1
    assert "postgres host is required" in info.value.log


async def test_a_postgres_metadata_store_from_secret_values(dfs_env: dict[str, str], pg: PostgresServer,
                                                            tmp_path: Path) -> None:
    """spec.stores.metadata[].type postgres: every connection value comes from a Secret (as strings, the way
    a Secret holds them) and goes into the store config over REST; a share on it works."""
    from pydantic import SecretStr

    from dittoctl.api.fileservice import (
        FileService,
        SecretValue,
        ShareSpec,
        StoreKind,
        StoreSpec,
        digest_of,
        plan,
    )
    from dittoctl.kube.dittofs import bootstrap_operator
    from tests.testbed.dfs import minimal_config

    pg.psql("CREATE DATABASE shares_meta OWNER dittofs;")
    values = {"host": pg.host, "port": str(pg.port), "database": "shares_meta", "user": pg.user,
              "password": pg.password, "sslmode": "disable"}
    secrets = tuple((k, SecretValue(f"pg/{k}", digest_of(v))) for k, v in values.items())
    want = FileService(
        stores=(StoreSpec(StoreKind.METADATA, "pgmeta", "postgres", secrets=secrets),
                StoreSpec(StoreKind.LOCAL, "default", "fs", (("path", str(tmp_path / "blocks")),))),
        shares=(ShareSpec("export", metadata_store="pgmeta"),))
    with DfsServer(minimal_config(tmp_path / "cp.db"), dfs_env, tmp_path / "dfs", host_ports=[pg.port]) as server:
        client = await bootstrap_operator(server.base_url, SecretStr(ADMIN_PASSWORD), "dittofs-operator",
                                          SecretStr("operator-pw-Zq81-pg"))
        async with client:
            p = plan(want, await client.observe())
            await client.execute(p, {f"pg/{k}": SecretStr(v) for k, v in values.items()})
            seen = await client.observe()
            assert seen.store(StoreKind.METADATA, "pgmeta") is not None
            assert "/export" in seen.shares and seen.shares["/export"].metadata_store == "pgmeta"
            assert plan(want, seen, p.owned_after(), p.digests_after({})).calls == ()
    assert pg.psql("SELECT count(*) FROM information_schema.tables;", database="shares_meta").strip() != "0"
