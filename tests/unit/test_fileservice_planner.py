"""The pure file-service planner (SPEC §13.2): plain data in, ordered calls out, like the builders.

``simulate`` is a small model of DittoFS v0.29.0's REST semantics as tests/contract/test_dittofs_client.py
proved them (IDs instead of store names in shares, humanised quotas, normalised durations, redacted store
secrets, `null` permissions); it lets hypothesis check that a plan, once applied, converges.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dittoctl.api.fileservice import (
    AdapterSpec,
    Call,
    FileService,
    Grant,
    GroupSpec,
    Kind,
    NfsOptions,
    Observed,
    ObservedShare,
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
from dittoctl.api.fileservice.observed import (
    ApiAdapter,
    ApiGroup,
    ApiShareNfs,
    ApiSnapshotPolicy,
    ApiStore,
    ApiUser,
    duration_seconds,
    parse_permissions,
    parse_shares,
    parse_snapshot_policies,
    quota_matches,
)
from dittoctl.api.fileservice.planner import DRIFT_READS, Plan, Reads, reads, store_body_json
from dittoctl.api.naming import HASH_ANNOTATION
from reconciler.cache import slim_pod
from reconciler.phases.fileservice import Provisioned, adapter_changes, rolling, unserved
from reconciler.specs.fileservice import adopting, ownership_record, recorded_refs

SECRET_TEXT = "s3cr3t-value-never-printed"


def secret(ref: str, value: str = SECRET_TEXT) -> SecretValue:
    return SecretValue(ref, digest_of(value))


def seeded() -> Observed:
    """A fresh v0.29.0 server: admin, three system groups, nfs:12049 and smb:1445, nothing else."""
    return Observed(
        users={"admin": ApiUser(username="admin", role="admin", uid=0, groups=("admins",))},
        groups={n: ApiGroup(name=n, gid=g) for n, g in (("admins", 0), ("operators", 999), ("users", 1000))},
        adapters={"nfs": ApiAdapter(type="nfs", enabled=True, port=12049, running=True),
                  "smb": ApiAdapter(type="smb", enabled=True, port=1445, running=True)},
        adapter_settings={"nfs": {"lease_time": 90, "max_version": "4.1"}, "smb": {"signing": ""}},
    )


FULL = FileService(
    operator=secret("op/password"),
    adapters=(AdapterSpec("nfs", True, 2049, (("lease_time", 60),)), AdapterSpec("smb", False)),
    stores=(
        StoreSpec(StoreKind.METADATA, "default", "badger", (("path", "/data/store/metadata/badger"),)),
        StoreSpec(StoreKind.LOCAL, "default", "fs", (("path", "/data/store/block/blocks"),)),
        StoreSpec(StoreKind.REMOTE, "s3", "s3", (("bucket", "b"), ("region", "eu-west-1")),
                  (("access_key_id", secret("s3/id", "AKIA")), ("secret_access_key", secret("s3/key")))),
    ),
    shares=(
        ShareSpec("export", remote_store="s3", default_permission="read", quota_bytes=10 << 30,
                  nfs=NfsOptions("all_to_guest", 65534, 65534),
                  permissions=(Grant("user", "alice", "read-write"), Grant("group", "eng", "read")),
                  snapshot_policy=SnapshotPolicySpec("1h", keep_last=3, ttl="72h", name_prefix="op")),
    ),
    users=(UserSpec("alice", secret("users/alice"), uid=1001, gid=2000, groups=("eng",)),),
    groups=(GroupSpec("eng", 2000),),
)


# ---------------------------------------------------------------------------------------------------------
# a model of DittoFS's REST semantics


def _go_duration(text: str) -> str:
    secs = int(duration_seconds(text) or 0)
    return f"{secs // 3600}h{secs % 3600 // 60}m{secs % 60}s"


def _humanize(n: int) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    value, i = float(n), 0
    while value >= 1024 and i < len(units) - 1:
        value, i = value / 1024, i + 1
    return f"{value:.2f}{units[i]}"


def simulate(seen: Observed, calls: Iterable[Call]) -> Observed:
    users = dict(seen.users)
    groups = dict(seen.groups)
    adapters = dict(seen.adapters)
    settings_ = {k: dict(v) for k, v in seen.adapter_settings.items()}
    stores = {k: dict(seen.stores.get(k, {})) for k in StoreKind}
    shares = dict(seen.shares)
    policies = dict(seen.snapshot_policies)
    for c in calls:
        body = dict(c.body or {})
        if c.kind in (Kind.OPERATOR_ACCOUNT, Kind.USER):
            if c.op is Op.CREATE:
                users[c.name] = ApiUser.model_validate(body)
            elif c.op is Op.UPDATE:
                users[c.name] = users[c.name].model_copy(update={**body, "groups": tuple(body.get(
                    "groups", users[c.name].groups))})
            elif c.op is Op.DELETE:
                del users[c.name]
        elif c.kind is Kind.GROUP:
            if c.op is Op.DELETE:
                del groups[c.name]
            else:
                groups[c.name] = ApiGroup(name=c.name, gid=body.get("gid", groups.get(c.name, ApiGroup(name="")).gid))
        elif c.kind is Kind.ADAPTER:
            old = adapters.get(c.name, ApiAdapter(type=c.name, enabled=True, port=0))
            adapters[c.name] = old.model_copy(update={k: v for k, v in body.items() if k != "type"})
        elif c.kind is Kind.ADAPTER_SETTINGS:
            settings_.setdefault(c.name, {}).update(body)
        elif c.kind in (Kind.METADATA_STORE, Kind.LOCAL_STORE, Kind.REMOTE_STORE):
            kind = {Kind.METADATA_STORE: StoreKind.METADATA, Kind.LOCAL_STORE: StoreKind.LOCAL,
                    Kind.REMOTE_STORE: StoreKind.REMOTE}[c.kind]
            if c.op is Op.DELETE:
                del stores[kind][c.name]
                continue
            config = dict(body["config"]) | {sf.key: "********" for sf in c.secrets}  # GET redacts secrets
            stores[kind][c.name] = ApiStore(id=f"id-{kind}-{c.name}", name=c.name, type=body["type"], config=config)
        elif c.kind is Kind.SHARE:
            if c.op is Op.DELETE:
                del shares[c.name]
                policies.pop(c.name, None)
                continue
            if c.op is Op.CREATE:
                shares[c.name] = ObservedShare(
                    c.name, body["metadata_store_id"], body["local_block_store"], body.get("remote_block_store"),
                    body["read_only"], body["default_permission"], None, 0,
                    nfs=ApiShareNfs(squash="root_to_guest"), permissions={}, snapshots=0)
            update = {k: v for k, v in body.items() if k in ("read_only", "default_permission")}
            if c.path.endswith(("/enable", "/disable")):
                update["enabled"] = c.path.endswith("/enable")
            if "quota_bytes" in body:
                update["quota"] = _humanize(int(body["quota_bytes"])) if int(body["quota_bytes"]) else None
            shares[c.name] = dataclasses.replace(shares[c.name], **update)
        elif c.kind is Kind.SHARE_NFS:
            nfs = shares[c.name].nfs or ApiShareNfs()
            shares[c.name] = dataclasses.replace(shares[c.name], nfs=nfs.model_copy(update=body))
        elif c.kind is Kind.PERMISSION:
            share, _, rest = c.name.partition("#")
            principal, _, who = rest.partition(":")
            perms = dict(shares[share].permissions or {})
            if c.op is Op.DELETE:
                perms.pop((principal, who), None)
            else:
                perms[(principal, who)] = body["level"]
            shares[share] = dataclasses.replace(shares[share], permissions=perms)
        elif c.kind is Kind.SNAPSHOT_POLICY:
            if c.op is Op.DELETE:
                del policies[c.name]
            else:
                policies[c.name] = ApiSnapshotPolicy(
                    share=c.name, interval=_go_duration(body["interval"]), keep_last=body["keep_last"],
                    ttl=_go_duration(body["ttl"]) if "ttl" in body else None, name_prefix=body["name_prefix"],
                    enabled=body["enabled"])
    return Observed(users, groups, adapters, settings_, stores, shares, policies)


def converge(want: FileService, seen: Observed, owned: Iterable[Ref] = (),
             applied: Mapping[str, str] | None = None) -> tuple[Plan, Observed, frozenset[Ref], dict[str, str]]:
    p = plan(want, seen, owned, applied)
    after = simulate(seen, p.calls)
    return p, after, p.owned_after(), p.digests_after(applied or {})


def brief(p: Plan) -> list[tuple[str, str, str, str]]:
    return [(c.op.value, c.kind.value, c.method, c.path) for c in p.calls]


# ---------------------------------------------------------------------------------------------------------
# golden: the full declaration from a fresh server


def test_full_plan_from_a_fresh_server_is_ordered_by_dependency() -> None:
    p = plan(FULL, seeded())
    assert p.problems == ()
    assert brief(p) == [
        ("create", "operator-account", "POST", "/api/v1/users"),
        ("create", "group", "POST", "/api/v1/groups"),
        ("create", "user", "POST", "/api/v1/users"),
        ("update", "adapter", "PUT", "/api/v1/adapters/nfs"),
        ("update", "adapter", "PUT", "/api/v1/adapters/smb"),
        ("update", "adapter-settings", "PATCH", "/api/v1/adapters/nfs/settings"),
        ("create", "metadata-store", "POST", "/api/v1/store/metadata"),
        ("create", "local-store", "POST", "/api/v1/store/block/local"),
        ("create", "remote-store", "POST", "/api/v1/store/block/remote"),
        ("create", "share", "POST", "/api/v1/shares"),
        ("update", "share-nfs", "PATCH", "/api/v1/shares/export/adapters/nfs/config"),
        ("create", "permission", "PUT", "/api/v1/shares/export/permissions/users/alice"),
        ("create", "permission", "PUT", "/api/v1/shares/export/permissions/groups/eng"),
        ("create", "snapshot-policy", "PUT", "/api/v1/shares/export/snapshot-policy"),
    ]
    bodies = {(c.kind, c.name): c.body for c in p.calls}
    assert bodies[(Kind.OPERATOR_ACCOUNT, "dittofs-operator")] == {"username": "dittofs-operator", "role": "admin"}
    assert bodies[(Kind.USER, "alice")] == {"username": "alice", "role": "user", "uid": 1001, "gid": 2000,
                                            "groups": ["eng"]}
    assert bodies[(Kind.ADAPTER, "nfs")] == {"port": 2049}
    assert bodies[(Kind.ADAPTER, "smb")] == {"enabled": False}
    assert bodies[(Kind.ADAPTER_SETTINGS, "nfs")] == {"lease_time": 60}
    assert bodies[(Kind.SHARE, "/export")] == {
        "name": "/export", "metadata_store_id": "default", "local_block_store": "default",
        "remote_block_store": "s3", "read_only": False, "default_permission": "read", "quota_bytes": str(10 << 30)}
    assert bodies[(Kind.SHARE_NFS, "/export")] == {"squash": "all_to_guest", "anonymous_uid": 65534,
                                                   "anonymous_gid": 65534}
    assert bodies[(Kind.SNAPSHOT_POLICY, "/export")] == {"interval": "1h", "keep_last": 3, "enabled": True,
                                                         "name_prefix": "op", "ttl": "72h"}
    remote = next(c for c in p.calls if c.kind is Kind.REMOTE_STORE)
    assert remote.body == {"name": "s3", "type": "s3", "config": {"bucket": "b", "region": "eu-west-1"}}
    assert [(s.key, s.secret.ref, s.within) for s in remote.secrets] == [
        ("access_key_id", "s3/id", "config"), ("secret_access_key", "s3/key", "config")]
    # The wire form of a store body: config as a JSON string.
    assert store_body_json(remote.body)["config"] == '{"bucket": "b", "region": "eu-west-1"}'
    # Admin-role accounts must change their password once: the executor does it.
    assert [c.name for c in p.calls if c.admin_first_login] == ["dittofs-operator"]
    # Everything created is owned, except the operator's own identity (never pruned).
    assert {str(r) for r in p.owned_after()} == {
        "group:eng", "user:alice", "metadata-store:default", "local-store:default", "remote-store:s3",
        "share:/export", "permission:/export#user:alice", "permission:/export#group:eng",
        "snapshot-policy:/export"}
    assert set(p.digests_after({})) == {"operator-account:dittofs-operator/password", "user:alice/password",
                                        "remote-store:s3/access_key_id", "remote-store:s3/secret_access_key",
                                        "metadata-store:default/config", "local-store:default/config",
                                        "remote-store:s3/config"}


def test_a_converged_server_plans_nothing() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    again = plan(FULL, after, owned, applied)
    assert again.calls == () and again.problems == ()
    assert again.owned == owned


def test_secret_values_never_appear_in_a_plan() -> None:
    p = plan(FULL, seeded())
    text = repr(p) + str(p.calls) + repr(FULL)
    assert SECRET_TEXT not in text and "AKIA" not in text
    assert digest_of(SECRET_TEXT) not in repr(FULL)  # not even the digest is printed


# ---------------------------------------------------------------------------------------------------------
# ownership and drift


def test_hand_made_objects_are_reported_and_left_alone() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    # A share and a group made by hand, then declared by mistake with other values:
    by_hand = dataclasses.replace(after, shares={**after.shares, "/manual": ObservedShare(
        "/manual", "default", "default", None, True, "none", None, 0)},
        groups={**after.groups, "ops": ApiGroup(name="ops", gid=7)})
    want = dataclasses.replace(FULL, shares=(*FULL.shares, ShareSpec("manual")), groups=(*FULL.groups,
                                                                                           GroupSpec("ops", 8)))
    p = plan(want, by_hand, owned, applied)
    assert p.calls == ()
    assert {(pr.kind, str(pr.ref)) for pr in p.problems} == {(ProblemKind.NOT_OWNED, "share:/manual"),
                                                             (ProblemKind.NOT_OWNED, "group:ops")}
    # Undeclared, they are not pruned either (never owned).
    assert plan(FULL, by_hand, owned, applied).calls == ()


def test_a_recreated_server_adopts_only_what_its_predecessor_recorded() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    # The predecessor's record, on the control-plane PVC the re-created server mounts again.
    record = ownership_record(str(r) for r in owned)["metadata"]["annotations"]
    by_hand = dataclasses.replace(after, shares={**after.shares, "/manual": ObservedShare(
        "/manual", "default", "default", None, True, "none", None, 0)})
    want = dataclasses.replace(FULL, shares=(*FULL.shares, ShareSpec("manual")))
    # The re-created DittoServer's status owns nothing yet; grants and policies are judged once their share
    # is adopted.
    the_plan, adopted = adopting(want, by_hand, set(), applied, recorded_refs(record))
    assert adopted == set(owned)
    assert {(pr.kind, str(pr.ref)) for pr in the_plan.problems} == {(ProblemKind.NOT_OWNED, "share:/manual")}
    assert the_plan.calls == ()
    # Without a record (a volume from before records existed, or an unreadable one) nothing is adopted.
    assert recorded_refs(None) is None and recorded_refs({"dittofs.io/provisioned": "{}"}) is None
    assert recorded_refs({"dittofs.io/provisioned": "not json"}) is None
    the_plan, adopted = adopting(want, by_hand, set(), applied, None)
    assert adopted == set() and Ref.parse("share:/export") in {pr.ref for pr in the_plan.problems}


def test_with_the_user_s_consent_hand_made_objects_are_adopted_and_brought_to_the_declaration() -> None:
    """``dittofs.dittofs.com/adopt``: every declared object found made by hand becomes the operator's, its
    children judged once it is, and the plan brings each to what is declared (never re-creating it: the share's
    files stay where they are)."""
    _, after, owned, applied = converge(FULL, seeded())
    by_hand = dataclasses.replace(after, shares={**after.shares, "/manual": ObservedShare(
        "/manual", "default", "default", None, False, "none", None, 0)},
        groups={**after.groups, "ops": ApiGroup(name="ops", gid=7)})
    want = dataclasses.replace(FULL, shares=(*FULL.shares, ShareSpec("manual", default_permission="read")),
                               groups=(*FULL.groups, GroupSpec("ops", 8)))
    the_plan, adopted = adopting(want, by_hand, set(owned), applied, None, consent=True)
    assert adopted == {Ref.parse("share:/manual"), Ref.parse("group:ops")}
    assert the_plan.problems == ()
    assert Op.CREATE not in {c.op for c in the_plan.calls if c.ref in adopted}
    assert {(c.op, str(c.ref)) for c in the_plan.calls} >= {(Op.UPDATE, "group:ops"), (Op.UPDATE, "share:/manual")}
    assert the_plan.owned_after() >= adopted
    # Without consent, the same objects are reported and left alone.
    the_plan, adopted = adopting(want, by_hand, set(owned), applied, None)
    assert adopted == set() and {str(pr.ref) for pr in the_plan.problems} == {"share:/manual", "group:ops"}


def test_consent_never_adopts_a_share_dittofs_holds_on_other_stores() -> None:
    """Owned, such a share would be deleted (files and all) once the user declared a new one in its place, as
    Immutable advises: it stays unowned, reported as not adopted, and no call touches it (a diff review)."""
    _, after, owned, applied = converge(FULL, seeded())
    by_hand = dataclasses.replace(after, shares={**after.shares, "/manual": ObservedShare(
        "/manual", "elsewhere", "default", None, False, "none", None, 0)})
    want = dataclasses.replace(FULL, shares=(*FULL.shares, ShareSpec("manual")))
    the_plan, adopted = adopting(want, by_hand, set(owned), applied, None, consent=True)
    assert Ref.parse("share:/manual") not in adopted and Ref.parse("share:/manual") not in the_plan.owned_after()
    [problem] = [pr for pr in the_plan.problems if str(pr.ref) == "share:/manual"]
    assert problem.kind is ProblemKind.IMMUTABLE and problem.message.startswith("made by hand, not adopted: "), problem
    assert not [c for c in the_plan.calls if "manual" in c.name]
    # Declared away again: never owned, so never deleted.
    assert not [c for c in adopting(FULL, by_hand, set(owned), applied, None, consent=True)[0].calls
                if "manual" in c.name]


def test_a_share_found_read_only_when_adopted_is_never_reported_writable() -> None:
    """DittoFS v0.29.0 refuses a share's writes for good once it loaded it read-only (created so, or started
    since), which a share found read-only when adopted most likely is: a PUT of read_only false would read
    Converged while its writes still fail (seen by a review: the consent test itself PUT one back)."""
    _, after, owned, applied = converge(FULL, seeded())
    by_hand = dataclasses.replace(after, shares={**after.shares, "/manual": ObservedShare(
        "/manual", "default", "default", None, True, "none", None, 0)})
    manual = Ref.parse("share:/manual")
    writable = dataclasses.replace(FULL, shares=(*FULL.shares, ShareSpec("manual")))
    # With consent but declared writable: not adopted, and why.
    the_plan, adopted = adopting(writable, by_hand, set(owned), applied, None, consent=True)
    assert manual not in adopted and manual not in the_plan.owned_after()
    [problem] = [pr for pr in the_plan.problems if pr.ref == manual]
    assert problem.kind is ProblemKind.IMMUTABLE, problem
    assert problem.message.startswith("made by hand, not adopted: served read-only"), problem
    assert "declare it readOnly: true" in problem.message, problem
    assert not [c for c in the_plan.calls if c.ref == manual]
    # Declared read-only, it is adopted as it is, and the stamp is kept: a later flip back (the webhook
    # bypassed) is refused, not PUT.
    read_only = dataclasses.replace(FULL, shares=(*FULL.shares, ShareSpec("manual", read_only=True)))
    the_plan, adopted = adopting(read_only, by_hand, set(owned), applied, None, consent=True)
    assert manual in adopted and the_plan.problems == () and the_plan.calls == ()
    kept = the_plan.digests_after(applied, ())
    assert kept == {**applied, "share:/manual/read-only": "served"}
    later = plan(writable, by_hand, the_plan.owned_after(), kept)
    assert [(pr.kind, pr.ref) for pr in later.problems] == [(ProblemKind.IMMUTABLE, manual)]
    assert not [c for c in later.calls if c.ref == manual]
    # A re-created server's predecessor made it (recorded): owned again, reported, stamped, never PUT back.
    record = [str(r) for r in {*owned, manual}]
    the_plan, adopted = adopting(writable, by_hand, set(), applied, record)
    assert manual in adopted and manual in the_plan.owned_after()
    assert [(pr.kind, pr.ref) for pr in the_plan.problems] == [(ProblemKind.IMMUTABLE, manual)]
    assert not [c for c in the_plan.calls if c.ref == manual]
    assert the_plan.digests_after(applied, ())["share:/manual/read-only"] == "served"
    # A writable share adopted is stamped nothing.
    plain = dataclasses.replace(by_hand, shares={**by_hand.shares, "/manual": dataclasses.replace(
        by_hand.shares["/manual"], read_only=False)})
    the_plan, adopted = adopting(writable, plain, set(owned), applied, None, consent=True)
    assert manual in adopted and the_plan.problems == () and the_plan.stamped == {}


def test_a_share_deleted_and_made_again_by_hand_is_not_the_operator_s() -> None:
    """Owned shares were known by name alone, so one deleted and made again by hand between two passes (as the
    message about a share holding snapshots invites) was taken for the operator's: deleted once it left the spec,
    grants and all (a data-loss review). DittoFS gives each share an id; the one the operator saw is stamped."""
    _, after, owned, applied = converge(FULL, seeded())
    share = Ref.parse("share:/export")
    seen = dataclasses.replace(after, shares={"/export": dataclasses.replace(after.shares["/export"], id="made")})
    first = plan(FULL, seen, owned, applied)
    assert first.calls == () and first.problems == ()
    stamped = first.digests_after(applied, ())
    assert stamped == {**applied, "share:/export/id": "made"}
    assert plan(FULL, seen, owned, stamped).digests_after(stamped, ()) == stamped, "settled: nothing to write"

    remade = dataclasses.replace(seen, shares={"/export": dataclasses.replace(
        seen.shares["/export"], id="by-hand", snapshots=0, default_permission="none")})
    # Left the spec: not deleted (its snapshots counted 0), nor its grants or schedule; no longer owned.
    gone = plan(dataclasses.replace(FULL, shares=()), remade, owned, stamped)
    assert not [c for c in gone.calls if c.name.partition("#")[0] == "/export"], gone.calls
    assert not [r for r in gone.owned_after() if r.name.partition("#")[0] == "/export"]
    # Still declared: reported as made by hand, not brought to the declaration; the consent adopts it as it is.
    kept = plan(FULL, remade, owned, stamped)
    assert (ProblemKind.NOT_OWNED, share) in {(pr.kind, pr.ref) for pr in kept.problems}
    assert not [c for c in kept.calls if c.ref == share]
    adopted_plan, adopted = adopting(FULL, remade, set(owned), stamped, None, consent=True)
    assert share in adopted and adopted_plan.problems == ()
    assert adopted_plan.digests_after(stamped, ())["share:/export/id"] == "by-hand"
    assert [c.ref for c in adopted_plan.calls if c.ref == share] == [share], "brought to the declaration"

    # The operator's own re-creation of a declared share deleted by hand drops the old id; the new one is
    # stamped when seen, and the share stays the operator's.
    absent = dataclasses.replace(seen, shares={})
    again = plan(FULL, absent, owned, stamped)
    assert (Op.CREATE, share) in {(c.op, c.ref) for c in again.calls}
    recreated = again.digests_after(stamped)
    assert "share:/export/id" not in recreated
    back = dataclasses.replace(seen, shares={"/export": dataclasses.replace(seen.shares["/export"], id="new")})
    settled = plan(FULL, back, again.owned_after(), recreated)
    assert settled.problems == () and settled.digests_after(recreated, ())["share:/export/id"] == "new"
    # ... also when its CREATE got no answer (done by DittoFS all the same): the old id is gone with the share.
    unanswered = again.digests_after(stamped, ())
    assert "share:/export/id" not in unanswered
    assert plan(FULL, back, again.owned_after(), unanswered).problems == (), "its own share taken for a hand-made one"

    # Deleting a share forgets its own stamps only, not those of a share nested under its name (a review).
    nested = {"share:/a/id": "1", "share:/a/read-only": "served", "share:/a/b/id": "2",
              "share:/a/b/read-only": "served"}
    doomed = Plan((Call(Op.DELETE, Kind.SHARE, "/a", "DELETE", "/api/v1/shares/a"),), (), frozenset())
    assert doomed.digests_after(nested) == {"share:/a/b/id": "2", "share:/a/b/read-only": "served"}


def test_drift_is_repaired_only_where_it_differs() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    share = after.shares["/export"]
    drifted = dataclasses.replace(after, shares={"/export": dataclasses.replace(
        share, read_only=True, permissions={("user", "alice"): "read"}, nfs=ApiShareNfs(squash="none"))},
        adapters={**after.adapters, "nfs": after.adapters["nfs"].model_copy(update={"port": 12049})})
    p = plan(FULL, drifted, owned, applied)
    assert [(c.op, c.kind, c.body) for c in p.calls] == [
        (Op.UPDATE, Kind.ADAPTER, {"port": 2049}),
        (Op.UPDATE, Kind.SHARE, {"read_only": False}),
        (Op.UPDATE, Kind.SHARE_NFS, {"squash": "all_to_guest", "anonymous_uid": 65534, "anonymous_gid": 65534}),
        (Op.UPDATE, Kind.PERMISSION, {"level": "read-write"}),
        (Op.CREATE, Kind.PERMISSION, {"level": "read"}),  # the group grant was deleted by hand
    ]


def test_a_share_made_read_only_rolls_the_pod_and_drift_back_does_not() -> None:
    """DittoFS enforces read-only from a store option it sets when it loads the share: from its next start."""
    _, after, owned, applied = converge(FULL, seeded())
    share = after.shares["/export"]
    drifted = dataclasses.replace(after, shares={"/export": dataclasses.replace(share, read_only=True)})
    back = [c for c in plan(FULL, drifted, owned, applied).calls if c.kind is Kind.SHARE]
    assert [(c.body, c.needs_restart) for c in back] == [({"read_only": False}, False)]
    frozen = dataclasses.replace(FULL, shares=tuple(dataclasses.replace(s, read_only=True) for s in FULL.shares))
    made = [c for c in plan(frozen, after, owned, applied).calls if c.kind is Kind.SHARE]
    assert [(c.body, c.needs_restart) for c in made] == [({"read_only": True}, True)]


def test_a_share_the_operator_made_read_only_is_not_reported_read_write_again() -> None:
    """DittoFS v0.29.0 keeps refusing a share's writes once it served it read-only: declared read-write again (the
    webhook refuses it, but a namespace may opt out), it is reported, not PUT and called converged. Made
    read-only by hand (no record of the operator doing it), it is put back."""
    frozen = dataclasses.replace(FULL, shares=tuple(dataclasses.replace(s, read_only=True) for s in FULL.shares))
    _, after, owned, applied = converge(frozen, seeded())
    assert applied["share:/export/read-only"] == "served"
    p = plan(FULL, after, owned, applied)
    assert [(pr.kind, str(pr.ref)) for pr in p.problems] == [(ProblemKind.IMMUTABLE, "share:/export")]
    assert not [c for c in p.calls if c.kind is Kind.SHARE]
    assert plan(frozen, after, owned, applied).calls == ()  # true again: nothing to do
    _, mine, owned2, applied2 = converge(FULL, seeded())
    by_hand = dataclasses.replace(mine, shares={"/export": dataclasses.replace(mine.shares["/export"], read_only=True)})
    assert [c.body for c in plan(FULL, by_hand, owned2, applied2).calls if c.kind is Kind.SHARE] == [
        {"read_only": False}]


def test_an_owned_share_deleted_by_hand_is_recreated_with_its_children() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    gone = dataclasses.replace(after, shares={}, snapshot_policies={})
    p = plan(FULL, gone, owned, applied)
    assert [(c.op.value, c.kind.value) for c in p.calls] == [
        ("create", "share"), ("update", "share-nfs"), ("create", "permission"), ("create", "permission"),
        ("create", "snapshot-policy")]
    assert p.owned_after() == owned


def test_removed_objects_are_pruned_in_reverse_dependency_order() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    p = plan(FileService(operator=FULL.operator), after, owned, applied)
    assert brief(p) == [
        ("delete", "share", "DELETE", "/api/v1/shares/export"),  # its grants and policy go with it
        ("delete", "remote-store", "DELETE", "/api/v1/store/block/remote/s3"),
        ("delete", "local-store", "DELETE", "/api/v1/store/block/local/default"),
        ("delete", "metadata-store", "DELETE", "/api/v1/store/metadata/default"),
        ("delete", "user", "DELETE", "/api/v1/users/alice"),
        ("delete", "group", "DELETE", "/api/v1/groups/eng"),
    ]
    assert p.owned_after() == frozenset()
    assert p.digests_after(applied) == {"operator-account:dittofs-operator/password": FULL.operator.digest}  # type: ignore[union-attr]


def test_a_share_with_snapshots_that_left_the_spec_is_disabled_not_deleted() -> None:
    """DittoFS deletes a share's snapshots with the share: one that has any is taken out of service instead
    (its schedule stopped), its stores kept for it, and a HoldsSnapshots problem says how to let it go."""
    _, after, owned, applied = converge(FULL, seeded())
    held = dataclasses.replace(after, shares={"/export": dataclasses.replace(after.shares["/export"], snapshots=2)})
    p = plan(FileService(operator=FULL.operator), held, owned, applied)
    assert [c for c in brief(p) if c[1] in ("share", "snapshot-policy")] == [
        ("update", "share", "POST", "/api/v1/shares/export/disable"),
        ("delete", "snapshot-policy", "DELETE", "/api/v1/shares/export/snapshot-policy")]
    assert {(pr.kind, str(pr.ref)) for pr in p.problems} == {
        (ProblemKind.HOLDS_SNAPSHOTS, "share:/export"), (ProblemKind.IN_USE, "metadata-store:default"),
        (ProblemKind.IN_USE, "local-store:default"), (ProblemKind.IN_USE, "remote-store:s3")}
    message = next(pr.message for pr in p.problems if pr.kind is ProblemKind.HOLDS_SNAPSHOTS)
    assert message.startswith("left the spec, but DittoFS would delete its 2 snapshot(s) with it: disabled")
    assert Ref(Kind.SHARE, "/export") in p.owned_after()

    # Disabled, the next pass changes nothing; declared again, it is served again.
    disabled = simulate(held, p.calls)
    again = plan(FileService(operator=FULL.operator), disabled, p.owned_after(), applied)
    assert [c for c in brief(again) if c[1] in ("share", "snapshot-policy")] == []
    assert ProblemKind.HOLDS_SNAPSHOTS in {pr.kind for pr in again.problems}
    back = plan(FULL, disabled, p.owned_after(), applied)
    assert ("update", "share", "POST", "/api/v1/shares/export/enable") in brief(back)
    assert ("create", "snapshot-policy", "PUT", "/api/v1/shares/export/snapshot-policy") in brief(back)

    # Its snapshots deleted by hand: the share goes as any other.
    emptied = dataclasses.replace(disabled, shares={"/export": dataclasses.replace(
        disabled.shares["/export"], snapshots=0)})
    assert ("delete", "share", "DELETE", "/api/v1/shares/export") in brief(
        plan(FileService(operator=FULL.operator), emptied, p.owned_after(), applied))


def test_a_share_whose_snapshots_were_not_counted_is_left_alone() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    uncounted = dataclasses.replace(after, shares={"/export": dataclasses.replace(after.shares["/export"],
                                                                                 snapshots=None)})
    p = plan(FileService(operator=FULL.operator), uncounted, owned, applied)
    assert [c for c in brief(p) if c[1] == "share"] == []
    assert Ref(Kind.SHARE, "/export") in p.owned_after()


def test_the_snapshots_of_every_owned_share_that_left_the_spec_are_counted() -> None:
    owned = {Ref(Kind.SHARE, "/export"), Ref(Kind.SHARE, "/old")}
    assert reads(FULL, owned, full=True).snapshots == ("/old",)
    drift = reads(FULL, owned, full=False)
    assert drift.snapshots == ("/old",) and drift.gets == DRIFT_READS  # counted within the budget
    assert reads(FULL, {Ref(Kind.SHARE, "/export")}, full=False).snapshots == ()


def test_removing_a_grant_and_a_policy_deletes_only_those() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    share = dataclasses.replace(FULL.shares[0], permissions=FULL.shares[0].permissions[:1], snapshot_policy=None)
    p = plan(dataclasses.replace(FULL, shares=(share,)), after, owned, applied)
    assert brief(p) == [
        ("delete", "snapshot-policy", "DELETE", "/api/v1/shares/export/snapshot-policy"),
        ("delete", "permission", "DELETE", "/api/v1/shares/export/permissions/groups/eng"),
    ]


def test_a_store_still_used_by_a_kept_share_is_not_deleted() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    manual = ObservedShare("/manual", "default", "default", None, False, "none", None, 0)
    seen = dataclasses.replace(after, shares={**after.shares, "/manual": manual})
    p = plan(FileService(), seen, owned, applied)
    assert [(c.op.value, c.kind.value, c.name) for c in p.calls if c.kind is not Kind.SHARE] == [
        ("delete", "remote-store", "s3"), ("delete", "user", "alice"), ("delete", "group", "eng")]
    assert sorted(str(pr) for pr in p.problems) == [
        "local-store:default: left the spec but shares still use it: /manual",
        "metadata-store:default: left the spec but shares still use it: /manual"]


def test_vanished_undeclared_objects_are_forgotten() -> None:
    p = plan(FileService(), seeded(), {Ref(Kind.SHARE, "/old"), Ref(Kind.GROUP, "gone")})
    assert p.calls == () and p.owned == frozenset()
    # A grant that went with its user (DittoFS deletes a user's grants) is forgotten once undeclared.
    _, after, owned, applied = converge(FULL, seeded())
    share = dataclasses.replace(FULL.shares[0], permissions=FULL.shares[0].permissions[1:])
    without_alice = dataclasses.replace(after, shares={"/export": dataclasses.replace(
        after.shares["/export"], permissions={("group", "eng"): "read"})})
    p = plan(dataclasses.replace(FULL, shares=(share,), users=()), without_alice, owned, applied)
    assert [(c.op, c.kind, c.name) for c in p.calls] == [(Op.DELETE, Kind.USER, "alice")]
    assert Ref(Kind.PERMISSION, "/export#user:alice") not in p.owned_after()


# ---------------------------------------------------------------------------------------------------------
# immutability, reserved names, dependencies


def test_immutable_store_and_share_changes_are_problems_not_calls() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    moved = dataclasses.replace(FULL, stores=(
        StoreSpec(StoreKind.METADATA, "default", "badger", (("path", "/elsewhere"),)),
        StoreSpec(StoreKind.LOCAL, "default", "memory"),
        FULL.stores[2],
        StoreSpec(StoreKind.LOCAL, "other", "fs", (("path", "/data/other"),)),
    ), shares=(dataclasses.replace(FULL.shares[0], local_store="other", read_only=True),))
    p = plan(moved, after, owned, applied)
    assert sorted((pr.kind.value, str(pr.ref)) for pr in p.problems) == [
        ("Immutable", "local-store:default"), ("Immutable", "metadata-store:default"), ("Immutable", "share:/export")]
    assert "local store is 'default', declared 'other'" in str(p.problems)
    # Only non-destructive calls: the new store and the share's mutable field.
    assert [(c.op.value, c.kind.value, c.name) for c in p.calls] == [
        ("create", "local-store", "other"), ("update", "share", "/export")]
    assert next(c for c in p.calls if c.kind is Kind.SHARE).body == {"read_only": True}


def test_a_store_put_persisted_but_not_recorded_is_sent_again_so_the_pod_still_rolls() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    changed = dataclasses.replace(FULL, stores=(*FULL.stores[:2], StoreSpec(
        StoreKind.REMOTE, "s3", "s3", (("bucket", "b"), ("region", "eu-west-3")), FULL.stores[2].secrets)))
    first = plan(changed, after, owned, applied)
    assert [(c.op, c.kind, c.needs_restart) for c in first.calls] == [(Op.UPDATE, Kind.REMOTE_STORE, True)]
    # The operator died after DittoFS persisted the PUT and before status recorded it: DittoFS shows the
    # new region, but has not applied it. The recorded config stamp still says "old", so the PUT (and the
    # restart it implies) is planned again; once recorded, nothing is.
    persisted = simulate(after, first.calls)
    again = plan(changed, persisted, owned, applied)
    assert [(c.op, c.kind, c.needs_restart) for c in again.calls] == [(Op.UPDATE, Kind.REMOTE_STORE, True)]
    assert plan(changed, persisted, owned, again.digests_after(applied)).calls == ()
    # Ownership recorded before stamps existed (no "config" slot) is no reason to PUT.
    legacy = {k: v for k, v in applied.items() if not k.endswith("/config")}
    assert plan(FULL, after, owned, legacy).calls == ()


def test_where_a_remote_store_keeps_its_blocks_is_immutable() -> None:
    """Another bucket or prefix (the webhook was off, or a re-created server declares it) is reported, not
    PUT: DittoFS would read blocks evicted from local disk from where they are not."""
    _, after, owned, applied = converge(FULL, seeded())
    for config, key in (((("bucket", "b2"), ("region", "eu-west-1")), "bucket"),
                        ((("bucket", "b"), ("prefix", "p/"), ("region", "eu-west-1")), "prefix")):
        moved = dataclasses.replace(FULL, stores=(*FULL.stores[:2], StoreSpec(
            StoreKind.REMOTE, "s3", "s3", config, FULL.stores[2].secrets)))
        p = plan(moved, after, owned, applied)
        assert p.calls == ()
        assert [(pr.kind, str(pr.ref)) for pr in p.problems] == [(ProblemKind.IMMUTABLE, "remote-store:s3")]
        assert p.problems[0].message.startswith(f"{key} is ")


def test_a_metadata_store_is_never_posted_twice() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    changed = dataclasses.replace(FULL, stores=(
        StoreSpec(StoreKind.METADATA, "default", "badger", (("path", "/data/store/metadata/badger"),
                                                           ("block_cache_mb", 64))), *FULL.stores[1:]))
    p = plan(changed, after, owned, applied)
    assert [(c.op, c.method, c.needs_restart) for c in p.calls] == [(Op.UPDATE, "PUT", True)]
    assert p.needs_restart


def test_reserved_accounts_and_missing_stores_are_reported() -> None:
    want = FileService(users=(UserSpec("admin"), UserSpec("dittofs-operator")), shares=(ShareSpec("x"),))
    p = plan(want, seeded())
    assert p.calls == ()
    assert sorted((pr.kind.value, str(pr.ref)) for pr in p.problems) == [
        ("MissingDependency", "share:/x"), ("Reserved", "user:admin"), ("Reserved", "user:dittofs-operator")]


# ---------------------------------------------------------------------------------------------------------
# secrets by digest


def test_changed_secret_values_are_reapplied() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    rotated = dataclasses.replace(
        FULL, users=(dataclasses.replace(FULL.users[0], password=secret("users/alice", "new")),),
        stores=(*FULL.stores[:2], dataclasses.replace(FULL.stores[2], secrets=(
            FULL.stores[2].secrets[0], ("secret_access_key", secret("s3/key", "rotated"))))))
    p = plan(rotated, after, owned, applied)
    assert [(c.op, c.kind, c.path, c.needs_restart) for c in p.calls] == [
        (Op.SET_PASSWORD, Kind.USER, "/api/v1/users/alice/password", False),
        (Op.UPDATE, Kind.REMOTE_STORE, "/api/v1/store/block/remote/s3", True)]
    store = p.calls[1]
    assert store.body == {"type": "s3", "config": {"bucket": "b", "region": "eu-west-1"}}
    assert {s.key for s in store.secrets} == {"access_key_id", "secret_access_key"}  # PUT replaces the config
    applied2 = p.digests_after(applied)
    assert plan(rotated, simulate(after, p.calls), p.owned_after(), applied2).calls == ()


def test_an_admin_role_user_completes_its_first_login_on_create_and_reset() -> None:
    admin = UserSpec("ops", secret("u/ops"), role="admin")
    p = plan(FileService(users=(admin,)), seeded())
    assert [(c.op, c.admin_first_login) for c in p.calls] == [(Op.CREATE, True)]
    after = simulate(seeded(), p.calls)
    p2 = plan(FileService(users=(dataclasses.replace(admin, password=secret("u/ops", "x")),)), after,
              p.owned_after(), p.digests_after({}))
    assert [(c.op, c.admin_first_login) for c in p2.calls] == [(Op.SET_PASSWORD, True)]


# ---------------------------------------------------------------------------------------------------------
# value comparison (DittoFS normalises)


@pytest.mark.parametrize(("observed", "desired", "same"), [
    ("1h0m0s", "1h", True), ("24h0m0s", "@daily", True), ("1h30m0s", "90m", True), ("168h0m0s", "@weekly", True),
    ("1h0m0s", "2h", False), ("1.5h", "90m", True), ("nonsense", "1h", False)])
def test_durations_compare_parsed(observed: str, desired: str, same: bool) -> None:
    assert (duration_seconds(observed) == duration_seconds(desired)) is same


@pytest.mark.parametrize(("observed", "desired", "same"), [
    ("1.46KiB", 1500, True), ("953.67MiB", 10**9, True), ("10.00GiB", 10 << 30, True), (None, None, True),
    (None, 0, True), ("10.00GiB", 11 << 30, False), (None, 1, False), ("1.00KiB", None, False)])
def test_quotas_compare_within_dittofs_rounding(observed: str | None, desired: int | None, same: bool) -> None:
    assert quota_matches(observed, desired) is same


def test_observed_records_parse_dittofs_json() -> None:
    stores = {StoreKind.METADATA: {"m": ApiStore(id="id-m", name="m", type="memory")},
              StoreKind.LOCAL: {"l": ApiStore(id="id-l", name="l", type="memory")}}
    shares = parse_shares([{"name": "/a", "metadata_store_id": "id-m", "local_block_store_id": "id-l",
                            "remote_block_store_id": None, "quota_bytes": "1.46KiB", "extra": 1}], stores)
    assert shares["/a"].metadata_store == "m" and shares["/a"].local_store == "l" and shares["/a"].remote_store is None
    assert parse_permissions(None) == {}  # v0.29.0 answers `null` for a share without grants
    assert parse_snapshot_policies([{"share": "/a", "interval": "1h0m0s"}])["/a"].keep_last == 0


def test_refs_round_trip_through_status_strings() -> None:
    for ref in (Ref(Kind.SHARE, "/export"), Ref(Kind.PERMISSION, "/export#group:eng")):
        assert Ref.parse(str(ref)) == ref


# ---------------------------------------------------------------------------------------------------------
# property: any declaration converges in one pass, and pruning removes exactly what was owned

_names = st.sampled_from(["a", "b", "c"])


@st.composite
def services(draw: st.DrawFn) -> FileService:
    groups = tuple(GroupSpec(f"g{n}", draw(st.none() | st.integers(2000, 2010)))
                   for n in draw(st.sets(_names, max_size=3)))
    users = tuple(UserSpec(f"u{n}", secret(f"u/{n}", draw(st.sampled_from(["p1", "p2"]))),
                           uid=draw(st.none() | st.integers(1000, 1005)),
                           groups=tuple(draw(st.sets(st.sampled_from([g.name for g in groups]))) if groups else ()),
                           role=draw(st.sampled_from(["user", "admin"])))
                  for n in draw(st.sets(_names, max_size=3)))
    stores = (StoreSpec(StoreKind.METADATA, "default", "badger", (("path", "/m"),)),
              StoreSpec(StoreKind.LOCAL, "default", "fs", (("path", "/b"), ("max_size", draw(st.integers(0, 9))))))
    principals = [("user", u.name) for u in users] + [("group", g.name) for g in groups]
    shares = tuple(ShareSpec(
        f"s{n}", read_only=draw(st.booleans()),
        default_permission=draw(st.sampled_from(["none", "read", "read-write", "admin"])),
        quota_bytes=draw(st.none() | st.integers(1, 1 << 40)),
        nfs=draw(st.none() | st.builds(NfsOptions, st.sampled_from(["none", "root_to_guest", "all_to_guest"]),
                                       st.none() | st.integers(0, 70000))),
        permissions=tuple(Grant(p, who, draw(st.sampled_from(["read", "read-write"])))  # type: ignore[arg-type]
                          for p, who in draw(st.sets(st.sampled_from(principals))) if principals) if principals else (),
        snapshot_policy=draw(st.none() | st.builds(SnapshotPolicySpec, st.sampled_from(["1h", "90m", "@daily"]),
                                                   st.integers(0, 5), st.none() | st.sampled_from(["72h", "30m"]))))
        for n in draw(st.sets(_names, max_size=3)))
    adapters = tuple(AdapterSpec(t, draw(st.booleans()), draw(st.none() | st.integers(1025, 65535)),  # type: ignore[arg-type]
                                 (("lease_time", draw(st.integers(10, 120))),) if t == "nfs" else ())
                     for t in draw(st.sets(st.sampled_from(["nfs", "smb"]))))
    return FileService(operator=secret("op"), adapters=adapters, stores=stores, shares=shares, users=users,
                       groups=groups)


@settings(max_examples=80, deadline=None)
@given(first=services(), second=services())
def test_any_declaration_converges_and_prunes_exactly_what_it_owned(first: FileService, second: FileService) -> None:
    p1, seen1, owned1, applied1 = converge(first, seeded())
    assert p1.problems == ()
    assert plan(first, seen1, owned1, applied1).calls == ()
    # Change the declaration (a read-only share stays read-only, as the webhook requires): one pass gets there,
    # touching nothing it does not own, and then rests.
    frozen = {s.key for s in first.shares if s.read_only}
    second = dataclasses.replace(second, shares=tuple(
        dataclasses.replace(s, read_only=True) if s.key in frozen else s for s in second.shares))
    p2, seen2, owned2, applied2 = converge(second, seen1, owned1, applied1)
    assert p2.problems == ()
    touched = {c.ref for c in p2.calls if c.op is not Op.CREATE and c.kind not in (
        Kind.ADAPTER, Kind.ADAPTER_SETTINGS, Kind.SHARE_NFS)}
    assert touched <= owned1
    assert plan(second, seen2, owned2, applied2).calls == ()
    assert set(seen2.users) >= {"admin", "dittofs-operator"}  # never pruned
    assert set(seen2.groups) >= {"admins", "operators", "users"}
    deleted = [c for c in p2.calls if c.op is Op.DELETE]
    assert all(c.ref in owned1 for c in deleted)
    # Deletes come last, in reverse dependency order.
    kinds = [list(Kind).index(c.kind) for c in deleted]
    assert kinds == sorted(kinds, reverse=True)
    assert p2.calls[len(p2.calls) - len(deleted):] == tuple(deleted)


def test_a_redacted_store_secret_is_not_read_as_drift() -> None:
    """DittoFS's GET shows a store's secrets as "********": the next pass compares them by the digests it
    recorded, so the redaction plans nothing (no PUT, no restart)."""
    _, seen, owned, applied = converge(FULL, seeded())
    s3 = seen.stores[StoreKind.REMOTE]["s3"].config
    assert (s3["access_key_id"], s3["secret_access_key"], s3["bucket"]) == ("********", "********", "b")
    assert plan(FULL, seen, owned, applied).calls == ()
    # The digests are what tells: a rotated secret behind the same redaction is planned again.
    rotated = dataclasses.replace(FULL, stores=tuple(
        dataclasses.replace(store, secrets=(("access_key_id", secret("s3/id", "AKIA")),
                                            ("secret_access_key", secret("s3/key", "rotated"))))
        if store.kind is StoreKind.REMOTE else store for store in FULL.stores))
    assert [(c.op, c.kind, c.name) for c in plan(rotated, seen, owned, applied).calls] == [
        (Op.UPDATE, Kind.REMOTE_STORE, "s3")]




def test_calls_made_for_a_changed_input_are_told_from_drift_repairs() -> None:
    """``DriftRepaired`` is for DittoFS changed by hand: a rotated Secret or a local store's new cap (the content
    volume grew) changes an input the spec does not show, and is no drift."""
    _, after, owned, applied = converge(FULL, seeded())
    rotated = dataclasses.replace(
        FULL, users=(dataclasses.replace(FULL.users[0], password=secret("users/alice", "new")),),
        stores=(FULL.stores[0], dataclasses.replace(FULL.stores[1], config=(*FULL.stores[1].config,
                                                                            ("max_size", 4 << 30))),
                dataclasses.replace(FULL.stores[2], secrets=(
                    FULL.stores[2].secrets[0], ("secret_access_key", secret("s3/key", "rotated"))))))
    assert [(c.kind, c.follows_input) for c in plan(rotated, after, owned, applied).calls] == [
        (Kind.USER, True), (Kind.LOCAL_STORE, True), (Kind.REMOTE_STORE, True)]
    s3 = after.stores[StoreKind.REMOTE]["s3"]
    by_hand = dataclasses.replace(after, stores={**after.stores, StoreKind.REMOTE: {
        "s3": s3.model_copy(update={"config": {**s3.config, "region": "us-east-1"}})}})
    assert [(c.kind, c.follows_input) for c in plan(FULL, by_hand, owned, applied).calls] == [
        (Kind.REMOTE_STORE, False)]
    want = _identity_spec()
    seen = Observed(identity=_as_dittofs_shows(want))
    first = plan(want, seen)
    owned_ids, applied_ids = first.owned_after(), first.digests_after({})
    rotated_ids = dataclasses.replace(want, identity=tuple(
        dataclasses.replace(p, secret=secret("bind/pw", "new")) if p.type == "ldap" else p for p in want.identity))
    assert [c.follows_input for c in plan(rotated_ids, seen, owned_ids, applied_ids).calls] == [True]
    edited = Observed(identity={**seen.identity, "ldap": {**seen.identity["ldap"], "nested_groups": True}})
    assert [c.follows_input for c in plan(want, edited, owned_ids, applied_ids).calls] == [False]


def test_adapter_events_name_what_changed() -> None:
    """Two moves of a port within the event recorder's 10 minutes must not read as one (docs/TROUBLESHOOTING)."""
    _, after, owned, applied = converge(FULL, seeded())
    moved = dataclasses.replace(FULL, adapters=(AdapterSpec("nfs", True, 2050, (("lease_time", 90),)),
                                                AdapterSpec("smb", True)))
    assert adapter_changes(plan(moved, after, owned, applied).calls) == (
        "nfs port 2050, settings lease_time; smb enabled")
    assert adapter_changes([]) == ""
    # Two adapters swapping ports: one is stopped first; only where each ends up is told.
    swap = [Call(Op.UPDATE, Kind.ADAPTER, "smb", "PUT", "/a", {"enabled": False}),
            Call(Op.UPDATE, Kind.ADAPTER, "nfs", "PUT", "/a", {"port": 1445}),
            Call(Op.UPDATE, Kind.ADAPTER, "smb", "PUT", "/a", {"port": 12049, "enabled": True})]
    assert adapter_changes(swap) == "nfs port 1445; smb port 12049, enabled"
    created = [Call(Op.CREATE, Kind.ADAPTER, "smb", "POST", "/a", {"type": "smb", "enabled": True, "port": 1445})]
    assert adapter_changes(created) == "smb created, port 1445"


