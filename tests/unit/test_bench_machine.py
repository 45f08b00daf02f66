"""bench/machine.py: whose CPU a window held, including a restarted operator's (no longer in /proc); how fast the
machine runs Python."""

from __future__ import annotations

import json

import pytest

from bench.machine import Contention, Snapshot, _reference_document, reference_work_ms
from bench.report import markdown


def test_a_restarted_operator_counts_for_this_run_not_as_foreign_load(monkeypatch: pytest.MonkeyPatch) -> None:
    contention = Contention(dict)
    monkeypatch.setattr(contention, "ncpu", 2)
    # 1 s on 2 cores, 1.5 cores busy: the bench 0.5 s, the operator that exited (pid 10: 2.0 s before the
    # window, 2.4 s when reaped) 0.4 s, its successor (pid 11, started in the window) 0.3 s; 0.3 s is foreign.
    a = Snapshot(wall=0.0, total=0, idle=0, steal=0, ours={"bench": (1, 1.0), "operator": (10, 2.0)}, reaped=5.0)
    b = Snapshot(wall=1.0, total=200, idle=50, steal=0, ours={"bench": (1, 1.5), "operator": (11, 0.3)},
                 reaped=7.4)
    seen = contention.between(a, b)
    assert seen["this_run_by_process_pct_of_one_core"] == {"bench": 50.0, "exited processes": 40.0,
                                                           "operator": 30.0}
    assert seen["machine_busy_pct_of_one_core"] == 150.0
    assert seen["foreign_pct_of_one_core"] == pytest.approx(30.0)


def test_the_same_processes_count_their_cpu_within_the_window_only() -> None:
    contention = Contention(dict)
    a = Snapshot(wall=0.0, total=0, idle=0, steal=0, ours={"bench": (1, 1.0), "operator": (10, 2.0)}, reaped=5.0)
    b = Snapshot(wall=2.0, total=400, idle=300, steal=0, ours={"bench": (1, 1.2), "operator": (10, 2.6)}, reaped=5.0)
    assert contention.between(a, b)["this_run_by_process_pct_of_one_core"] == {"operator": 30.0, "bench": 10.0}


def test_the_reference_work_is_the_same_on_every_run() -> None:
    # Its figures are compared across sessions and machines: a changed workload makes every earlier one meaningless.
    assert len(json.dumps(_reference_document())) == 6111
    assert 0 < reference_work_ms(rounds=3, loops=10) < 1000


def test_every_runs_summary_says_how_fast_its_machine_ran_python() -> None:
    machine = {"nproc": 2, "cpu_model": "Intel Xeon", "memory_gib": 23.5, "python": "3.11.7"}
    env = {"commit": "5e477171cc94", "worktree_dirty": False, "machine": {**machine, "reference_work_ms": 59.4}}
    assert "2 cores (Intel Xeon, reference work 59.4 ms), 23.5 GiB" in markdown([], env)
    assert "2 cores (Intel Xeon), 23.5 GiB" in markdown([], {**env, "machine": machine})  # results from before it


def test_a_row_without_a_target_reads_info_not_pass() -> None:
    from bench.report import Check, Figure

    env = {"commit": "5e477171cc94", "worktree_dirty": False,
           "machine": {"nproc": 2, "cpu_model": "x", "memory_gib": 1.0, "python": "3.11"}}
    floor = Figure("scale_300_floor", "control-plane floor", "informational (a floor)",
                   [Check("wall time", 35.9, ">=", 0.0, "s")], "35.9 s")
    target = Figure("start_to_ready", "start -> ready", "< 3 s; issue 15: <= 0.4 s",
                    [Check("median", 0.5, "<", 3.0, "s"), Check("median (issue 15)", 0.5, "<=", 0.4, "s")], "0.5 s")
    text = markdown([floor, target], env)
    assert "| control-plane floor | informational (a floor) | 35.9 s | info |" in text
    assert "| start -> ready | < 3 s; issue 15: <= 0.4 s | 0.5 s | FAIL: median (issue 15) 0.5 s (target <= 0.4) |" \
        in text
