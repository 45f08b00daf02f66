"""PerconaPGCluster builder and SSA conflict-path handling."""

from __future__ import annotations

from typing import Any

import pytest

from dittoctl.api.models import DittoServer
from dittoctl.api.naming import Names
from reconciler.context import Memory
from reconciler.phases.database import cluster_ready
from reconciler.phases.deletion import release_backoff_left, release_failed
from reconciler.specs.percona import adopt_live_values, parse_field_path, percona_cluster, values_at


def build(**percona: Any) -> dict[str, Any]:
    s = DittoServer.model_validate({"metadata": {"name": "demo", "namespace": "ns", "uid": "u"},
                                    "spec": {"storage": {"metadataSize": "1Gi"}, "percona": percona}})
    return percona_cluster(s.spec, Names.of(s))


def test_defaults_send_backups_disabled_explicitly() -> None:
    spec = build(enabled=True)["spec"]
    assert spec["backups"] == {"enabled": False}
    assert spec["instances"][0]["dataVolumeClaimSpec"]["resources"]["requests"]["storage"] == "10Gi"
    assert spec["proxy"]["pgBouncer"]["replicas"] == 0
    assert "image" not in spec


def test_backup_repo_schedules_retention_and_credentials() -> None:
    spec = build(enabled=True, image="pg:16", backup={
        "enabled": True, "bucket": "b", "endpoint": "https://s3.local", "retentionDays": 14,
        "credentialsSecretRef": {"name": "creds"}})["spec"]
    pgbackrest = spec["backups"]["pgbackrest"]
    assert spec["backups"]["enabled"] is True and spec["image"] == "pg:16"
    assert pgbackrest["global"]["repo1-retention-full"] == "14"
    assert pgbackrest["global"]["repo1-retention-full-type"] == "time"
    assert pgbackrest["repos"][0]["s3"] == {"bucket": "b", "endpoint": "https://s3.local", "region": "eu-west-1"}
    assert pgbackrest["repos"][0]["schedules"] == {"full": "0 2 * * *", "incremental": "0 * * * *"}
    assert pgbackrest["configuration"] == [{"secret": {"name": "creds"}}]


def test_a_kept_database_is_marked_not_owned_so_no_cascade_can_reach_it() -> None:
    """deleteWithServer false: no ownerReference (a foreground deletion would have the garbage collector delete
    the cluster before our finalizer releases it), the server's uid as an annotation instead; true: both."""
    names = Names("demo", "ns", "u")
    kept, deleted = build(enabled=True)["metadata"], build(enabled=True, deleteWithServer=True)["metadata"]
    assert "ownerReferences" not in kept and kept["annotations"] == {"dittofs.io/owner-uid": "u"}
    assert [r["uid"] for r in deleted["ownerReferences"]] == ["u"]
    assert names.owns({"metadata": kept}) and names.owns({"metadata": deleted})
    assert names.owns({"metadata": {"ownerReferences": [{"uid": "u"}]}})  # made before the annotation existed
    assert not names.owns({"metadata": {"annotations": {"dittofs.io/owner-uid": "other"}}})
    assert not names.owns({"metadata": {}})


def test_field_paths() -> None:
    assert parse_field_path('.spec.instances[name="instance1"].replicas') == [
        "spec", "instances", ("name", "instance1"), "replicas"]
    assert parse_field_path(".spec.postgresVersion") == ["spec", "postgresVersion"]


def test_adopt_live_values_keeps_user_edits_only() -> None:
    ours = {"spec": {"postgresVersion": 16, "image": "new", "instances": [{"name": "instance1", "replicas": 1}]}}
    live = {"spec": {"postgresVersion": 17, "image": "old", "instances": [{"name": "instance1", "replicas": 3}]}}
    failed = adopt_live_values(ours, live, [".spec.postgresVersion", '.spec.instances[name="instance1"].replicas'])
    assert failed == []
    assert ours["spec"] == {"postgresVersion": 17, "image": "new",
                            "instances": [{"name": "instance1", "replicas": 3}]}
    assert adopt_live_values(ours, live, [".spec.nothing.here", "garbage"]) == [".spec.nothing.here", "garbage"]


def test_values_at_reads_each_conflicting_field_or_none() -> None:
    live = {"spec": {"postgresVersion": 17, "instances": [{"name": "instance1", "replicas": 3}]}}
    assert values_at(live, ['.spec.instances[name="instance1"].replicas', ".spec.postgresVersion",
                            ".spec.image", "garbage"]) == {
        '.spec.instances[name="instance1"].replicas': 3, ".spec.postgresVersion": 17, ".spec.image": None,
        "garbage": None}


