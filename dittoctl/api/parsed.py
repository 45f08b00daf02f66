"""Lenient parsing of a DittoServer spec, and the cluster objects it references.

The webhook must report *every* violation at once, so a spec that fails the models is still parsed as
far as possible: fields that failed are reset to their defaults and marked `broken`, and cross-field
rules skip broken fields instead of judging made-up defaults. Both the rules and the fact
lookups read the same parse, so they agree on what an object references.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from dittoctl.api.models import MAX_NESTING, DittoServerSpec
from dittoctl.api.naming import Names
from dittoctl.api.secrets import (
    TLS_CERT_KEY,
    TLS_KEY_KEY,
    backup_credentials,
    mounted_secrets,
    operator_client_secret,
    provisioned_secrets,
    secret_uses,
)

# Stand-ins for required fields that are missing or broken, so the rest of the spec still parses. They are
# marked broken, so no rule ever judges them.
_PLACEHOLDER_STORAGE = {"metadataSize": "1Gi"}
_REQUIRED_STANDINS = {"metadataSize": "1Gi", "name": "placeholder", "key": "placeholder",
                      "secretName": "placeholder"}


Loc = tuple[Any, ...]


@dataclass(frozen=True)
class ParsedSpec:
    """A spec parsed as far as the models allow."""

    spec: DittoServerSpec | None
    """The spec; fields listed in `broken` hold defaults, not the user's values."""
    errors: tuple[ErrorDetails, ...] = ()
    """Model errors of the original spec (empty when it is valid)."""
    broken: frozenset[Loc] = frozenset()
    """Paths (camelCase keys) whose values failed the models and were reset to their defaults."""

    @property
    def valid(self) -> bool:
        return self.spec is not None and not self.errors

    def usable(self, *paths: str) -> bool:
        """True when every dotted path (e.g. "storage.storageClassName") holds the user's own, valid value:
        nothing at, above or below it was reset."""
        if self.spec is None:
            return False
        if not self.broken:  # a valid spec: every path is the user's (a rule asks ~20 times per parse)
            return True
        below = self._broken_prefixes
        for path in paths:
            want = tuple(path.split("."))
            # Broken at or below `want` (it is a prefix of a broken path), or above it (a prefix of it is broken).
            if want in below or any(want[:k] in self.broken for k in range(len(want))):
                return False
        return True

    @functools.cached_property
    def _broken_prefixes(self) -> frozenset[Loc]:
        """Every prefix of a broken path: ~30 questions per parse, each in O(1), however many paths broke (a
        review with 150,000 unknown keys scanned them all for each)."""
        return frozenset(loc[:k] for loc in self.broken for k in range(1, len(loc) + 1))


