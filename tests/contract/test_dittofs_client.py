"""Contract: the typed DittoFS client + the pure planner against the real dfs v0.29.0 (no Kubernetes).

Each test runs its own dfs (tests/testbed/dfs.py, private netns when possible) with the bootstrap admin
password from the environment, exactly like the pod. Hand-made changes go through the raw HTTP helper of
``DfsServer`` as the bootstrap admin, i.e. the way a human with ``dfsctl``/curl would make them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from dittoctl.api.fileservice import (
    AdapterSpec,
    FileService,
    Grant,
    GroupSpec,
    Kind,
    NfsOptions,
    Op,
    ProblemKind,
    Ref,
    SecretValue,
    ShareSpec,
    SnapshotPolicySpec,
    StoreKind,
    StoreSpec,
    UserSpec,
    digest_of,
    plan,
)
from dittoctl.api.fileservice.planner import DRIFT_READS, Plan, Reads, reads
from dittoctl.api.secrets import USER_PASSWORD
from dittoctl.kube.dittofs import (
    DittoFsAuthError,
    DittoFsClient,
    DittoFsConflict,
    DittoFsError,
    DittoFsForbidden,
    DittoFsNotFound,
    DittoFsRejected,
    DittoFsServerError,
    DittoFsUnreachable,
    MetadataStoreLocked,
    PlanFailed,
    bootstrap_operator,
    operator_login,
)
from tests.contract.conftest import ADMIN_PASSWORD
from tests.support.poll import eventually
from tests.support.s3 import ACCESS_KEY_ID, MotoServer
from tests.testbed.dfs import SEEDED_NFS_PORT, SEEDED_SMB_PORT, DfsServer, minimal_config

OPERATOR_PASSWORD = "operator-pw-Zq81-never-logged"
PASSWORDS = {"op": OPERATOR_PASSWORD, "alice": "alice-pw-Kx2-secret", "bob": "bob-pw-Admin-77x"}
SECRETS = {ref: SecretStr(v) for ref, v in PASSWORDS.items()}
ALL_SECRET_TEXT = [ADMIN_PASSWORD, *PASSWORDS.values()]


def sv(ref: str) -> SecretValue:
    return SecretValue(ref, digest_of(PASSWORDS[ref]))


def declared(data: Path) -> FileService:
    """A file service using every object kind the planner knows, except S3 (no S3 endpoint here)."""
    return FileService(
        operator=sv("op"),
        adapters=(AdapterSpec("nfs", True, 12050, (("lease_time", 60), ("max_version", "4.0"))),
                  AdapterSpec("smb", True, 1445, (("signing", "required"),))),
        stores=(StoreSpec(StoreKind.METADATA, "default", "badger", (("path", str(data / "metadata" / "badger")),)),
                StoreSpec(StoreKind.LOCAL, "default", "fs", (("path", str(data / "block" / "blocks")),))),
        shares=(
            ShareSpec("export", default_permission="read", quota_bytes=10 << 30,
                      nfs=NfsOptions("all_to_guest", 65534, 65534),
                      permissions=(Grant("user", "alice", "read-write"), Grant("group", "eng", "read")),
                      snapshot_policy=SnapshotPolicySpec("1h", keep_last=3, ttl="72h", name_prefix="op")),
            ShareSpec("scratch", read_only=True, quota_bytes=1500),
        ),
        users=(UserSpec("alice", sv("alice"), uid=1001, gid=2000, groups=("eng",)),
               UserSpec("bob", sv("bob"), uid=1002, role="admin")),
        groups=(GroupSpec("eng", 2000),),
    )


@dataclasses.dataclass
class State:
    """What status.provisioned and the applied digests would hold between passes."""

    owned: frozenset[Ref] = frozenset()
    applied: dict[str, str] = dataclasses.field(default_factory=dict)


async def one_pass(client: DittoFsClient, want: FileService, state: State) -> tuple[Plan, Counter[str], float]:
    """observe -> plan -> execute, as a reconcile pass would; returns the plan and HTTP calls by method."""
    return await one_pass_with(client, want, state, SECRETS)


async def one_pass_with(client: DittoFsClient, want: FileService, state: State,
                        values: dict[str, SecretStr], wanted: Reads | None = None) -> tuple[Plan, Counter[str], float]:
    client.requests.clear()
    start = time.perf_counter()
    seen = await client.observe(wanted)
    p = plan(want, seen, state.owned, state.applied)
    done = await client.execute(p, values)
    state.owned = p.owned_after(done)
    state.applied = p.digests_after(state.applied, done)
    return p, Counter(client.requests), time.perf_counter() - start


async def provisioned(client: DittoFsClient, tmp_path: Path) -> tuple[FileService, State]:
    """``declared`` after one pass: everything created, its ownership and digests recorded."""
    want, state = declared(tmp_path / "data"), State()
    await one_pass(client, want, state)
    return want, state


def start_dfs(tmp_path: Path, env: dict[str, str]) -> DfsServer:
    return DfsServer(minimal_config(tmp_path / "controlplane.db"), env, tmp_path / "dfs").start()


@pytest.fixture
def dfs(dfs_env: dict[str, str], tmp_path: Path) -> Iterator[DfsServer]:
    server = start_dfs(tmp_path, dfs_env)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def operator(dfs: DfsServer) -> AsyncIterator[DittoFsClient]:
    client = await bootstrap_operator(dfs.base_url, SecretStr(ADMIN_PASSWORD), "dittofs-operator",
                                      SecretStr(OPERATOR_PASSWORD))
    async with client:
        yield client


def admin_call(dfs: DfsServer, method: str, path: str, body: object = None) -> tuple[int, object]:
    """A change by hand: the bootstrap admin over plain HTTP."""
    token = dfs.login("admin", ADMIN_PASSWORD)["access_token"]
    return dfs.request(method, "/api/v1" + path, body, token)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for value in ALL_SECRET_TEXT:
            assert value not in text


# ---------------------------------------------------------------------------------------------------------
# identity


async def test_operator_account_is_an_admin_created_through_the_bootstrap_admin(dfs: DfsServer) -> None:
    client = await bootstrap_operator(dfs.base_url, SecretStr(ADMIN_PASSWORD), "dittofs-operator",
                                      SecretStr(OPERATOR_PASSWORD))
    async with client:
        me = await client.me()
        assert (me["username"], me["role"], me["must_change_password"]) == ("dittofs-operator", "admin", False)
        # admin login, create (201), operator login, first-login self-change (200); the refused operator login
        # before them was the probe's (``operator_login``).
        assert client.requests == Counter({"POST": 4, "GET": 1})
        # The account can provision (role `operator` could not: admin-only routes).
        assert isinstance(await client.request("GET", "/api/v1/shares"), list)
    # A second bootstrap just logs in.
    again = await bootstrap_operator(dfs.base_url, SecretStr("wrong-admin-pw"), "dittofs-operator",
                                     SecretStr(OPERATOR_PASSWORD))
    async with again:
        assert again.requests == Counter({"POST": 1})
    # A lost password (changed by hand) is reset through admin; a wrong admin password is an AuthError.
    status, _ = admin_call(dfs, "POST", "/users/dittofs-operator/password", {"new_password": "changed-by-hand-1"})
    assert status == 204
    reset = await bootstrap_operator(dfs.base_url, SecretStr(ADMIN_PASSWORD), "dittofs-operator",
                                     SecretStr(OPERATOR_PASSWORD))
    async with reset:
        assert (await reset.me())["must_change_password"] is False
    admin_call(dfs, "POST", "/users/dittofs-operator/password", {"new_password": "changed-by-hand-2"})
    with pytest.raises(DittoFsAuthError) as err:
        await bootstrap_operator(dfs.base_url, SecretStr(ADMIN_PASSWORD + "x"), "dittofs-operator",
                                 SecretStr(OPERATOR_PASSWORD))
    assert "Invalid username or password" in str(err.value)
    assert_no_secret(str(err.value), repr(err.value), repr(client))


async def test_an_operator_account_disabled_or_demoted_by_hand_is_restored(dfs: DfsServer) -> None:
    """SPEC §13.2 "if the account is lost, it is re-created": an account disabled by hand cannot log in (403, not
    401), and one demoted by hand logs in but provisions nothing. Both used to leave the operator stuck; both are
    made an enabled admin with the operator's password again."""
    await (await bootstrap_operator(dfs.base_url, SecretStr(ADMIN_PASSWORD), "dittofs-operator",
                                    SecretStr(OPERATOR_PASSWORD))).close()

    async def restored() -> None:
        assert await operator_login(dfs.base_url, "dittofs-operator", SecretStr(OPERATOR_PASSWORD)) is None
        async with await bootstrap_operator(dfs.base_url, SecretStr(ADMIN_PASSWORD), "dittofs-operator",
                                            SecretStr(OPERATOR_PASSWORD)) as client:
            me = await client.me()
            assert (me["role"], me["enabled"], me["must_change_password"]) == ("admin", True, False)
            assert isinstance(await client.request("GET", "/api/v1/shares"), list)

    assert admin_call(dfs, "PUT", "/users/dittofs-operator", {"enabled": False})[0] == 200
    async with DittoFsClient(dfs.base_url, "dittofs-operator", SecretStr(OPERATOR_PASSWORD)) as disabled:
        with pytest.raises(DittoFsForbidden, match="disabled"):
            await disabled.login()
    await restored()

    assert admin_call(dfs, "PUT", "/users/dittofs-operator", {"role": "user"})[0] == 200
    async with DittoFsClient(dfs.base_url, "dittofs-operator", SecretStr(OPERATOR_PASSWORD)) as demoted:
        await demoted.login()
        assert demoted.role == "user"
        with pytest.raises(DittoFsForbidden):
            await demoted.request("GET", "/api/v1/shares")
    await restored()
    healthy = await operator_login(dfs.base_url, "dittofs-operator", SecretStr(OPERATOR_PASSWORD))
    assert healthy is not None and healthy.requests == Counter({"POST": 1})
    await healthy.close()


