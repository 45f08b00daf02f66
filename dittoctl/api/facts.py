"""What the cluster looked like for one validation: a plain snapshot the pure rules read.

Filled by `webhook.facts.FactSource` (admission, `dittoctl validate --cluster`) or by the reconciler
from its caches; `None` always means "could not verify", never "absent".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dittoctl.api.kinds import PERCONAPGCLUSTERS


@dataclass(frozen=True)
class ClusterFacts:
    """What the cluster looked like for one validation. `None` (or a missing Secret name) = unknown."""

    storage_classes: frozenset[str] | None = None
    """Names of existing StorageClasses; None = could not verify."""
    percona_served: bool | None = None
    """Is pgv2.percona.com/v2 perconapgclusters served? None = could not verify."""
    secrets: Mapping[str, frozenset[str] | None] = field(default_factory=dict, hash=False)
    """Secret name -> key names present, or None when the Secret does not exist. Absent name = unknown."""
    key_lengths: Mapping[str, Mapping[str, int]] = field(default_factory=dict, hash=False)
    """Secret name -> key -> the value's length in bytes (lengths only, never values; never shown either)."""
    online: bool = True
    """False for offline validation (`dittoctl validate` without --cluster): nothing was looked up, so
    unknown facts are not worth a "could not verify" warning."""
    expandable_classes: frozenset[str] | None = None
    """StorageClasses with allowVolumeExpansion: true; None = could not verify."""
    default_storage_class: str | None = None
    """The class PVCs without one get (None: none, or not known)."""

    @classmethod
    def offline(cls) -> ClusterFacts:
        return cls(storage_classes=None, percona_served=None, secrets={}, online=False)


def percona_not_served() -> str:
    """The one wording of "no Percona Operator", shared by the webhook rule and the DatabaseReady condition."""
    return (f"{PERCONAPGCLUSTERS.kind} ({PERCONAPGCLUSTERS.api_version}) is not served by this cluster; "
            "install the Percona Operator for PostgreSQL or disable percona.enabled")
