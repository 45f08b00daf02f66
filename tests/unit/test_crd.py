"""The CRD generated from the models: structural, committed, and useful to `kubectl explain`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dittoctl.api.crd import build_crd, crd_yaml
from dittoctl.api.kinds import DITTOSERVERS

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "config" / "crd" / "dittoservers.yaml"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found.extend(_walk(value, f"{path}.{key}"))
        if isinstance(node.get("items"), dict):
            found.extend(_walk(node["items"], f"{path}[]"))
        if isinstance(node.get("additionalProperties"), dict):
            found.extend(_walk(node["additionalProperties"], f"{path}{{}}"))
    return found


# apiextensions.k8s.io/v1 JSONSchemaProps: a key outside it is dropped (under items) or refuses the CRD.
SCHEMA_KEYS = frozenset({
    "id", "$schema", "$ref", "description", "type", "format", "title", "default", "maximum", "exclusiveMaximum",
    "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems",
    "multipleOf", "enum", "maxProperties", "minProperties", "required", "items", "allOf", "oneOf", "anyOf", "not",
    "properties", "additionalProperties", "patternProperties", "dependencies", "additionalItems", "definitions",
    "externalDocs", "example", "nullable", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string", "x-kubernetes-list-map-keys", "x-kubernetes-list-type", "x-kubernetes-map-type",
    "x-kubernetes-validations"})


def schema() -> dict[str, Any]:
    crd = build_crd()
    root: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def test_committed_crd_is_fresh() -> None:
    assert COMMITTED.read_text() == crd_yaml(), "config/crd is stale: run `dittoctl crd > config/crd/dittoservers.yaml`"


def test_schema_is_structural() -> None:
    for path, node in _walk(schema()):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert "type" in node, f"{path} has no type"


def test_every_schema_key_is_one_a_crd_knows() -> None:
    """pydantic writes `const` for a one-value Literal: a CRD has no such keyword (it is an enum of one)."""
    for path, node in _walk(schema()):
        assert set(node) <= SCHEMA_KEYS, f"{path}: {sorted(set(node) - SCHEMA_KEYS)}"


def test_lists_of_named_entries_are_maps_to_server_side_apply() -> None:
    """Two managers (Argo CD, a team's `kubectl apply --server-side`) each own their entries of these lists;
    atomic, the last applier replaced the whole list and the operator deleted the other's users and shares."""
    nodes = dict(_walk(schema()))
    for path in (".spec.users", ".spec.groups", ".spec.shares", ".spec.stores.metadata", ".spec.stores.local",
                 ".spec.stores.remote", ".status.conditions"):
        key = "type" if path.endswith("conditions") else "name"
        node = nodes[path]
        assert node["x-kubernetes-list-type"] == "map" and node["x-kubernetes-list-map-keys"] == [key], path
        assert key in node["items"]["required"], f"{path}: a map key must be required"


def test_every_spec_field_is_described() -> None:
    spec = schema()["properties"]["spec"]
    missing = [p for p, n in _walk(spec) if p and not p.endswith(("[]", "{}")) and "description" not in n]
    assert not missing


def test_parents_with_defaults_default_to_empty_objects() -> None:
    props = schema()["properties"]["spec"]["properties"]
    assert props["service"]["default"] == {}
    assert props["service"]["properties"]["type"]["default"] == "ClusterIP"
    assert props["adapters"]["default"] == {}
    assert props["adapters"]["properties"]["nfs"]["default"] == {}
    assert props["storage"].get("default") is None  # metadataSize is required, so storage is too
    assert "contentSize" not in props["storage"].get("required", [])
    assert "default" not in props["storage"]["properties"]["contentSize"]  # the cacheSize alias must apply


def test_names_columns_and_subresources() -> None:
    crd = build_crd()
    # The name the CRD gets is the one the operator's readiness message and the tests wait for.
    assert crd["metadata"]["name"] == DITTOSERVERS.crd_name == "dittoservers.dittofs.dittofs.com"
    names = crd["spec"]["names"]
    assert names["plural"] == DITTOSERVERS.plural and crd["spec"]["group"] == DITTOSERVERS.group
    assert names["shortNames"] == ["ditto", "dittofs"] and names["categories"] == ["dittofs"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                               "statusReplicasPath": ".status.replicas"}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Ready"]["jsonPath"] == ".status.ready"
    assert columns["Status"]["jsonPath"] == ".status.phase"
    assert columns["Endpoint"]["priority"] == 1 and columns["Image"]["priority"] == 1
    # The apiserver shows a column's first JSONPath result only: no column may promise a list.
    assert not [c["name"] for c in columns.values() if "[*]" in c["jsonPath"]]


def test_yaml_round_trips() -> None:
    assert yaml.safe_load(crd_yaml()) == build_crd()
