"""Conditions, phase and transition timestamps."""

from __future__ import annotations

import copy
from typing import Any

from dittoctl.api.conditions import ConditionType, Reason
from dittoctl.api.crd import build_crd
from dittoctl.api.models import Condition, DittoServerSpec
from reconciler.cache import slim_pod
from reconciler.compare import changed_fields, is_subset
from reconciler.phases.database import postgres_secret_condition
from reconciler.phases.statefulset import StorageDrift, storage_drift
from reconciler.status import (
    Cond,
    Observation,
    build_status,
    carried_over,
    conditions,
    deleting_status,
    merge_conditions,
    merge_patch,
    paused_status,
    pod_problems,
    s3_status,
    status_changed,
)


def sts(replicas: int = 1, ready: int = 1, updated: int = 1, same_revision: bool = True) -> dict[str, Any]:
    return {"metadata": {"generation": 2}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": 2, "replicas": replicas, "readyReplicas": ready,
                       "availableReplicas": ready, "updatedReplicas": updated,
                       "currentRevision": "a", "updateRevision": "a" if same_revision else "b"}}


def by_type(obs: Observation) -> dict[str, tuple[bool, str]]:
    return {c.type: (c.status, c.reason) for c in conditions(obs)}


def test_running_and_ready() -> None:
    obs = Observation(generation=3, desired_replicas=1, statefulset=sts())
    status = build_status(obs, None)
    assert status["phase"] == "Running" and status["ready"] == "1/1"
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["observedGeneration"] == 3
    assert conds["Progressing"]["reason"] == "ReconcileComplete"


def test_rolling_update_is_progressing_and_not_ready() -> None:
    conds = by_type(Observation(generation=1, desired_replicas=1, statefulset=sts(updated=0, same_revision=False)))
    assert conds["Progressing"] == (True, "StatefulSetUpdating")
    assert conds["Ready"] == (False, "ConditionsNotMet")


def test_a_statefulset_being_re_created_to_grow_its_volumes_is_not_ready() -> None:
    """The object about to be orphan-deleted still reads rolled out; Ready at the new generation would say the
    larger volumes are there."""
    conds = by_type(Observation(generation=4, desired_replicas=1, statefulset=sts(), recreating=True))
    assert conds["Progressing"] == (True, "StatefulSetUpdating")
    assert conds["Ready"] == (False, "ConditionsNotMet")


def test_a_pod_still_reading_its_data_back_says_so_with_its_budget() -> None:
    def pod(started: bool | None, state: str = "running") -> dict[str, Any]:
        container: dict[str, Any] = {"name": "dittofs", "ready": False, "state": {state: {}}}
        if started is not None:
            container["started"] = started
        return {"metadata": {"name": "demo-0"}, "status": {"containerStatuses": [container]}}

    template = sts(ready=0)
    template["spec"]["template"] = {"spec": {"containers": [
        {"name": "dittofs", "startupProbe": {"periodSeconds": 5, "failureThreshold": 51}}]}}

    def available(*pods: dict[str, Any]) -> str:
        # Read as the operator's cache keeps a pod (it read nothing of this once: the message never showed).
        obs = Observation(generation=1, desired_replicas=1, statefulset=template, pods=[slim_pod(p) for p in pods])
        return next(c.message for c in conditions(obs) if c.type == ConditionType.AVAILABLE)

    assert available(pod(False)) == ("pod demo-0 starting: DittoFS answers once it has read back the data its "
                                     "local stores keep and probed each remote store (one that does not answer holds "
                                     "it about 3 minutes; the server log says which); the kubelet allows it 255 s, "
                                     "spec.startupTimeoutSeconds")
    # Started and not yet ready, not yet running, or no word from the kubelet (kwok): nothing more to say.
    for other in (pod(True), pod(False, "waiting"), pod(None)):
        assert available(other) == "no ready DittoFS pod yet"


def test_stopped() -> None:
    obs = Observation(generation=1, desired_replicas=0, statefulset=sts(replicas=0, ready=0, updated=0))
    status = build_status(obs, None)
    assert status["phase"] == "Stopped"
    assert by_type(obs)["Available"] == (True, "Stopped")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["message"] == "stopped as declared (replicas: 0): nothing is served"