def test_a_pod_on_another_config_than_its_template_is_not_provisioned_yet() -> None:
    """A TLS change posted ProvisioningFailed while the old pod still served the old scheme (an exploratory
    session): a pod about to be replaced waits. Read as the cache keeps pods."""
    sts = {"spec": {"template": {"metadata": {"annotations": {HASH_ANNOTATION: "new"}}}}}

    def pod(config: str) -> dict[str, Any]:
        return slim_pod({"metadata": {"name": "demo-0", "annotations": {HASH_ANNOTATION: config, "x": "y"}}})

    assert rolling(pod("old"), sts) and not rolling(pod("new"), sts)
    assert not rolling(pod("old"), None)  # no StatefulSet known: nothing to wait for


def test_the_file_service_status_is_kept_whole() -> None:
    last = {"provisioned": ["share:/a"], "appliedSecrets": {"user:u/password": "d"}, "shares": [{"name": "/a"}],
            "adapters": [], "storeRevision": 2}
    assert Provisioned.kept({**last, "phase": "Running"}).status() == last


def test_a_stopped_server_keeps_its_shares_at_no_address() -> None:
    served = [{"name": "/a", "readOnly": False, "usedBytes": 3, "nfs": "nfs://h:12049/a", "smb": "smb://h:1445/a"}]
    assert unserved(served) == [{"name": "/a", "readOnly": False, "usedBytes": 3}]
    assert unserved(None) is None


