"""Conditions, phase and the status block (SPEC §3.2), computed from observations; the one other input is the
clock, which stamps a condition that changes (``merge_conditions``' ``now`` fixes it in tests)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from dittoctl.api.conditions import ConditionType, Reason
from dittoctl.api.fileservice import REMOTE_PROBE_HOLD
from dittoctl.api.models import DittoServerSpec, DittoServerStatus
from dittoctl.api.naming import CONTAINER, PAUSE_ANNOTATION
from dittoctl.kube.clock import rfc3339_now

# The kubelet's waiting reasons of a container that will not start by itself (a bad image or pod spec).
PULL_FAILING = ("ErrImagePull", "ImagePullBackOff")  # the kubelet alternates the two while a pull fails
CRASH_LOOP = "CrashLoopBackOff"
BAD_WAITING = (CRASH_LOOP, *PULL_FAILING, "ErrImageNeverPull", "InvalidImageName",
               "ImageInspectError", "CreateContainerConfigError", "CreateContainerError", "RunContainerError")
CONDITION_ORDER = tuple(ConditionType)
# Top-level status fields, by their wire names: written even when None, so a merge patch clears them.
_STATUS_FIELDS = tuple(f.alias or name for name, f in DittoServerStatus.model_fields.items())


@dataclass(frozen=True)
class Cond:
    type: ConditionType
    status: bool
    reason: Reason
    message: str = ""


@dataclass
class Observation:
    """What the reconciler saw for one DittoServer this pass."""

    generation: int
    desired_replicas: int
    config_errors: list[str] = field(default_factory=list)
    config_reason: Reason = Reason.INVALID_SPEC
    statefulset: Mapping[str, Any] | None = None
    pods: Sequence[Mapping[str, Any]] = ()
    database: Cond | None = None
    config_hash: str | None = None
    endpoints: dict[str, str] | None = None
    percona_cluster: str | None = None
    s3: dict[str, Any] | None = None
    provisioned: Cond | None = None
    """Condition Provisioned (None while the pod is not meant to run or cannot be reached by design)."""
    adapters_ready: Cond | None = None
    """Condition AdaptersReady (same rule)."""
    fileservice: dict[str, Any] = field(default_factory=dict)
    """status.provisioned, appliedSecrets and shares."""
    recreating: bool = False
    """The StatefulSet is being re-created around its pods to grow its volumeClaimTemplates."""

    @cached_property
    def counts(self) -> tuple[int, int, int, bool]:
        """(replicas, ready, available, rolled-out): read by the conditions, the phase and the status alike."""
        return _sts_counts(self.statefulset, self.pods)


def pod_problems(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """'pod x container y: Reason' for every container stuck in a state the user must fix, with where its cause
    is told. Stable while it lasts: the kubelet alternates ErrImagePull and ImagePullBackOff, and a status that
    followed would be written every few seconds."""
    problems = []
    for pod in pods:
        meta = pod.get("metadata", {})
        name, namespace = meta.get("name", "?"), meta.get("namespace")
        in_ns = f" -n {namespace}" if namespace else ""
        status = pod.get("status", {})
        for cs in [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason, container = waiting.get("reason"), cs.get("name")
            if reason not in BAD_WAITING:
                continue
            where = f"pod {name} container {container}"
            if reason in PULL_FAILING:
                problems.append(f"{where}: image {cs.get('image')} cannot be pulled (`kubectl describe pod {name}"
                                f"{in_ns}` says why)")
            elif reason == CRASH_LOOP:
                code = (((cs.get("lastState") or {}).get("terminated") or {}).get("exitCode"))
                exited = f"exit code {code}; " if code is not None else ""
                problems.append(f"{where}: CrashLoopBackOff ({exited}`kubectl logs {name}{in_ns} -c {container} "
                                "--previous` says why)")
            else:
                problems.append(f"{where}: {reason}")
    return problems


def starting(obs: Observation) -> str | None:
    """While DittoFS has not answered its first probe (it reads its local data back first, which takes longer the
    more it holds): which pods, and the budget their template gives it."""
    pods = [pod.get("metadata", {}).get("name", "?") for pod in obs.pods
            for cs in (pod.get("status") or {}).get("containerStatuses") or ()
            if cs.get("name") == CONTAINER and "running" in (cs.get("state") or {}) and cs.get("started") is False]
    if not pods:
        return None
    containers = (((obs.statefulset or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get(
        "containers") or ()
    probe = next((c.get("startupProbe") or {} for c in containers if c.get("name") == CONTAINER), {})
    budget = int(probe.get("periodSeconds", 10)) * int(probe.get("failureThreshold", 3))
    return (f"pod {', '.join(pods)} starting: DittoFS answers once it has read back the data its local stores "
            f"keep and probed each remote store (one that does not answer holds it {REMOTE_PROBE_HOLD}; the server log "
            f"says which); the kubelet allows it {budget} s, spec.startupTimeoutSeconds")


REVISION_LABEL = "controller-revision-hash"


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """The pod's Ready condition (its containers' readiness and any readiness gates), as the kubelet reports it."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or ())


