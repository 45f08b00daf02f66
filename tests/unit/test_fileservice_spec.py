"""The pure half of the file-service phase: DittoServer spec -> declared FileService, share addresses, and
Provisioned's place in Ready (SPEC §13)."""

from __future__ import annotations

from typing import Any

import pytest

from dittoctl.api.conditions import ConditionType, Reason
from dittoctl.api.fileservice import Grant, Kind, Observed, Op, Ref, StoreKind, plan
from dittoctl.api.fileservice.types import Call
from dittoctl.api.models import BLOCK_PATH, METADATA_PATH, DittoServer, DittoServerSpec
from dittoctl.api.naming import Names
from dittoctl.api.secrets import provisioned_secrets, secret_uses, watched_secrets
from reconciler import specs
from reconciler.specs.fileservice import (
    BADGER_LOCKED,
    declared,
    dittofs_address,
    refusal_hint,
    salted,
    share_status,
    unhealthy_remotes,
)
from reconciler.status import Cond, Observation, conditions

NAMES = Names("demo", "ns", "uid-1")


def spec(**extra: Any) -> DittoServerSpec:
    return DittoServerSpec.model_validate({"storage": {"metadataSize": "1Gi"}, **extra})


def no_digest(secret: str, key: str) -> str | None:
    return None


def test_minimal_spec_serves_export_read_write_from_the_default_stores() -> None:
    fs, missing = declared(spec(), no_digest, "salt")
    assert missing == []
    assert [(s.name, s.default_permission, s.read_only, s.metadata_store, s.local_store) for s in fs.shares] == [
        ("/export", "read-write", False, "default", "default")]
    stores = {(s.kind, s.name, s.type, dict(s.config)["path"]) for s in fs.stores}
    assert stores == {(StoreKind.METADATA, "default", "badger", METADATA_PATH),
                      (StoreKind.LOCAL, "default", "fs", BLOCK_PATH)}
    assert METADATA_PATH.startswith("/data/store/metadata/") and BLOCK_PATH.startswith("/data/store/block/")
    assert fs.users == () and fs.groups == () and fs.operator is None
    # Both adapters are declared: DittoFS seeds them enabled, and SMB is off by default here.
    assert [(a.type, a.enabled, a.port, a.settings) for a in fs.adapters] == [
        ("nfs", True, 12049, ()), ("smb", False, 1445, ())]
    # Against an empty DittoFS: two stores, then the share.
    calls = [c for c in plan(fs, Observed()).calls if c.kind is not Kind.ADAPTER]
    assert [(c.method, c.path) for c in calls] == [
        ("POST", "/api/v1/store/metadata"), ("POST", "/api/v1/store/block/local"), ("POST", "/api/v1/shares")]


def test_empty_share_list_serves_nothing_but_keeps_the_default_stores() -> None:
    # Pruning the default stores would leave their badger lock held until a restart, so declaring a share
    # again would fail: with `shares: []` they stay declared (and owned).
    fs, _ = declared(spec(shares=[]), no_digest, "salt")
    assert fs.shares == ()
    assert sorted((s.kind, s.name) for s in fs.stores) == [(StoreKind.LOCAL, "default"),
                                                           (StoreKind.METADATA, "default")]


def test_declared_shares_users_groups_map_onto_the_planner() -> None:
    s = spec(
        shares=[{"name": "/projects", "defaultPermission": "none", "readOnly": True,
                 "permissions": [{"user": "alice", "level": "read-write"}, {"group": "readers", "level": "read"}]}],
        users=[{"name": "alice", "passwordSecretRef": {"name": "alice-pw", "key": "password"}, "groups": ["readers"]}],
        groups=[{"name": "readers"}],
    )
    fs, missing = declared(s, lambda secret, key: "d1" if (secret, key) == ("alice-pw", "password") else None, "k")
    assert missing == []
    (share,) = fs.shares
    assert (share.name, share.read_only, share.default_permission) == ("/projects", True, "none")
    assert share.permissions == (Grant("user", "alice", "read-write"), Grant("group", "readers", "read"))
    (user,) = fs.users
    assert user.name == "alice" and user.groups == ("readers",) and user.role == "user"
    assert user.password is not None and user.password.ref == "alice-pw/password"
    assert user.password.digest == salted("k", "d1") != "d1"  # keyed: status never shows a bare hash
    assert [g.name for g in fs.groups] == ["readers"]