# ---------------------------------------------------------------------------------------------------------
# drift passes read a bounded number of objects


def observing(seen: Observed, wanted: Reads) -> Observed:
    """What ``DittoFsClient.observe(wanted)`` returns of a server that holds ``seen``."""
    details = set(wanted.details) if wanted.details is not None else set(seen.shares)
    counted = set(wanted.snapshots) if wanted.snapshots is not None else set(seen.shares)
    return dataclasses.replace(
        seen, groups=seen.groups if wanted.groups else {},
        adapter_settings={t: v for t, v in seen.adapter_settings.items() if t in wanted.settings},
        stores={k: v for k, v in seen.stores.items() if k is not StoreKind.REMOTE or wanted.remote},
        shares={n: dataclasses.replace(sh, nfs=sh.nfs if n in details else None,
                                       permissions=sh.permissions if n in details else None,
                                       snapshots=sh.snapshots if n in counted else None)
                for n, sh in seen.shares.items()},
        snapshot_policies=seen.snapshot_policies if wanted.policies else {},
        identity={t: r for t, r in seen.identity.items() if t in wanted.identity}, unread=wanted.skipped())


def drift_passes(want: FileService, owned: Iterable[Ref], count: int) -> list[Reads]:
    cursor, out = 0, []
    for _ in range(count):
        out.append(reads(want, owned, full=False, cursor=cursor))
        cursor += out[-1].advance
    return out


