"""The StatefulSet that runs DittoFS (SPEC §4.6-4.7)."""

from __future__ import annotations

import math
from typing import Any

from dittoctl.api.models import (
    BLOCK_ROOT,
    CONTROL_PLANE_ROOT,
    DEFAULT_IMAGE,
    METADATA_ROOT,
    PRESTOP_SECONDS,
    STARTUP_PERIOD_SECONDS,
    DittoServerSpec,
)
from dittoctl.api.naming import (
    CONFIG_DIR,
    CONFIG_FILE,
    CONTAINER,
    CONTENT_VOLUME,
    CONTROL_PLANE_VOLUME,
    HASH_ANNOTATION,
    METADATA_VOLUME,
    Names,
)
from dittoctl.api.secrets import mounted_secrets
from reconciler.specs.env import container_env
from reconciler.specs.services import api_port

UID = 65532
UNPRIVILEGED_PORT_SYSCTL = "net.ipv4.ip_unprivileged_port_start"
POD_SECURITY_DEFAULTS: dict[str, Any] = {
    "fsGroup": UID,
    # The kubelet chowns a volume at mount only when its root is not already ours: the default walks every
    # file at every start (minutes on a content volume of millions of blocks), and DittoFS writes as UID anyway.
    "fsGroupChangePolicy": "OnRootMismatch",
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_DEFAULTS: dict[str, Any] = {
    "runAsUser": UID,
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
VOLUMES = ((CONTROL_PLANE_VOLUME, CONTROL_PLANE_ROOT), (METADATA_VOLUME, METADATA_ROOT), (CONTENT_VOLUME, BLOCK_ROOT))
WAIT_FOR_POSTGRES_SECONDS = 300
POD_MANAGEMENT_POLICY = "Parallel"  # immutable: a StatefulSet made with another is re-created around its pods


def _identity(names: Names, replicas: int) -> dict[str, Any]:
    """What makes the StatefulSet the server's: name, owner, selector, governing Service, pod management."""
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": names.metadata(names.statefulset, "server"),
        "spec": {
            "serviceName": names.headless_service,
            "replicas": replicas,
            "selector": {"matchLabels": names.selector()},
            # Not OrderedReady: under it a pod that never becomes Ready (a wrong image, a crash-looping config)
            # is never replaced by the fixed template either, and the server stays down until someone deletes
            # the pod (Kubernetes' "forced rollback"). With at most one replica, ordering gives nothing.
            "podManagementPolicy": POD_MANAGEMENT_POLICY,
        },
    }


def drain_statefulset(names: Names) -> dict[str, Any]:
    """A StatefulSet of no replicas, for a server being deleted whose pods have none (it was deleted around them
    to be re-created, or by hand): it adopts them and stops them, which the operator may not do itself (no delete
    verb on pods). Its pod template is never run; the garbage collector deletes it with the server."""
    sts = _identity(names, 0)
    sts["spec"]["template"] = {"metadata": {"labels": names.selector()},
                               "spec": {"containers": [{"name": CONTAINER, "image": DEFAULT_IMAGE}]}}
    return sts


def merge_over(defaults: dict[str, Any], user: dict[str, Any] | None) -> dict[str, Any]:
    """User values override only the fields they set; nested objects merge recursively."""
    merged = dict(defaults)
    for key, value in (user or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_over(merged[key], value)
        else:
            merged[key] = value
    return merged


def _probe(path: str, initial: int, period: int, failures: int, scheme: str | None) -> dict[str, Any]:
    """``scheme`` None: a TCP check (mutual TLS, where the kubelet has no client certificate to present)."""
    check = {"httpGet": {"path": path, "port": "api", "scheme": scheme}} if scheme else {"tcpSocket": {"port": "api"}}
    probe: dict[str, Any] = {
        **check,
        "periodSeconds": period, "timeoutSeconds": 5, "failureThreshold": failures,
    }
    if initial:
        probe["initialDelaySeconds"] = initial
    return probe


def _ports(spec: DittoServerSpec) -> list[dict[str, Any]]:
    # No NFS/SMB entries: DittoFS moves those listeners live over REST, and a containerPort is informational
    # only, so listing them would restart the pod for a port change that needs none.
    ports = [{"name": "api", "containerPort": api_port(spec)["port"], "protocol": "TCP"}]
    if spec.metrics.enabled:
        ports.append({"name": "metrics", "containerPort": spec.metrics.port, "protocol": "TCP"})
    return ports


def _claim(name: str, size: str, storage_class: str | None, labels: dict[str, str]) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "metadata": {"name": name, "labels": labels},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }
    if storage_class:
        claim["spec"]["storageClassName"] = storage_class
    return claim


def wait_for_postgres(spec: DittoServerSpec, names: Names, security: dict[str, Any]) -> dict[str, Any]:
    """Init container: block until PostgreSQL answers, bounded by a wall-clock deadline."""
    script = (
        f'deadline=$(( $(date +%s) + {WAIT_FOR_POSTGRES_SECONDS} )); '
        'until pg_isready -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$PGDATABASE" -t 5; do '
        '[ "$(date +%s)" -ge "$deadline" ] && { echo "postgres not ready after '
        f'{WAIT_FOR_POSTGRES_SECONDS}s" >&2; exit 1; }}; sleep 2; done'
    )
    secret = names.percona_user_secret
    env = [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
           for var, key in (("PGHOST", "host"), ("PGPORT", "port"), ("PGUSER", "user"), ("PGDATABASE", "dbname"))]
    image = spec.percona.image or f"postgres:{spec.percona.postgres_version}-alpine"
    return {
        "name": "wait-for-postgres", "image": image, "imagePullPolicy": spec.image_pull_policy,
        "command": ["/bin/sh", "-c", script], "env": env, "securityContext": security,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
    }


def _pod_security(spec: DittoServerSpec) -> dict[str, Any]:
    """The restricted defaults, plus the safe sysctl that lets uid 65532 bind the ports below 1024 asked for
    (only inside the pod's own network namespace)."""
    security = merge_over(POD_SECURITY_DEFAULTS, spec.pod_security_context)
    ports = [spec.control_plane.port, *(a.port for _, a in spec.adapters.enabled())]
    if spec.metrics.enabled:
        ports.append(spec.metrics.port)
    sysctls = list(security.get("sysctls") or [])
    if min(ports) < 1024 and not any(s.get("name") == UNPRIVILEGED_PORT_SYSCTL for s in sysctls):
        # 0, not the lowest port: moving a low adapter port then needs no pod template change either.
        security["sysctls"] = [*sysctls, {"name": UNPRIVILEGED_PORT_SYSCTL, "value": "0"}]
    return security


def statefulset(spec: DittoServerSpec, names: Names, config_hash: str) -> dict[str, Any]:
    labels = names.labels("server")
    pod_labels = {**spec.pod_labels, **labels}  # selector labels cannot be overridden
    container_security = merge_over(CONTAINER_SECURITY_DEFAULTS, spec.security_context)
    tls = spec.control_plane.tls
    scheme = None if tls is not None and tls.client_ca_secret_name else "HTTPS" if tls is not None else "HTTP"
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["/app/dfs"],
        "args": ["start", "--foreground", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
        "ports": _ports(spec),
        "env": container_env(spec, names),
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
        + [{"name": name, "mountPath": path} for name, path in VOLUMES],
        # With TLS the kubelet probes over HTTPS (it does not verify the certificate).
        "livenessProbe": _probe("/health", 15, 10, 3, scheme),
        "readinessProbe": _probe("/health/ready", 10, 5, 3, scheme),
        "startupProbe": _probe("/health", 0, STARTUP_PERIOD_SECONDS,
                               math.ceil(spec.startup_seconds / STARTUP_PERIOD_SECONDS), scheme),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}},
        "securityContext": container_security,
    }
    if spec.resources:
        container["resources"] = spec.resources
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": names.config_map}}]
    for mounted in mounted_secrets(spec):
        container["volumeMounts"].append({"name": mounted.volume, "mountPath": mounted.directory, "readOnly": True})
        source: dict[str, Any] = {"secretName": mounted.secret}
        if mounted.mode is not None:
            source["defaultMode"] = mounted.mode
        source["items"] = [{"key": key, "path": file} for key, file in mounted.files]
        volumes.append({"name": mounted.volume, "secret": source})
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        # DittoFS maps every DITTOFS_* variable onto its config: a Service named dittofs-metrics (a server called
        # "dittofs") injects DITTOFS_METRICS_PORT=tcp://..., which dfs cannot parse as metrics.port and exits.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": spec.grace_seconds,
        "securityContext": _pod_security(spec),
        "containers": [container],
        "volumes": volumes,
    }
    if spec.percona.enabled:
        pod_spec["initContainers"] = [wait_for_postgres(spec, names, container_security)]
    optional: dict[str, Any] = {
        "imagePullSecrets": [{"name": s.name} for s in spec.image_pull_secrets],
        "nodeSelector": spec.node_selector,
        "tolerations": spec.tolerations,
        "affinity": spec.affinity,
        "topologySpreadConstraints": spec.topology_spread_constraints,
        "priorityClassName": spec.priority_class_name,
    }
    pod_spec.update({key: value for key, value in optional.items() if value})
    storage = spec.storage
    claim_labels = names.selector()
    sts = _identity(names, spec.replicas)
    sts["spec"] |= {
        "updateStrategy": {"type": "RollingUpdate"},
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {**spec.pod_annotations, HASH_ANNOTATION: config_hash},
            },
            "spec": pod_spec,
        },
        "volumeClaimTemplates": [
            _claim(CONTROL_PLANE_VOLUME, storage.control_plane_size, storage.storage_class_name, claim_labels),
            _claim(METADATA_VOLUME, storage.metadata_size, storage.storage_class_name, claim_labels),
            _claim(CONTENT_VOLUME, storage.effective_content_size, storage.storage_class_name, claim_labels),
        ],
    }
    return sts
