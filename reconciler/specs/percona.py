"""The PerconaPGCluster for the control-plane database (SPEC §4.8), and SSA field-path helpers."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from dittoctl.api.kinds import PERCONAPGCLUSTERS
from dittoctl.api.models import DittoServerSpec
from dittoctl.api.naming import OWNER_ANNOTATION, Names

DB_USER = "dittofs"


def percona_cluster(spec: DittoServerSpec, names: Names) -> dict[str, Any]:
    p = spec.percona
    claim: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": p.storage_size}}}
    if p.storage_class_name:
        claim["storageClassName"] = p.storage_class_name
    backups: dict[str, Any] = {"enabled": p.backup.enabled}  # explicit: Percona treats nil as enabled
    if p.backup.enabled:
        b = p.backup
        pgbackrest: dict[str, Any] = {
            "global": {
                "repo1-retention-full": str(b.retention_days),
                "repo1-retention-full-type": "time",
                "repo1-path": f"/pgbackrest/{names.namespace}/{names.percona_cluster}/repo1",
            },
            "repos": [{
                "name": "repo1",
                "s3": {"bucket": b.bucket or "", "endpoint": b.endpoint or "", "region": b.region},
                "schedules": {"full": b.full_schedule, "incremental": b.incr_schedule},
            }],
        }
        if b.credentials_secret_ref is not None:
            pgbackrest["configuration"] = [{"secret": {"name": b.credentials_secret_ref.name}}]
        backups["pgbackrest"] = pgbackrest
    body: dict[str, Any] = {
        "crVersion": p.cr_version,
        "postgresVersion": p.postgres_version,
        "instances": [{"name": "instance1", "replicas": p.replicas, "dataVolumeClaimSpec": claim}],
        "users": [{"name": DB_USER, "databases": [p.database_name]}],
        "proxy": {"pgBouncer": {"replicas": 0}},
        "backups": backups,
    }
    if p.image:
        body["image"] = p.image
    metadata = names.metadata(names.percona_cluster, "database", annotations={OWNER_ANNOTATION: names.uid})
    if not p.delete_with_server:
        # A kept database is no dependent of its server: a foreground deletion (Argo CD's default) has the garbage
        # collector delete every dependent at once, before our finalizer can release it.
        del metadata["ownerReferences"]
    return {
        "apiVersion": PERCONAPGCLUSTERS.api_version,
        "kind": PERCONAPGCLUSTERS.kind,
        "metadata": metadata,
        "spec": body,
    }


_SEGMENT = re.compile(r'\.([^.\[]+)|\[([^=\]]+)=("(?:[^"\\]|\\.)*"|[^\]]+)\]')


def parse_field_path(path: str) -> list[str | tuple[str, str]]:
    """`.spec.instances[name="instance1"].replicas` -> ['spec', 'instances', ('name', 'instance1'), 'replicas'].

    The SSA conflict format; unknown shapes raise ValueError so callers fall back to a safe default.
    """
    out: list[str | tuple[str, str]] = []
    pos = 0
    while pos < len(path):
        match = _SEGMENT.match(path, pos)
        if match is None:
            raise ValueError(f"unsupported field path {path!r}")
        if match.group(1) is not None:
            out.append(match.group(1))
        else:
            value = match.group(3)
            out.append((match.group(2), value[1:-1] if value.startswith('"') else value))
        pos = match.end()
    return out


def _step(node: Any, segment: str | tuple[str, str]) -> Any:
    if isinstance(segment, tuple):
        key, value = segment
        if not isinstance(node, list):
            raise KeyError(segment)
        for item in node:
            if isinstance(item, dict) and str(item.get(key)) == value:
                return item
        raise KeyError(segment)
    if not isinstance(node, dict) or segment not in node:
        raise KeyError(segment)
    return node[segment]


def values_at(manifest: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """The value of each field path (an SSA conflict's) in ``manifest``; None where it has none."""
    out: dict[str, Any] = {}
    for path in sorted(paths):
        node: Any = manifest
        try:
            for segment in parse_field_path(path):
                node = _step(node, segment)
        except (KeyError, ValueError):
            node = None
        out[path] = node
    return out


def adopt_live_values(manifest: dict[str, Any], live: dict[str, Any], paths: list[str]) -> list[str]:
    """Copy the live value of each conflicting field into `manifest`, so re-applying without force agrees
    with the user's edit (SSA: an equal value is shared ownership, not a conflict). Returns the paths it
    could not adopt."""
    failed = []
    for path in paths:
        try:
            segments = parse_field_path(path)
            live_parent, ours = live, manifest
            for segment in segments[:-1]:
                live_parent, ours = _step(live_parent, segment), _step(ours, segment)
            last = segments[-1]
            if isinstance(last, tuple) or not isinstance(ours, dict):
                raise KeyError(last)
            ours[last] = _step(live_parent, last)
        except (KeyError, ValueError):
            failed.append(path)
    return failed
