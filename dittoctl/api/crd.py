"""Generate the DittoServer CustomResourceDefinition from the pydantic models.

pydantic emits JSON Schema; Kubernetes wants a *structural* OpenAPI v3 subset. The walk below inlines
`$ref`s, turns `Optional[X]` into `X` + `nullable`, drops `title` and `additionalProperties: false`, and
gives object-typed parents `default: {}` so the apiserver applies nested defaults when a parent is omitted.
"""

from __future__ import annotations

import ast
import copy
import functools
import inspect
import json
import textwrap
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import yaml
from pydantic import BaseModel

from dittoctl.api import models
from dittoctl.api.kinds import DITTOSERVERS

JsonSchema = dict[str, Any]
_DROP = {"title", "$defs"}


def _inline(node: Any, defs: dict[str, JsonSchema]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        # The referring field's own description and default win over the class docstring.
        target.update({k: v for k, v in node.items() if k != "$ref"})
        return _inline(target, defs)
    return {key: _inline(value, defs) for key, value in node.items() if key not in _DROP}


_MAX_LENGTH = 64  # no quantity, duration, identifier or version needs more
# Values people type (and mistype) by hand; names keep their pattern, whose length limit would cost more.
_TYPED_BY_HAND = frozenset({models.QUANTITY_PATTERN, models._GO_DURATION.pattern, models._IDENTIFIER.pattern,
                            models.SNAPSHOT_INTERVAL, r"^[0-9]+\.[0-9]+\.[0-9]+$"})


def _structural(node: JsonSchema, required: bool = True) -> JsonSchema:
    node = dict(node)
    variants = node.pop("anyOf", None)
    if variants is not None:
        concrete = [v for v in variants if v.get("type") != "null"]
        if len(concrete) != 1:
            raise ValueError(f"cannot express anyOf {variants!r} structurally")
        merged = {**concrete[0], **node}
        merged["nullable"] = True
        if merged.get("default", ...) is None:
            del merged["default"]
        node = merged
    if "const" in node:  # not a keyword of a CRD's schema: the apiserver drops it (or refuses the CRD)
        node["enum"] = [node.pop("const")]
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    if node.get("type") == "object" and "properties" in node:
        needed = set(node.get("required", []))
        node["properties"] = {
            name: _structural(child, name in needed) for name, child in node["properties"].items()
        }
        optional_parent = not required and "default" not in node and not node.get("nullable") and not needed
        if optional_parent and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["default"] = {}
        if isinstance(node.get("default"), dict) and node["default"]:
            node["default"] = {}
    elif node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _structural(node["additionalProperties"])
    if node.get("type") == "array" and "items" in node:
        node["items"] = _structural(node["items"])
    if node.get("x-kubernetes-preserve-unknown-fields"):
        node.setdefault("type", "object")
        node.pop("additionalProperties", None)
    return node


@functools.cache
def _attribute_docs(cls: type) -> dict[str, str]:
    """The string literal under each annotated attribute of `cls` (and of its bases): the field's description.

    pydantic's ``use_attribute_docstrings`` reads the same, but at class creation, which read and parsed the
    source of every model each time the operator started (70 ms); only the schema needs them."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__[1:]):
        if issubclass(base, BaseModel) and base is not BaseModel:
            docs.update(_attribute_docs(base))
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    assert isinstance(body, ast.ClassDef)
    for node, following in zip(body.body, body.body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _describe(node: JsonSchema, model: type[BaseModel]) -> None:
    """Sets each property's description from its attribute docstring, unless the field spells one itself."""
    docs = _attribute_docs(model)
    properties = node.get("properties", {})
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key in properties and name in docs and field.description is None:
            # Keys in pydantic's own order (sorted), as if it had set the description itself.
            properties[key] = dict(sorted({"description": docs[name], **properties[key]}.items()))


def models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """The models a field's annotation names (through Optional, unions, lists and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, typing.Annotated):
        for arg in typing.get_args(annotation):
            yield from models_in(arg)


def _models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model the schema of `root` names in its $defs, by that name (the class name here)."""
    found = {root.__name__: root}
    stack = [root]
    while stack:
        for field in stack.pop().model_fields.values():
            for model in models_in(field.annotation):
                if model.__name__ not in found:
                    found[model.__name__] = model
                    stack.append(model)
    return found


def openapi_schema(model: type[BaseModel]) -> JsonSchema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    named = _models(model)
    _describe(raw, model)
    for name, node in defs.items():
        _describe(node, named[name])
    return _structural(_inline(raw, defs))


_MAX_EVALUATIONS = 1000  # times one rule may run per object: the product of maxItems of the lists around it


def _humane(node: Any, evaluations: float = 1) -> Any:
    """A `pattern` makes the apiserver answer with the raw regular expression. Where the models know what the
    pattern means, the schema carries a CEL rule with that wording instead, bounded by maxLength so the
    estimated cost stays inside the apiserver's budget. A rule inside a list runs once per item: inside an
    unbounded list (or lists whose maxItems multiply past _MAX_EVALUATIONS) the estimate exceeds the budget,
    so those keep their pattern (the webhook's own message still explains them)."""
    if isinstance(node, list):
        return [_humane(item, evaluations) for item in node]
    if not isinstance(node, dict):
        return node
    inner = evaluations * node.get("maxItems", float("inf")) if node.get("type") == "array" else evaluations
    node = {key: _humane(value, inner if key == "items" else evaluations) for key, value in node.items()}
    message = models.PATTERN_MESSAGES.get(node.get("pattern", ""))
    if message is not None and evaluations <= _MAX_EVALUATIONS and node["pattern"] in _TYPED_BY_HAND:
        pattern = node.pop("pattern")
        node["maxLength"] = min(node.get("maxLength", _MAX_LENGTH), _MAX_LENGTH)
        # The apiserver shows a rule's failing value as its type ("string"): the expression quotes what was typed.
        rule = {"rule": f"self.matches({json.dumps(pattern)})", "message": message,
                "messageExpression": f"'\"' + self + '\" ' + {json.dumps(message)}"}
        node["x-kubernetes-validations"] = [*node.get("x-kubernetes-validations", []), rule]
    return node


def build_crd() -> JsonSchema:
    """The CRD as a dict, ready for YAML."""
    spec = _humane(openapi_schema(models.DittoServerSpec))
    status = openapi_schema(models.DittoServerStatus)
    spec.pop("default", None)
    status.pop("default", None)
    spec["description"] = "Desired state of a DittoFS server."
    status["description"] = "Observed state, written by the operator."
    columns = [
        {"name": "Ready", "type": "string", "jsonPath": ".status.ready", "description": "Ready replicas"},
        {"name": "Status", "type": "string", "jsonPath": ".status.phase", "description": "Phase"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoints.nfs", "priority": 1,
         "description": "NFS endpoint (listening)"},
        {"name": "SMB", "type": "string", "jsonPath": ".status.endpoints.smb", "priority": 1,
         "description": "SMB endpoint (listening)"},
        # A column shows one value (the apiserver takes a JSONPath's first result): say which one it is.
        {"name": "Share", "type": "string", "jsonPath": ".status.shares[0].name", "priority": 1,
         "description": "First share DittoFS serves (all of them: status.shares)"},
        {"name": "Image", "type": "string", "jsonPath": ".spec.image", "priority": 1},
    ]
    root = {
        "type": "object",
        "description": models.DittoServer.__doc__,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": DITTOSERVERS.crd_name,
            "labels": {"app.kubernetes.io/name": "dittofs-operator", "app.kubernetes.io/part-of": "dittofs"},
        },
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": models.KIND,
                "listKind": f"{models.KIND}List",
                "plural": models.PLURAL,
                "singular": models.SINGULAR,
                "shortNames": list(models.SHORT_NAMES),
                "categories": list(models.CATEGORIES),
            },
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    # `kubectl scale dittoserver demo --replicas=0` stops a server, as `replicas: 0` does.
                    "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                             "statusReplicasPath": ".status.replicas"}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "integer": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "string": ("a string", lambda v: isinstance(v, str)),
    "boolean": ("true or false", lambda v: isinstance(v, bool)),
    "object": ("an object", lambda v: isinstance(v, dict)),
    "array": ("a list", lambda v: isinstance(v, list)),
}