def test_a_cluster_is_ready_only_at_its_current_generation() -> None:
    def cluster(state: str | None, generation: int | None = 2, observed: int | None = 2) -> dict[str, Any]:
        status = {k: v for k, v in (("state", state), ("observedGeneration", observed)) if v is not None}
        return {"metadata": {"generation": generation}, "status": status}

    assert cluster_ready(cluster("ready")) == (True, "ready")
    assert cluster_ready(cluster("ready", observed=1)) == (False, "ready (generation 1/2)")  # an edit not seen yet
    assert cluster_ready(cluster("initializing")) == (False, "initializing")
    assert cluster_ready(cluster("ready", observed=None)) == (True, "ready")  # an operator without the field
    assert cluster_ready({"metadata": {}}) == (False, "unknown")


def test_a_lower_postgres_major_is_refused_only_when_the_operator_alone_set_the_live_one() -> None:
    """Admitted without the webhook, a lower major applied would leave data files PostgreSQL cannot read. One a user
    or Percona set (an upgrade) is theirs: the operator co-owns it only by applying the kept live value back."""
    from reconciler.phases.database import _applies_version, _lowered

    def live(*owners: tuple[str, str]) -> dict[str, Any]:
        return {"metadata": {"name": "demo-postgres", "managedFields": [
            {"manager": m, "operation": op, "fieldsV1": {"f:spec": {"f:postgresVersion": {}, "f:image": {}}}}
            for m, op in owners]}, "spec": {"postgresVersion": 17}}

    assert _lowered(live(), {"spec": {"postgresVersion": 16}}) == (17, 16)
    assert _lowered(live(), {"spec": {"postgresVersion": 17}}) is None
    assert _lowered(live(), {"spec": {"postgresVersion": 18}}) is None
    assert _applies_version(live(("dittofs-operator", "Apply")))
    assert not _applies_version(live(("dittofs-operator", "Apply"), ("kubectl-patch", "Update")))
    assert not _applies_version(live(("percona-postgresql-operator", "Update")))
    assert not _applies_version(live())


def test_a_refused_release_is_asked_again_less_and_less_often_whatever_wakes_the_pass() -> None:
    """Passes woken by events (the server's own status, the cluster's) between two attempts wait for the rest
    of the delay: in CI, a retry per event made 6 PATCHes in 15 s where the backoff allowed 4."""
    memory = Memory()
    assert release_backoff_left(memory, 100.0) is None
    delays = []
    now = 100.0
    for _ in range(7):
        delays.append(release_failed(memory, now))
        assert release_backoff_left(memory, now + 0.5) == pytest.approx(delays[-1] - 0.5)
        now += delays[-1]
        assert release_backoff_left(memory, now) is None
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


class _Cluster:
    """The little of a Pass `_apply_cluster` uses, over one PerconaPGCluster whose fields in `edited` a user owns:
    applying another value of one is an SSA conflict."""

    namespace, name, generation = "ns", "demo", 2

    def __init__(self, live: dict[str, Any], edited: set[str]) -> None:
        self.live, self.edited, self.memory = live, edited, Memory()
        self.events: list[str] = []
        self.gw = self

    async def apply(self, manifest: dict[str, Any], force: bool = False) -> dict[str, Any]:
        clash = [f for f in sorted(self.edited) if manifest["spec"].get(f) != self.live["spec"].get(f)]
        if clash and not force:
            from dittoctl.kube.gateway import Conflict
            raise Conflict("409", [{"field": f".spec.{f}"} for f in clash])
        self.live = {**self.live, "spec": {**self.live["spec"], **manifest["spec"]}}
        return self.live

    async def post(self, type_: str, reason: str, message: str) -> None:
        self.events.append(message)


async def test_fields_edited_one_after_the_other_are_all_kept_without_a_write_or_event_per_pass() -> None:
    """A second field edited in the same generation replaced the first in memory: each pass then offered the first
    again, conflicted, and swapped them, with an event and a status write every pass (a diff review)."""
    from reconciler.phases.database import _apply_cluster, _keeping

    names = Names("demo", "ns", "uid-1")
    ours = {"metadata": {"name": "demo-postgres"}, "spec": {"image": "ours", "postgresVersion": 16}}
    ctx: Any = _Cluster({"metadata": {"name": "demo-postgres"}, "spec": {"image": "theirs", "postgresVersion": 16}},
                        {"image"})
    await _apply_cluster(ctx, ours, ctx.live, names)
    ctx.edited.add("postgresVersion")
    ctx.live["spec"]["postgresVersion"] = 17
    for _ in range(3):  # each pass keeps what memory holds, as ensure_database does at the same generation
        kept, _ = _keeping(ours, ctx.live, ctx.memory.percona_kept.paths)
        await _apply_cluster(ctx, kept, ctx.live, names)
    assert ctx.memory.percona_kept.paths == {".spec.image", ".spec.postgresVersion"}
    assert len(ctx.events) == 2, ctx.events
    assert '.spec.image is "theirs", this server asks "ours"' in ctx.events[0]
    assert ".spec.postgresVersion is 17, this server asks 16" in ctx.events[1]
    assert ctx.live["spec"] == {"image": "theirs", "postgresVersion": 17}
