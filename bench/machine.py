"""CPU accounting from /proc: how busy the machine was during a measurement, and how much of that was
*foreign* (not the bench, the operator or this run's test bed), i.e. other workloads sharing the 2 cores."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
OPERATOR = "operator"  # the operator process's name among a run's processes (Contention's `pids`)
REFERENCE_ROUNDS, REFERENCE_LOOPS = 5, 400  # ~60 ms a round on the machines of issue 15


def machine_jiffies() -> tuple[int, int, int]:
    """(total, idle+iowait, steal) jiffies over all CPUs, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    steal = values[7] if len(values) > 7 else 0
    return sum(values[:8]), values[3] + values[4], steal  # guest time is already inside user/nice


def process_cpu(pid: int) -> float:
    """utime + stime of ``pid`` and its threads, in seconds (0 when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _reference_document() -> dict[str, Any]:
    """A StatefulSet-sized tree (~6 KiB of JSON), the same on every machine."""
    env = [{"name": f"VARIABLE_{j}", "value": f"value-{j}-" + "x" * j} for j in range(24)]
    ports = [{"name": f"port-{j}", "containerPort": 8000 + j, "protocol": "TCP"} for j in range(6)]
    containers = [{"name": f"container-{i}", "image": "example/image:v1", "env": env, "ports": ports,
                   "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}} for i in range(3)]
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "reference", "labels": {f"example.com/label-{i}": f"value-{i}" for i in range(8)}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": containers}}}}


def _leaves(node: Any) -> int:
    if isinstance(node, dict):
        return sum(_leaves(value) for value in node.values())
    if isinstance(node, list):
        return sum(_leaves(item) for item in node)
    return 1


def reference_work_ms(rounds: int = REFERENCE_ROUNDS, loops: int = REFERENCE_LOOPS) -> float:
    """CPU ms of this thread for a fixed interpreter-bound workload, the median of ``rounds``: JSON round trips and
    walks of a StatefulSet-sized tree, the kind of work the operator's passes and streams do. It runs only the
    standard library, so no change to this project moves it, and it says how fast this machine runs Python: the
    same code read 5.7-7.0 operator CPU-s in one session's bursts and 5.6-6.5 in another's (issue 15)."""
    text = json.dumps(_reference_document())
    times = []
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(loops):
            _leaves(json.loads(text))
            json.dumps(json.loads(text))
        times.append((time.thread_time() - start) * 1000)
    return round(statistics.median(times), 1)


@dataclass(frozen=True)
class Snapshot:
    wall: float
    total: int
    idle: int
    steal: int
    ours: dict[str, tuple[int, float]]  # name -> (pid, cpu seconds)
    reaped: float = 0.0  # cpu seconds of the bench's children that exited and were waited for, all of them


def reaped_children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


class Contention:
    """Sample with `snapshot()`, compare two with `between()`. `pids` names the processes that belong
    to this run (the bench itself is always included as "bench"). Figures are in percent of one core."""

    def __init__(self, pids: Callable[[], Mapping[str, int]]) -> None:
        self._pids = pids
        self.ncpu = len(os.sched_getaffinity(0))

    def snapshot(self) -> Snapshot:
        total, idle, steal = machine_jiffies()
        named = {"bench": os.getpid(), **self._pids()}
        return Snapshot(time.monotonic(), total, idle, steal,
                        {n: (p, process_cpu(p)) for n, p in named.items()}, reaped_children_cpu())

    def between(self, a: Snapshot, b: Snapshot) -> dict[str, Any]:
        wall = max(b.wall - a.wall, 1e-6)
        total = max(b.total - a.total, 1)
        busy_fraction = 1.0 - (b.idle - a.idle) / total  # of all CPUs
        machine = 100.0 * busy_fraction * self.ncpu
        per: dict[str, float] = {}
        for name, (pid, cpu) in b.ours.items():
            before = a.ours.get(name)
            # A new pid (the operator restarted) was started within the window: all of its CPU is in it.
            since = before[1] if before is not None and before[0] == pid else 0.0
            per[name] = round(100.0 * (cpu - since) / wall, 1)
        # A process of this run that exited within the window (a restarted operator) is no longer in /proc,
        # but the bench reaped it: its CPU is in the children's times, minus what it had used before the window.
        gone = sum(cpu for name, (pid, cpu) in a.ours.items() if b.ours.get(name, (None, 0.0))[0] != pid)
        exited = b.reaped - a.reaped - gone
        if exited > 0:
            per["exited processes"] = round(100.0 * exited / wall, 1)
        ours = sum(per.values())
        steal = 100.0 * (b.steal - a.steal) / total * self.ncpu
        return {
            "window_s": round(wall, 1),
            "machine_busy_pct_of_one_core": round(machine, 1),
            "this_run_pct_of_one_core": round(ours, 1),
            "foreign_pct_of_one_core": round(max(0.0, machine - ours), 1),
            "of_which_vm_steal_pct_of_one_core": round(steal, 1),
            "this_run_by_process_pct_of_one_core": dict(sorted(per.items(), key=lambda kv: -kv[1])),
            "cores": self.ncpu,
        }

    def measure(self, seconds: float) -> dict[str, Any]:
        a = self.snapshot()
        time.sleep(seconds)
        return self.between(a, self.snapshot())

    def wait_quiet(self, limit: float, threshold: float = 25.0, sample: float = 2.0) -> dict[str, Any]:
        """Wait (at most `limit` s) until foreign load stays under `threshold` % of one core for one
        `sample`; returns what was seen. Other engineers' test beds share these cores."""
        t0 = time.monotonic()
        last = self.measure(sample)
        while last["foreign_pct_of_one_core"] >= threshold and time.monotonic() - t0 < limit:
            last = self.measure(sample)
        return {"waited_s": round(time.monotonic() - t0, 1), "quiet": last["foreign_pct_of_one_core"] < threshold,
                "threshold_pct_of_one_core": threshold, "last_sample": last}
