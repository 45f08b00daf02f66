"""bench/machine.py: whose CPU a window held, including a restarted operator's (no longer in /proc)."""

from __future__ import annotations

import pytest

from bench.machine import Contention, Snapshot


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
