"""constraints.txt pins every package pyproject.toml asks for, so bootstrap and the image install what CI tested."""

from __future__ import annotations

import re
import tomllib

from tests.support.paths import ROOT


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_dependency_and_test_tool_is_pinned_exactly() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in [*project["dependencies"], *project["optional-dependencies"]["test"]]}
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[_name(name)] = version
    assert not wanted - pins.keys(), f"not pinned in constraints.txt: {sorted(wanted - pins.keys())}"
    assert "pip" in pins, "bootstrap installs pip from constraints.txt too"