def test_every_declared_field_reaches_the_planner_in_dittofs_units() -> None:
    s = spec(
        s3={"credentialsSecretRef": {"secretName": "s3-creds"}, "region": "eu-central-1", "bucket": "fallback"},
        adapters={"nfs": {"port": 2049, "settings": {"leaseTime": "2m", "maxVersion": "4.0"}},
                  "smb": {"enabled": True, "settings": {"sessionTimeout": "1h", "signing": "required"}}},
        stores={"metadata": [{"name": "default"}, {"name": "fast", "type": "memory"}],
                "local": [{"name": "default", "maxSize": "1Gi"}],
                "remote": [{"name": "s3", "endpoint": "http://10.88.0.1:9000", "allowPrivateEndpoint": True,
                            "prefix": "p/"}]},
        shares=[{"name": "/data", "remoteBlockStore": "s3", "quota": "10Gi",
                 "nfs": {"squash": "all_to_guest", "anonymousUID": 99},
                 "snapshotPolicy": {"interval": "@daily", "keepLast": 7, "ttl": "168h"}}],
        users=[{"name": "alice", "passwordSecretRef": {"name": "pw", "key": "p"}, "uid": 1000, "gid": 1000,
                "role": "admin"}],
        groups=[{"name": "eng", "gid": 2000}],
    )
    fs, missing = declared(s, lambda secret, key: f"{secret}/{key}", "k")
    assert missing == []
    assert [(a.type, a.enabled, a.port, a.settings) for a in fs.adapters] == [
        ("nfs", True, 2049, (("lease_time", 120), ("max_version", "4.0"))),
        ("smb", True, 1445, (("session_timeout", 3600), ("signing", "required")))]
    by_name = {(st.kind, st.name): st for st in fs.stores}
    assert dict(by_name[(StoreKind.METADATA, "default")].config) == {"path": METADATA_PATH}
    assert by_name[(StoreKind.METADATA, "fast")].config == ()
    assert dict(by_name[(StoreKind.LOCAL, "default")].config) == {"path": BLOCK_PATH, "max_size": 1 << 30}
    remote = by_name[(StoreKind.REMOTE, "s3")]
    # Bucket and region fall back to spec.s3; the keys come from spec.s3's Secret, by reference only.
    assert dict(remote.config) == {"bucket": "fallback", "region": "eu-central-1", "endpoint": "http://10.88.0.1:9000",
                                   "prefix": "p/", "allow_private_endpoint": True}
    assert [(k, v.ref) for k, v in remote.secrets] == [("access_key_id", "s3-creds/accessKeyId"),
                                                       ("secret_access_key", "s3-creds/secretAccessKey")]
    (share,) = fs.shares
    assert (share.remote_store, share.quota_bytes) == ("s3", 10 << 30)
    assert share.nfs is not None and (share.nfs.squash, share.nfs.anonymous_uid, share.nfs.anonymous_gid) == (
        "all_to_guest", 99, None)
    assert share.snapshot_policy is not None and (share.snapshot_policy.interval, share.snapshot_policy.keep_last,
                                                  share.snapshot_policy.ttl) == ("@daily", 7, "168h")
    (user,) = fs.users
    assert (user.uid, user.gid, user.role) == (1000, 1000, "admin")
    assert [(g.name, g.gid) for g in fs.groups] == [("eng", 2000)]
    # The store credentials are provisioned secrets: watched, never in the pod's environment.
    assert {"s3-creds", "pw"} <= watched_secrets(s, NAMES)
    assert not [u for u in secret_uses(s, NAMES) if u.secret == "s3-creds"]


def test_a_remote_store_without_its_keys_is_left_out_and_named() -> None:
    s = spec(stores={"remote": [{"name": "s3", "bucket": "bkt", "credentialsSecretRef": {"name": "c"}}]})
    fs, missing = declared(s, no_digest, "k")
    assert [st.name for st in fs.stores if st.kind is StoreKind.REMOTE] == []
    assert missing == ["Secret c key accessKeyId (credentials of remote store s3)"]


