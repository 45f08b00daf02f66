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


_NEGATIVE_EXPONENT = re.compile(rb"e-[0-9]")


def _json_spelling(raw: bytes) -> bool:
    """Whether orjson's bytes are `json.dumps(ensure_ascii=True)`'s own. They differ in non-ASCII and DEL (json
    escapes them) and in floats below 1e-4 (json's `1e-05` and `1e-07`, orjson's `0.00001` and `1e-7`); a string
    that only looks like one (`"v0.00001"`) costs the slower spelling, never a different digest."""
    if not raw.isascii() or b"\x7f" in raw or b"0.0000" in raw:
        return False
    for match in _NEGATIVE_EXPONENT.finditer(raw):  # `scale-17` matches too: only digit-e-digit is a float
        at = match.start()
        if at and raw[at - 1] in b"0123456789" and not raw[at + 3:at + 4].isdigit():
            return False
    return True


def manifest_hash(manifest: Mapping[str, object]) -> str:
    """Stable digest of a desired manifest, to skip API writes when nothing we own changed. The digest is
    stored on every child, so it must never change spelling: orjson's sorted encoding where it is byte-for-byte
    `json.dumps(sort_keys=True, separators=(",", ":"))` (~14x faster; this was 18 % of a drift pass), json's
    where it might not be."""
    try:
        raw = orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON as orjson reads it (e.g. an int beyond 64 bits)
        raw = b"\x80"
    if not _json_spelling(raw):
        raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:16]
