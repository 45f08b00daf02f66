"""Contract: what the operator renders (SPEC §4.2/§4.3) is exactly what the real ``dfs`` v0.29.0 accepts.

Each test runs the real binary on loopback (``tests/testbed/dfs.py``); facts are in docs/DITTOFS_FACTS.md.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest

from dittoctl.api.secrets import ADMIN_PASSWORD as ADMIN_BOUNDS
from tests.support.net import free_port
from tests.support.prereqs import missing
from tests.testbed.dfs import (
    GRACEFUL_STOP_MARKER,
    SEEDED_NFS_PORT,
    SEEDED_SMB_PORT,
    UNKNOWN_KEYS_MARKER,
    DfsServer,
    DfsStartError,
    minimal_config,
    netns_supported,
    run_dfs,
    validate_config,
)

ADMIN_PASSWORD = "it-admin-password-1"  # = conftest.dfs_env
SHORT_SECRET_MESSAGE = "JWT secret must be at least 32 characters"


def spec_configmap(metrics: bool) -> str:
    """SPEC §4.2's ConfigMap for a SQLite server, byte-for-byte in the documented key order."""
    text = (
        "logging: {level: INFO, format: json, output: stdout}\n"
        "shutdown_timeout: 30s\n"
        "database:\n"
        "  type: sqlite\n"
        "  sqlite: {path: /data/controlplane/controlplane.db}\n"
        "controlplane:\n"
        "  host: 0.0.0.0\n"
        "  port: 8080\n"
        "  jwt: {access_token_duration: 15m, refresh_token_duration: 168h}\n"
    )
    if metrics:
        text += "metrics: {enabled: true, host: 0.0.0.0, port: 9090, path: /custom-metrics}\n"
    return text


# ---------------------------------------------------------------------------------------------- validate


