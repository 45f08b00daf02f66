"""Deciding whether a child needs a write: desired fields must match, and the applied digest must too."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dittoctl.api.naming import APPLIED_ANNOTATION
from dittoctl.api.quantity import parse_quantity
from reconciler.specs.hashing import manifest_hash


def is_subset(desired: Any, observed: Any) -> bool:
    """Every field we set has the same value in the observed object (the server may add defaults, and writes
    resource quantities in its own form: 1024Mi is stored as 1Gi, a number as a string)."""
    return _subset(desired, observed) or _subset(desired, observed, semantic=True)


def _subset(desired: Any, observed: Any, quantities: bool = False, semantic: bool = False) -> bool:
    """Exact first (the settled case, and the burst's hot path); ``semantic``, only after a mismatch, compares the
    values of `requests`/`limits` maps as quantities."""
    if isinstance(desired, dict):
        return isinstance(observed, dict) and all(
            _subset(value, observed.get(key), semantic and (quantities or key in _QUANTITY_MAPS), semantic)
            for key, value in desired.items())
    if isinstance(desired, list):
        return (isinstance(observed, list) and len(desired) == len(observed)
                and all(_subset(d, o, False, semantic) for d, o in zip(desired, observed, strict=True)))
    if quantities and desired != observed and isinstance(desired, str | int) and isinstance(observed, str | int):
        try:
            return parse_quantity(str(desired)) == parse_quantity(str(observed))
        except ValueError:
            return False
    return bool(desired == observed)


_QUANTITY_MAPS = frozenset({"requests", "limits"})  # ResourceLists, wherever they appear


def stamp_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """Annotate a manifest, in place, with the digest of what we apply, so removals (not just drift) are
    noticed; returned for chaining. Once: a second digest would cover the first, and the child would look changed
    on every pass (the cached build is stamped, so its next pass finds the stamp)."""
    meta = manifest["metadata"]
    if APPLIED_ANNOTATION in (meta.get("annotations") or {}):
        return manifest
    digest = manifest_hash(manifest)
    meta["annotations"] = {**meta.get("annotations", {}), APPLIED_ANNOTATION: digest}
    return manifest


def changed_fields(before: Any, after: Any, path: str = "", limit: int = 4) -> list[str]:
    """Where ``after`` differs from ``before`` (fields added, changed or removed), as paths for a message: at
    most ``limit``, the deepest that tell (a list of another length is one change)."""
    if before == after:
        return []
    out: list[str] = []
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(before.keys() | after.keys()):
            out += changed_fields(before.get(key), after.get(key), f"{path}.{key}" if path else str(key), limit)
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            out += changed_fields(b, a, f"{path}[{i}]", limit)
    return (out or [path])[:limit]


def needs_apply(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> bool:
    return observed is None or not is_subset(desired, observed)
