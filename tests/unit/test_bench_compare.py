"""bench/compare.py: alternated pairs, the figures a run wrote, paired statistics and the report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.compare import (
    FOREIGN,
    OPERATOR,
    SPEED,
    Paired,
    head_edits,
    markdown,
    metrics,
    paired,
    parse_args,
    schedule,
    unmeasured,
)
from bench.machine import OPERATOR as OPERATOR_PROCESS


def _figure(out: Path, name: str, value: float, checks: list[tuple[str, float, str]], foreign: float | None = None,
            error: str | None = None, operator: float | None = None, speed: float | None = None) -> None:
    cpu: dict[str, object] = {} if foreign is None else {"foreign_pct_of_one_core": foreign}
    if operator is not None:
        cpu["this_run_by_process_pct_of_one_core"] = {OPERATOR_PROCESS: operator, "kube-apiserver": 40.0}
    details = {"cpu_during_experiment": cpu} if cpu else {}
    (out / f"{name}.json").write_text(json.dumps({
        "figure": name, "value": value, "unit": "s", "error": error, "details": details,
        "machine": {} if speed is None else {"reference_work_ms": speed},
        "checks": [{"metric": m, "value": v, "op": "<", "target": 1, "unit": u} for m, v, u in checks]}))


def test_the_order_alternates_so_drift_falls_on_both_sides() -> None:
    assert schedule(3) == [(1, "base"), (1, "head"), (2, "head"), (2, "base"), (3, "base"), (3, "head")]


def test_a_run_yields_its_measured_figures_checks_else_values_and_the_cpu_shares(tmp_path: Path) -> None:
    _figure(tmp_path, "scale_300_ready", 41.7, [("wall time", 41.7, "s"), ("operator CPU", 6.39, "CPU-s")],
            foreign=3.5, operator=85.0, speed=61.3)
    _figure(tmp_path, "scale_300_floor", 33.8, [], speed=61.3)
    _figure(tmp_path, "webhook_latency", 0, [("p50", 0.7, "ms")], error="webhook unreachable")
    _figure(tmp_path, "scale_1000_ready", float("nan"), [("wall time", float("nan"), "s"),  # timed out: its
                                                         ("operator CPU", 8.6, "CPU-s")])  # CPU is not comparable
    (tmp_path / "notes.json").write_text("{}")  # not a figure
    assert metrics(tmp_path) == {
        "scale_300_ready: wall time": (41.7, "s"),
        "scale_300_ready: operator CPU": (6.39, "CPU-s"),
        f"scale_300_ready: {FOREIGN}": (3.5, "% of a core"),
        f"scale_300_ready: {OPERATOR}": (85.0, "% of a core"),
        "scale_300_floor": (33.8, "s"),
        SPEED: (61.3, "ms"),  # once per run: every figure of a run carries the same machine facts
    }
    # ...and the report names what each run did not measure, so a side timing out more often shows.
    assert unmeasured(tmp_path) == ["scale_1000_ready", "webhook_latency"]


def test_paired_statistics() -> None:
    row = Paired("m", "s", base=[10.0, 12.0, 11.0], head=[9.0, 11.0, 10.5])
    assert row.diffs == [-1.0, -1.0, -0.5]
    assert row.t == pytest.approx(-5.0)  # mean -5/6 over sd (0.2887) / sqrt(3)
    assert row.change_pct == pytest.approx(100 * (30.5 / 33 - 1))
    assert row.head_lower == 3
    assert Paired("m", "s", [1.0], [2.0]).t is None  # one pair: no spread to judge it by
    assert Paired("m", "s", [1.0, 2.0], [2.0, 3.0]).t is None  # identical differences: no spread either


def test_a_pair_with_a_failed_side_is_left_out() -> None:
    runs = {(1, "base"): {"a": (1.0, "s")}, (1, "head"): {"a": (2.0, "s"), "b": (5.0, "s")},
            (2, "head"): {"a": (4.0, "s")},  # its base run failed
            (3, "base"): {"a": (3.0, "s"), "b": (1.0, "s")}, (3, "head"): {"a": (3.5, "s"), "b": (2.0, "s")}}
    rows = {r.metric: r for r in paired(runs)}
    assert (rows["a"].base, rows["a"].head) == ([1.0, 3.0], [2.0, 3.5])
    assert (rows["b"].base, rows["b"].head) == ([1.0], [2.0])  # measured on both sides of pair 3 only


def test_the_report_names_both_sides_and_the_failed_runs() -> None:
    head: dict[str, Any] = {"commit": "b" * 40, "dirty": True}
    meta = {"base": {"rev": "main~1", "commit": "a" * 40}, "head": head,
            "pairs": 2, "bench_args": ["--only", "scale"], "date": "2026-12-05 00:00 UTC", "failed": ["base-2"]}
    text = markdown([Paired("scale_300_ready: operator CPU", "CPU-s", [6.0, 6.4], [5.5, 6.1])], meta)
    assert "base `main~1` (aaaaaaaaaaaa) against head `bbbbbbbbbbbb` + uncommitted edits" in text
    assert "| scale_300_ready: operator CPU | CPU-s | 6.2 | 5.8 | -6.5 % | -4.0 | 2 of 2 |" in text
    assert "Failed runs (left out with their pair): base-2" in text
    meta["unmeasured"] = {"head-1": ["scale_300_ready"]}
    assert ("Figures not measured (failed or timed out; that pair is left out of their rows): head-1: "
            "scale_300_ready") in markdown([], meta)
    head |= {"patch": "head.patch", "untracked": ["bench/new.py"]}
    assert ("head `bbbbbbbbbbbb` + uncommitted edits (`head.patch`); untracked files: `bench/new.py`; 2 alternated"
            in markdown([], meta))


def test_the_head_sides_edits_are_a_patch_that_applies_to_its_commit(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-qm", "base")
    assert head_edits(tmp_path) == ("", [])
    (tmp_path / "a.py").write_text("x = 2\n")
    (tmp_path / "new.py").write_text("y = 1\n")
    patch, untracked = head_edits(tmp_path)
    assert untracked == ["new.py"]
    git("checkout", "a.py")
    (tmp_path / "head.patch").write_text(patch)
    git("apply", "head.patch")
    assert (tmp_path / "a.py").read_text() == "x = 2\n"


def test_the_bench_arguments_follow_a_double_dash_and_out_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["--base", "HEAD", "--", "--only", "scale", "--no-profile"]).bench_args == [
        "--only", "scale", "--no-profile"]
    with pytest.raises(SystemExit):
        parse_args(["--base", "HEAD", "--", "--only", "scale", "--out", "x"])
    assert "--out belongs to bench.compare" in capsys.readouterr().err