def test_validate_minimal_config_has_no_unknown_keys(dfs_env: dict[str, str], tmp_path: Path) -> None:
    res = validate_config(minimal_config(tmp_path / "cp.db"), dfs_env, tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "Validation: OK\n" in res.stdout, out  # no "(with N warning(s))"
    assert UNKNOWN_KEYS_MARKER not in out


@pytest.mark.parametrize("metrics", [False, True])
def test_validate_spec_configmap_has_no_unknown_keys(dfs_env: dict[str, str], tmp_path: Path, metrics: bool) -> None:
    res = validate_config(spec_configmap(metrics), dfs_env, tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "Validation: OK\n" in res.stdout, out
    assert UNKNOWN_KEYS_MARKER not in out


@pytest.mark.parametrize(
    ("extra", "reported"),
    [
        ("telemetry: {enabled: true}\n", "telemetry"),
        ("cache: {size: 1Gi}\n", "cache"),
        ("metrics: {enabled: false, interval: 15s}\n", "metrics.interval"),
    ],
)
def test_validate_reports_unknown_keys(dfs_env: dict[str, str], tmp_path: Path, extra: str, reported: str) -> None:
    """The negative check can fail: a stale key produces the warning (stderr) but exit code 0."""
    res = validate_config(minimal_config(tmp_path / "cp.db") + extra, dfs_env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"WARNING: {UNKNOWN_KEYS_MARKER} (ignored): {reported}" in res.stderr


def test_validate_nested_unknown_key_is_reported_with_its_path(dfs_env: dict[str, str], tmp_path: Path) -> None:
    cfg = minimal_config(tmp_path / "cp.db").replace(
        "jwt: {access_token_duration: 15m,", "jwt: {issuer: dittofs, access_token_duration: 15m,"
    )
    res = validate_config(cfg, dfs_env, tmp_path)
    assert f"{UNKNOWN_KEYS_MARKER} (ignored): controlplane.jwt.issuer" in res.stderr


def test_validate_empty_unknown_section_is_silent(dfs_env: dict[str, str], tmp_path: Path) -> None:
    """Pitfall: an EMPTY unknown map (``telemetry: {}``) has no leaf keys, so viper drops it unreported."""
    res = validate_config(minimal_config(tmp_path / "cp.db") + "telemetry: {}\n", dfs_env, tmp_path)
    assert res.returncode == 0
    assert UNKNOWN_KEYS_MARKER not in res.stdout + res.stderr


def test_validate_does_not_check_jwt_secret_length(dfs_env: dict[str, str], tmp_path: Path) -> None:
    """``config validate`` only warns when the secret is EMPTY; a short one passes (``start`` rejects it)."""
    short = dict(dfs_env, DITTOFS_CONTROLPLANE_SECRET="x" * 31)
    res = validate_config(minimal_config(tmp_path / "cp.db"), short, tmp_path)
    assert res.returncode == 0
    assert "Validation: OK\n" in res.stdout
    empty = {k: v for k, v in dfs_env.items() if k != "DITTOFS_CONTROLPLANE_SECRET"}
    res = validate_config(minimal_config(tmp_path / "cp.db"), empty, tmp_path)
    assert res.returncode == 0
    assert "JWT secret not configured" in res.stdout


@pytest.mark.parametrize(
    ("replace", "by", "env", "message"),
    [
        ("shutdown_timeout: 30s", 'shutdown_timeout: "30"', {}, 'missing unit in duration "30"'),
        ("format: json", "format: JSON", {}, "Config.Logging.Format: validation failed on 'oneof'"),
        ("type: sqlite", "type: mysql", {}, "unsupported database type: mysql"),
        ("", "", {"DITTOFS_CONTROLPLANE_PORT": "70000"}, "Config.ControlPlane.Port: validation failed"),
        ("", "", {"DITTOFS_DATABASE_TYPE": "postgres"}, "postgres host is required"),
        ("", "", {"DITTOFS_METRICS_ENABLED": "true", "DITTOFS_METRICS_PATH": "m"}, 'must start with "/"'),
    ],
)
def test_validate_rejects(
    dfs_env: dict[str, str], tmp_path: Path, replace: str, by: str, env: dict[str, str], message: str
) -> None:
    cfg = minimal_config(tmp_path / "cp.db")
    if replace:
        assert replace in cfg
        cfg = cfg.replace(replace, by)
    res = validate_config(cfg, {**dfs_env, **env}, tmp_path)
    assert res.returncode == 1, res.stdout
    assert message in res.stderr


def test_validate_accepts_lowercase_level_and_unitless_integer_duration(
    dfs_env: dict[str, str], tmp_path: Path
) -> None:
    """Level is upper-cased before validation; a bare YAML integer duration is NANOseconds, not an error."""
    cfg = minimal_config(tmp_path / "cp.db").replace("level: INFO", "level: debug")
    cfg = cfg.replace("shutdown_timeout: 30s", "shutdown_timeout: 30")
    res = validate_config(cfg, dfs_env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Log level:       DEBUG" in res.stdout


# ---------------------------------------------------------------------------------------------- start


def test_start_minimal_config(dfs_env: dict[str, str], tmp_path: Path) -> None:
    server = DfsServer(minimal_config(tmp_path / "controlplane.db"), dfs_env, tmp_path)
    with server:
        health = server.health()
        assert health["status"] == "healthy", health
        assert health["data"]["control_plane_db"] == "reachable", health
        assert health["data"]["service"] == "dittofs"

        ready = server.ready()
        assert ready["status"] == "healthy", ready
        assert ready["data"]["metadata_stores"] == 0
        assert ready["data"]["shares"] == 0

        login = server.login("admin", ADMIN_PASSWORD)
        fields = {"access_token", "refresh_token", "token_type", "expires_in", "expires_at", "user"}
        assert fields <= set(login)
        assert login["token_type"] == "Bearer"
        assert login["expires_in"] == 15 * 60  # controlplane.jwt.access_token_duration
        assert login["user"]["username"] == "admin"
        assert login["user"]["role"] == "admin"
        # The password came from DITTOFS_ADMIN_INITIAL_PASSWORD, so no forced first-login change.
        assert login["user"]["must_change_password"] is False

        status, bad = server.request("POST", "/api/v1/auth/login", {"username": "admin", "password": "nope"})
        assert status == 401, bad

        status, adapters = server.request("GET", "/api/v1/adapters", token=login["access_token"])
        assert status == 200, adapters
        ports = {a["type"]: a["port"] for a in adapters}
        assert ports == {"nfs": SEEDED_NFS_PORT, "smb": SEEDED_SMB_PORT}

        status, _ = server.request("GET", "/api/v1/adapters")
        assert status == 401

    assert server.returncode == 0, server.log_tail()
    log = server.log_text()
    assert GRACEFUL_STOP_MARKER in log
    assert UNKNOWN_KEYS_MARKER not in log
    # Nothing outside the work dir's DB: foreground + logging.output=stdout writes no XDG/HOME state.
    for sub in ("home", "xdg/config", "xdg/state"):
        assert not any((tmp_path / sub).iterdir()), sub


def test_start_spec_configmap_with_metrics(dfs_env: dict[str, str], tmp_path: Path) -> None:
    """SPEC §4.2 as rendered (pod paths, 0.0.0.0): env overrides make it local; metrics host/path work."""
    with DfsServer(spec_configmap(metrics=True), dfs_env, tmp_path) as server:
        assert server.health()["data"]["control_plane_db"] == "reachable"
        assert (tmp_path / "controlplane.db").is_file()  # DITTOFS_DATABASE_SQLITE_PATH beat the file
        text = server.metrics_text("/custom-metrics")
        assert "# TYPE" in text
    assert server.returncode == 0
    assert UNKNOWN_KEYS_MARKER not in server.log_text()
    assert "metrics endpoint configured" in server.log_text()


def test_start_warns_on_unknown_key(dfs_env: dict[str, str], tmp_path: Path) -> None:
    cfg = minimal_config(tmp_path / "controlplane.db") + "telemetry: {enabled: true}\n"
    with DfsServer(cfg, dfs_env, tmp_path) as server:
        assert server.health()["status"] == "healthy"
    assert f"WARNING: {UNKNOWN_KEYS_MARKER} (ignored): telemetry" in server.log_text()


@pytest.mark.parametrize("length", [0, 31])
def test_start_rejects_short_jwt_secret(dfs_env: dict[str, str], tmp_path: Path, length: int) -> None:
    env = dict(dfs_env, DITTOFS_CONTROLPLANE_SECRET="s" * length)
    server = DfsServer(minimal_config(tmp_path / "controlplane.db"), env, tmp_path)
    with pytest.raises(DfsStartError) as info:
        server.start()
    assert info.value.returncode == 1
    assert f"Error: failed to create API server: {SHORT_SECRET_MESSAGE}" in info.value.log


@pytest.mark.parametrize(("length", "why"), [(ADMIN_BOUNDS.least - 1, f"at least {ADMIN_BOUNDS.least}"),
                                             ((ADMIN_BOUNDS.most or 0) + 1, f"at most {ADMIN_BOUNDS.most}")])
def test_a_first_boot_refuses_an_admin_password_bcrypt_cannot_take(dfs_env: dict[str, str], tmp_path: Path,
                                                                  length: int, why: str) -> None:
    """The webhook's and the reconciler's bounds for identity.admin.passwordSecretRef (ADMIN_BOUNDS)."""
    env = dict(dfs_env, DITTOFS_ADMIN_INITIAL_PASSWORD="p" * length)
    server = DfsServer(minimal_config(tmp_path / "controlplane.db"), env, tmp_path)
    with pytest.raises(DfsStartError) as info:
        server.start()
    assert info.value.returncode == 1
    assert "failed to ensure admin user: failed to hash password: password must be " + why in info.value.log


def test_start_accepts_32_char_secret_via_long_alias(dfs_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in dfs_env.items() if k != "DITTOFS_CONTROLPLANE_SECRET"}
    env["DITTOFS_CONTROLPLANE_JWT_SECRET"] = secrets.token_hex(16)  # exactly 32 chars
    with DfsServer(minimal_config(tmp_path / "controlplane.db"), env, tmp_path) as server:
        assert server.login("admin", ADMIN_PASSWORD)["access_token"]
    assert server.returncode == 0


def test_restart_keeps_admin_and_ignores_new_initial_password(dfs_env: dict[str, str], tmp_path: Path) -> None:
    """Bootstrap-only: once ``admin`` exists, a changed DITTOFS_ADMIN_INITIAL_PASSWORD has no effect."""
    cfg = minimal_config(tmp_path / "controlplane.db")
    with DfsServer(cfg, dfs_env, tmp_path) as first:
        first.login("admin", ADMIN_PASSWORD)
    env = dict(dfs_env, DITTOFS_ADMIN_INITIAL_PASSWORD="another-password-2")
    with DfsServer(cfg, env, tmp_path) as second:
        assert second.login("admin", ADMIN_PASSWORD)["user"]["username"] == "admin"
        status, _ = second.request(
            "POST", "/api/v1/auth/login", {"username": "admin", "password": "another-password-2"}
        )
        assert status == 401
    assert "Admin user created" not in second.log_text()


def test_sigterm_is_graceful_and_exits_zero(dfs_env: dict[str, str], tmp_path: Path) -> None:
    server = DfsServer(minimal_config(tmp_path / "controlplane.db"), dfs_env, tmp_path).start()
    try:
        assert server.health()["status"] == "healthy"
    finally:
        rc = server.stop(timeout=10)
    assert rc == 0
    log = server.log_text()
    assert "Shutdown signal received, initiating graceful shutdown" in log
    assert GRACEFUL_STOP_MARKER in log
    assert "graceful shutdown timed out" not in log


def test_api_port_in_use_exits_one(dfs_env: dict[str, str], tmp_path: Path) -> None:
    """A second server on a taken API port exits 1 (unlike adapter ports, whose bind failure only logs)."""
    with DfsServer(minimal_config("/unused.db"), dfs_env, tmp_path / "a", isolate_network=False) as first:
        cfg = tmp_path / "b.yaml"
        cfg.write_text(minimal_config(tmp_path / "b" / "controlplane.db", port=first.api_port))
        res = run_dfs(["start", "--foreground", "--config", str(cfg)], dfs_env, tmp_path / "b", timeout=30)
        assert res.returncode == 1, res.stdout + res.stderr
        assert "address already in use" in res.stdout + res.stderr
        assert first.health()["status"] == "healthy"


# ---------------------------------------------------------------------------------------------- isolation


def test_two_isolated_servers_run_concurrently_with_their_own_adapters(dfs_env: dict[str, str], tmp_path: Path) -> None:
    """Each DfsServer gets a private netns: both bind NFS 12049 / SMB 1445 without touching the host."""
    if not netns_supported():
        missing("netns", "private network namespaces need root or CAP_SYS_ADMIN and nsenter "
                "(or TESTBED_DFS_NETNS=0 is set)")
    cfg = minimal_config("/unused.db")
    with (
        DfsServer(cfg, dfs_env, tmp_path / "a") as a,
        DfsServer(cfg, dfs_env, tmp_path / "b") as b,
    ):
        host_ns = os.readlink("/proc/self/ns/net")
        namespaces = {os.readlink(f"/proc/{s.pid}/ns/net") for s in (a, b)}
        assert len(namespaces) == 2
        assert host_ns not in namespaces
        for s in (a, b):
            adapters = s.ready()["data"]["adapters"]
            assert adapters["running"] == 2
            assert sorted(adapters["types"]) == ["nfs", "smb"]
            assert "Adapter failed" not in s.log_text()
    assert a.returncode == 0
    assert b.returncode == 0


# ---------------------------------------------------------------------------------------------- REST-managed state


def test_stores_shares_and_adapter_ports_are_rest_managed_and_persist(dfs_env: dict[str, str], tmp_path: Path) -> None:
    """Stores/shares/adapters are DB rows created over REST (no config keys); paths are what we POST."""
    cfg = minimal_config(tmp_path / "controlplane.db")
    meta_dir, block_dir = tmp_path / "store" / "metadata", tmp_path / "store" / "block"
    with DfsServer(cfg, dfs_env, tmp_path) as server:
        token = server.login("admin", ADMIN_PASSWORD)["access_token"]
        status, meta = server.request(
            "POST",
            "/api/v1/store/metadata",
            {"name": "meta", "type": "badger", "config": json.dumps({"path": str(meta_dir)})},
            token=token,
        )
        assert status == 201, meta
        status, block = server.request(
            "POST",
            "/api/v1/store/block/local",
            {"name": "local", "type": "fs", "config": json.dumps({"path": str(block_dir)})},
            token=token,
        )
        assert status == 201, block
        status, share = server.request(
            "POST",
            "/api/v1/shares",
            {"name": "/export", "metadata_store_id": "meta", "local_block_store": "local"},
            token=token,
        )
        assert status == 201, share
        nfs_port = free_port()
        status, nfs = server.request("PUT", "/api/v1/adapters/nfs", {"port": nfs_port}, token=token)
        assert status == 200, nfs
        assert nfs["port"] == nfs_port
        assert any(meta_dir.iterdir())  # badger files
        assert block_dir.is_dir()
    assert server.returncode == 0

    with DfsServer(cfg, dfs_env, tmp_path) as again:
        data = again.ready()["data"]
        assert data["metadata_stores"] == 1
        assert data["shares"] == 1
        token = again.login("admin", ADMIN_PASSWORD)["access_token"]
        status, adapters = again.request("GET", "/api/v1/adapters", token=token)
        assert status == 200
        assert {a["type"]: a["port"] for a in adapters}["nfs"] == nfs_port
        assert f'"NFS server listening","port":{nfs_port}' in again.log_text()
    assert again.returncode == 0


@pytest.mark.parametrize("variable", ["DITTOFS_METRICS_PORT", "DITTOFS_CONTROLPLANE_PORT"])
def test_a_service_link_variable_stops_dfs(dfs_env: dict[str, str], tmp_path: Path, variable: str) -> None:
    """Why the server's pod sets ``enableServiceLinks: false``: the kubelet's link variables for a Service named
    ``dittofs-metrics`` (a server called ``dittofs``) or ``dittofs-controlplane`` are read as config keys."""
    env = {**dfs_env, variable: "tcp://10.96.3.4:9090"}  # the link's shape; nothing dials it
    res = validate_config(spec_configmap(metrics=False), env, tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    key = variable.removeprefix("DITTOFS_").lower().replace("_", ".")
    assert f"'{key}' cannot parse value as 'int'" in out, out