def parse_spec(raw: Any) -> ParsedSpec:
    """Never raises: garbage gives `ParsedSpec(None, errors)`.

    Repair loop: every failing field is removed (so its default applies); a missing required field takes
    its parent object with it, a failing list element the whole list. A few rounds reach a valid spec.
    """
    try:
        return ParsedSpec(DittoServerSpec.model_validate(raw, by_name=False))
    except ValidationError as exc:
        errors = tuple(exc.errors(include_url=False))
    except RecursionError:
        return ParsedSpec(None, (_too_deep_error(raw),))
    except (TypeError, ValueError):
        return ParsedSpec(None, (_whole_spec_error(raw),))
    if not isinstance(raw, Mapping) or any(not err["loc"] for err in errors):
        return ParsedSpec(None, errors)
    try:
        data = _copy(raw)
    except RecursionError:  # nested past Python's stack (the model's own check stops at MAX_NESTING)
        return ParsedSpec(None, (_too_deep_error(raw),))
    broken: set[Loc] = set()
    pending = errors
    for _ in range(8):
        for err in pending:
            loc = err["loc"]
            if err["type"] == "missing" and _fill(data, loc):
                broken.add(loc)  # a stand-in keeps the siblings of a missing required field usable
                continue
            target = loc[:-1] if err["type"] == "missing" else loc
            index = next((i for i, part in enumerate(target) if isinstance(part, int)), None)
            target = target[:index] if index is not None else target  # lists go as a whole
            if not target:  # a required top-level field: only `storage`
                data["storage"] = dict(_PLACEHOLDER_STORAGE)
                target = ("storage",)
            elif not _delete(data, target):
                target = target[:1]
                data.pop(target[0], None)
            broken.add(target)
        try:
            return ParsedSpec(DittoServerSpec.model_validate(data, by_name=False), errors, frozenset(broken))
        except ValidationError as exc:
            pending = tuple(exc.errors(include_url=False))
        except (TypeError, ValueError, RecursionError):
            break
    return ParsedSpec(None, errors, frozenset(broken))


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _fill(data: dict[Any, Any], loc: Loc) -> bool:
    node: Any = data
    for part in loc[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and loc and loc[-1] in _REQUIRED_STANDINS and loc[-1] not in node:
        node[loc[-1]] = _REQUIRED_STANDINS[loc[-1]]
        return True
    return False


def _delete(data: dict[Any, Any], path: Loc) -> bool:
    node: Any = data
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and path[-1] in node:
        del node[path[-1]]
        return True
    return False


def _too_deep_error(raw: Any) -> ErrorDetails:
    return {"type": "value_error", "loc": (), "input": raw,
            "msg": f"Value error, nests too deeply to be examined; no field needs more than {MAX_NESTING} levels"}


def _whole_spec_error(raw: Any) -> ErrorDetails:
    return {"type": "model_type", "loc": (), "msg": "Input should be an object", "input": raw}


def required_secrets(spec: DittoServerSpec | Mapping[str, Any]) -> dict[str, set[str]]:
    """Secret name -> keys the user must provide, from a parsed or a raw (leniently parsed) spec."""
    return _secrets_of(ParsedSpec(spec) if isinstance(spec, DittoServerSpec) else parse_spec(spec))


def _secrets_of(parsed: ParsedSpec) -> dict[str, set[str]]:
    """Secret name -> keys the user must provide (empty set: only existence is checked). Generated
    Secrets, optional keys and uses decided by a broken field are left out."""
    refs: dict[str, set[str]] = {}
    spec = parsed.spec
    if spec is None:
        return refs
    for use in secret_uses(spec, Names("placeholder", "", "")):
        if not use.generated and not use.optional and parsed.usable(*use.fields):
            refs.setdefault(use.secret, set()).add(use.key)
    backup = backup_credentials(spec)
    if backup and parsed.usable("percona.backup.enabled", "percona.backup.credentialsSecretRef"):
        refs.setdefault(backup, set())
    if parsed.usable("users", "stores", "s3"):
        for provisioned in provisioned_secrets(spec):
            if not provisioned.optional:
                refs.setdefault(provisioned.secret, set()).add(provisioned.key)
    for mounted in mounted_secrets(spec):
        if parsed.usable(mounted.path.removeprefix("spec.")):
            refs.setdefault(mounted.secret, set()).update(mounted.keys)
    if parsed.usable("controlPlane.tls"):
        client = operator_client_secret(spec)
        if client is not None:
            refs.setdefault(client, set()).update((TLS_CERT_KEY, TLS_KEY_KEY))
    s3 = spec.s3.credentials_secret_ref if spec.s3 is not None else None
    if s3 is not None and parsed.usable("s3.credentialsSecretRef"):
        refs.setdefault(s3.secret_name, set()).update((s3.access_key_id_key, s3.secret_access_key_key))
    return refs


@dataclass(frozen=True)
class References:
    """Everything about the cluster that validating one object needs to know."""

    namespace: str | None = None
    secrets: dict[str, set[str]] = field(default_factory=dict)
    storage_classes: frozenset[str] = frozenset()
    percona: bool = False


def references(obj: Any, parsed: ParsedSpec | None = None) -> References:
    """What `obj` (a DittoServer as JSON) references; never raises, garbage references nothing. ``parsed``:
    its spec, when the caller has parsed it already."""
    if not isinstance(obj, Mapping):
        return References()
    meta = obj.get("metadata")
    namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
    parsed = parsed if parsed is not None else parse_spec(obj.get("spec"))
    spec = parsed.spec
    if spec is None:
        return References(namespace if isinstance(namespace, str) else None)
    classes: set[str] = set()
    if parsed.usable("storage.storageClassName") and spec.storage.storage_class_name:
        classes.add(spec.storage.storage_class_name)
    percona = parsed.usable("percona.enabled") and spec.percona.enabled
    if percona and parsed.usable("percona.storageClassName") and spec.percona.storage_class_name:
        classes.add(spec.percona.storage_class_name)
    return References(
        namespace=namespace if isinstance(namespace, str) and namespace else None,
        secrets=_secrets_of(parsed),
        storage_classes=frozenset(classes),
        percona=percona,
    )
