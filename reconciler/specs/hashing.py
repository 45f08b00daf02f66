"""The config hash: rendered config + consumed Secret data, never the generation.

Only digests of Secret values reach this module (see `reconciler.cache.SecretDigest`), so the operator
never has to keep Secret bodies in memory to notice a rotation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping

import orjson


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


# Where orjson's bytes may differ from `json.dumps(ensure_ascii=True)`: non-ASCII and DEL (json escapes them) and
# any float (the two spell some differently: `1e-05` and `0.00001`). Builders emit no floats; a string that only
# looks like one (`":1.5"`) costs the slower spelling, never a different digest.
_NOT_JSON_SPELLING = re.compile(rb"[^\x20-\x7e]|[:,[]-?[0-9]+[.eE]")


def manifest_hash(manifest: Mapping[str, object]) -> str:
    """Stable digest of a desired manifest, to skip API writes when nothing we own changed. The digest is
    stored on every child, so it must never change spelling: orjson's sorted encoding where it is byte-for-byte
    `json.dumps(sort_keys=True, separators=(",", ":"))` (~14x faster; this was 18 % of a drift pass), json's
    where it might not be."""
    try:
        raw = orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON as orjson reads it (e.g. an int beyond 64 bits)
        raw = b"\x80"
    if _NOT_JSON_SPELLING.search(raw):
        raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:16]
