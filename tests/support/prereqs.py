"""Missing prerequisites fail the run; leaving an area out takes an explicit, printed opt-out.

A test whose tool is missing (the `dfs` binary, the PostgreSQL server binaries, network namespaces) proves
nothing, so ``missing()`` fails it, naming what to install. Someone who knows they cannot prove an area
here sets ``DITTOFS_TEST_WITHOUT=postgres,netns`` (areas below): those tests are then skipped, and the end
of the run lists every area and test that was not proven. Any other skip is turned into a failure by
tests/conftest.py, so nothing is skipped silently.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

import pytest

T = TypeVar("T")
OPT_OUT_VAR = "DITTOFS_TEST_WITHOUT"
AREAS = {
    "dfs": "the contract tests against the real dfs v0.29.0 binary (tests/contract)",
    "postgres": "dfs on a real PostgreSQL, with and without TLS (tests/contract)",
    "netns": "dfs servers isolated in private network namespaces (needs root or CAP_SYS_ADMIN)",
    "identity": "dfs against a real OpenLDAP slapd and an MIT ktutil keytab (tests/contract)",
    "blkio": "dfs starting under a disk read limit (needs root and cgroup v1's blkio controller)",
}
# The reason of every opt-out skip starts with this, which is how tests/conftest.py tells them apart.
OPT_OUT_TAG = "NOT PROVEN (opted out"


@dataclass
class Unproven:
    """What this session left out: area -> its reason and the node ids of the tests skipped for it."""

    reasons: dict[str, str] = field(default_factory=dict)
    tests: dict[str, list[str]] = field(default_factory=dict)


UNPROVEN = Unproven()


def on_ci() -> bool:
    """``CI=true`` (``.ci/run`` exports it): every opt-out is ignored, everything must be proven."""
    return os.environ.get("CI", "").lower() in ("1", "true")


def opted_out() -> set[str]:
    """The areas this run leaves out; none under CI ($CI set), where everything must be proven."""
    areas = {a.strip() for a in os.environ.get(OPT_OUT_VAR, "").split(",") if a.strip()}
    unknown = areas - AREAS.keys()
    if unknown:  # a typo must not turn into "everything was proven"
        raise pytest.UsageError(f"{OPT_OUT_VAR}: unknown area(s) {sorted(unknown)}; known: {sorted(AREAS)}")
    return set() if on_ci() else areas


def missing(area: str, reason: str) -> NoReturn:
    """A prerequisite of ``area`` is missing: fail, or skip and record it when the run opted out."""
    assert area in AREAS, area
    if area in opted_out():
        UNPROVEN.reasons.setdefault(area, reason)
        pytest.skip(f"{OPT_OUT_TAG} {OPT_OUT_VAR}={area}): {reason}")
    pytest.fail(f"missing prerequisite for {AREAS[area]}: {reason}\n"
                f"Install it (`make bootstrap`), or leave the area out explicitly with {OPT_OUT_VAR}={area} "
                f"(the run then lists it as not proven).", pytrace=False)


def require(area: str, get: Callable[[], T], *errors: type[BaseException]) -> T:
    """``get()``, where any of ``errors`` means a prerequisite of ``area`` is missing (see ``missing``)."""
    try:
        return get()
    except errors as exc:
        reason = str(exc)
    missing(area, reason)  # outside the except: the report shows the reason, not a chained traceback


def record_skip(nodeid: str, reason: str) -> bool:
    """Note a skipped test (or module); False unless it is an opt-out skip (every other skip is a defect), and
    always False on CI, where nothing may be left unproven.

    Opt-outs that are not areas here (e.g. DITTOFS_TESTBED_REAL_NODE=0 in tests/conftest.py) say
    "NOT PROVEN" too and are listed under their reason.
    """
    if "NOT PROVEN" not in reason or on_ci():
        return False
    area = next((a for a in AREAS if f"{OPT_OUT_VAR}={a})" in reason), reason.removeprefix("Skipped: ")[:100])
    UNPROVEN.reasons.setdefault(area, reason)
    UNPROVEN.tests.setdefault(area, []).append(nodeid)
    return True


def partly_unproven(nodeid: str, area: str, reason: str) -> None:
    """A test that ran without the part an opt-out leaves out (it passes, and that part is listed as not
    proven, like a skipped test)."""
    UNPROVEN.reasons.setdefault(area, reason)
    UNPROVEN.tests.setdefault(area, []).append(f"{nodeid} (in part)")


def summary() -> list[str]:
    """Lines for the end of the run: every area left out and the tests that did not run because of it."""
    if not UNPROVEN.reasons:
        return []
    lines = ["NOT PROVEN in this run (explicit opt-outs; without them these tests fail):"]
    for area, reason in sorted(UNPROVEN.reasons.items()):
        tests = UNPROVEN.tests.get(area, [])
        lines.append(f"  {area}: {AREAS.get(area, '')} -- {len(tests)} test(s) skipped; {reason}")
        lines += [f"    {t}" for t in tests]
    return lines
