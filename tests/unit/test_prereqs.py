"""What a run without some of its prerequisites says at its end (tests/support/prereqs.py)."""

from __future__ import annotations

import pytest

from tests.support import prereqs


def test_a_part_left_out_of_a_passing_test_is_listed_as_not_proven(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prereqs, "UNPROVEN", prereqs.Unproven())
    assert prereqs.summary() == []
    prereqs.partly_unproven("tests/e2e/test_demo.py::test_demo", "real node", "NOT PROVEN (opted out by X=0): I/O")
    assert prereqs.summary() == [
        "NOT PROVEN in this run (explicit opt-outs; without them these tests fail):",
        "  real node:  -- 1 test(s) skipped; NOT PROVEN (opted out by X=0): I/O",
        "    tests/e2e/test_demo.py::test_demo (in part)"]


def test_an_unknown_opt_out_area_is_an_error_not_everything_proven(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv(prereqs.OPT_OUT_VAR, "postgress")
    with pytest.raises(pytest.UsageError, match="unknown area"):
        prereqs.opted_out()