def test_a_user_without_its_password_is_left_out_and_named() -> None:
    s = spec(users=[{"name": "bob", "passwordSecretRef": {"name": "bob-pw", "key": "pw"}}])
    fs, missing = declared(s, no_digest, "k")
    assert fs.users == ()
    assert missing == ["Secret bob-pw key pw (password of user bob)"]


def test_a_new_password_digest_plans_a_reset_not_a_restart() -> None:
    s = spec(users=[{"name": "alice", "passwordSecretRef": {"name": "alice-pw", "key": "password"}}])
    # A user password is watched (a change re-reconciles) but not consumed by the pod (no config hash).
    assert "alice-pw" in watched_secrets(s, NAMES)
    assert all(u.secret != "alice-pw" for u in secret_uses(s, NAMES))
    assert [p.secret for p in provisioned_secrets(s)] == ["alice-pw"]
    before = specs.build(s, NAMES, {}).config_hash
    assert specs.build(s, NAMES, {("alice-pw", "password"): "other"}).config_hash == before


def test_share_status_gives_ready_to_paste_addresses() -> None:
    s = spec(adapters={"smb": {"enabled": True}})
    assert share_status(s, "10.88.0.5", {"/export": (4096, None)}) == [
        {"name": "/export", "readOnly": False, "usedBytes": 4096, "nfs": "nfs://10.88.0.5:12049/export",
         "smb": "smb://10.88.0.5:1445/export"}]
    assert share_status(s, "h", {}) == []
    assert share_status(s, "fd00::5", {"/export": (None, None)})[0]["nfs"] == "nfs://[fd00::5]:12049/export"
    tiered = spec(stores={"remote": [{"name": "s3", "bucket": "bkt", "credentialsSecretRef": {"name": "c"}}]},
                  shares=[{"name": "/t", "remoteBlockStore": "s3"}, {"name": "/new"}])
    assert share_status(tiered, "h", {"/t": (0, False), "/new": (None, None)}) == [
        {"name": "/t", "readOnly": False, "usedBytes": 0, "remoteHealthy": False, "nfs": "nfs://h:12049/t"},
        {"name": "/new", "readOnly": False, "nfs": "nfs://h:12049/new"}]
    # DittoFS finds an SMB share by one lower-case segment: the others get no SMB address that would not answer.
    names = ("/Team", "/team/docs", "/a")
    mixed = spec(adapters={"smb": {"enabled": True}}, shares=[{"name": n} for n in names])
    assert [sorted(e) for e in share_status(mixed, "h", dict.fromkeys(names, (None, None)))] == [
        ["name", "nfs", "readOnly"], ["name", "nfs", "readOnly"], ["name", "nfs", "readOnly", "smb"]]


def test_a_remote_store_failing_dittofs_s_probe_is_named() -> None:
    """Ready all the same (its shares are served), but Provisioned names it: a real-node session saw only
    status.shares[].remoteHealthy: false while every start of the server waited 3 minutes for the bucket."""
    from dittoctl.api.fileservice.observed import ApiStore, ObservedShare

    def share(name: str, remote: str | None) -> ObservedShare:
        return ObservedShare(name, "default", "default", remote, False, "none", None, 0)

    def s3(name: str, state: str) -> ApiStore:
        return ApiStore(id=name, name=name, type="s3", status={"status": state})

    seen = Observed(stores={StoreKind.REMOTE: {"down": s3("down", "unhealthy"), "up": s3("up", "healthy"),
                                               "new": s3("new", "unknown"), "unused": s3("unused", "unhealthy")}},
                    shares={"/a": share("/a", "down"), "/b": share("/b", "up"), "/c": share("/c", "new"),
                            "/d": share("/d", None), "/e": share("/e", "down")})
    assert unhealthy_remotes(seen) == ["down"]
    assert unhealthy_remotes(Observed()) == []


