"""The docs say what the code does: generated parts are current, examples are what the validator answers.

- docs/CRD_REFERENCE.md is `python -m dittoctl.api.reference` output.
- docs/INSTALL.md's values table is generated from config/chart/values.yaml (its `# --` comments).
- docs/TROUBLESHOOTING.md's admission examples: each `<!-- validate: {facts} -->` marker is followed by a
  YAML block (one document: CREATE; two: UPDATE from the first to the second) and the `kubectl` output block,
  whose `* error` and `Warning:` lines must be exactly what `dittoctl.api.rules.validate` returns.

`UPDATE_DOCS=1` rewrites the generated parts instead of failing (exactly `1`, and refused on CI:
tests/support/golden.py).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittoctl.api.facts import ClusterFacts
from dittoctl.api.reference import crd_reference
from dittoctl.api.rules import validate
from tests.support.golden import updating

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
VALUES = ROOT / "config" / "chart" / "values.yaml"
SCHEMA = ROOT / "config" / "chart" / "values.schema.json"
TABLE_START, TABLE_END = "<!-- values:start -->", "<!-- values:end -->"


def test_crd_reference_is_current() -> None:
    path = DOCS / "CRD_REFERENCE.md"
    text = crd_reference()
    if updating("UPDATE_DOCS"):
        path.write_text(text)
    assert path.read_text() == text, "docs/CRD_REFERENCE.md is stale: python -m dittoctl.api.reference > it"


def test_crd_reference_documents_every_field() -> None:
    from dittoctl.api.crd import openapi_schema
    from dittoctl.api.models import DittoServerSpec, DittoServerStatus

    def fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
        node = node.get("items", node) if node.get("type") == "array" else node
        for name, child in (node.get("properties") or {}).items():
            yield path, name
            yield from fields(child, f"{path}.{name}" + ("[]" if child.get("type") == "array" else ""))

    text = crd_reference()
    sections = {m.group(1): m.group(2) for m in re.finditer(r"(?ms)^#+ ((?:spec|status)\S*)\n(.*?)(?=^#|\Z)", text)}
    for top, model in (("spec", DittoServerSpec), ("status", DittoServerStatus)):
        for parent, name in fields(openapi_schema(model), top):
            section = sections.get(parent) or sections.get(f"{parent}[]")
            assert section is not None, f"no section for {parent}"
            row = re.search(rf"(?m)^\| (?:\[)?`{name}`.*$", section)
            assert row is not None, f"{parent}.{name} is not documented"
            assert row.group(0).rstrip(" |").split("|")[-1].strip(), f"{parent}.{name} has no description"
    assert "| `level` | string | `\"INFO\"` |" in text and "`\"ClusterIP\"`" in text  # defaults shown


# -- INSTALL.md values table ----------------------------------------------------------------------------------
def _descriptions() -> dict[str, str]:
    """`# -- text` comments of values.yaml (helm-docs style), by dotted key path."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in VALUES.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
        elif stripped.startswith("#") and pending:
            pending.append(stripped[1:].strip())
        elif match := re.match(r"^(\s*)([A-Za-z][\w]*):", line):
            indent = len(match.group(1))
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, match.group(2))]
            if pending:
                found[".".join(k for _, k in stack)] = " ".join(pending)
            pending = []
        elif not stripped:
            pending = []
    return found


def _leaves() -> Iterator[tuple[str, Any]]:
    schema = json.loads(SCHEMA.read_text())

    def walk(values: dict[str, Any], props: dict[str, Any], path: str) -> Iterator[tuple[str, Any]]:
        for key, value in values.items():
            node = props.get(key, {})
            if isinstance(value, dict) and value and "properties" in node:
                yield from walk(value, node["properties"], f"{path}{key}.")
            else:
                yield f"{path}{key}", value

    yield from walk(yaml.safe_load(VALUES.read_text()), schema["properties"], "")


def values_table() -> str:
    descriptions = _descriptions()
    rows = [TABLE_START, "| value | default | description |", "|---|---|---|"]
    for key, value in _leaves():
        assert key in descriptions, f"values.yaml: {key} has no `# --` description"
        shown = json.dumps(value, separators=(", ", ": "))
        text = descriptions[key].replace("|", "\\|")
        rows.append(f"| `{key}` | `{shown}` | {text} |")
    rows.append(TABLE_END)
    return "\n".join(rows)