# ---------------------------------------------------------------------------------------------------------
# the happy path and the read-only second pass


async def test_full_plan_from_empty_then_a_second_pass_only_reads(
        dfs: DfsServer, operator: DittoFsClient, tmp_path: Path) -> None:
    want = declared(tmp_path / "data")
    state = State()
    first, calls1, t1 = await one_pass(operator, want, state)
    assert first.problems == ()
    kinds = Counter(c.kind for c in first.calls)
    assert kinds == {Kind.GROUP: 1, Kind.USER: 2, Kind.ADAPTER: 1, Kind.ADAPTER_SETTINGS: 2, Kind.METADATA_STORE: 1,
                     Kind.LOCAL_STORE: 1, Kind.SHARE: 2, Kind.SHARE_NFS: 1, Kind.PERMISSION: 2,
                     Kind.SNAPSHOT_POLICY: 1}, "the operator account already exists (bootstrap)"
    second, calls2, t2 = await one_pass(operator, want, state)
    print(f"\npass 1: {len(first.calls)} calls planned, HTTP {dict(calls1)} in {t1:.2f}s; "
          f"pass 2: HTTP {dict(calls2)} in {t2:.2f}s")
    assert second.calls == () and second.problems == ()
    assert set(calls2) == {"GET"}, calls2
    # Bounded: 10 lists/settings + 3 per share (NFS options, grants; snapshots, counted for every share when no
    # Reads says which: a pass of the operator counts them only for owned shares that left the spec).
    assert calls2["GET"] == 10 + 3 * 2

    # What DittoFS now really serves (read as the bootstrap admin, not through our own client).
    token = dfs.login("admin", ADMIN_PASSWORD)["access_token"]
    _, share = dfs.request("GET", "/api/v1/shares/export", token=token)
    assert isinstance(share, dict)
    assert (share["default_permission"], share["quota_bytes"], share["read_only"]) == ("read", "10.00GiB", False)
    _, perms = dfs.request("GET", "/api/v1/shares/export/permissions", token=token)
    assert sorted((p["type"], p["name"], p["level"]) for p in perms) == [
        ("group", "eng", "read"), ("user", "alice", "read-write")]
    _, nfs = dfs.request("GET", "/api/v1/shares/export/adapters/nfs/config", token=token)
    assert nfs["squash"] == "all_to_guest"
    _, policy = dfs.request("GET", "/api/v1/shares/export/snapshot-policy", token=token)
    assert (policy["interval"], policy["ttl"], policy["keep_last"]) == ("1h0m0s", "72h0m0s", 3)
    _, adapters = dfs.request("GET", "/api/v1/adapters", token=token)
    assert {a["type"]: a["port"] for a in adapters} == {"nfs": 12050, "smb": 1445}
    _, settings = dfs.request("GET", "/api/v1/adapters/nfs/settings", token=token)
    assert (settings["lease_time"], settings["max_version"]) == (60, "4.0")
    # Passwords were applied: alice logs in; bob (admin role) completed his first login and can work.
    assert dfs.login("alice", PASSWORDS["alice"])["user"]["groups"] == ["eng"]
    bob = dfs.login("bob", PASSWORDS["bob"])
    assert bob["user"]["must_change_password"] is False
    assert dfs.request("GET", "/api/v1/users", token=bob["access_token"])[0] == 200
    assert {str(r) for r in state.owned} >= {"share:/export", "share:/scratch", "user:alice", "group:eng"}