def test_invalid_spec_fails() -> None:
    obs = Observation(generation=1, desired_replicas=1, config_errors=["spec.x: bad"])
    status = build_status(obs, None)
    assert status["phase"] == "Failed"
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["message"]) == (
        "False", "StatefulSet not created: ConfigReady is False (InvalidSpec)")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert "ConfigReady" in ready["message"]


def test_an_invalid_spec_keeps_what_the_operator_owns_and_applied() -> None:
    """A spec the reconciler refuses (the webhook was off) builds nothing, but its status must not forget the
    config hash, the Percona cluster, the DittoFS objects it owns, the secrets it applied or the store revision:
    a cleared revision or digest would roll the pod once the spec is fixed, a cleared ownership list would leave
    objects that leave the spec meanwhile in DittoFS for ever."""
    previous = {"configHash": "h1", "perconaClusterName": "demo-postgres", "endpoints": {"api": "demo-api.ns:8080"},
                "s3": {"secretFound": True, "missingKeys": [], "message": "ok"},
                "provisioned": ["share:/export", "user:alice"], "appliedSecrets": {"user:alice/password": "d1"},
                "storeRevision": 2, "shares": [{"name": "/export", "readOnly": False}],
                "adapters": [{"type": "nfs", "port": 12049, "enabled": True, "listening": True}]}
    status = build_status(Observation(generation=3, desired_replicas=1, config_errors=["spec.x: bad"],
                                      **carried_over(previous)), previous)
    assert status["phase"] == "Failed"
    assert {k: status.get(k) for k in previous} == previous


def test_scaling_and_no_replica_available_are_named() -> None:
    growing = sts(replicas=1)
    growing["spec"]["replicas"] = 3  # applied; the controller has made one pod so far
    scaling = Observation(generation=1, desired_replicas=3, statefulset=growing)
    conds = by_type(scaling)
    assert conds["Progressing"] == (True, "ScalingReplicas") and conds["Available"] == (True, "ReplicasAvailable")
    assert build_status(scaling, None)["phase"] == "Pending"
    starting = by_type(Observation(generation=1, desired_replicas=1, statefulset=sts(ready=0)))
    assert starting["Available"] == (False, "NoReplicasAvailable")
    assert starting["Ready"] == (False, "ConditionsNotMet")


def test_pods_ready_but_file_service_not_provisioned_stays_pending() -> None:
    """Phase Running needs Ready=True, not only ready pods: a server that serves no share is not running."""
    waiting = Cond(ConditionType.PROVISIONED, False, Reason.WAITING_FOR_SERVER, "waiting")
    obs = Observation(generation=1, desired_replicas=1, statefulset=sts(), provisioned=waiting)
    status = build_status(obs, None)
    assert status["ready"] == "1/1" and status["phase"] == "Pending"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and "Provisioned" in ready["message"]


def test_external_postgres_secret_completeness_is_database_ready() -> None:
    incomplete = postgres_secret_condition([("pg", "password"), ("pg", "sslmode"), ("other", "host")], "pg")
    assert (incomplete.status, incomplete.reason) == (False, Reason.POSTGRES_SECRET_INCOMPLETE)
    assert incomplete.message == "Secret pg lacks keys: password, sslmode"
    complete = postgres_secret_condition([("other", "host")], "pg")
    assert (complete.status, complete.reason) == (True, Reason.POSTGRES_SECRET_COMPLETE)
    blocked = Observation(generation=1, desired_replicas=1, statefulset=sts(), database=incomplete)
    assert by_type(blocked)["Ready"] == (False, "ConditionsNotMet")


def test_s3_status_says_what_is_missing_never_a_value() -> None:
    spec = DittoServerSpec.model_validate({"storage": {"metadataSize": "1Gi"},
                                           "s3": {"credentialsSecretRef": {"secretName": "s3-creds"}}})
    assert s3_status(DittoServerSpec.model_validate({"storage": {"metadataSize": "1Gi"}}), None) is None
    assert s3_status(spec, None) == {
        "secretFound": False, "missingKeys": ["accessKeyId", "secretAccessKey"],
        "message": "Secret s3-creds not found; create it with keys accessKeyId, secretAccessKey"}
    assert s3_status(spec, {"accessKeyId": "digest-1"}) == {
        "secretFound": True, "missingKeys": ["secretAccessKey"], "message": "Secret s3-creds lacks secretAccessKey"}
    assert s3_status(spec, {"accessKeyId": "d1", "secretAccessKey": "d2"}) == {
        "secretFound": True, "missingKeys": [], "message": "credentials present"}