def _ready(provisioned: Cond | None) -> Cond:
    sts = {"metadata": {"generation": 1}, "spec": {"replicas": 1},
           "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "observedGeneration": 1,
                      "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "a"}}
    conds = conditions(Observation(generation=1, desired_replicas=1, statefulset=sts, provisioned=provisioned))
    return next(c for c in conds if c.type is ConditionType.READY)


def test_dittofs_is_dialled_at_its_services_unless_provisioning_by_pod() -> None:
    # The default (--server-address service): the API and file Services' DNS names, which the test bed
    # cannot dial (no packet may go to a ClusterIP), so every real-node test provisions by pod IP.
    assert dittofs_address(spec(), NAMES, None) == ("http://demo-api.ns.svc:8080", "demo-file.ns.svc")
    assert dittofs_address(spec(), NAMES, "10.247.0.5") == ("http://10.247.0.5:8080", "10.247.0.5")
    tls = spec(controlPlane={"port": 8443, "tls": {"secretName": "demo-api-tls"}})
    assert dittofs_address(tls, NAMES, None) == ("https://demo-api.ns.svc:8443", "demo-file.ns.svc")
    # By IP too: the certificate still names the Service (TlsTarget.server_hostname).
    assert dittofs_address(tls, NAMES, "10.247.0.5")[0] == "https://10.247.0.5:8443"
    # An IPv6 pod (an IPv6 cluster): a URL needs the brackets, a TCP connect the bare address.
    assert dittofs_address(spec(), NAMES, "fd00:10:244::5") == ("http://[fd00:10:244::5]:8080", "fd00:10:244::5")


def test_ready_requires_adapters_ready_when_it_is_reported() -> None:
    sts = {"metadata": {"generation": 1}, "spec": {"replicas": 1},
           "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "observedGeneration": 1,
                      "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "a"}}
    down = Cond(ConditionType.ADAPTERS_READY, False, Reason.NOT_LISTENING, "no TCP listener on nfs port 2049")
    conds = conditions(Observation(generation=1, desired_replicas=1, statefulset=sts,
                                   provisioned=Cond(ConditionType.PROVISIONED, True, Reason.CONVERGED),
                                   adapters_ready=down))
    ready = next(c for c in conds if c.type is ConditionType.READY)
    assert ready.status is False and "AdaptersReady" in ready.message


def test_ready_requires_provisioned_when_it_is_reported() -> None:
    assert _ready(None).status is True
    assert _ready(Cond(ConditionType.PROVISIONED, True, Reason.CONVERGED)).status is True
    failed = _ready(Cond(ConditionType.PROVISIONED, False, Reason.API_UNREACHABLE, "refused"))
    assert failed.status is False and "Provisioned" in failed.message


def test_provisioning_retries_back_off_to_a_cap() -> None:
    from reconciler.phases.fileservice import backoff_seconds

    assert [backoff_seconds(n) for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert backoff_seconds(10_000) == 300  # no overflow however long it fails


def test_a_refused_re_creation_of_our_badger_store_says_to_restart_the_pod() -> None:
    """DittoFS keeps a badger store deleted over its API open until it restarts: re-creating ours fails on the
    directory lock, and only a restart frees it. A lock held by a store we do not own, or another refusal, gets
    DittoFS's words alone."""
    create = Call(Op.CREATE, Kind.METADATA_STORE, "extra", "POST", "/api/v1/store/metadata")
    locked = "Cannot acquire directory lock on \"/data/store/metadata/extra\". " + BADGER_LOCKED
    ours = {Ref(Kind.METADATA_STORE, "extra")}
    assert refusal_hint(create, locked, ours, "demo-0") == (
        ". If the store was deleted by hand, DittoFS holds its directory until it restarts: delete pod demo-0 and "
        "it is re-created")
    assert refusal_hint(create, locked, set(), "demo-0") == ""
    assert refusal_hint(create, "store already exists", ours, "demo-0") == ""
    share = Call(Op.CREATE, Kind.SHARE, "extra", "POST", "/api/v1/shares")
    assert refusal_hint(share, locked, {Ref(Kind.SHARE, "extra")}, "demo-0") == ""


def test_a_remote_store_on_the_default_credentials_takes_their_endpoint_unless_it_declares_one() -> None:
    s = spec(s3={"credentialsSecretRef": {"secretName": "s3-creds", "endpointKey": "url"}, "bucket": "bkt"},
             stores={"remote": [{"name": "a"}, {"name": "b", "endpoint": "https://s3.example"},
                                {"name": "c", "credentialsSecretRef": {"name": "own"}}]})
    fs, missing = declared(s, lambda secret, key: f"{secret}/{key}", "k")
    assert missing == []
    remote = {st.name: st for st in fs.stores if st.kind is StoreKind.REMOTE}
    # Keys are only good at the endpoint that issued them: the endpoint comes with spec.s3's keys, as a secret.
    assert [(k, v.ref) for k, v in remote["a"].secrets] == [
        ("access_key_id", "s3-creds/accessKeyId"), ("secret_access_key", "s3-creds/secretAccessKey"),
        ("endpoint", "s3-creds/url")]
    assert "endpoint" not in dict(remote["a"].config)
    assert dict(remote["b"].config)["endpoint"] == "https://s3.example"
    assert [k for k, _ in remote["b"].secrets] == ["access_key_id", "secret_access_key"]
    assert [k for k, _ in remote["c"].secrets] == ["access_key_id", "secret_access_key"]
    # The endpoint key is optional: without it the store is still declared (AWS), and nothing is missing.
    fs, missing = declared(s, lambda secret, key: None if key == "url" else f"{secret}/{key}", "k")
    remote = {st.name: st for st in fs.stores if st.kind is StoreKind.REMOTE}
    assert missing == [] and [k for k, _ in remote["a"].secrets] == ["access_key_id", "secret_access_key"]


def test_a_user_password_bcrypt_cannot_take_stops_the_pass_naming_its_secret() -> None:
    """Reconciler side of the webhook's rule (a Secret edited after admission): DittoFS would answer a bare
    500 `Failed to hash password` to the create or the reset."""
    from pydantic import SecretStr

    from reconciler.phases.fileservice import _refused_passwords

    s = spec(users=[{"name": "alice", "passwordSecretRef": {"name": "alice-pw", "key": "password"}},
                    {"name": "bob", "passwordSecretRef": {"name": "bob-pw", "key": "pw"}}])
    fs, missing = declared(s, lambda secret, key: f"digest-{secret}", "k")
    assert missing == []
    the_plan = plan(fs, Observed(), ())
    good, short = SecretStr("long-enough-1"), SecretStr("short")
    assert _refused_passwords(the_plan, {"alice-pw/password": good, "bob-pw/pw": good}) == []
    refused = _refused_passwords(the_plan, {"alice-pw/password": good, "bob-pw/pw": short})
    assert refused == ["Secret bob-pw key pw: DittoFS needs 8 to 72 bytes for the user's password, else it refuses "
                       "the account (500 `Failed to hash password`); store a password of 8 to 72 bytes"]
    assert _refused_passwords(the_plan, {"alice-pw/password": SecretStr("é" * 37), "bob-pw/pw": good}) != []  # bytes


def test_a_create_that_may_have_happened_keeps_its_claim() -> None:
    """No answer, a 5xx, or an admin-role user's first login failing after the 201: the object may exist, and
    dropping the claim would make it NotOwned for good. A 4xx, or a call never sent, drops it."""
    from dittoctl.kube.dittofs import DittoFsAuthError, DittoFsRejected, DittoFsUnreachable, PlanFailed
    from reconciler.phases.fileservice import _maybe_created

    create = Call(Op.CREATE, Kind.USER, "bob", "POST", "/api/v1/users", {})
    update = Call(Op.UPDATE, Kind.USER, "bob", "PUT", "/api/v1/users/bob", {})
    users = "/api/v1/users"
    assert _maybe_created(PlanFailed(create, [], DittoFsUnreachable("timeout", method="POST", path=users)))
    assert _maybe_created(PlanFailed(create, [], DittoFsRejected("500", method="POST", path=users, status=500)))
    after = DittoFsAuthError("401", method="POST", path="/api/v1/auth/login", status=401)
    after.after_success = True  # the first login of the account just created
    assert _maybe_created(PlanFailed(create, [], after))
    refresh = DittoFsUnreachable("timeout", method="POST", path="/api/v1/auth/refresh")  # before the POST went out
    assert not _maybe_created(PlanFailed(create, [], refresh))
    assert not _maybe_created(PlanFailed(create, [], DittoFsRejected("400", method="POST", path=users, status=400)))
    assert not _maybe_created(PlanFailed(create, [], DittoFsRejected("port", method="POST", path=users)))
    assert not _maybe_created(PlanFailed(update, [], DittoFsUnreachable("timeout", method="PUT", path=users + "/bob")))


def test_a_rejected_certificate_is_its_own_reason_and_names_what_the_certificate_must_be() -> None:
    """A certificate without the API Service's name (or from another CA) read ApiUnreachable: 'unreachable' for a
    server that answered. It is CertificateRejected, naming the Secret, the name it must carry and its CA."""
    from dittoctl.kube.dittofs import DittoFsCertificateRejected, DittoFsUnreachable
    from reconciler.phases.fileservice import _failed

    tls = DittoServer.model_validate({"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
                                      "metadata": {"name": "demo", "namespace": "ns"},
                                      "spec": {"storage": {"metadataSize": "1Gi"},
                                               "controlPlane": {"tls": {"secretName": "api-tls"}}}})
    rejected = DittoFsCertificateRejected("POST /api/v1/auth/login: the server's certificate was rejected "
                                          "(expected name demo-api.ns.svc): Hostname mismatch")
    failed = _failed(rejected, f"cannot log in to DittoFS at https://10.0.0.1:8080: {rejected}", tls, NAMES)
    assert failed.reason is Reason.CERTIFICATE_REJECTED
    assert failed.message.count("https://10.0.0.1:8080") == 1, failed.message
    assert failed.message.endswith("(the certificate in Secret api-tls must name demo-api.ns.svc and chain to that "
                                   "Secret's ca.crt, or to the operator's system CAs when it has none)")
    down = _failed(DittoFsUnreachable("refused"), "down", tls, NAMES)
    assert (down.reason, down.message) == (Reason.API_UNREACHABLE, "down")


class _Events:
    """The little of a Pass that settling a provisioning outcome uses: where events go."""

    namespace, name, generation = "ns", "demo", 3

    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []
        self.messages: list[str] = []

    async def post(self, type_: str, reason: str, message: str) -> None:
        self.posted.append((type_, reason))
        self.messages.append(message)


async def test_a_problem_reported_by_the_planner_backs_off_like_an_unreachable_server() -> None:
    """NotOwned, InUse, HoldsSnapshots or a refused write: each pass was retried 5 s later, for ever (the
    failure count was reset before the outcome was read), and every retry re-read all of DittoFS."""
    from reconciler.phases.fileservice import FsMemory, Provisioned, _settle

    events, mem = _Events(), FsMemory()
    ctx: Any = events
    requeues = []
    for _ in range(4):
        problem = Provisioned(condition=Cond(ConditionType.PROVISIONED, False, Reason.NOT_OWNED, "share /a: not ours"))
        requeues.append((await _settle(ctx, mem, problem)).requeue)
    assert requeues == [5, 10, 20, 40]
    assert events.posted == [("Warning", "ProvisioningFailed")], "one event for one lasting problem"
    done = await _settle(ctx, mem, Provisioned(condition=Cond(ConditionType.PROVISIONED, True, Reason.CONVERGED,
                                                              "DittoFS serves 1 declared share(s)")))
    assert mem.failures == 0 and done.requeue is None and mem.converged_generation == 3
    assert events.posted[-1] == ("Normal", "Provisioned")
    # Not the text of the success before the failure: the recorder would drop it within 10 minutes (a real-node
    # session saw the newest event stay a Warning while all was well).
    assert events.messages[-1] == "DittoFS serves 1 declared share(s) (again, after 4 failed passes)"


async def test_a_delete_answered_not_found_is_done_and_the_plan_goes_on() -> None:
    """An object deleted by hand between the pass's read and its DELETE: a failed pass and a Warning
    before, with every later call postponed. Any other call's 404 still fails the plan."""
    from pydantic import SecretStr

    from dittoctl.api.fileservice.planner import Plan
    from dittoctl.kube.dittofs import DittoFsClient, DittoFsNotFound, PlanFailed

    class Gone(DittoFsClient):
        async def apply(self, call: Call, secrets: Any) -> None:
            if call.name == "gone":
                raise DittoFsNotFound("404", method=call.method, path=call.path, status=404)

    client = Gone("http://127.0.0.1:1", "admin", SecretStr("x"))
    drop = Call(Op.DELETE, Kind.USER, "gone", "DELETE", "/api/v1/users/gone")
    make = Call(Op.CREATE, Kind.USER, "bob", "POST", "/api/v1/users")
    assert await client.execute(Plan((drop, make), (), frozenset()), {}) == [drop, make]
    update = Call(Op.UPDATE, Kind.USER, "gone", "PUT", "/api/v1/users/gone")
    with pytest.raises(PlanFailed) as failed:
        await client.execute(Plan((make, update), (), frozenset()), {})
    assert failed.value.done == [make] and isinstance(failed.value.cause, DittoFsNotFound)

    class NoRoute(DittoFsClient):  # Go's own 404: the path exists in no DittoFS handler, so nothing was deleted
        async def apply(self, call: Call, secrets: Any) -> None:
            raise DittoFsNotFound("404", method=call.method, path=call.path, status=404, detail="404 page not found")

    with pytest.raises(PlanFailed):
        await NoRoute("http://127.0.0.1:1", "admin", SecretStr("x")).execute(Plan((drop,), (), frozenset()), {})


async def test_a_share_is_deleted_only_if_it_still_holds_no_snapshot_right_before() -> None:
    """The plan counts a share's snapshots when the pass begins; one its schedule (or a user) took while the
    pass's other calls ran was deleted with the share."""
    from pydantic import SecretStr

    from dittoctl.api.fileservice.planner import Plan
    from dittoctl.kube.dittofs import DittoFsClient, DittoFsConflict, PlanFailed

    class Server(DittoFsClient):
        snapshots: list[dict[str, Any]] = []
        deleted: list[str] = []

        async def request(self, method: str, path: str, body: Any = None, secrets: Any = ()) -> Any:
            assert (method, path) == ("GET", "/api/v1/shares/scratch/snapshots"), (method, path)
            return self.snapshots

        async def apply(self, call: Call, secrets: Any) -> None:
            self.deleted.append(call.name)

    client = Server("http://127.0.0.1:1", "admin", SecretStr("x"))
    drop = Call(Op.DELETE, Kind.SHARE, "/scratch", "DELETE", "/api/v1/shares/scratch")
    client.snapshots = [{"id": "s1"}]
    with pytest.raises(PlanFailed) as failed:
        await client.execute(Plan((drop,), (), frozenset()), {})
    assert isinstance(failed.value.cause, DittoFsConflict) and "now holds 1 snapshot(s)" in str(failed.value)
    assert client.deleted == []
    client.snapshots = []
    assert await client.execute(Plan((drop,), (), frozenset()), {}) == [drop] and client.deleted == ["/scratch"]


async def test_an_ownership_record_the_api_refused_is_written_again_by_the_next_pass(
        caplog: pytest.LogCaptureFixture) -> None:
    """A refused patch of the control-plane PVC was remembered as written: nothing tried again until the set of
    refs changed, and a server re-created meanwhile found its own objects NotOwned. The refusal is logged once."""
    from types import SimpleNamespace

    from dittoctl.kube.gateway import ApiError
    from reconciler.context import Memory
    from reconciler.phases.fileservice import FsMemory, _record

    class Api:
        def __init__(self) -> None:
            self.patches: list[dict[str, Any]] = []
            self.refuse = True

        async def merge_patch(self, kind: Any, name: str, patch: dict[str, Any], namespace: str) -> dict[str, Any]:
            self.patches.append(patch)
            if self.refuse:
                raise ApiError(500, "etcdserver: request timed out")
            return {}

    api = Api()
    ctx: Any = SimpleNamespace(gw=api, namespace="ns", name="demo", memory=Memory(fileservice=FsMemory(recorded=[])))
    names = Names("demo", "ns", "")
    await _record(ctx, names, ["share:/export"])
    await _record(ctx, names, ["share:/export"])
    assert len(api.patches) == 2, "tried again"
    assert [r.getMessage() for r in caplog.records].count("ownership not recorded on the control-plane PVC") == 1
    api.refuse = False
    await _record(ctx, names, ["share:/export"])
    await _record(ctx, names, ["share:/export"])
    assert len(api.patches) == 3, "once written, remembered"


def test_an_fs_local_store_is_capped_below_the_content_volume() -> None:
    """DittoFS's own cap ignores the volume: 10 GiB per remote-backed share (a 5Gi volume filled before it
    evicted anything to S3, and writes failed with an I/O error), a quarter of the memory limit per local-only
    share (256 MiB under a 1Gi limit, on any volume). 80 % of contentSize unless declared; a memory store has
    no cap; a larger volume moves it (a PUT: DittoFS applies it at the next start)."""
    def local(s: DittoServerSpec) -> dict[str, dict[str, Any]]:
        fs, _ = declared(s, no_digest, "salt")
        return {st.name: dict(st.config) for st in fs.stores if st.kind is StoreKind.LOCAL}

    storage = {"metadataSize": "1Gi", "contentSize": "5Gi"}
    assert local(spec(storage=storage))["default"]["max_size"] == 4 * 1024**3
    both = spec(storage=storage, stores={"local": [{"name": "default"}, {"name": "big", "maxSize": "1Gi"},
                                                   {"name": "ram", "type": "memory"}]})
    assert {n: c.get("max_size") for n, c in local(both).items()} == {"default": 4 * 1024**3, "big": 1024**3,
                                                                    "ram": None}
    assert local(spec(storage={**storage, "contentSize": "10Gi"}))["default"]["max_size"] == 8 * 1024**3

    # Against DittoFS: created with the cap; a larger volume PUTs the new one (DittoFS applies it at its next
    # start, so the pod rolls once).
    from tests.unit.test_fileservice_planner import converge, seeded

    small, grown = (declared(spec(storage={**storage, "contentSize": size}), no_digest, "salt")[0]
                    for size in ("5Gi", "10Gi"))
    first, after, owned, applied = converge(small, seeded())
    create = next(c for c in first.calls if c.kind is Kind.LOCAL_STORE)
    assert dict(create.body or {})["config"]["max_size"] == 4 * 1024**3
    update = [c for c in plan(grown, after, owned, applied).calls if c.kind is Kind.LOCAL_STORE]
    assert [(c.method, c.needs_restart, dict(c.body or {})["config"]["max_size"]) for c in update] == [
        ("PUT", True, 8 * 1024**3)]


async def test_during_an_expansion_the_default_cap_follows_the_filesystem_not_the_request() -> None:
    """contentSize 5Gi -> 20Gi: the cap PUT in the pass that patched the PVCs named 16Gi while the filesystem was
    still 5Gi (DittoFS reads it at the restart that follows), the very failure the cap prevents. The content
    PVC's capacity is read while it is below the declared size, and no more once it has grown."""
    from types import SimpleNamespace

    from dittoctl.api.models import LocalStoreSpec
    from reconciler.context import Memory
    from reconciler.phases.fileservice import FsMemory, _content_capacity

    fs = LocalStoreSpec(name="default")
    assert fs.effective_max_size("20Gi", 5 * 1024**3) == 4 * 1024**3
    assert fs.effective_max_size("20Gi", 30 * 1024**3) == 16 * 1024**3
    assert fs.effective_max_size("1Mi") == 1024**2, "never 0, DittoFS's no limit"

    class Api:
        def __init__(self) -> None:
            self.capacity, self.lists = "5Gi", 0

        async def list(self, kind: Any, namespace: str, **selectors: str) -> list[dict[str, Any]]:
            self.lists += 1
            assert selectors == {"field_selector": "metadata.name=content-demo-0"}, selectors
            return [{"metadata": {"name": "content-demo-0"}, "status": {"capacity": {"storage": self.capacity}}}]

    api = Api()
    ctx: Any = SimpleNamespace(gw=api, namespace="ns", memory=Memory(fileservice=FsMemory()))
    grown = DittoServer.model_validate({"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
                                        "metadata": {"name": "demo", "namespace": "ns"},
                                        "spec": {"storage": {"metadataSize": "1Gi", "contentSize": "20Gi"}}})
    assert await _content_capacity(ctx, grown, NAMES) == 5 * 1024**3
    assert await _content_capacity(ctx, grown, NAMES) == 5 * 1024**3 and api.lists == 2, "read while below"
    api.capacity = "20Gi"
    assert await _content_capacity(ctx, grown, NAMES) is None
    assert await _content_capacity(ctx, grown, NAMES) is None and api.lists == 3, "grown: no read per pass"
