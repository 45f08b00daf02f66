"""Conditions, phase and the status block (SPEC §3.2), computed purely from observations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

BAD_WAITING = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError")
CONDITION_ORDER = ("ConfigReady", "DatabaseReady", "Available", "Progressing", "Degraded",
                   "ReconciliationPaused", "Ready")


@dataclass(frozen=True)
class Cond:
    type: str
    status: bool
    reason: str
    message: str = ""


@dataclass
class Observation:
    """What the reconciler saw for one DittoServer this pass."""

    generation: int
    desired_replicas: int
    config_errors: list[str] = field(default_factory=list)
    config_reason: str = "InvalidSpec"
    statefulset: Mapping[str, Any] | None = None
    pods: Sequence[Mapping[str, Any]] = ()
    database: Cond | None = None
    paused: bool = False
    deleting: bool = False
    config_hash: str | None = None
    endpoints: dict[str, str] | None = None
    percona_cluster: str | None = None
    s3: dict[str, Any] | None = None


def pod_problems(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """'pod/x: Reason' for every container stuck in a state the user must fix."""
    problems = []
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        status = pod.get("status", {})
        for cs in [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in BAD_WAITING:
                problems.append(f"pod {name} container {cs.get('name')}: {waiting['reason']}")
    return problems


def _sts_counts(sts: Mapping[str, Any] | None) -> tuple[int, int, int, bool]:
    """(replicas, ready, available, rolled-out) from the StatefulSet status."""
    if not sts:
        return 0, 0, 0, False
    status = sts.get("status", {})
    spec_replicas = int(sts.get("spec", {}).get("replicas", 1))
    replicas = int(status.get("replicas", 0))
    ready = int(status.get("readyReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    generation_seen = int(status.get("observedGeneration", 0)) >= int(sts.get("metadata", {}).get("generation", 0))
    updated = int(status.get("updatedReplicas", 0))
    revision_done = status.get("currentRevision") == status.get("updateRevision") or spec_replicas == 0
    done = generation_seen and replicas == spec_replicas and (
        spec_replicas == 0 or (updated == spec_replicas and revision_done and ready == spec_replicas)
    )
    return replicas, ready, available, done


def conditions(obs: Observation) -> list[Cond]:
    result: list[Cond] = []
    if obs.config_errors:
        result.append(Cond("ConfigReady", False, obs.config_reason, "; ".join(obs.config_errors)[:1000]))
    else:
        result.append(Cond("ConfigReady", True, "ConfigRendered", "ConfigMap holds config.yaml; Secrets present"))
    if obs.database is not None:
        result.append(obs.database)
    replicas, ready, _available, done = _sts_counts(obs.statefulset)
    if obs.desired_replicas == 0:
        result.append(Cond("Available", True, "Stopped", "replicas is 0"))
    elif ready >= 1:
        result.append(Cond("Available", True, "ReplicasAvailable", f"{ready} ready replica(s)"))
    else:
        result.append(Cond("Available", False, "NoReplicasAvailable", "no ready DittoFS pod yet"))
    if obs.statefulset is None:
        progressing = Cond("Progressing", not obs.config_errors, "StatefulSetUpdating" if not obs.config_errors
                           else "ReconcileComplete", "StatefulSet not created yet")
    elif done:
        progressing = Cond("Progressing", False, "ReconcileComplete", "StatefulSet rolled out")
    elif replicas != obs.desired_replicas:
        progressing = Cond("Progressing", True, "ScalingReplicas", f"{replicas} -> {obs.desired_replicas} replicas")
    else:
        progressing = Cond("Progressing", True, "StatefulSetUpdating", "rolling out the StatefulSet")
    result.append(progressing)
    problems = pod_problems(obs.pods)
    if problems:
        result.append(Cond("Degraded", True, "PodFailing", "; ".join(problems)[:1000]))
    else:
        result.append(Cond("Degraded", False, "AsExpected", "no failing pods"))
    if obs.paused:
        result.append(Cond("ReconciliationPaused", True, "AnnotationSet",
                           "dittofs.dittofs.com/reconcile=disabled; remove it to resume"))
    failing = [c.type for c in result if c.type in ("ConfigReady", "DatabaseReady", "Available") and not c.status]
    failing += [c.type for c in result if c.type in ("Progressing", "Degraded") and c.status]
    if failing:
        result.append(Cond("Ready", False, "ConditionsNotMet", "not ready: " + ", ".join(failing)))
    else:
        result.append(Cond("Ready", True, "AllConditionsMet", "DittoFS server is ready"))
    return result


def phase(obs: Observation, conds: Sequence[Cond]) -> str:
    by_type = {c.type: c for c in conds}
    _replicas, ready, _available, _done = _sts_counts(obs.statefulset)
    if obs.deleting:
        return "Deleting"
    if not by_type["ConfigReady"].status:
        return "Failed"
    if by_type["Degraded"].status:
        return "Degraded"
    if obs.desired_replicas == 0:
        replicas = int(((obs.statefulset or {}).get("status") or {}).get("replicas", 0))
        return "Stopped" if replicas == 0 else "Pending"  # still draining
    if ready >= obs.desired_replicas and by_type["Ready"].status:
        return "Running"
    return "Pending"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    previous: Sequence[Mapping[str, Any]], new: Sequence[Cond], generation: int, now: str | None = None
) -> list[dict[str, Any]]:
    """metav1.Conditions; lastTransitionTime moves only when status flips."""
    old = {c.get("type"): c for c in previous}
    stamp = now or _now()
    merged = []
    for cond in sorted(new, key=lambda c: CONDITION_ORDER.index(c.type) if c.type in CONDITION_ORDER else 99):
        status = "True" if cond.status else "False"
        before = old.get(cond.type)
        moved = before is None or before.get("status") != status
        merged.append({
            "type": cond.type,
            "status": status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": stamp if moved or before is None else before.get("lastTransitionTime", stamp),
            "observedGeneration": generation,
        })
    return merged


def build_status(obs: Observation, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    previous = previous or {}
    conds = conditions(obs)
    replicas, ready, available, _done = _sts_counts(obs.statefulset)
    status: dict[str, Any] = {
        "observedGeneration": obs.generation,
        "phase": phase(obs, conds),
        "ready": f"{ready}/{obs.desired_replicas}",
        "replicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": available,
        "configHash": obs.config_hash,
        "perconaClusterName": obs.percona_cluster,
        "endpoints": obs.endpoints,
        "s3": obs.s3,
        "conditions": merge_conditions(previous.get("conditions", []), conds, obs.generation),
    }
    return status


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """True when a write is needed; timestamps of unchanged conditions are already carried over."""
    old = old or {}
    return any(old.get(key) != value for key, value in new.items())
