"""Deciding whether a child needs a write: desired fields must match, and the applied digest must too."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dittoctl.api.naming import APPLIED_ANNOTATION
from reconciler.specs.hashing import manifest_hash


def is_subset(desired: Any, observed: Any) -> bool:
    """Every field we set has the same value in the observed object (the server may add defaults)."""
    if isinstance(desired, dict):
        return isinstance(observed, dict) and all(
            is_subset(value, observed.get(key)) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (isinstance(observed, list) and len(desired) == len(observed)
                and all(is_subset(d, o) for d, o in zip(desired, observed, strict=True)))
    return bool(desired == observed)


def stamp_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """Annotate a manifest with the digest of what we apply, so removals (not just drift) are noticed. Once:
    a second digest would cover the first, and the child would look changed on every pass."""
    meta = manifest["metadata"]
    if APPLIED_ANNOTATION in (meta.get("annotations") or {}):
        return manifest
    digest = manifest_hash(manifest)
    meta["annotations"] = {**meta.get("annotations", {}), APPLIED_ANNOTATION: digest}
    return manifest


def needs_apply(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> bool:
    return observed is None or not is_subset(desired, observed)