# ---------------------------------------------------------------------------------------------------------
# drift, hand-made objects, pruning


async def test_drift_is_repaired_and_hand_made_objects_are_left_alone(
        dfs: DfsServer, operator: DittoFsClient, tmp_path: Path) -> None:
    want, state = await provisioned(operator, tmp_path)

    # By hand: delete an owned share, change another, drop one of its grants, make a share of our own.
    assert admin_call(dfs, "DELETE", "/shares/scratch")[0] == 204
    assert admin_call(dfs, "PUT", "/shares/export", {"read_only": True, "default_permission": "none"})[0] == 200
    assert admin_call(dfs, "DELETE", "/shares/export/permissions/groups/eng")[0] == 204
    assert admin_call(dfs, "POST", "/shares", {"name": "/manual", "metadata_store_id": "default",
                                               "local_block_store": "default", "read_only": True})[0] == 201
    assert admin_call(dfs, "PUT", "/shares/manual/permissions/users/alice", {"level": "admin"})[0] == 204

    repair, calls, took = await one_pass(operator, want, state)
    print(f"\nrepair: {[str(c) for c in repair.calls]} HTTP {dict(calls)} in {took:.2f}s")
    assert [(c.op, c.kind, c.name) for c in repair.calls] == [
        (Op.UPDATE, Kind.SHARE, "/export"),
        (Op.CREATE, Kind.SHARE, "/scratch"),
        (Op.CREATE, Kind.PERMISSION, "/export#group:eng"),
    ]
    assert next(c.body for c in repair.calls if c.name == "/export") == {"read_only": False,
                                                                        "default_permission": "read"}
    assert not any("/manual" in c.path for c in repair.calls)
    assert calls["POST"] == 1 and calls["PUT"] == 2 and "DELETE" not in calls

    quiet, calls, _ = await one_pass(operator, want, state)
    assert quiet.calls == () and set(calls) == {"GET"}
    token = dfs.login("admin", ADMIN_PASSWORD)["access_token"]
    _, manual = dfs.request("GET", "/api/v1/shares/manual", token=token)
    assert manual["read_only"] is True
    _, perms = dfs.request("GET", "/api/v1/shares/manual/permissions", token=token)
    assert perms == [{"type": "user", "name": "alice", "level": "admin"}]

    # Declaring the hand-made share does not adopt it: a problem, no call.
    clash = dataclasses.replace(want, shares=(*want.shares, ShareSpec("manual")))
    reported, calls, _ = await one_pass(operator, clash, state)
    assert reported.calls == () and [str(p.ref) for p in reported.problems] == ["share:/manual"]

    # Removing owned objects from the spec prunes them (reverse order); /manual stays.
    smaller = dataclasses.replace(want, shares=want.shares[:1], users=want.users[:1])
    pruned, calls, _ = await one_pass(operator, smaller, state)
    assert [(c.op, c.kind, c.name) for c in pruned.calls] == [(Op.DELETE, Kind.SHARE, "/scratch"),
                                                              (Op.DELETE, Kind.USER, "bob")]
    _, shares = dfs.request("GET", "/api/v1/shares", token=token)
    assert sorted(s["name"] for s in shares) == ["/export", "/manual"]
    assert (await one_pass(operator, smaller, state))[0].calls == ()