_STRINGS: JsonSchema = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA_SCHEMA: JsonSchema = {"type": "object", "properties": {
    "name": {"type": "string"}, "namespace": {"type": "string"}, "generateName": {"type": "string"},
    "labels": _STRINGS, "annotations": _STRINGS}}
"""The ObjectMeta fields a manifest writes whose JSON type the apiserver checks (`tier: 1` is a number)."""


def type_errors(value: Any, schema: JsonSchema, path: str) -> list[str]:
    """The values the apiserver's structural schema refuses by their JSON type, before any webhook ("1" for an
    integer: the models, in lax mode, would read it as 1). Types only; ranges and patterns are the models'.
    A null is pruned by the apiserver, not refused."""
    if value is None or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, int | str) and not isinstance(value, bool)
        return [] if ok else [f"{path}: must be an integer or a string (got {_json_name(value)})"]
    kind = schema.get("type")
    if kind not in _TYPES:
        return []
    words, accepts = _TYPES[kind]
    if not accepts(value):
        shown = json.dumps(value, default=str)[:40]
        return [f"{path}: must be {words} (got {_json_name(value)} {shown}); the apiserver refuses it before the "
                "webhook"]
    found: list[str] = []
    if kind == "object":
        properties, extra = schema.get("properties") or {}, schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                found += type_errors(item, sub, f"{path}.{key}")
    elif kind == "array" and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += type_errors(item, schema["items"], f"{path}[{i}]")
    return found


def _json_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__)


def spec_schema() -> JsonSchema:
    """The CRD's schema of `spec`."""
    spec: JsonSchema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def dump_yaml(obj: Any) -> str:
    """Deterministic YAML (insertion order kept, block style)."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110)


def crd_yaml() -> str:
    return "# Generated by `dittoctl crd` from dittoctl/api/models.py. Do not edit.\n" + dump_yaml(build_crd())
