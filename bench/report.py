"""Results: one JSON file per figure in ``bench/results/`` plus a markdown table (``SUMMARY.md``)."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.machine import reference_work_ms
from tests.support.paths import ROOT

RESULTS = Path(__file__).resolve().parent / "results"

_OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b,
        ">=": lambda a, b: a >= b}


@dataclass
class Check:
    """One measured quantity against its target, e.g. p99 < 5 ms."""

    metric: str
    value: float | None
    op: str
    target: float
    unit: str

    @property
    def passed(self) -> bool:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return False
        return bool(_OPS[self.op](self.value, self.target))

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "op": self.op, "target": self.target,
                "unit": self.unit, "pass": self.passed}


@dataclass
class Figure:
    """A figure of SPEC §11: its headline value, the checks that decide pass/fail, and the raw details."""

    name: str
    title: str
    target_text: str
    checks: list[Check]
    measured_text: str
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started: float = field(default_factory=time.time)
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def headline(self) -> Check | None:
        return self.checks[0] if self.checks else None

    def as_dict(self, env: dict[str, Any]) -> dict[str, Any]:
        head = self.headline
        return {
            "figure": self.name,
            "title": self.title,
            "value": head.value if head else None,
            "unit": head.unit if head else None,
            "target": {"op": head.op, "value": head.target, "unit": head.unit, "text": self.target_text}
            if head else {"text": self.target_text},
            "pass": self.passed,
            "measured": self.measured_text,
            "checks": [c.as_dict() for c in self.checks],
            "error": self.error,
            "details": self.details,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "duration_s": round(self.duration_s, 2),
            **env,
        }


def failed(name: str, title: str, target_text: str, error: str) -> Figure:
    return Figure(name, title, target_text, [], "not measured", error=error)


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _meminfo_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def other_apiservers(own_pid: int | None) -> int:
    """kube-apiserver processes other than the bench's own: another test bed shares these 2 cores."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own_pid:
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm == "kube-apiserver":
            count += 1
    return count


def environment() -> dict[str, Any]:
    """Commit and machine facts written into every result."""
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "worktree_dirty": bool(dirty),
        "machine": {
            "nproc": len(os.sched_getaffinity(0)),
            "cpu_count": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "memory_bytes": _meminfo_total(),
            "memory_gib": round(_meminfo_total() / 2**30, 1),
            "python": sys.version.split()[0],
            "python_implementation": platform.python_implementation(),
            "kernel": platform.release(),
            "platform": platform.platform(),
            "reference_work_ms": reference_work_ms(),
        },
    }


def write(figures: Sequence[Figure], env: dict[str, Any], out: Path = RESULTS) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for fig in figures:
        path = out / f"{fig.name}.json"
        path.write_text(json.dumps(fig.as_dict(env), indent=2, sort_keys=False, default=str) + "\n")
    summary = out / "SUMMARY.md"
    summary.write_text(markdown(figures, env))
    return summary


def markdown(figures: Sequence[Figure], env: dict[str, Any]) -> str:
    m = env["machine"]
    speed = f", reference work {m['reference_work_ms']:g} ms" if "reference_work_ms" in m else ""
    lines = [
        "# Benchmarks (SPEC §11)",
        "",
        f"commit `{env['commit'][:12]}`{' (dirty work tree)' if env['worktree_dirty'] else ''}; "
        f"{m['nproc']} cores ({m['cpu_model']}{speed}), {m['memory_gib']} GiB, Python {m['python']}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| figure | target | measured | result |",
        "|---|---|---|---|",
    ]
    for fig in figures:
        missed = [f"{c.metric} {c.value} {c.unit} (target {c.op} {c.target:g})" for c in fig.checks if not c.passed]
        # A floor or a cost has no target to meet: "info", not a PASS that could not have failed.
        passed = "info" if fig.target_text.startswith("informational") else "PASS"
        result = passed if fig.passed else ("ERROR" if fig.error else "FAIL: " + "; ".join(missed))
        measured = fig.measured_text if not fig.error else f"error: {fig.error[:160]}"
        lines.append(f"| {fig.title} | {fig.target_text} | {measured} | {result} |")
    notes = [f"- {fig.title}: {note}" for fig in figures for note in fig.details.get("notes", [])]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"