async def test_drift_passes_read_at_most_ten_and_reach_every_declared_object(
        dfs: DfsServer, operator: DittoFsClient, tmp_path: Path) -> None:
    want, state = await provisioned(operator, tmp_path)

    # By hand, in three of the lists a single drift pass may skip: a policy, an SMB setting, a grant.
    assert admin_call(dfs, "DELETE", "/shares/export/snapshot-policy")[0] == 204
    assert admin_call(dfs, "PATCH", "/adapters/smb/settings", {"signing": "disabled"})[0] == 200
    assert admin_call(dfs, "DELETE", "/shares/export/permissions/users/alice")[0] == 204

    async def drift_passes(count: int) -> tuple[list[tuple[Op, Kind, str]], list[Counter[str]]]:
        cursor, repaired, sent = 0, [], []
        for _ in range(count):
            wanted = reads(want, state.owned, full=False, cursor=cursor)
            cursor += wanted.advance
            p, calls, _ = await one_pass_with(operator, want, state, SECRETS, wanted)
            assert p.problems == ()
            repaired += [(c.op, c.kind, c.name) for c in p.calls]
            sent.append(calls)
        return repaired, sent

    # Unbounded, this server would take 13 reads a pass (5 lists, groups, policies, 2 settings, 2 shares).
    repaired, sent = await drift_passes(3)
    print(f"\ndrift passes after hand edits: {[dict(c) for c in sent]}")
    assert all(c["GET"] <= DRIFT_READS for c in sent), sent
    assert sorted(repaired) == sorted([(Op.UPDATE, Kind.ADAPTER_SETTINGS, "smb"),
                                       (Op.CREATE, Kind.SNAPSHOT_POLICY, "/export"),
                                       (Op.CREATE, Kind.PERMISSION, "/export#user:alice")])
    repaired, sent = await drift_passes(3)
    assert repaired == [] and all(set(c) == {"GET"} and c["GET"] <= DRIFT_READS for c in sent), sent
    _, policy = admin_call(dfs, "GET", "/shares/export/snapshot-policy")
    assert isinstance(policy, dict) and policy["keep_last"] == 3
    _, smb = admin_call(dfs, "GET", "/adapters/smb/settings")
    assert isinstance(smb, dict) and smb["signing"] == "required"


async def test_a_share_and_a_user_disabled_by_hand_are_enabled_again(
        dfs: DfsServer, operator: DittoFsClient, tmp_path: Path) -> None:
    want, state = await provisioned(operator, tmp_path)
    assert admin_call(dfs, "POST", "/shares/export/disable")[0] == 200
    assert admin_call(dfs, "PUT", "/users/alice", {"enabled": False})[0] == 200
    assert dfs.request("POST", "/api/v1/auth/login", {"username": "alice", "password": PASSWORDS["alice"]})[0] != 200

    repair = (await one_pass(operator, want, state))[0]
    assert [(c.op, c.kind, c.method, c.path) for c in repair.calls] == [
        (Op.UPDATE, Kind.USER, "PUT", "/api/v1/users/alice"),
        (Op.UPDATE, Kind.SHARE, "POST", "/api/v1/shares/export/enable")]
    _, share = admin_call(dfs, "GET", "/shares/export")
    assert isinstance(share, dict) and share["enabled"] is True
    assert dfs.login("alice", PASSWORDS["alice"])["access_token"]
    assert (await one_pass(operator, want, state))[0].calls == ()


async def test_a_nested_share_name_is_one_path_segment_and_a_deleted_adapter_is_recreated(
        dfs: DfsServer, operator: DittoFsClient, tmp_path: Path) -> None:
    """DittoFS routes a share's name as one segment: a name with '/' is read (not only written) escaped. An
    adapter deleted by hand has no settings to read (404): it is re-created, not a failed pass."""
    base = declared(tmp_path / "data")
    want = dataclasses.replace(base, shares=(*base.shares, ShareSpec(
        "/team/docs", permissions=(Grant("user", "alice", "read"),), snapshot_policy=SnapshotPolicySpec("1h"))))
    state = State()
    await one_pass(operator, want, state)
    quiet, calls, _ = await one_pass(operator, want, state)
    assert quiet.calls == () and quiet.problems == () and set(calls) == {"GET"}
    _, perms = admin_call(dfs, "GET", "/shares/team%2Fdocs/permissions")
    assert perms == [{"type": "user", "name": "alice", "level": "read"}]

    assert admin_call(dfs, "DELETE", "/shares/team%2Fdocs/permissions/users/alice")[0] == 204
    assert admin_call(dfs, "DELETE", "/adapters/smb")[0] == 204
    assert admin_call(dfs, "GET", "/adapters/smb/settings")[0] == 404
    repair = (await one_pass(operator, want, state))[0]
    assert [(c.op, c.kind, c.name) for c in repair.calls] == [
        (Op.CREATE, Kind.ADAPTER, "smb"), (Op.UPDATE, Kind.ADAPTER_SETTINGS, "smb"),
        (Op.CREATE, Kind.PERMISSION, "/team/docs#user:alice")], [str(c) for c in repair.calls]
    _, smb = admin_call(dfs, "GET", "/adapters/smb/settings")
    assert isinstance(smb, dict) and smb["signing"] == "required"
    assert (await one_pass(operator, want, state))[0].calls == ()

    # Dropped from the spec: deleted by its escaped name, the other shares untouched.
    pruned = (await one_pass(operator, base, state))[0]
    assert [(c.op, c.kind, c.name, c.path) for c in pruned.calls] == [
        (Op.DELETE, Kind.SHARE, "/team/docs", "/api/v1/shares/team%2Fdocs")]
    _, shares = admin_call(dfs, "GET", "/shares")
    assert isinstance(shares, list) and sorted(s["name"] for s in shares) == ["/export", "/scratch"]


