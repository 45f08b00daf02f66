"""The pod fields a DittoServer passes through to its StatefulSet (affinity, tolerations, securityContext, ...),
checked against the Kubernetes API's own types.

The CRD keeps them as free-form objects, so the apiserver stores a typo (`nodeAfinity`) or a string for an integer
(`maxSkew: "1"`); the StatefulSet's server-side apply then fails on every pass ("field not declared in schema"),
and the server stops converging. The types come from kubernetes_asyncio's generated models (read only when
such a field is set). They are read as data, with ``ast``, from the models' source: importing them would load the
package's ~850 modules (45 MiB, which the operator avoids: dittoctl/kube/client.py).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# spec field -> its Kubernetes type, written as the generated models write types.
PASS_THROUGH = {
    "resources": "V1ResourceRequirements",
    "securityContext": "V1SecurityContext",
    "podSecurityContext": "V1PodSecurityContext",
    "affinity": "V1Affinity",
    "tolerations": "list[V1Toleration]",
    "topologySpreadConstraints": "list[V1TopologySpreadConstraint]",
}
_SCALARS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "str": ("a string", str), "int": ("an integer", int), "bool": ("true or false", bool),
    "float": ("a number", (int, float)), "datetime": ("a timestamp string", str), "date": ("a date string", str),
}
MAX_ERRORS = 20


@functools.cache
def _sources() -> dict[str, Path]:
    """Model name, lower-cased without '_' (``v1affinity``) -> its source file."""
    spec = importlib.util.find_spec("kubernetes_asyncio")  # finds the package without running its __init__
    if spec is None or spec.origin is None:
        return {}
    directory = Path(spec.origin).parent / "client" / "models"
    return {path.stem.replace("_", ""): path for path in directory.glob("*.py")}


@functools.cache
def _fields(model: str) -> dict[str, str] | None:
    """JSON key -> type of a generated model; None for a name that is no model."""
    path = _sources().get(model.lower())
    if path is None:
        return None
    tables: dict[str, dict[str, str]] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef) and node.name == model:
            for item in node.body:
                target = item.targets[0] if isinstance(item, ast.Assign) and len(item.targets) == 1 else None
                if isinstance(item, ast.Assign) and isinstance(target, ast.Name) and target.id in (
                        "openapi_types", "attribute_map"):
                    tables[target.id] = ast.literal_eval(item.value)
    kinds, keys = tables.get("openapi_types"), tables.get("attribute_map")
    if kinds is None or keys is None:
        return None
    return {keys[attr]: kind for attr, kind in kinds.items()}


def kube_errors(value: Any, kind: str, path: str) -> list[str]:
    """'path: problem' for every unknown key and wrongly typed value of ``value`` as a ``kind`` (at most
    MAX_ERRORS). Quantities are left to the caller (an integer or a string); `object` means any JSON."""
    found: list[str] = []
    _walk(value, kind, path, found)
    return found[:MAX_ERRORS]


def _walk(value: Any, kind: str, path: str, found: list[str]) -> None:
    if value is None or kind == "object" or len(found) >= MAX_ERRORS:
        return
    if kind.startswith("list[") and kind.endswith("]"):
        if not isinstance(value, list):
            found.append(f"{path}: must be a list (got {_shown(value)})")
            return
        for i, item in enumerate(value):
            _walk(item, kind[5:-1], f"{path}[{i}]", found)
        return
    if kind.startswith("dict(") and kind.endswith(")"):
        if not isinstance(value, Mapping):
            found.append(f"{path}: must be a map (got {_shown(value)})")
            return
        inner = kind[5:-1].split(",", 1)[1].strip()
        for key, item in value.items():
            _walk(item, inner, key_path(path, str(key), bracket=True), found)
        return
    if kind in _SCALARS:
        words, types = _SCALARS[kind]
        if isinstance(value, bool) != (kind == "bool") or not isinstance(value, types):
            found.append(f"{path}: must be {words} (got {_shown(value)})")
        return
    fields = _fields(kind)
    if fields is None:
        return  # a type this check does not know: the apiserver judges it
    if not isinstance(value, Mapping):
        found.append(f"{path}: must be an object (got {_shown(value)})")
        return
    for key, item in value.items():
        sub = fields.get(key)
        if sub is None:
            found.append(f"{key_path(path, str(key))}: unknown field of a Kubernetes {kind.removeprefix('V1')} "
                         "(check its spelling); the StatefulSet could not be applied with it")
        else:
            _walk(item, sub, key_path(path, str(key)), found)


def key_path(path: str, key: str, *, bracket: bool = False) -> str:
    """``path`` and a field name (``.name``) or a map key (``[key]``), an odd one escaped and cut: a message is
    ``path: text``, so ": " or a newline in a key would blur where the path ends."""
    if not bracket and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}"
    shown = json.dumps(key)[1:-1]  # escapes control characters
    return f"{path}[{(shown if len(shown) <= 40 else shown[:37] + '...').replace(': ', ':')}]"


def _shown(value: Any) -> str:
    kind = "a string" if isinstance(value, str) else "a list" if isinstance(value, list) else \
        "an object" if isinstance(value, Mapping) else "a boolean" if isinstance(value, bool) else \
        "a number" if isinstance(value, int | float) else type(value).__name__
    return f"{kind} {json.dumps(value, default=str)[:40]}"