def everything() -> FileService:
    """FULL and more: both adapters' settings, 10 shares with grants and policies, both identity providers."""
    return dataclasses.replace(
        FULL, adapters=(AdapterSpec("nfs", True, 2049, (("lease_time", 60),)), AdapterSpec("smb", True, None,
                                                                                      (("signing", "required"),))),
    shares=(*FULL.shares, *(ShareSpec(f"s{i}", permissions=(Grant("user", "alice", "read"),),
                                      snapshot_policy=SnapshotPolicySpec("1h")) for i in range(9))),
        identity=_identity_spec().identity)


def test_a_drift_pass_reads_at_most_ten_whatever_the_spec_declares() -> None:
    want = everything()
    owned = plan(want, seeded()).owned_after()
    full = reads(want, owned, full=True)
    # 5 lists, groups, remote stores, policies, 2 settings, 2 identity providers, 10 shares in detail.
    assert full.gets == 5 + 1 + 1 + 1 + 2 + 2 + 2 * 10
    passes = drift_passes(want, owned, 12)
    assert max(p.gets or 99 for p in passes) <= DRIFT_READS
    assert all(p.remote for p in passes)  # shares name remote stores; status reports their health
    # Round-robin: one cycle of 7 passes compares everything the full pass does, at least once.
    cycle = passes[:7]
    assert any(p.groups for p in cycle) and any(p.policies for p in cycle)
    assert {t for p in cycle for t in p.settings} == {"nfs", "smb"}
    assert {t for p in cycle for t in p.identity} == {"ldap", "kerberos"}
    assert {n for p in cycle for n in p.details or ()} == set(full.details or ())
    # The benchmark's server (10 shares, 5 users, a remote store): 2 shares in detail per pass, 10 GETs.
    bench = FileService(stores=FULL.stores, shares=tuple(ShareSpec(f"s{i}", remote_store="s3") for i in range(10)))
    owned = plan(bench, seeded()).owned_after()
    assert [(p.details, p.gets) for p in drift_passes(bench, owned, 6)] == [
        (("/s0", "/s1"), 10), (("/s2", "/s3"), 10), (("/s4", "/s5"), 10), (("/s6", "/s7"), 10),
        (("/s8", "/s9"), 10), (("/s0", "/s1"), 10)]
    # Lists nothing declared or owned depends on are not read.
    bare = FileService(adapters=(AdapterSpec("nfs"), AdapterSpec("smb", False)), stores=FULL.stores[:2],
                       shares=(ShareSpec("export"),))
    r = reads(bare, [], full=False)
    assert (r.groups, r.settings, r.remote, r.policies, r.details, r.gets) == (False, (), False, False, (), 5)
    assert reads(bare, [Ref(Kind.GROUP, "eng")], full=False).groups  # owned: read, so it can be pruned
    assert reads(FULL, [], full=True).settings == ("nfs",)  # only adapters with declared settings


