"""Lenient parsing of a DittoServer spec, and the cluster objects it references.

The webhook must report *every* violation at once, so a spec that fails the models is still parsed as
far as possible: top-level sections that failed are reset to their defaults and marked `broken`, and
cross-field rules skip broken sections instead of judging made-up defaults. Both the rules and the fact
lookups read the same parse, so they agree on what an object references.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from dittoctl.api.models import DittoServerSpec

# Stands in for a broken or missing `storage` (the only required section) so the rest still parses.
_PLACEHOLDER_STORAGE = {"metadataSize": "1Gi"}


@dataclass(frozen=True)
class ParsedSpec:
    """A spec parsed as far as the models allow."""

    spec: DittoServerSpec | None
    """The spec; when `broken` is non-empty, broken sections hold defaults, not the user's values."""
    errors: tuple[ErrorDetails, ...] = ()
    """Model errors of the original spec (empty when it is valid)."""
    broken: frozenset[Any] = frozenset()
    """Top-level spec keys (camelCase) whose values failed the models."""

    @property
    def valid(self) -> bool:
        return self.spec is not None and not self.errors

    def usable(self, *sections: str) -> bool:
        """True when every named top-level section holds the user's own, valid values."""
        return self.spec is not None and not self.broken.intersection(sections)


def parse_spec(raw: Any) -> ParsedSpec:
    """Never raises: garbage gives `ParsedSpec(None, errors)`."""
    try:
        return ParsedSpec(DittoServerSpec.model_validate(raw))
    except ValidationError as exc:
        errors = tuple(exc.errors(include_url=False))
    except (TypeError, ValueError, RecursionError):
        return ParsedSpec(None, (_whole_spec_error(raw),))
    if not isinstance(raw, Mapping) or any(not err["loc"] for err in errors):
        return ParsedSpec(None, errors)
    broken = frozenset(err["loc"][0] for err in errors)
    repaired = {key: value for key, value in raw.items() if key not in broken}
    if "storage" in broken or "storage" not in repaired:
        repaired["storage"] = _PLACEHOLDER_STORAGE
        broken |= {"storage"}
    try:
        return ParsedSpec(DittoServerSpec.model_validate(repaired), errors, broken)
    except (ValidationError, TypeError, ValueError, RecursionError):
        return ParsedSpec(None, errors, broken)


def _whole_spec_error(raw: Any) -> ErrorDetails:
    return {"type": "model_type", "loc": (), "msg": "Input should be an object", "input": raw}


def referenced_secrets(spec: DittoServerSpec | Mapping[str, Any]) -> dict[str, set[str]]:
    """Secret name -> keys the server requires from it (empty set: only existence is checked).

    Accepts a parsed spec or a raw one (parsed leniently; broken sections reference nothing). Optional
    keys (Postgres sslmode, S3 endpoint) are not required. Generated Secrets (<name>-jwt, ...) are ours.
    """
    if isinstance(spec, DittoServerSpec):
        return _secrets_of(ParsedSpec(spec))
    return _secrets_of(parse_spec(spec))


def _secrets_of(parsed: ParsedSpec) -> dict[str, set[str]]:
    refs: dict[str, set[str]] = {}
    spec = parsed.spec
    if spec is None:
        return refs

    def need(name: str, *keys: str) -> None:
        refs.setdefault(name, set()).update(keys)

    if parsed.usable("identity"):
        if (jwt := spec.identity.jwt.secret_ref) is not None:
            need(jwt.name, jwt.key)
        if (admin := spec.identity.admin.password_secret_ref) is not None:
            need(admin.name, admin.key)
    pg = spec.database.postgres_secret_ref
    # With Percona enabled the server reads Percona's user Secret, so the external one is not consumed.
    if parsed.usable("database", "percona") and pg is not None and not spec.percona.enabled:
        need(pg.name, pg.host_key, pg.port_key, pg.database_key, pg.user_key, pg.password_key)
    if parsed.usable("s3") and spec.s3 is not None and (s3 := spec.s3.credentials_secret_ref) is not None:
        need(s3.secret_name, s3.access_key_id_key, s3.secret_access_key_key)
    backup = spec.percona.backup
    if parsed.usable("percona") and backup.enabled and backup.credentials_secret_ref is not None:
        need(backup.credentials_secret_ref.name)
    return refs


@dataclass(frozen=True)
class References:
    """Everything about the cluster that validating one object needs to know."""

    namespace: str | None = None
    secrets: dict[str, set[str]] = field(default_factory=dict)
    storage_classes: frozenset[str] = frozenset()
    percona: bool = False


def references(obj: Any) -> References:
    """What `obj` (a DittoServer as JSON) references; never raises, garbage references nothing."""
    if not isinstance(obj, Mapping):
        return References()
    meta = obj.get("metadata")
    namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
    parsed = parse_spec(obj.get("spec"))
    spec = parsed.spec
    if spec is None:
        return References(namespace if isinstance(namespace, str) else None)
    classes: set[str] = set()
    if parsed.usable("storage") and spec.storage.storage_class_name:
        classes.add(spec.storage.storage_class_name)
    percona = parsed.usable("percona") and spec.percona.enabled
    if percona and spec.percona.storage_class_name:
        classes.add(spec.percona.storage_class_name)
    return References(
        namespace=namespace if isinstance(namespace, str) and namespace else None,
        secrets=_secrets_of(parsed),
        storage_classes=frozenset(classes),
        percona=percona,
    )