def test_percona_cluster_name_is_cleared_when_no_cluster_is_owned() -> None:
    owned = build_status(Observation(generation=1, desired_replicas=1, statefulset=sts(),
                                     percona_cluster="demo-postgres"), None)
    assert owned["perconaClusterName"] == "demo-postgres"
    cleared = build_status(Observation(generation=1, desired_replicas=1, statefulset=sts()), owned)
    assert cleared.get("perconaClusterName") is None and status_changed(owned, cleared)


def test_degraded_names_pod_and_reason() -> None:
    pod = {"metadata": {"name": "demo-0"}, "status": {"containerStatuses": [
        {"name": "dittofs", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}
    obs = Observation(generation=1, desired_replicas=1, statefulset=sts(ready=0), pods=[pod])
    cond = next(c for c in conditions(obs) if c.type == "Degraded")
    assert cond.status and "demo-0" in cond.message and "CrashLoopBackOff" in cond.message
    assert build_status(obs, None)["phase"] == "Degraded"


def test_every_stuck_state_of_the_server_or_its_init_container_is_degraded() -> None:
    """SPEC §3.2: CrashLoopBackOff, ImagePullBackOff/ErrImagePull and CreateContainerConfigError, also of the
    Postgres wait (an init container); a pod merely starting is not."""
    for where, container in (("containerStatuses", "dittofs"), ("initContainerStatuses", "wait-for-postgres")):
        # ErrImageNeverPull and the rest: a pod stuck on them read as merely starting (Degraded=False).
        for reason in ("CreateContainerConfigError", "ErrImageNeverPull",
                       "InvalidImageName", "ImageInspectError", "CreateContainerError", "RunContainerError"):
            pod = {"metadata": {"name": "demo-0"}, "status": {where: [
                {"name": container, "state": {"waiting": {"reason": reason}}}]}}
            obs = Observation(generation=1, desired_replicas=1, statefulset=sts(ready=0), pods=[pod])
            cond = next(c for c in conditions(obs) if c.type == "Degraded")
            assert cond.status and f"container {container}: {reason}" in cond.message, (where, reason)
        # A failing pull reads the same whichever of its two reasons the kubelet shows (no status write each flip).
        pulls = [pod_problems([slim_pod({"metadata": {"name": "demo-0", "namespace": "apps"}, "status": {where: [
            {"name": container, "image": "x:9", "state": {"waiting": {"reason": reason}}}]}})])
            for reason in ("ErrImagePull", "ImagePullBackOff")]
        assert pulls[0] == pulls[1] == [f"pod demo-0 container {container}: image x:9 cannot be pulled "
                                        "(`kubectl describe pod demo-0 -n apps` says why)"]
    crashing = {"metadata": {"name": "demo-0", "namespace": "apps"}, "status": {"containerStatuses": [
        {"name": "dittofs", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"exitCode": 1}}}]}}
    assert pod_problems([slim_pod(crashing)]) == [
        "pod demo-0 container dittofs: CrashLoopBackOff (exit code 1; `kubectl logs demo-0 -n apps -c dittofs "
        "--previous` says why)"]
    starting = {"metadata": {"name": "demo-0"}, "status": {"containerStatuses": [
        {"name": "dittofs", "state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    obs = Observation(generation=1, desired_replicas=1, statefulset=sts(ready=0), pods=[starting])
    assert not next(c for c in conditions(obs) if c.type == "Degraded").status


def test_transition_time_moves_only_on_flip() -> None:
    obs = Observation(generation=1, desired_replicas=1, statefulset=sts())
    first = merge_conditions([], conditions(obs), 1, now="T1")
    again = merge_conditions(first, conditions(obs), 2, now="T2")
    assert {c["lastTransitionTime"] for c in again} == {"T1"}
    broken = Observation(generation=2, desired_replicas=1, statefulset=sts(ready=0))
    flipped = {c["type"]: c for c in merge_conditions(first, conditions(broken), 2, now="T3")}
    assert flipped["Available"]["lastTransitionTime"] == "T3"
    assert flipped["ConfigReady"]["lastTransitionTime"] == "T1"


def test_merged_conditions_are_spelled_as_the_condition_model_dumps_them() -> None:
    """merge_conditions writes plain JSON (no model per condition): it must be exactly Condition's wire form,
    so a status written by it never differs from one the model would write (a needless write per pass)."""
    obs = Observation(generation=3, desired_replicas=1, statefulset=sts(ready=0),
                      config_errors=["Secret x missing"], config_reason=Reason.MISSING_SECRET)
    for merged in (merge_conditions([], conditions(obs), 3, now="T1"),
                   paused_status(None, 3)["conditions"], deleting_status(None, 3, "draining")["conditions"]):
        assert merged
        for cond in merged:
            assert Condition.model_validate(cond).model_dump(by_alias=True, mode="json", exclude_none=True) == cond
            assert type(cond["type"]) is str and type(cond["reason"]) is str  # not the enums: orjson and == agree


def test_unchanged_status_needs_no_write() -> None:
    obs = Observation(generation=1, desired_replicas=1, statefulset=sts())
    status = build_status(obs, None)
    assert not status_changed(status, build_status(obs, status))
    assert status_changed(status, build_status(Observation(generation=2, desired_replicas=1,
                                                             statefulset=sts()), status))


def test_subset_comparison() -> None:
    assert is_subset({"a": {"b": 1}, "l": [{"x": 1}]}, {"a": {"b": 1, "c": 2}, "l": [{"x": 1, "y": 2}], "z": 0})
    assert not is_subset({"a": {"b": 1}}, {"a": {"b": 2}})
    assert not is_subset({"l": [1, 2]}, {"l": [1]})
    assert not is_subset({"a": 1}, None)


def test_storage_drift_grows_volumes_and_refuses_shrinking_and_class_changes() -> None:
    def tmpl(size: str, cls: str | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"resources": {"requests": {"storage": size}}}
        if cls:
            spec["storageClassName"] = cls
        return {"spec": {"volumeClaimTemplates": [{"metadata": {"name": "metadata"}, "spec": spec}]}}

    assert storage_drift(None, tmpl("1Gi")) == StorageDrift()
    assert storage_drift(tmpl("1Gi"), tmpl("1024Mi")) == StorageDrift()
    assert storage_drift(tmpl("1Gi"), tmpl("2Gi")) == StorageDrift(grown={"metadata": "2Gi"})
    (error,) = storage_drift(tmpl("2Gi"), tmpl("1Gi")).errors
    assert error == ("spec.storage.metadataSize: cannot shrink a volume (was '2Gi', now '1Gi'); PVCs only grow: "
                     "set '2Gi' or more")
    changed = storage_drift(tmpl("1Gi", "a"), tmpl("1Gi", "b"))
    assert changed.grown == {} and len(changed.errors) == 1 and "immutable" in changed.errors[0]

    def three(cls: str | None) -> dict[str, Any]:
        return {"spec": {"volumeClaimTemplates": [
            {"metadata": {"name": n}, "spec": {"resources": {"requests": {"storage": "1Gi"}},
                                               **({"storageClassName": cls} if cls else {})}}
            for n in ("controlplane", "metadata", "content")]}}

    # One error for the three volumes, naming an unset class for what it is.
    assert storage_drift(three(None), three("fast")).errors == [
        "spec.storage.storageClassName: immutable: the PVCs keep their class (was unset (the cluster default), "
        "now 'fast'); create a new DittoServer and migrate the data, or revert the change"]
    # Removed from the spec (the webhook refuses it too): the apply would be refused on every pass, unexplained.
    assert storage_drift(three("fast"), three(None)).errors == [
        "spec.storage.storageClassName: immutable: the PVCs keep their class (was 'fast', now unset); create a new "
        "DittoServer and migrate the data, or revert the change"]


def test_scaling_to_zero_is_pending_until_drained() -> None:
    draining = Observation(generation=1, desired_replicas=0, statefulset=sts(replicas=1, ready=1))
    assert build_status(draining, None)["phase"] == "Pending"


def _pruned(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Paths the apiserver's structural pruning would drop from `value` (what the CRD does not declare)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is None:
            return [] if "additionalProperties" in schema else [f"{path} (object without properties)"]
        return [hit for key, item in value.items() for hit in (
            [f"{path}.{key}"] if key not in props else _pruned(item, props[key], f"{path}.{key}"))]
    if isinstance(value, list):
        return [hit for i, item in enumerate(value) for hit in _pruned(item, schema.get("items", {}), f"{path}[{i}]")]
    return []


def test_every_status_field_written_is_declared_by_the_crd() -> None:
    """The status is built through the pydantic status models; this ties them to what the apiserver keeps:
    a field the schema would prune (silently lost, `kubectl get` shows nothing) fails here."""
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    database = Cond(ConditionType.DATABASE_READY, False, Reason.PERCONA_NOT_READY, "initializing")
    full = Observation(generation=2, desired_replicas=1, statefulset=sts(), config_hash="h",
                       endpoints={"api": "a:8080", "nfs": "a:12049", "smb": "a:12445"}, database=database,
                       percona_cluster="demo-postgres", config_errors=["spec.x: broken"],
                       s3={"secretFound": False, "missingKeys": ["k"], "message": "m"})
    statuses = [build_status(full, None), build_status(Observation(generation=1, desired_replicas=0), None)]
    statuses.append(paused_status(statuses[0], 3))
    for status in statuses:
        assert _pruned(status, schema, "status") == []
    assert _pruned({"conditions": [{"type": "Ready", "bogus": 1}]}, schema, "status") == [
        "status.conditions[0].bogus"], "the check itself must catch an undeclared field"


def test_a_missing_secret_is_a_wait_not_a_failure() -> None:
    obs = Observation(generation=1, desired_replicas=1, statefulset=sts(), config_reason=Reason.MISSING_SECRET,
                      config_errors=["Secret s3-creds not found"])
    status = build_status(obs, None)
    conds = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Pending"
    assert (conds["ConfigReady"]["reason"], conds["ConfigReady"]["message"]) == (
        "MissingSecret", "Secret s3-creds not found")
    assert (conds["Progressing"]["status"], conds["Progressing"]["reason"]) == ("False", "WaitingForSecret")
    invalid = Observation(generation=1, desired_replicas=1, statefulset=sts(), config_errors=["spec.x: bad"])
    assert build_status(invalid, None)["phase"] == "Failed"


def test_deleting_says_what_the_finalizer_waits_for() -> None:
    running = build_status(Observation(generation=2, desired_replicas=1, statefulset=sts()), None)
    deleting = deleting_status(running, 3, "draining: waiting for 1 pod(s) of StatefulSet demo to stop")
    ready = next(c for c in deleting["conditions"] if c["type"] == "Ready")
    assert deleting["phase"] == "Deleting" and deleting["observedGeneration"] == 3, "marked for deletion: gen + 1"
    assert (ready["status"], ready["reason"]) == ("False", "Deleting") and "1 pod(s)" in ready["message"]
    assert [c["type"] for c in deleting["conditions"]].count("Ready") == 1


def pod(name: str, revision: str = "a", ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"controller-revision-hash": revision}}
    if terminating:
        meta["deletionTimestamp"] = "2026-12-03T00:00:00Z"
    return {"metadata": meta, "status": {"phase": "Running",
                                         "conditions": [{"type": "Ready", "status": str(ready)}]}}


def test_a_ready_pod_is_counted_before_the_controller_manager_counts_it() -> None:
    """Issue 15: the StatefulSet status trails the pod by a controller-manager round; the pods already prove it."""
    lagging = sts(ready=0)
    assert by_type(Observation(generation=1, desired_replicas=1, statefulset=lagging))["Ready"][0] is False
    status = build_status(Observation(generation=1, desired_replicas=1, statefulset=lagging, pods=[pod("demo-0")]),
                          None)
    assert status["phase"] == "Running" and status["ready"] == "1/1" and status["readyReplicas"] == 1


def test_pods_never_finish_a_rollout_the_controller_has_not_started_nor_count_when_not_ready() -> None:
    # A new template: the controller has not seen the generation yet, so no pod can prove the rollout done.
    unseen = sts(ready=0)
    unseen["metadata"]["generation"] = 3
    assert by_type(Observation(generation=1, desired_replicas=1, statefulset=unseen,
                               pods=[pod("demo-0")]))["Ready"][0] is False
    # The old revision's pod is ready, the update revision has no pod yet: still rolling out.
    rolling = sts(ready=1, updated=0, same_revision=False)
    assert by_type(Observation(generation=1, desired_replicas=1, statefulset=rolling,
                               pods=[pod("demo-0", revision="a")]))["Progressing"] == (True, "StatefulSetUpdating")
    # Not ready, or terminating: not counted.
    for p in (pod("demo-0", ready=False), pod("demo-0", terminating=True)):
        assert by_type(Observation(generation=1, desired_replicas=1, statefulset=sts(ready=0),
                                   pods=[p]))["Ready"][0] is False
    # The pods never lower what the controller counted (a pod missing from the watch cache is no evidence).
    assert build_status(Observation(generation=1, desired_replicas=1, statefulset=sts(), pods=[]),
                        None)["readyReplicas"] == 1


def test_a_ready_pod_is_available_at_once_unless_min_ready_seconds_asks_to_wait() -> None:
    lagging = sts(ready=0)
    lagging["status"]["availableReplicas"] = 0
    assert build_status(Observation(generation=1, desired_replicas=1, statefulset=lagging, pods=[pod("demo-0")]),
                        None)["availableReplicas"] == 1
    lagging["spec"]["minReadySeconds"] = 30
    assert build_status(Observation(generation=1, desired_replicas=1, statefulset=lagging, pods=[pod("demo-0")]),
                        None)["availableReplicas"] == 0


def _apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the apiserver applies a merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _apply_merge_patch(out.get(key), value)
    return out


def test_a_status_patch_removes_what_left_a_nested_map() -> None:
    old = {"phase": "Running", "appliedSecrets": {"remote-store:s3/endpoint": "a", "remote-store:s3/config": "b",
                                                 "user:alice/password": "c"},
           "endpoints": {"api": "http://x:8080", "nfs": "x:12049", "smb": "x:1445"},
           "shares": [{"name": "/a"}, {"name": "/b"}], "storeRevision": 3}
    new = {"phase": "Running", "appliedSecrets": {"remote-store:s3/config": "d", "user:alice/password": "c"},
           "endpoints": {"api": "http://x:8080", "nfs": "x:12049"}, "shares": [{"name": "/a"}],
           "storeRevision": 4, "perconaClusterName": None}
    patch = merge_patch(old, new)
    assert patch["appliedSecrets"] == {"remote-store:s3/endpoint": None, "remote-store:s3/config": "d",
                                       "user:alice/password": "c"}
    assert patch["endpoints"]["smb"] is None
    stored = _apply_merge_patch(old, patch)
    assert stored == {k: v for k, v in new.items() if v is not None}
    assert not status_changed(stored, {k: v for k, v in new.items() if v is not None})
    # A plain merge of the new status (what was sent before) kept the dropped slot: seen again every pass.
    assert "remote-store:s3/endpoint" in _apply_merge_patch(old, new)["appliedSecrets"]


def test_quantities_the_apiserver_rewrites_are_the_same_values() -> None:
    desired = {"spec": {"template": {"spec": {"containers": [{"name": "dfs", "resources": {
        "limits": {"cpu": 1, "memory": "0.5Gi"}, "requests": {"memory": "1024Mi"}}}]}},
        "volumeClaimTemplates": [{"spec": {"resources": {"requests": {"storage": "1024Mi"}}}}]}}
    stored = {"spec": {"template": {"spec": {"containers": [{"name": "dfs", "image": "x", "resources": {
        "limits": {"cpu": "1", "memory": "512Mi"}, "requests": {"memory": "1Gi"}}}]}},
        "volumeClaimTemplates": [{"spec": {"resources": {"requests": {"storage": "1Gi"}}}}]}}
    assert is_subset(desired, stored)
    grown: Any = copy.deepcopy(stored)
    grown["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = "2Gi"
    assert not is_subset(desired, grown)
    # Only ResourceLists are quantities: elsewhere "1" and "1.0" stay different strings.
    assert not is_subset({"metadata": {"labels": {"v": "1"}}}, {"metadata": {"labels": {"v": "1.0"}}})
    assert not is_subset({"spec": {"replicas": 1}}, {"spec": {"replicas": "1"}})


def test_every_bounded_secret_value_has_its_own_reason() -> None:
    """A bound added to bounded_values without a reason would fail the pass with a KeyError."""
    from dittoctl.api.secrets import bounded_values
    from reconciler.reconcile import REFUSED_VALUE_REASONS

    spec = DittoServerSpec.model_validate({
        "storage": {"metadataSize": "1Gi"},
        "database": {"type": "postgres", "postgresSecretRef": {"name": "pg"}},
        "identity": {"jwt": {"secretRef": {"name": "j", "key": "k"}},
                     "admin": {"passwordSecretRef": {"name": "a", "key": "k"}},
                     "ldap": {"url": "ldaps://dc", "baseDn": "dc=x", "bindDn": "cn=x",
                              "bindPasswordSecretRef": {"name": "l", "key": "k"}}}})
    found = {bounds for _, _, bounds in bounded_values(spec)}
    assert len(found) == 6 and found == set(REFUSED_VALUE_REASONS)
    assert all(isinstance(reason, Reason) for reason in REFUSED_VALUE_REASONS.values())


def test_a_statefulset_held_for_the_database_is_a_wait_not_progress() -> None:
    """Percona absent or not ready: nothing rolls, so Progressing must not say it does (forever)."""
    from reconciler.status import Cond

    waiting = Cond(ConditionType.DATABASE_READY, False, Reason.PERCONA_NOT_READY, "state: initializing")
    conds = {c.type: c for c in conditions(Observation(generation=1, desired_replicas=1, database=waiting))}
    progressing = conds[ConditionType.PROGRESSING]
    assert (progressing.status, progressing.reason) == (False, Reason.WAITING_FOR_DATABASE)
    assert progressing.message == "StatefulSet not created until DatabaseReady (PerconaNotReady)"
    assert "Progressing" not in conds[ConditionType.READY].message
    assert "DatabaseReady" in conds[ConditionType.READY].message


def test_a_ready_percona_cluster_without_its_user_secret_is_still_a_wait() -> None:
    from dittoctl.api.naming import Names
    from reconciler.phases.database import DatabaseState, percona_secret_wait
    from reconciler.status import Cond

    names = Names("demo", "ns", "u")
    ready = DatabaseState(Cond(ConditionType.DATABASE_READY, True, Reason.PERCONA_READY, "ready"), "demo-postgres")
    assert percona_secret_wait(ready, [("other", "k")], names) is ready
    held = percona_secret_wait(ready, [(names.percona_user_secret, "host"), (names.percona_user_secret, "uri")],
                               names)
    assert held.gate_open is False and held.condition is not None and not held.condition.status
    assert held.condition.message == ("PerconaPGCluster demo-postgres is ready, but its Secret "
                                      "demo-postgres-pguser-dittofs lacks host, uri (Percona creates it for the "
                                      "user dittofs)")


def test_a_template_change_is_named_by_its_deepest_paths() -> None:
    """What the ConfigUpdated event names when an operator upgrade (or an edit by hand taken back) rolls a
    server's pods: a real-node session saw a roll no event of ours explained."""
    before: dict[str, Any] = {
        "metadata": {"labels": {"a": "1"}},
        "spec": {"containers": [{"name": "dfs", "image": "x:1",
                                 "startupProbe": {"failureThreshold": 39, "periodSeconds": 5}}]}}
    after: dict[str, Any] = {
        "metadata": {"labels": {"a": "1", "b": "2"}},
        "spec": {"containers": [{"name": "dfs", "image": "x:1",
                                 "startupProbe": {"failureThreshold": 720, "periodSeconds": 5}}]}}
    assert changed_fields(before, before) == []
    assert changed_fields(before, after) == ["metadata.labels.b", "spec.containers[0].startupProbe.failureThreshold"]
    grown = {**after, "spec": {"containers": [*after["spec"]["containers"], {"name": "sidecar"}]}}
    assert changed_fields(after, grown) == ["spec.containers"]
    removed = {"spec": before["spec"]}
    assert changed_fields(before, removed) == ["metadata"]
    many = {"spec": {f"k{i}": i for i in range(10)}}
    assert changed_fields({"spec": {}}, many) == ["spec.k0", "spec.k1", "spec.k2", "spec.k3"]