def test_what_a_drift_pass_did_not_read_is_neither_created_nor_pruned() -> None:
    want = everything()
    _, after, owned, applied = converge(want, seeded())
    seen = dataclasses.replace(after, identity=_as_dittofs_shows(want))
    assert plan(want, seen, owned, applied).calls == ()
    nothing = Reads(groups=False, settings=(), remote=False, policies=False, details=())
    blind = observing(seen, nothing)
    assert blind.unread == {"groups", "remote", "policies", "settings/nfs", "settings/smb", "identity/ldap",
                            "identity/kerberos"}
    p = plan(want, blind, owned, applied)
    assert (p.calls, p.problems, p.owned) == ((), (), owned)
    # Dropped from the spec while unread: pruned (or disabled) only on a pass that reads them.
    fewer = dataclasses.replace(want, groups=(), identity=(), shares=tuple(
        dataclasses.replace(s, snapshot_policy=None) for s in want.shares))
    p = plan(fewer, blind, owned, applied)
    assert (p.calls, p.owned) == ((), owned)
    assert {(c.op, c.kind) for c in plan(fewer, seen, owned, applied).calls} == {
        (Op.DELETE, Kind.GROUP), (Op.DELETE, Kind.SNAPSHOT_POLICY), (Op.UPDATE, Kind.IDENTITY_PROVIDER)}


