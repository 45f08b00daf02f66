"""The config hash: rendered config + consumed Secret data, never the generation.

Only digests of Secret values reach this module (see `reconciler.cache.SecretDigest`), so the operator
never has to keep Secret bodies in memory to notice a rotation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping


def value_digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def _frame(hasher: hashlib._Hash, part: str) -> None:
    data = part.encode()
    hasher.update(len(data).to_bytes(8, "big"))
    hasher.update(data)


def config_hash(config_text: str, secret_digests: Iterable[tuple[str, str, str | None]]) -> str:
    """SHA-256 over the config and (secret, key, digest-or-absent) triples, length-framed and sorted."""
    hasher = hashlib.sha256()
    _frame(hasher, config_text)
    for secret, key, digest in sorted(secret_digests, key=lambda t: (t[0], t[1])):
        _frame(hasher, secret)
        _frame(hasher, key)
        _frame(hasher, digest if digest is not None else "<absent>")
    return hasher.hexdigest()


def manifest_hash(manifest: Mapping[str, object]) -> str:
    """Stable digest of a desired manifest, to skip API writes when nothing we own changed."""
    import json

    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