async def test_a_share_with_snapshots_leaves_the_spec_disabled_and_keeps_them(
        dfs: DfsServer, operator: DittoFsClient, tmp_path: Path) -> None:
    """DittoFS deletes a share's snapshots with the share (rows and files). A share taken out of the spec with
    snapshots is disabled instead, its schedule stopped; once its snapshots are deleted by hand, it goes."""
    want, state = await provisioned(operator, tmp_path)
    status, snap = admin_call(dfs, "POST", "/shares/scratch/snapshots", {})
    assert status in (201, 202), (status, snap)

    def snapshots() -> list[dict[str, object]]:
        listed = admin_call(dfs, "GET", "/shares/scratch/snapshots")[1]
        assert isinstance(listed, list)
        return listed

    listed = eventually(lambda: [s for s in snapshots() if s.get("state") == "ready"], timeout=30,
                        what="the snapshot ready")
    without = dataclasses.replace(want, shares=want.shares[:1])
    held, calls, _ = await one_pass_with(operator, without, state, SECRETS, reads(without, state.owned, full=False))
    assert [(c.op, c.kind, c.method, c.path) for c in held.calls] == [
        (Op.UPDATE, Kind.SHARE, "POST", "/api/v1/shares/scratch/disable")]
    assert [(p.kind, str(p.ref)) for p in held.problems] == [(ProblemKind.HOLDS_SNAPSHOTS, "share:/scratch")]
    assert "its 1 snapshot(s)" in held.problems[0].message
    _, share = admin_call(dfs, "GET", "/shares/scratch")
    assert isinstance(share, dict) and share["enabled"] is False
    assert [s["id"] for s in snapshots()] == [s["id"] for s in listed]
    again, calls, _ = await one_pass_with(operator, without, state, SECRETS, reads(without, state.owned, full=False))
    assert again.calls == () and set(calls) == {"GET"} and calls["GET"] <= DRIFT_READS

    assert admin_call(dfs, "DELETE", f"/shares/scratch/snapshots/{listed[0]['id']}")[0] == 204
    gone, _, _ = await one_pass(operator, without, state)
    assert [(c.op, c.kind, c.name) for c in gone.calls] == [(Op.DELETE, Kind.SHARE, "/scratch")]
    assert gone.problems == () and admin_call(dfs, "GET", "/shares/scratch")[0] == 404

    # Why: deleting a share deletes its snapshots (the same share made again has none).
    proof = {"name": "/proof", "metadata_store_id": "default", "local_block_store": "default"}
    assert admin_call(dfs, "POST", "/shares", proof)[0] == 201
    assert admin_call(dfs, "POST", "/shares/proof/snapshots", {})[0] in (201, 202)
    eventually(lambda: admin_call(dfs, "GET", "/shares/proof/snapshots")[1], timeout=30, what="a snapshot")
    assert admin_call(dfs, "DELETE", "/shares/proof")[0] == 204
    assert admin_call(dfs, "POST", "/shares", proof)[0] == 201
    assert admin_call(dfs, "GET", "/shares/proof/snapshots") == (200, [])


async def test_immutable_store_path_is_reported_not_applied(
        dfs: DfsServer, operator: DittoFsClient, tmp_path: Path) -> None:
    want, state = await provisioned(operator, tmp_path)
    moved = dataclasses.replace(want, stores=(
        StoreSpec(StoreKind.METADATA, "default", "badger", (("path", str(tmp_path / "elsewhere")),)),
        want.stores[1]))
    p, calls, _ = await one_pass(operator, moved, state)
    assert p.calls == () and set(calls) == {"GET"}
    assert [(pr.kind.value, str(pr.ref)) for pr in p.problems] == [("Immutable", "metadata-store:default")]


# ---------------------------------------------------------------------------------------------------------
# errors become typed exceptions, never a crash, never a secret