def test_drift_in_what_one_pass_skips_is_repaired_within_a_cycle() -> None:
    want = everything()
    _, after, owned, applied = converge(want, seeded())
    # By hand: a snapshot policy and a group deleted, an NFS setting and a late share's grant changed.
    drifted = dataclasses.replace(
        after, groups={k: v for k, v in after.groups.items() if k != "eng"},
        snapshot_policies={k: v for k, v in after.snapshot_policies.items() if k != "/s7"},
        adapter_settings={**after.adapter_settings, "nfs": {**after.adapter_settings["nfs"], "lease_time": 30}},
        shares={**after.shares, "/s8": dataclasses.replace(after.shares["/s8"], permissions={})},
        identity=_as_dittofs_shows(want))
    seen, repaired = drifted, []
    for wanted in drift_passes(want, owned, 7):
        assert (wanted.gets or 99) <= DRIFT_READS
        p = plan(want, observing(seen, wanted), owned, applied)
        assert p.problems == ()
        repaired += [(c.op, c.kind, c.name) for c in p.calls]
        seen = dataclasses.replace(simulate(seen, p.calls), identity=seen.identity)
        owned, applied = p.owned_after(), p.digests_after(applied)
    assert sorted(repaired) == sorted([
        (Op.CREATE, Kind.GROUP, "eng"), (Op.CREATE, Kind.SNAPSHOT_POLICY, "/s7"),
        (Op.UPDATE, Kind.ADAPTER_SETTINGS, "nfs"), (Op.CREATE, Kind.PERMISSION, "/s8#user:alice")])
    assert plan(want, seen, owned, applied).calls == ()