def _sts_counts(sts: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]] = ()) -> tuple[int, int, int, bool]:
    """(replicas, ready, available, rolled-out) from the StatefulSet status, raised by what the pods already show.

    The controller-manager counts a ready pod into the StatefulSet status some 20 ms after the pod's own update
    (more under load); the pods are watched too, so a count they already prove is not waited for. Nothing is
    lowered by the pods, and "rolled out" still needs the controller to have seen the current generation and
    set its update revision: the pods only shorten the wait, never decide a rollout alone."""
    if not sts:
        return 0, 0, 0, False
    status = sts.get("status", {})
    spec_replicas = int(sts.get("spec", {}).get("replicas", 1))
    revision = status.get("updateRevision")
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    replicas = max(int(status.get("replicas", 0)), len(live))
    ready_pods = sum(1 for p in live if pod_ready(p))
    ready = max(int(status.get("readyReplicas", 0)), ready_pods)
    # Without minReadySeconds a ready pod is available at once (the controller's own rule).
    immediate = not int(sts.get("spec", {}).get("minReadySeconds") or 0)
    available = max(int(status.get("availableReplicas", 0)), ready_pods if immediate else 0)
    generation_seen = int(status.get("observedGeneration", 0)) >= int(sts.get("metadata", {}).get("generation", 0))
    current = [p for p in live if revision and ((p.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL)
               == revision]
    updated = max(int(status.get("updatedReplicas", 0)), len(current))
    revision_done = status.get("currentRevision") == revision or spec_replicas == 0
    done = generation_seen and replicas == spec_replicas and (
        spec_replicas == 0 or (updated == spec_replicas and revision_done and ready == spec_replicas)
    )
    return replicas, ready, available, done


def statefulset_news(old: Mapping[str, Any] | None, new: Mapping[str, Any],
                     pods: Sequence[Mapping[str, Any]] = (), reporting: bool = True) -> bool:
    """Whether a pass could read anything new from this version of the StatefulSet: not when only its status
    moved and the counts a pass derives from it, with these pods, stay as they were (the controller-manager
    counting a pod the pod watch already showed ready: two or three updates per new server). Without
    ``reporting`` (the server's next status waits for a pass already due), a status change is no news at all."""
    if old is None:
        return True
    if _identity(old) != _identity(new) or old.get("spec") != new.get("spec"):
        return True
    if not reporting:
        return False
    before, after = old.get("status") or {}, new.get("status") or {}
    # The raw count as well while stopped: the phase reads it then (Pending while draining, then Stopped). Not
    # otherwise: the controller-manager counting a pod the pod watch already showed (0 -> 1 once per new server)
    # left every count a pass derives as it was, and such passes were 11 % of the 300 burst's, all writing nothing.
    stopped = not int((new.get("spec") or {}).get("replicas", 1))
    if stopped and before.get("replicas") != after.get("replicas"):
        return True
    return _sts_counts(old, pods) != _sts_counts(new, pods)


def _identity(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (obj.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")}


def conditions(obs: Observation) -> list[Cond]:
    T, R = ConditionType, Reason
    result: list[Cond] = []
    if obs.config_errors:
        result.append(Cond(T.CONFIG_READY, False, obs.config_reason, "; ".join(obs.config_errors)[:1000]))
    else:
        result.append(Cond(T.CONFIG_READY, True, R.CONFIG_RENDERED, "ConfigMap holds config.yaml; Secrets present"))
    if obs.database is not None:
        result.append(obs.database)
    replicas, ready, _available, done = obs.counts
    if obs.desired_replicas == 0:
        result.append(Cond(T.AVAILABLE, True, R.STOPPED, "replicas is 0"))
    elif ready >= 1:
        result.append(Cond(T.AVAILABLE, True, R.REPLICAS_AVAILABLE, f"{ready} ready replica(s)"))
    else:
        result.append(Cond(T.AVAILABLE, False, R.NO_REPLICAS_AVAILABLE, starting(obs) or "no ready DittoFS pod yet"))
    if obs.config_errors and obs.config_reason == R.MISSING_SECRET:
        progressing = Cond(T.PROGRESSING, False, R.WAITING_FOR_SECRET,
                           "waiting for: " + "; ".join(obs.config_errors)[:1000])
    elif obs.statefulset is None and obs.config_errors:
        progressing = Cond(T.PROGRESSING, False, R.RECONCILE_COMPLETE,
                           f"StatefulSet not created: ConfigReady is False ({obs.config_reason})")
    elif obs.statefulset is None and obs.database is not None and not obs.database.status:
        # Held back on purpose (the database gate): nothing rolls until DatabaseReady.
        progressing = Cond(T.PROGRESSING, False, R.WAITING_FOR_DATABASE,
                           f"StatefulSet not created until DatabaseReady ({obs.database.reason})")
    elif obs.statefulset is None:
        progressing = Cond(T.PROGRESSING, True, R.STATEFULSET_UPDATING, "StatefulSet not created yet")
    elif obs.recreating:  # the object about to go still reads rolled out: the larger volumes are not there yet
        progressing = Cond(T.PROGRESSING, True, R.STATEFULSET_UPDATING,
                           "re-creating the StatefulSet around its pods, which keep running (larger volumes, or a "
                           "field that cannot change in place)")
    elif done:
        progressing = Cond(T.PROGRESSING, False, R.RECONCILE_COMPLETE, "StatefulSet rolled out")
    elif replicas != obs.desired_replicas:
        progressing = Cond(T.PROGRESSING, True, R.SCALING_REPLICAS, f"{replicas} -> {obs.desired_replicas} replicas")
    else:
        progressing = Cond(T.PROGRESSING, True, R.STATEFULSET_UPDATING, "rolling out the StatefulSet")
    result.append(progressing)
    problems = pod_problems(obs.pods)
    if problems:
        result.append(Cond(T.DEGRADED, True, R.POD_FAILING, "; ".join(problems)[:1000]))
    else:
        result.append(Cond(T.DEGRADED, False, R.AS_EXPECTED, "no failing pods"))
    result += [c for c in (obs.provisioned, obs.adapters_ready) if c is not None]
    failing: list[ConditionType] = [
        c.type for c in result
        if c.type in (T.CONFIG_READY, T.DATABASE_READY, T.AVAILABLE, T.PROVISIONED, T.ADAPTERS_READY) and not c.status]
    failing += [c.type for c in result if c.type in (T.PROGRESSING, T.DEGRADED) and c.status]
    if failing:
        result.append(Cond(T.READY, False, R.CONDITIONS_NOT_MET, "not ready: " + ", ".join(failing)))
    elif obs.desired_replicas == 0:  # `kubectl wait --for=condition=Ready` passes: say that nothing is served
        result.append(Cond(T.READY, True, R.ALL_CONDITIONS_MET, "stopped as declared (replicas: 0): nothing is served"))
    else:
        result.append(Cond(T.READY, True, R.ALL_CONDITIONS_MET, "DittoFS server is ready"))
    return result


Phase = str  # one of DittoServerStatus.phase's literals; the model checks it when the status is built


def phase(obs: Observation, conds: Sequence[Cond]) -> Phase:
    by_type = {c.type: c for c in conds}
    _replicas, ready, _available, _done = obs.counts
    config = by_type[ConditionType.CONFIG_READY]
    if not config.status:
        # A missing Secret is a wait (it may be created later, e.g. by external-secrets), not a failure.
        return "Pending" if config.reason in (Reason.MISSING_SECRET, Reason.CERT_MANAGER_NOT_FOUND) else "Failed"
    if by_type[ConditionType.DEGRADED].status:
        return "Degraded"
    if obs.desired_replicas == 0:
        replicas = int(((obs.statefulset or {}).get("status") or {}).get("replicas", 0))
        return "Stopped" if replicas == 0 else "Pending"  # still draining
    if ready >= obs.desired_replicas and by_type[ConditionType.READY].status:
        return "Running"
    return "Pending"


def merge_conditions(
    previous: Sequence[Mapping[str, Any]], new: Sequence[Cond], generation: int, now: str | None = None
) -> list[dict[str, Any]]:
    """metav1.Conditions; lastTransitionTime moves only when status flips."""
    old = {c.get("type"): c for c in previous}
    stamp = now or rfc3339_now()
    merged = []
    for cond in sorted(new, key=lambda c: CONDITION_ORDER.index(c.type)):
        status = "True" if cond.status else "False"
        before = old.get(cond.type)
        moved = before is None or before.get("status") != status
        # Plain JSON, in Condition's own spelling: building and dumping a model per condition was most of
        # build_status in the 300 burst, and the status holding them is validated as a whole anyway.
        merged.append({
            "type": str(cond.type), "status": status, "reason": str(cond.reason), "message": cond.message,
            "lastTransitionTime": stamp if moved or before is None else before.get("lastTransitionTime", stamp),
            "observedGeneration": generation})
    return merged


def _wire(status: DittoServerStatus) -> dict[str, Any]:
    """The status as JSON; every top-level field present (None clears it under a merge patch)."""
    dumped = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    return {name: dumped.get(name) for name in _STATUS_FIELDS}


FILESERVICE_STATUS = ("provisioned", "appliedSecrets", "shares", "adapters", "storeRevision")
"""The file service's share of the status (``reconciler.phases.fileservice.Provisioned`` reports them)."""


def kept_fileservice(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """Ownership is never dropped by a pass that does not provision (the pod is down, the spec is waiting)."""
    status = status or {}
    return {k: status.get(k) for k in FILESERVICE_STATUS}


def carried_over(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``Observation`` fields a pass that builds nothing keeps from the last status (an invalid spec): a
    cleared ``storeRevision`` or ``appliedSecrets`` would roll the pod once the spec is fixed, a cleared
    ``provisioned`` would forget what the operator owns in DittoFS."""
    status = status or {}
    return {"config_hash": status.get("configHash"), "endpoints": status.get("endpoints"),
            "percona_cluster": status.get("perconaClusterName"), "s3": status.get("s3"),
            "fileservice": kept_fileservice(status)}


def build_status(obs: Observation, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    previous = previous or {}
    conds = conditions(obs)
    replicas, ready, available, _done = obs.counts
    return _wire(DittoServerStatus.model_validate({
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
        **obs.fileservice,
        "conditions": merge_conditions(previous.get("conditions", []), conds, obs.generation),
    }))


def paused_status(previous: Mapping[str, Any] | None, generation: int) -> dict[str, Any]:
    """The last status, plus ReconciliationPaused=True (its transition time kept while it stays True)."""
    previous = dict(previous or {})
    kept = [c for c in previous.get("conditions", []) if c.get("type") != ConditionType.RECONCILIATION_PAUSED]
    before = [c for c in previous.get("conditions", []) if c.get("type") == ConditionType.RECONCILIATION_PAUSED]
    paused = merge_conditions(before, [Cond(ConditionType.RECONCILIATION_PAUSED, True, Reason.ANNOTATION_SET,
                                            f"{PAUSE_ANNOTATION}=disabled; remove it to resume")], generation)
    return {**previous, "conditions": [*kept, *paused]}


def deleting_status(previous: Mapping[str, Any] | None, generation: int, waiting_for: str) -> dict[str, Any]:
    """Phase Deleting from the first deletion pass on, Ready=False saying what the finalizer waits for. The
    deletion is the generation observed: the apiserver counts marking an object for deletion as a change of it."""
    previous = dict(previous or {})
    conds = previous.get("conditions", [])
    before = [c for c in conds if c.get("type") == ConditionType.READY]
    ready = merge_conditions(before, [Cond(ConditionType.READY, False, Reason.DELETING, waiting_for)], generation)
    return {**previous, "phase": "Deleting", "observedGeneration": generation,
            "conditions": [*(c for c in conds if c.get("type") != ConditionType.READY), *ready]}


def merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``: a key gone from a nested map is sent as
    null, since a merge keeps what the patch leaves out (a dropped appliedSecrets slot or endpoint stayed, and
    the pass after saw it again)."""
    out: dict[str, Any] = {}
    for key, value in new.items():
        before = (old or {}).get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            value = {**{k: None for k in before if k not in value}, **merge_patch(before, value)}
        out[key] = value
    return out


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """True when a write is needed; timestamps of unchanged conditions are already carried over."""
    old = old or {}
    return any(old.get(key) != value for key, value in new.items())


def settled(previous: Mapping[str, Any] | None, reported: Mapping[str, Any]) -> bool:
    """The server was Running and this pass found nothing to report (``reported`` is the status it built)."""
    return reported.get("phase") == "Running" and not status_changed(previous, reported)


def s3_status(spec: DittoServerSpec, secret: Mapping[str, str] | None) -> dict[str, Any] | None:
    """``secret``: the key digests of spec.s3's credentials Secret (None: it does not exist)."""
    if spec.s3 is None or spec.s3.credentials_secret_ref is None:
        return None
    ref = spec.s3.credentials_secret_ref
    keys = [ref.access_key_id_key, ref.secret_access_key_key]
    missing = [k for k in keys if secret is None or k not in secret]
    if secret is None:
        return {"secretFound": False, "missingKeys": keys,
                "message": f"Secret {ref.secret_name} not found; create it with keys {', '.join(keys)}"}
    message = f"Secret {ref.secret_name} lacks {', '.join(missing)}" if missing else "credentials present"
    return {"secretFound": True, "missingKeys": missing, "message": message}