async def test_dittofs_errors_map_to_typed_exceptions(
        dfs: DfsServer, operator: DittoFsClient, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dittoctl.dittofs")
    want, state = await provisioned(operator, tmp_path)
    stale = await operator.observe()
    seen_before = dataclasses.replace(stale, groups={}, stores={**stale.stores, StoreKind.METADATA: {}})
    errors: list[DittoFsError] = []

    # 409 problem+json: a group that appeared after we read (a race with a human).
    p = plan(FileService(groups=(GroupSpec("eng", 2000),)), seen_before)
    with pytest.raises(PlanFailed) as failed:
        await operator.execute(p, SECRETS)
    assert isinstance(failed.value.cause, DittoFsConflict) and failed.value.status == 409
    assert failed.value.done == [] and "Group already exists" in str(failed.value)
    errors.append(failed.value)

    # 400 on a re-POSTed badger store (v0.29.0 opens it before the insert; not a 409).
    p = plan(FileService(stores=want.stores[:1]), seen_before)
    with pytest.raises(PlanFailed) as failed:
        await operator.execute(p, SECRETS)
    assert isinstance(failed.value.cause, MetadataStoreLocked) and failed.value.status == 400
    assert "locked by another process" in failed.value.detail
    errors.append(failed.value)

    # Empty-bodied 500 (a recovered panic): an out-of-range adapter port; then put it back.
    p = plan(FileService(adapters=(AdapterSpec("nfs", True, 99999),)), stale)
    with pytest.raises(PlanFailed) as failed:
        await operator.execute(p, SECRETS)
    assert isinstance(failed.value.cause, DittoFsServerError) and failed.value.status == 500
    assert "empty response body" in str(failed.value)
    errors.append(failed.value)
    await operator.execute(plan(want, await operator.observe(), state.owned, state.applied), SECRETS)

    # 422 with per-field errors, 404 problem+json.
    with pytest.raises(DittoFsRejected) as rejected:
        await operator.request("PATCH", "/api/v1/adapters/nfs/settings", {"max_version": "5"})
    assert rejected.value.status == 422 and "max_version" in rejected.value.errors
    errors.append(rejected.value)
    with pytest.raises(DittoFsNotFound) as missing:
        await operator.request("GET", "/api/v1/shares/nope")
    errors.append(missing.value)

    # text/plain 403 from the middleware: a non-admin identity. observe() reads concurrently, so which route
    # refuses first varies: RequireAdmin says "Admin access required", RequireRole "Insufficient permissions".
    async with DittoFsClient(dfs.base_url, "alice", SecretStr(PASSWORDS["alice"])) as alice:
        with pytest.raises(DittoFsForbidden) as forbidden:
            await alice.request("GET", "/api/v1/users")
        assert forbidden.value.detail == "Admin access required"
        errors.append(forbidden.value)
        with pytest.raises(DittoFsForbidden) as forbidden:
            await alice.observe()
        assert forbidden.value.detail in ("Admin access required", "Insufficient permissions")

    # Bad credentials, and nobody listening at all.
    async with DittoFsClient(dfs.base_url, "alice", SecretStr("wrong-" + PASSWORDS["alice"])) as bad:
        with pytest.raises(DittoFsAuthError) as auth:
            await bad.me()
    errors.append(auth.value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    async with DittoFsClient(f"http://127.0.0.1:{closed}", "x", SecretStr(OPERATOR_PASSWORD)) as nowhere:
        with pytest.raises(DittoFsUnreachable) as down:
            await nowhere.observe()
    assert "unreachable" in str(down.value)
    errors.append(down.value)

    for err in errors:
        assert_no_secret(str(err), repr(err), err.detail, str(err.errors))
    assert_no_secret(caplog.text, repr(operator))
    assert "Bearer" not in caplog.text


async def test_a_secret_echoed_by_dittofs_is_scrubbed(operator: DittoFsClient) -> None:
    # A store config DittoFS rejects and echoes back in its detail (unsupported type named by value).
    with pytest.raises(DittoFsRejected) as err:
        await operator.request("POST", "/api/v1/store/metadata",
                               {"name": "x", "type": OPERATOR_PASSWORD, "config": "{}"}, [OPERATOR_PASSWORD])
    assert "unsupported metadata store type" in str(err.value)
    assert_no_secret(str(err.value), err.value.detail)


# ---------------------------------------------------------------------------------------------------------
# short-lived tokens


async def test_short_tokens_are_refreshed_and_replaced_by_login(dfs_env: dict[str, str], tmp_path: Path) -> None:
    env = {**dfs_env, "DITTOFS_CONTROLPLANE_JWT_ACCESS_TOKEN_DURATION": "2s",
           "DITTOFS_CONTROLPLANE_JWT_REFRESH_TOKEN_DURATION": "4s"}
    server = start_dfs(tmp_path, env)
    try:
        # Proactive: the client refreshes before expiry on its own clock.
        async with DittoFsClient(server.base_url, "admin", SecretStr(ADMIN_PASSWORD)) as client:
            await client.me()
            await asyncio.sleep(2.2)
            assert (await client.me())["username"] == "admin"
            assert client.requests == Counter({"POST": 2, "GET": 2})  # login + refresh
        # Reactive: a frozen clock makes the client trust a token the server already expired -> 401
        # -> refresh -> retry; once the refresh token expired too -> 401 -> re-login -> retry.
        frozen = time.monotonic()
        async with DittoFsClient(server.base_url, "admin", SecretStr(ADMIN_PASSWORD), clock=lambda: frozen) as client:
            await client.me()
            await asyncio.sleep(2.2)
            client.requests.clear()
            assert (await client.me())["username"] == "admin"
            assert client.requests == Counter({"GET": 2, "POST": 1})  # 401, refresh, retry
            await asyncio.sleep(4.5)
            client.requests.clear()
            seen = await client.observe()
            assert "admin" in seen.users
            # 10 concurrent reads all get 401; one refresh (refused) + one login under the lock; 10 retries.
            assert client.requests == Counter({"GET": 20, "POST": 2})
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------------
# v0.29.0 behaviour that differs from /work/shared/DITTOFS_API.md (docs/DITTOFS_FACTS.md, "REST provisioning")


def test_rest_facts_the_planner_relies_on(dfs: DfsServer) -> None:
    token = dfs.login("admin", ADMIN_PASSWORD)["access_token"]

    def call(method: str, path: str, body: object = None) -> tuple[int, object]:
        return dfs.request(method, "/api/v1" + path, body, token)

    assert call("POST", "/store/metadata", {"name": "m", "type": "memory", "config": "{}"})[0] == 201
    assert call("POST", "/store/block/local", {"name": "l", "type": "memory", "config": "{}"})[0] == 201
    base = {"metadata_store_id": "m", "local_block_store": "l"}
    # quota_bytes must be a JSON string; it comes back humanised to 2 decimals; "0" clears it.
    assert call("POST", "/shares", {**base, "name": "q", "quota_bytes": 1500}) == (
        400, {"type": "about:blank", "title": "Bad Request", "status": 400, "detail": "Invalid request body"})
    status, share = call("POST", "/shares", {**base, "name": "q", "quota_bytes": "1500"})
    assert status == 201 and share["quota_bytes"] == "1.46KiB"  # type: ignore[index]
    assert "quota_bytes" not in call("PUT", "/shares/q", {"quota_bytes": "0"})[1]  # type: ignore[operator]
    # A share without grants lists them as `null`.
    assert call("GET", "/shares/q/permissions") == (200, None)
    # Adapter settings durations are integer seconds: a Go duration string is a 400.
    assert call("PATCH", "/adapters/nfs/settings", {"lease_time": "60s"})[0] == 400
    assert call("PATCH", "/adapters/nfs/settings", {"lease_time": 60})[0] == 200
    # Snapshot macros are normalised to Go durations.
    assert call("PUT", "/shares/q/snapshot-policy", {"interval": "@daily"})[1]["interval"] == "24h0m0s"  # type: ignore[index]
    # Deleting a user, a group or a share takes its grants (and a share its policy and NFS options) along.
    assert call("POST", "/groups", {"name": "eng"})[0] == 201
    assert call("POST", "/users", {"username": "u1", "password": "u1-password-1", "groups": ["eng"]})[0] == 201
    assert call("POST", "/users", {"username": "u2", "password": "u2-password-1", "groups": ["nope"]}) == (
        400, {"type": "about:blank", "title": "Bad Request", "status": 400,
              "detail": "One or more specified groups do not exist"})
    for path in ("/shares/q/permissions/users/u1", "/shares/q/permissions/groups/eng"):
        assert call("PUT", path, {"level": "read"})[0] == 204
    assert call("PATCH", "/shares/q/adapters/nfs/config", {"squash": "none"})[0] == 200
    assert call("DELETE", "/users/u1")[0] == 204 and call("DELETE", "/groups/eng")[0] == 204
    assert call("GET", "/shares/q/permissions") == (200, None)
    assert call("PUT", "/shares/q/permissions/users/admin", {"level": "read"})[0] == 204
    assert call("DELETE", "/shares/q")[0] == 204
    assert call("POST", "/shares", {**base, "name": "q"})[0] == 201
    assert call("GET", "/shares/q/permissions") == (200, None)
    assert call("GET", "/snapshot-policies") == (200, [])
    assert call("GET", "/shares/q/adapters/nfs/config")[1]["squash"] == "root_to_guest"  # type: ignore[index]
    # Deleting an absent grant is a 204; granting to an unknown user a 404.
    assert call("DELETE", "/shares/q/permissions/users/ghost")[0] == 204
    assert call("PUT", "/shares/q/permissions/users/ghost", {"level": "read"})[0] == 404
    # System groups cannot be deleted (problem+json 403, not the middleware's text).
    assert call("DELETE", "/groups/users")[1]["detail"] == "Cannot delete system group"  # type: ignore[index]
    # A password bcrypt cannot take (USER_PASSWORD's bounds) is a bare 500 on create and on reset.
    for bad in ("p" * (USER_PASSWORD.least - 1), "p" * ((USER_PASSWORD.most or 0) + 1)):
        refused = call("POST", "/users", {"username": "u3", "password": bad})
        assert refused[0] == 500 and refused[1]["detail"] == "Failed to hash password"  # type: ignore[index]
    assert call("POST", "/users", {"username": "u3", "password": "p" * USER_PASSWORD.least})[0] == 201
    assert call("POST", "/users/u3/password", {"new_password": "short"})[0] == 500
    # A new admin-role account may "change" its password to the same value, which clears must_change.
    assert call("POST", "/users", {"username": "a2", "password": "a2-password-1", "role": "admin"})[0] == 201
    first = dfs.login("a2", "a2-password-1")
    assert first["user"]["must_change_password"] is True
    assert dfs.request("GET", "/api/v1/users", token=first["access_token"])[0] == 403
    status, _ = dfs.request("POST", "/api/v1/users/me/password", {"new_password": "a2-password-1"},
                               first["access_token"])
    assert status == 200 and dfs.login("a2", "a2-password-1")["user"]["must_change_password"] is False
    # A store PUT replaces the whole config (persisted only; the running store changes at restart).
    assert call("PUT", "/store/metadata/m", {"config": '{"a": 1}'})[0] == 200
    assert call("PUT", "/store/metadata/m", {"config": '{"b": 2}'})[1]["config"] == {"b": 2}  # type: ignore[index]
    # An expired or garbage token is a text/plain 401.
    assert dfs.request("GET", "/api/v1/auth/me", token="garbage") == (401, "Invalid or expired token\n")


# ---------------------------------------------------------------------------------------------------------
# a remote S3 store: keys in the store config, a rotation is a restart-only update (moto as the S3 API)


@contextlib.asynccontextmanager
async def dfs_beside_moto(dfs_env: dict[str, str], tmp_path: Path) -> AsyncIterator[
        tuple[MotoServer, DfsServer, DittoFsClient]]:
    """A moto S3 with bucket `blocks`, a dfs that may reach it, and the operator's client logged in."""
    with MotoServer(tmp_path) as s3:
        s3.create_bucket("blocks")
        server = DfsServer(minimal_config(tmp_path / "controlplane.db"), dfs_env, tmp_path / "dfs",
                           host_ports=[s3.port]).start()
        try:
            client = await bootstrap_operator(server.base_url, SecretStr(ADMIN_PASSWORD), "dittofs-operator",
                                              SecretStr(OPERATOR_PASSWORD))
            async with client:
                yield s3, server, client
        finally:
            server.stop()


async def test_a_remote_s3_store_gets_its_keys_in_its_config_and_rotation_needs_a_restart(
        dfs_env: dict[str, str], tmp_path: Path) -> None:
    keys = {"s3id": ACCESS_KEY_ID, "s3key": "moto-secret-key-first-0001", "s3key2": "moto-secret-key-second-002"}
    values = {**SECRETS, **{ref: SecretStr(v) for ref, v in keys.items()}}
    async with dfs_beside_moto(dfs_env, tmp_path) as (s3, server, client):
        def remote(key_ref: str) -> StoreSpec:
            return StoreSpec(StoreKind.REMOTE, "s3", "s3", (
                ("allow_private_endpoint", True), ("bucket", "blocks"), ("endpoint", s3.endpoint),
                ("force_path_style", True), ("prefix", "t/"), ("region", "eu-west-1")), (
                ("access_key_id", SecretValue("s3id", digest_of(keys["s3id"]))),
                ("secret_access_key", SecretValue(key_ref, digest_of(keys[key_ref])))))

        base = declared(tmp_path / "data")
        want = dataclasses.replace(base, stores=(*base.stores, remote("s3key")), shares=(
            dataclasses.replace(base.shares[0], remote_store="s3"),))
        state = State()
        seen = await client.observe()
        first = plan(want, seen, state.owned, state.applied)
        done = await client.execute(first, values)
        state.owned, state.applied = first.owned_after(done), first.digests_after(state.applied, done)
        assert Ref(Kind.REMOTE_STORE, "s3") in state.owned
        # DittoFS took the keys from the store config (the env has none) and probed the bucket.
        status, stores = admin_call(server, "GET", "/store/block/remote")
        assert status == 200 and isinstance(stores, list)
        (store,) = stores
        # DittoFS redacts only the secret key on GET; the key id is shown (it is not a secret to AWS).
        assert store["config"]["secret_access_key"] == "********"
        assert store["config"]["access_key_id"] == ACCESS_KEY_ID
        assert store["config"]["bucket"] == "blocks" and store["status"]["status"] == "healthy", store["status"]
        assert "moto-secret-key" not in str(stores)
        # Unchanged: reads only.
        p, calls, _ = await one_pass_with(client, want, state, values)
        assert p.calls == () and set(calls) == {"GET"}
        # A rotated secret key: one PUT of the store, marked restart-only (DittoFS applies it at start).
        rotated = dataclasses.replace(want, stores=(*base.stores, remote("s3key2")))
        p, calls, _ = await one_pass_with(client, rotated, state, values)
        assert [(c.op, c.kind, c.needs_restart) for c in p.calls] == [(Op.UPDATE, Kind.REMOTE_STORE, True)]
        assert calls["PUT"] == 1
        p, calls, _ = await one_pass_with(client, rotated, state, values)
        assert p.calls == () and set(calls) == {"GET"}


async def test_a_remote_store_takes_its_endpoint_from_the_credentials_secret(
        dfs_env: dict[str, str], tmp_path: Path) -> None:
    """spec.s3.credentialsSecretRef's endpointKey: the endpoint travels as a secret into the store's config."""
    async with dfs_beside_moto(dfs_env, tmp_path) as (s3, server, client):
        keys = {"s3id": ACCESS_KEY_ID, "s3key": "moto-secret-key-first-0001", "s3url": s3.endpoint}
        values = {**SECRETS, **{ref: SecretStr(v) for ref, v in keys.items()}}
        from_secrets = (("access_key_id", "s3id"), ("secret_access_key", "s3key"), ("endpoint", "s3url"))
        remote = StoreSpec(StoreKind.REMOTE, "s3", "s3", (
            ("allow_private_endpoint", True), ("bucket", "blocks"), ("force_path_style", True),
            ("region", "eu-west-1")),
            tuple((k, SecretValue(ref, digest_of(keys[ref]))) for k, ref in from_secrets))
        base = declared(tmp_path / "data")
        want = dataclasses.replace(base, stores=(*base.stores, remote))
        state = State()
        await one_pass_with(client, want, state, values)
        _, stores = admin_call(server, "GET", "/store/block/remote")
        assert isinstance(stores, list)
        (store,) = stores
        assert store["config"]["endpoint"] == s3.endpoint and store["status"]["status"] == "healthy", store
        p, calls, _ = await one_pass_with(client, want, state, values)
        assert p.calls == () and set(calls) == {"GET"}
        # Its removal from the Secret (the store then dials AWS, which this machine cannot reach) is the
        # planner's: test_an_optional_store_secret_removed_from_its_secret_rewrites_the_store_once.


async def test_two_adapters_swap_ports_and_one_takes_the_port_the_other_gives_up(
        dfs: DfsServer, operator: DittoFsClient) -> None:
    """DittoFS answers 200 to a move onto a port in use and fails the bind in the background; the planner frees
    a port before another adapter takes it, and breaks a swap by stopping one adapter first."""
    def listening(protocol: str, port: int) -> bool:
        return f'"{protocol} server listening","port":{port}' in dfs.log_text()

    state = State()
    swap = FileService(operator=sv("op"), adapters=(AdapterSpec("nfs", True, SEEDED_SMB_PORT),
                                                    AdapterSpec("smb", True, SEEDED_NFS_PORT)))
    await one_pass(operator, swap, state)
    eventually(lambda: listening("NFS", SEEDED_SMB_PORT) and listening("SMB", SEEDED_NFS_PORT), timeout=10,
               what="the swapped adapters listening")
    # NFS back onto its seeded port, which SMB holds until it is turned off.
    back = FileService(operator=sv("op"), adapters=(AdapterSpec("nfs", True, SEEDED_NFS_PORT),
                                                    AdapterSpec("smb", False)))
    await one_pass(operator, back, state)
    eventually(lambda: listening("NFS", SEEDED_NFS_PORT), timeout=10, what="NFS on the port SMB gave up")
    _, adapters = admin_call(dfs, "GET", "/adapters")
    assert isinstance(adapters, list)
    assert {a["type"]: (a["enabled"], a["port"]) for a in adapters} == {
        "nfs": (True, SEEDED_NFS_PORT), "smb": (False, SEEDED_NFS_PORT)}
    assert "failed to start adapter" not in dfs.log_text(), dfs.log_tail()
    assert (await one_pass(operator, back, state))[0].calls == ()