def test_a_share_or_user_disabled_by_hand_is_enabled_again() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    disabled = dataclasses.replace(
        after, users={**after.users, "alice": after.users["alice"].model_copy(update={"enabled": False})},
        shares={**after.shares, "/export": dataclasses.replace(after.shares["/export"], enabled=False)})
    p = plan(FULL, disabled, owned, applied)
    assert [(c.op, c.kind, c.method, c.path, c.body) for c in p.calls] == [
        (Op.UPDATE, Kind.USER, "PUT", "/api/v1/users/alice", {"enabled": True}),
        (Op.UPDATE, Kind.SHARE, "POST", "/api/v1/shares/export/enable", None)]
    assert plan(FULL, simulate(disabled, p.calls), owned, applied).calls == ()


def test_share_details_not_read_are_left_alone_and_their_grants_stay_owned() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    unread = dataclasses.replace(after, shares={k: dataclasses.replace(v, nfs=None, permissions=None)
                                                for k, v in after.shares.items()})
    p = plan(FULL, unread, owned, applied)
    assert p.calls == () and p.problems == ()
    assert p.owned == owned
    # A grant that left the spec is pruned only once its share's grants were read.
    fewer = dataclasses.replace(FULL, shares=(dataclasses.replace(FULL.shares[0], permissions=FULL.shares[0]
                                                                  .permissions[:1]),))
    assert plan(fewer, unread, owned, applied).calls == ()
    assert [(c.op, c.kind) for c in plan(fewer, after, owned, applied).calls] == [(Op.DELETE, Kind.PERMISSION)]


def test_deleting_a_badger_metadata_store_rolls_the_pod_to_release_its_lock() -> None:
    _, after, owned, applied = converge(FULL, seeded())
    extra = dataclasses.replace(FULL, stores=(*FULL.stores, StoreSpec(StoreKind.METADATA, "old", "badger",
                                                                      (("path", "/data/store/metadata/old"),))))
    _, after, owned, applied = converge(extra, after, owned, applied)
    p = plan(FULL, after, owned, applied)
    assert [(c.op, c.kind, c.name, c.needs_restart) for c in p.calls] == [
        (Op.DELETE, Kind.METADATA_STORE, "old", True)]


# -- identity providers (issue 14, item 4) -------------------------------------------------------------------
def _identity_spec(**ldap: object) -> FileService:
    from dittoctl.api.models import DittoServer
    from reconciler.specs.fileservice import declared
    raw = {"metadata": {"name": "demo", "namespace": "ns", "uid": "u"}, "spec": {
        "storage": {"metadataSize": "1Gi"}, "shares": [], "identity": {
            "ldap": {"url": "ldaps://dc:636", "baseDn": "DC=x", "bindDn": "CN=svc",
                     "bindPasswordSecretRef": {"name": "bind", "key": "pw"}, **ldap},
            "kerberos": {"servicePrincipal": "nfs/h@EXAMPLE.COM", "keytabSecretRef": {"name": "k", "key": "kt"},
                         "krb5ConfSecretRef": {"name": "k", "key": "conf"}}}}}
    want, missing = declared(DittoServer.model_validate(raw).spec, lambda s, k: digest_of(f"{s}/{k}"), "salt")
    assert missing == []
    return FileService(identity=want.identity)


def _as_dittofs_shows(want: FileService) -> dict[str, dict[str, object]]:
    """The records as DittoFS answers GET after seeding: durations normalised, passwords redacted."""
    seen: dict[str, dict[str, object]] = {}
    for p in want.identity:
        record = dict(p.config)
        if p.type == "kerberos":
            record.update(max_clock_skew="5m0s", context_ttl="8h0m0s", machine_account={})
        else:
            record["bind_password"] = "********"
        seen[p.type] = record
    return seen


def test_identity_seeded_records_need_only_the_unrecorded_password() -> None:
    want = _identity_spec()
    seen = Observed(identity=_as_dittofs_shows(want))
    first = plan(want, seen)
    # "5m" == "5m0s", omitted empty sub-records equal: Kerberos needs nothing. LDAP's password has no applied
    # digest yet: sent once, live.
    assert [(c.op, c.name, c.needs_restart, [s.key for s in c.secrets]) for c in first.calls] == [
        (Op.UPDATE, "ldap", False, ["bind_password"])]
    assert first.calls[0].path == "/api/v1/identity-providers/ldap/config"
    assert "bind_password" not in (first.calls[0].body or {})  # the value travels only as a SecretField
    assert first.owned_after() == {Ref(Kind.IDENTITY_PROVIDER, "ldap"), Ref(Kind.IDENTITY_PROVIDER, "kerberos")}
    applied = first.digests_after({})
    assert plan(want, seen, first.owned_after(), applied).calls == ()
    # A rotated password: one PUT with it; an edit without one: a PUT that leaves the stored password alone.
    rotated = dataclasses.replace(want, identity=tuple(
        dataclasses.replace(p, secret=secret("bind/pw", "new")) if p.type == "ldap" else p for p in want.identity))
    again = plan(rotated, seen, first.owned_after(), applied)
    assert [(c.name, [s.key for s in c.secrets]) for c in again.calls] == [("ldap", ["bind_password"])]
    edited = _identity_spec(nestedGroups=True)
    third = plan(edited, seen, first.owned_after(), applied)
    assert [(c.name, c.secrets, (c.body or {}).get("nested_groups")) for c in third.calls] == [("ldap", (), True)]


