"""The registry of kinds the operator creates per DittoServer, and the ones it observes.

Watches, their label selectors, the cache and the RBAC test (tests/unit/test_chart.py) all derive from
these tuples. A new child kind is one `Owned` entry here, its builder in `reconciler/specs`, and the
verbs in the chart's ClusterRole (the RBAC test fails until they match).
"""

from __future__ import annotations

from dataclasses import dataclass

from dittoctl.api.kinds import (
    CERTIFICATES,
    CONFIGMAPS,
    NETWORKPOLICIES,
    PERCONAPGCLUSTERS,
    PODS,
    PVCS,
    SERVICEMONITORS,
    SERVICES,
    STATEFULSETS,
    Kind,
)
from dittoctl.api.naming import MANAGED_BY_LABEL, MANAGER

# Every watched child carries this label: the apiserver filters, so the watches keep no record of others.
SELECTOR = {MANAGED_BY_LABEL: MANAGER}


@dataclass(frozen=True)
class Owned:
    kind: Kind
    verbs: tuple[str, ...]
    """What the operator does with it (the chart must grant exactly these)."""
    watched: bool = True
    """Streamed into the cache by a label-selected watch from the start; False: see ``followed``."""
    followed: bool = False
    """An optional CRD's kind: streamed like the others only while discovery says its CRD is served (the watch
    ends when it goes away); until its first listing, read with a GET when needed."""


CHILDREN: tuple[Owned, ...] = (
    # delete: never called, but OwnerReferencesPermissionEnforcement asks for it before an apply may change the
    # owner of an existing ConfigMap (one left by `kubectl delete --cascade=orphan`, adopted by a new server).
    Owned(CONFIGMAPS, ("get", "list", "watch", "create", "patch", "delete")),
    Owned(SERVICES, ("get", "list", "watch", "create", "patch", "delete")),
    Owned(STATEFULSETS, ("get", "list", "watch", "create", "patch", "delete")),
    Owned(NETWORKPOLICIES, ("get", "list", "watch", "create", "patch", "delete")),
    # Optional CRDs that may be installed (or removed) after start: watched while discovery says they are served.
    Owned(PERCONAPGCLUSTERS, ("get", "list", "watch", "create", "patch", "delete"), watched=False, followed=True),
    Owned(SERVICEMONITORS, ("get", "list", "watch", "create", "patch", "delete"), watched=False, followed=True),
    Owned(CERTIFICATES, ("get", "list", "watch", "create", "patch", "delete"), watched=False, followed=True),
    # Made by the StatefulSet controller; only their requests are raised (volume expansion), never deleted.
    Owned(PVCS, ("list", "patch"), watched=False),
)
# Not created by us, but streamed (by the same label) to follow readiness and failures.
OBSERVED: tuple[Owned, ...] = (Owned(PODS, ("list", "watch")),)
WATCHED_CHILDREN: tuple[Kind, ...] = tuple(o.kind for o in CHILDREN if o.watched)
FOLLOWED_CHILDREN: tuple[Kind, ...] = tuple(o.kind for o in CHILDREN if o.followed)