def test_install_values_table_is_current() -> None:
    path = DOCS / "INSTALL.md"
    text = path.read_text()
    start, end = text.index(TABLE_START), text.index(TABLE_END) + len(TABLE_END)
    if updating("UPDATE_DOCS"):
        path.write_text(text[:start] + values_table() + text[end:])
        text = path.read_text()
        end = text.index(TABLE_END) + len(TABLE_END)
    assert text[start:end] == values_table(), "docs/INSTALL.md values table is stale: UPDATE_DOCS=1 pytest it"


def test_install_doc_names_only_real_values() -> None:
    """Every `--set key=...` in the docs names a value the chart has (or a field inside an object value)."""
    keys = {k for k, _ in _leaves()}
    seen = 0
    for doc in ("INSTALL.md", "PERCONA.md", "TROUBLESHOOTING.md"):
        for raw in re.findall(r"--set(?:-string)? '?([^=\s]+)=", (DOCS / doc).read_text()):
            path = re.sub(r"\[\d+\]", "", raw).split("\\.")[0]
            # zsh reads an unquoted [ as a glob ("no matches found"): an index is quoted.
            assert "[" not in raw or f"--set '{raw}=" in (DOCS / doc).read_text(), f"{doc}: quote --set {raw}=..."
            assert any(path == k or path.startswith(f"{k}.") for k in keys), f"{doc}: --set {raw} is no chart value"
            seen += 1
    assert seen > 10


# -- TROUBLESHOOTING.md admission examples --------------------------------------------------------------------
def _examples() -> list[Any]:
    text = (DOCS / "TROUBLESHOOTING.md").read_text()
    pattern = re.compile(r"<!-- validate: (\{.*?\}) -->\s*```yaml\n(.*?)```\s*```text\n(.*?)```", re.S)
    return [pytest.param(json.loads(m.group(1)), m.group(2), m.group(3), id=f"example-{i}")
            for i, m in enumerate(pattern.finditer(text), 1)]


def test_troubleshooting_has_admission_examples() -> None:
    assert len(_examples()) >= 5


@pytest.mark.parametrize(("facts", "manifest", "output"), _examples())
def test_troubleshooting_admission_example(facts: dict[str, Any], manifest: str, output: str) -> None:
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    old, new = (docs[0], docs[1]) if len(docs) == 2 else (None, docs[0])
    snapshot = ClusterFacts(
        storage_classes=frozenset(facts["storage_classes"]) if "storage_classes" in facts else None,
        percona_served=facts.get("percona_served"),
        secrets={k: (frozenset(v) if v is not None else None) for k, v in facts.get("secrets", {}).items()},
        expandable_classes=frozenset(facts["expandable_classes"]) if "expandable_classes" in facts else None,
        default_storage_class=facts.get("default_storage_class"),
    )
    verdict = validate(new, old, snapshot)
    errors, warnings = [], []
    for line in output.splitlines():
        if line.startswith("Warning: "):
            warnings.append(line.removeprefix("Warning: "))
        elif line.startswith("* "):
            errors.append(line[2:])
        elif " is invalid: " in line and not line.endswith("is invalid: "):
            errors.append(line.split(" is invalid: ", 1)[1])
    assert errors == verdict.messages, f"the validator now says {verdict.messages}"
    assert warnings == verdict.warnings, f"the validator now warns {verdict.warnings}"


# -- links ----------------------------------------------------------------------------------------------------
def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"(?m)^#+ (.+)$", re.sub(r"(?ms)^```.*?^```", "", markdown))}


@pytest.mark.parametrize("doc", ["INSTALL.md", "PERCONA.md", "TROUBLESHOOTING.md", "CRD_REFERENCE.md"])
def test_doc_links_resolve(doc: str) -> None:
    text = crd_reference() if doc == "CRD_REFERENCE.md" else (DOCS / doc).read_text()
    text = re.sub(r"(?ms)^```.*?^```", "", text)  # code blocks hold no links
    links = re.findall(r"\]\((?!https?://)([^)#\s]*)(?:#([^)\s]+))?\)", text)
    assert links, f"{doc}: no relative link found (the pattern no longer matches the docs?)"
    for target, anchor in links:
        path = (DOCS / target).resolve() if target else DOCS / doc
        assert path.exists(), f"{doc}: link to missing {target}"
        if anchor:
            linked = crd_reference() if path.name == "CRD_REFERENCE.md" else path.read_text()
            assert anchor in _anchors(linked), f"{doc}: no heading #{anchor} in {path.name}"