def test_identity_kerberos_edits_restart_and_absent_records_are_created_with_their_password() -> None:
    want = _identity_spec()
    seen = _as_dittofs_shows(want)
    kerberos = dict(seen["kerberos"], context_ttl="4h0m0s")
    p = plan(want, Observed(identity={"kerberos": kerberos}))
    assert [(c.op, c.name, c.needs_restart, [s.key for s in c.secrets]) for c in p.calls] == [
        (Op.CREATE, "ldap", False, ["bind_password"]), (Op.UPDATE, "kerberos", True, [])]
    assert p.needs_restart
    assert reads(want, (), full=False).identity == ("kerberos", "ldap")


def test_identity_dropped_from_the_spec_is_disabled_once_and_then_forgotten() -> None:
    want = _identity_spec()
    seen = _as_dittofs_shows(want)
    owned = {Ref(Kind.IDENTITY_PROVIDER, "ldap"), Ref(Kind.IDENTITY_PROVIDER, "kerberos")}
    assert reads(FileService(), owned, full=False).identity == ("kerberos", "ldap")  # still read, to disable them
    p = plan(FileService(), Observed(identity=seen), owned)
    assert [(c.name, c.needs_restart, (c.body or {})["enabled"]) for c in p.calls] == [
        ("kerberos", True, False), ("ldap", False, False)]
    assert (p.calls[1].body or {})["bind_password"] == "********"  # DittoFS keeps the stored password
    disabled = {t: {**r, "enabled": False} for t, r in seen.items()}
    after = plan(FileService(), Observed(identity=disabled), p.owned_after())
    assert after.calls == () and after.owned == frozenset()
    # Never ours (made with dfsctl): left alone.
    assert plan(FileService(), Observed(identity=seen)).calls == ()


def test_an_optional_store_secret_removed_from_its_secret_rewrites_the_store_once() -> None:
    with_endpoint = dataclasses.replace(FULL, stores=(*FULL.stores[:2], dataclasses.replace(
        FULL.stores[2], secrets=(*FULL.stores[2].secrets, ("endpoint", secret("s3/endpoint"))))))
    _, after, owned, applied = converge(with_endpoint, seeded())
    assert "remote-store:s3/endpoint" in applied
    # The Secret loses its optional key: DittoFS still has the endpoint, so the whole config is sent again
    # without it (and the pod rolls), and the dropped digest goes from the record.
    removed = plan(FULL, after, owned, applied)
    assert [(c.op, c.kind, c.needs_restart) for c in removed.calls] == [(Op.UPDATE, Kind.REMOTE_STORE, True)]
    assert [sf.key for sf in removed.calls[0].secrets] == ["access_key_id", "secret_access_key"]
    recorded = removed.digests_after(applied)
    assert "remote-store:s3/endpoint" not in recorded and "remote-store:s3/access_key_id" in recorded
    assert plan(FULL, simulate(after, removed.calls), owned, recorded).calls == ()
    # Put back with the value it had: sent again, since DittoFS no longer has it.
    back = plan(with_endpoint, simulate(after, removed.calls), owned, recorded)
    assert [(c.op, c.kind) for c in back.calls] == [(Op.UPDATE, Kind.REMOTE_STORE)]


def test_an_identity_sub_record_that_leaves_the_spec_is_cleared_in_dittofs() -> None:
    """DittoFS's record wins after the first boot: a CA file or machine account dropped from the spec must be
    cleared over REST (a compare of the declared keys alone never saw them go)."""
    with_ca = _identity_spec(caSecretRef={"name": "ca", "key": "ca.crt"})
    seen = _as_dittofs_shows(with_ca)
    seen["kerberos"]["machine_account"] = {"enabled": True, "account_name": "FILES$", "dc_address": ["dc1"]}
    owned = {Ref(Kind.IDENTITY_PROVIDER, "ldap"), Ref(Kind.IDENTITY_PROVIDER, "kerberos")}
    applied = plan(with_ca, Observed(identity=seen), owned).digests_after({})
    without = _identity_spec()
    p = plan(without, Observed(identity=seen), owned, applied)
    assert [(c.name, c.needs_restart) for c in p.calls] == [("ldap", False), ("kerberos", True)]
    ldap, kerberos = (dict(c.body or {}) for c in p.calls)
    assert ldap["tls"] == {"min_version": "1.2", "ca_cert_file": ""}
    assert kerberos["machine_account"] == {"enabled": False, "account_name": "", "dc_address": []}
    # Once cleared (DittoFS omits empty fields, or shows them empty), nothing more.
    cleared = {"ldap": {**seen["ldap"], "tls": {"min_version": "1.2"}},
               "kerberos": {**seen["kerberos"], "machine_account": {"enabled": False}}}
    assert plan(without, Observed(identity=cleared), owned, applied).calls == ()
    assert plan(without, Observed(identity={**cleared, "kerberos": {
        k: v for k, v in cleared["kerberos"].items() if k != "machine_account"}}), owned, applied).calls == ()


def _bound_ports_never_collide(seen: Observed, calls: Iterable[Call]) -> None:
    listening = {t: a.port for t, a in seen.adapters.items() if a.enabled}
    for c in calls:
        if c.kind is not Kind.ADAPTER or c.method != "PUT":
            continue
        old = seen.adapters[c.name]
        enabled = c.body.get("enabled", c.name in listening) if c.body else c.name in listening
        port = (c.body or {}).get("port", listening.get(c.name, old.port))
        listening.pop(c.name, None)
        if enabled:
            assert port not in listening.values(), f"{c} binds a port another adapter holds: {listening}"
            listening[c.name] = port


@pytest.mark.parametrize(("want", "expected"), [
    # NFS onto the port SMB is seeded with, SMB turned off: SMB lets go first.
    ((AdapterSpec("nfs", True, 1445), AdapterSpec("smb", False)),
     [("smb", {"enabled": False}), ("nfs", {"port": 1445})]),
    # A swap: one adapter stops, the other moves, the first starts on its new port.
    ((AdapterSpec("nfs", True, 1445), AdapterSpec("smb", True, 12049)),
     [("nfs", {"enabled": False}), ("smb", {"port": 12049}), ("nfs", {"port": 1445, "enabled": True})]),
    # Nothing in the way: declaration order.
    ((AdapterSpec("nfs", True, 2049), AdapterSpec("smb", True, 4450)),
     [("nfs", {"port": 2049}), ("smb", {"port": 4450})]),
])
def test_an_adapter_never_moves_onto_a_port_another_still_holds(want: tuple[AdapterSpec, ...],
                                                                 expected: list[tuple[str, dict[str, Any]]]) -> None:
    """DittoFS answers 200 to such a move and fails the bind in the background (NotListening for good: a later
    PUT of the same port changes nothing)."""
    seen = seeded()
    p = plan(FileService(adapters=want), seen, ())
    puts = [c for c in p.calls if c.kind is Kind.ADAPTER]
    assert [(c.name, dict(c.body or {})) for c in puts] == expected
    _bound_ports_never_collide(seen, puts)
    after = simulate(seen, p.calls)
    assert {t: (a.enabled, a.port) for t, a in after.adapters.items()} == {
        a.type: (a.enabled, a.port if a.port is not None else seen.adapters[a.type].port) for a in want}


@settings(deadline=None)  # beside CI's control plane a stall is not a failure
@given(st.lists(st.tuples(st.sampled_from(["nfs", "smb"]), st.booleans(), st.sampled_from([None, 1445, 12049, 2049])),
                min_size=0, max_size=2, unique_by=lambda a: a[0]))
def test_adapter_moves_always_end_and_never_bind_a_held_port_when_the_spec_has_none_twice(
        adapters: list[tuple[str, bool, int | None]]) -> None:
    """Also when a port is held by an adapter the spec does not declare (it stays): the moves end, sent as
    declared (the stop-one-first step runs at most once per adapter)."""
    want = tuple(AdapterSpec(t, on, port) for t, on, port in adapters)  # type: ignore[arg-type]
    seen = seeded()
    puts = [c for c in plan(FileService(adapters=want), seen, ()).calls if c.kind is Kind.ADAPTER]
    assert len(puts) <= 2 * len(want)
    targets = {a.type: a.port or seen.adapters[a.type].port for a in want if a.enabled}
    kept = {t: a.port for t, a in seen.adapters.items() if t not in targets and a.enabled
            and t not in {a.type for a in want}}
    if len(set(targets.values()) | set(kept.values())) == len(targets) + len(kept):  # no port wanted twice
        _bound_ports_never_collide(seen, puts)


def test_a_port_held_by_an_undeclared_adapter_does_not_loop() -> None:
    p = plan(FileService(adapters=(AdapterSpec("nfs", True, 1445),)), seeded(), ())
    assert [(c.name, dict(c.body or {})) for c in p.calls if c.kind is Kind.ADAPTER] == [("nfs", {"port": 1445})]