# -- docs/ARCHITECTURE.md -----------------------------------------------------------------------------------
ARCHITECTURE = (DOCS / "ARCHITECTURE.md").read_text()


def test_architecture_layers_are_the_enforced_contract() -> None:
    """The layer table lists, top to bottom, exactly the modules of the import-linter contract."""
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    enforced = [sorted(m.strip() for m in re.split(r"[|:]", layer) if m.strip() not in ("", "dittoctl.__main__"))
                for layer in contract["layers"]]
    table = re.findall(r"^\| [A-Za-z][^|]* \| (`[^|]*`) \|", ARCHITECTURE, re.M)
    documented = [sorted(re.findall(r"`([a-z_.]+)`", cell)) for cell in table]
    assert documented == enforced


# The call in reconciler/reconcile.py that does each phase's work. A phase may read earlier (the StatefulSet is
# observed before `volumes` re-creates it), so the order is that of these calls.
PHASE_WORK = {"spec": "check_spec", "finalizer": "ensure_finalizer", "secrets": "ensure_generated",
              "config": "apply_config_map", "database": "ensure_database", "volumes": "expand_volumes",
              "statefulset": "apply_statefulset", "fileservice": "provision", "deletion": "finalize",
              "paused": "report_paused"}


def _pass_calls() -> list[str]:
    """The functions a pass calls, in the order reconcile.py's `Reconciler.reconcile` reaches them, with the
    Reconciler's own methods (`self._converge`, `self._statefulset`) followed where they are called."""
    tree = ast.parse((ROOT / "reconciler" / "reconcile.py").read_text())
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Reconciler"]
    methods = {n.name: n for n in cls.body if isinstance(n, ast.AsyncFunctionDef | ast.FunctionDef)}
    order: list[str] = []

    def walk(node: ast.AST, inside: frozenset[str]) -> None:
        for child in ast.iter_child_nodes(node):  # fields in source order
            if isinstance(child, ast.Call):
                func = child.func
                if isinstance(func, ast.Name):
                    order.append(func.id)
                elif (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self"
                      and func.attr in methods and func.attr not in inside):
                    walk(child, inside)  # its arguments first
                    walk(methods[func.attr], inside | {func.attr})
                    continue
            walk(child, inside)

    walk(methods["reconcile"], frozenset({"reconcile"}))
    return order


def test_architecture_names_every_phase_in_pass_order() -> None:
    phases = sorted(p.stem for p in (ROOT / "reconciler" / "phases").glob("*.py") if p.stem != "__init__")
    paragraph = ARCHITECTURE.split("A pass: ", 1)[1].split("\n\n", 1)[0]
    named = re.findall(r"`([a-z]+)`", paragraph)
    assert sorted(named) == phases, "every module in reconciler/phases is named in the pass description"
    assert sorted(PHASE_WORK) == phases, "a new phase: name the call that does its work in PHASE_WORK"
    imports = ast.parse((ROOT / "reconciler" / "reconcile.py").read_text()).body
    imported = {a.name: n.module for n in imports if isinstance(n, ast.ImportFrom) for a in n.names}
    for phase, work in PHASE_WORK.items():
        assert imported.get(work) == f"reconciler.phases.{phase}", f"reconcile.py imports {work} from {phase}"
    # "spec → finalizer and secrets → ... → fileservice → status. `deletion` replaces them ..., `paused` ..."
    steps_text, _, instead = paragraph.partition("→ status.")
    steps = [found for step in steps_text.split("→") if (found := set(re.findall(r"`([a-z]+)`", step)))]
    step_of = {phase: i for i, step in enumerate(steps) for phase in step}
    assert set(re.findall(r"`([a-z]+)`", instead)) == {"deletion", "paused"}
    calls = _pass_calls()
    first = {phase: calls.index(work) for phase, work in PHASE_WORK.items() if work in calls}
    assert set(first) == set(PHASE_WORK), f"the pass never calls {set(PHASE_WORK) - set(first)}"
    in_code = sorted(step_of, key=first.__getitem__)
    assert [step_of[p] for p in in_code] == sorted(step_of[p] for p in in_code), (
        f"docs/ARCHITECTURE.md orders the pass {[sorted(s) for s in steps]}, reconcile.py calls {in_code}")
    assert max(first["deletion"], first["paused"]) < first["spec"], "deletion and paused come instead of a pass"


def test_architecture_paths_exist() -> None:
    paths = re.findall(r"`((?:dittoctl|reconciler|webhook|certs|config)/[\w/.]+)`", ARCHITECTURE)
    assert len(paths) > 10, paths
    for path in paths:
        assert (ROOT / path).exists(), f"docs/ARCHITECTURE.md names {path}, which does not exist"


# -- facts the docs state, checked against the code ---------------------------------------------------------
def test_every_run_setting_variable_is_documented() -> None:
    cli = (ROOT / "dittoctl" / "cli.py").read_text()
    names = {f"DITTOFS_OPERATOR_{n}" for n in re.findall(r'(?:_env|option|switch)\((?:"--[\w-]+", )?"([A-Z_]+)"', cli)}
    names |= set(re.findall(r'"(DITTOFS_[A-Z_]+)"', (ROOT / "dittoctl" / "kube" / "logs.py").read_text()))
    install = (DOCS / "INSTALL.md").read_text()
    assert len(names) >= 18 and not {n for n in names if f"`{n}`" not in install}


def test_every_run_flag_has_its_variable_row() -> None:
    from dittoctl.cli import parser

    run = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    flags = {o for a in run._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    table = (DOCS / "INSTALL.md").read_text().split("## `dittoctl run` settings", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `DITTOFS_")]
    assert len(flags) >= 20
    assert not {f for f in flags - {"--kubeconfig"} if not any(f"`{f}`" in row for row in rows)}


def test_every_event_reason_is_documented() -> None:
    from dittoctl.api.conditions import EventReason

    docs = "".join(p.read_text() for p in DOCS.glob("*.md"))
    assert not [r.value for r in EventReason if f"`{r.value}`" not in docs]


def test_every_condition_and_reason_is_in_the_troubleshooting_table() -> None:
    from dittoctl.api.conditions import ConditionType, Reason

    table = (DOCS / "TROUBLESHOOTING.md").read_text().split("Conditions and their reasons", 1)[1].split("\n\n", 2)[1]
    missing = [v for v in [*ConditionType, *Reason] if f"`{v.value}`" not in table]
    assert not missing, f"document these in TROUBLESHOOTING.md's conditions table: {missing}"


def test_links_in_the_readme_and_docs_stay_inside_the_repository() -> None:
    checked = 0
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", page.read_text(), flags=re.S))
        for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", prose):
            if "://" in target:
                continue
            path = (page.parent / target).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), f"{page.name} links {target}"
            checked += 1
        assert "../shared" not in page.read_text(), f"{page.name} points outside the repository"
    assert checked > 20, "the link pattern no longer finds the docs' links"


def test_install_permission_table_matches_the_registered_kinds_and_the_chart() -> None:
    """Every namespaced rule the chart grants has its row in INSTALL.md's ClusterRole table, verbs and all."""
    from tests.unit.test_chart import NAMESPACED_RULES

    table = (DOCS / "INSTALL.md").read_text().split("ClusterRole `dittofs-operator` ", 1)[1].split("\n\n", 2)[1]
    rows = {("" if g.strip() == "core" else g.strip("` "), r.strip("` "), tuple(v.strip() for v in verbs.split(",")))
            for g, r, verbs in re.findall(r"^\| ([^|]+) \| `([^`]+)` \| ([^|]+) \|", table, re.M)}
    expected = {(groups[0], resources[0], verbs) for groups, resources, verbs, _ in NAMESPACED_RULES}
    assert rows == expected


def test_the_missing_percona_wording_in_the_docs_is_the_codes() -> None:
    from dittoctl.api.facts import percona_not_served

    assert f"`PerconaNotFound`: `{percona_not_served()}`" in (DOCS / "TROUBLESHOOTING.md").read_text()
