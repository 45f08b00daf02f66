"""`python -m bench.compare --base REV -- BENCH-ARGS`: the same bench on two checkouts, alternated, paired.

On a shared 2-core machine a figure moves ±15 % between two runs of the same code (issue 15, round 11): more
than most changes worth making, so one run of each side proves nothing either way. This runs `python -m bench
BENCH-ARGS` on a git worktree of REV ("base") and on this checkout as it is, uncommitted edits included
("head"), in pairs whose order alternates (base first, then head first, ...), so a drift in the machine's load
falls on both sides. Each metric gets its paired differences' mean over their standard error (t): |t| > ~2.5
over 6+ pairs is a change larger than the noise.

Results: OUT/COMPARE.md and OUT/compare.json, and every run's own results in OUT/runs/<side>-<pair>/. The head
side's uncommitted edits are kept as OUT/head.patch (``git apply`` on the head commit), so a comparison of an
experiment that was never committed can be run again.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeGuard

from bench.machine import OPERATOR as OPERATOR_PROCESS
from bench.process import sigterm_as_ctrl_c
from bench.report import RESULTS
from tests.support.paths import ROOT

SIDES = ("base", "head")
FOREIGN = "foreign CPU"  # other workloads' share of the machine during the figure: the noise, not a result
SPEED = "machine: reference work"  # how fast the machine ran Python at the run's start: a control, not a result
OPERATOR = "operator's CPU share"  # the operator's share of a core during the figure: a result (e.g. per admission)


def schedule(pairs: int) -> list[tuple[int, str]]:
    """(pair, side) in run order: base first in odd pairs, head first in even ones."""
    return [(pair, side) for pair in range(1, pairs + 1)
            for side in (SIDES if pair % 2 else SIDES[::-1])]


def _measured(value: Any) -> TypeGuard[int | float]:
    """A number, not NaN: a figure that timed out (299 of 300 Ready) has NaN for its value."""
    return isinstance(value, int | float) and math.isfinite(value)


def metrics(results: Path) -> dict[str, tuple[float, str]]:
    """'figure: metric' -> (value, unit) of every measured figure in one bench run's results directory: its
    checks (what its targets judge), else its headline value, and the operator's and the foreign CPU during it."""
    found: dict[str, tuple[float, str]] = {}
    for path in sorted(results.glob("*.json")):
        fig = json.loads(path.read_text())
        if fig.get("error") or "figure" not in fig or not _measured(fig.get("value")):
            continue  # not measured, or timed out: its other numbers are not comparable either
        name = fig["figure"]
        checks = [c for c in fig.get("checks", []) if _measured(c.get("value"))]
        for check in checks:
            found[f"{name}: {check['metric']}"] = (float(check["value"]), check.get("unit", ""))
        if not checks:
            found[name] = (float(fig["value"]), fig.get("unit", ""))
        cpu = (fig.get("details") or {}).get("cpu_during_experiment") or {}
        operator = (cpu.get("this_run_by_process_pct_of_one_core") or {}).get(OPERATOR_PROCESS)
        if _measured(operator):
            found[f"{name}: {OPERATOR}"] = (float(operator), "% of a core")
        if _measured(foreign := cpu.get("foreign_pct_of_one_core")):
            found[f"{name}: {FOREIGN}"] = (float(foreign), "% of a core")
        if _measured(speed := (fig.get("machine") or {}).get("reference_work_ms")):
            found[SPEED] = (float(speed), "ms")
    return found


def unmeasured(results: Path) -> list[str]:
    """The figures of one run that failed or timed out: their pairs drop out of those rows, which must say so
    (one side timing out more often would otherwise read as its being faster)."""
    names = []
    for path in sorted(results.glob("*.json")):
        fig = json.loads(path.read_text())
        if "figure" in fig and (fig.get("error") or not _measured(fig.get("value"))):
            names.append(str(fig["figure"]))
    return names


@dataclass(frozen=True)
class Paired:
    """One metric over the pairs that measured it on both sides."""

    metric: str
    unit: str
    base: list[float]
    head: list[float]

    @property
    def diffs(self) -> list[float]:
        return [h - b for b, h in zip(self.base, self.head, strict=True)]

    @property
    def change_pct(self) -> float | None:
        base = statistics.fmean(self.base)
        return None if base == 0 else 100 * (statistics.fmean(self.head) / base - 1)

    @property
    def t(self) -> float | None:
        """Mean paired difference over its standard error; None under 2 pairs or with no spread at all."""
        if len(self.diffs) < 2:
            return None
        spread = statistics.stdev(self.diffs)
        if spread == 0:
            return None
        return statistics.fmean(self.diffs) / (spread / math.sqrt(len(self.diffs)))

    @property
    def head_lower(self) -> int:
        return sum(d < 0 for d in self.diffs)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean_base": statistics.fmean(self.base), "mean_head": statistics.fmean(self.head),
                "change_pct": self.change_pct, "t": self.t, "pairs_head_lower": self.head_lower}


def paired(runs: dict[tuple[int, str], dict[str, tuple[float, str]]]) -> list[Paired]:
    """Every metric measured by both sides of at least one pair, pairs with a failed side left out."""
    pairs = sorted({pair for pair, _ in runs if (pair, "base") in runs and (pair, "head") in runs})
    names = sorted({m for pair in pairs for side in SIDES for m in runs[pair, side]})
    rows = []
    for name in names:
        both = [pair for pair in pairs if name in runs[pair, "base"] and name in runs[pair, "head"]]
        if both:
            rows.append(Paired(name, runs[both[0], "base"][name][1], [runs[p, "base"][name][0] for p in both],
                               [runs[p, "head"][name][0] for p in both]))
    return rows


def _number(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}"


def markdown(rows: Sequence[Paired], meta: dict[str, Any]) -> str:
    lines = [
        "# Bench comparison",
        "",
        f"base `{meta['base']['rev']}` ({meta['base']['commit'][:12]}) against head `{meta['head']['commit'][:12]}`"
        f"{_edits(meta['head'])}; {meta['pairs']} alternated pairs of "
        f"`python -m bench {' '.join(meta['bench_args'])}`; {meta['date']}",
        "",
        "| metric | unit | base mean | head mean | change | t | pairs head lower |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        change = row.change_pct
        lines.append(f"| {row.metric} | {row.unit} | {_number(statistics.fmean(row.base))} | "
                     f"{_number(statistics.fmean(row.head))} | "
                     f"{'-' if change is None else f'{change:+.1f} %'} | {'-' if row.t is None else f'{row.t:.1f}'} | "
                     f"{row.head_lower} of {len(row.base)} |")
    if meta["failed"]:
        lines += ["", "Failed runs (left out with their pair): " + ", ".join(meta["failed"])]
    if meta.get("unmeasured"):
        lines += ["", "Figures not measured (failed or timed out; that pair is left out of their rows): " + "; ".join(
            f"{run}: {', '.join(figures)}" for run, figures in meta["unmeasured"].items())]
    lines += ["", "t: the paired differences' mean over their standard error; |t| > ~2.5 over 6+ pairs is a "
              "change larger than the noise. An `operator's CPU share` row is the operator's share of a core "
              "during that figure (e.g. what 500 admissions a second cost it). A `foreign CPU` row is other "
              "workloads' share of the machine during that figure: the noise each side met, not a result. The "
              f"`{SPEED}` row is the machine's CPU time for a fixed Python workload at each run's start "
              "(`bench.machine.reference_work_ms`): whether the machine itself ran slower for one side.", ""]
    return "\n".join(lines)


def _edits(head: dict[str, Any]) -> str:
    if not head["dirty"]:
        return ""
    untracked = head.get("untracked") or []
    return (" + uncommitted edits" + (f" (`{head['patch']}`)" if head.get("patch") else "")
            + (f"; untracked files: {', '.join(f'`{u}`' for u in untracked)}" if untracked else ""))


def head_edits(root: Path = ROOT) -> tuple[str, list[str]]:
    """The checkout's uncommitted edits to tracked files as a patch (empty: none), and its untracked files."""
    patch = _git("diff", "HEAD", cwd=root, strip=False)  # a patch keeps its last newline, or git apply refuses it
    untracked = _git("ls-files", "--others", "--exclude-standard", cwd=root)
    return patch, untracked.splitlines()


def _git(*args: str, cwd: Path = ROOT, strip: bool = True) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60).stdout
    return out.strip() if strip else out


def _bench(root: Path, bench_args: Sequence[str], out: Path) -> bool:
    """One `python -m bench` run in `root`; a SIGTERM to it tears its test bed down before it exits."""
    with out.with_suffix(".log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bench", *bench_args, "--out", str(out)], cwd=root,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            return proc.wait() == 0
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, metavar="REV", help="git revision to compare against (e.g. HEAD, main~2)")
    p.add_argument("--pairs", type=int, default=6, help="alternated pairs of runs (default 6)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"results directory (default {RESULTS.relative_to(ROOT)}/compare-<date>)")
    p.add_argument("bench_args", nargs=argparse.REMAINDER,
                   help="after --: the arguments of every `python -m bench` run, e.g. -- --only scale --no-profile")
    args = p.parse_args(argv)
    if args.bench_args[:1] == ["--"]:
        args.bench_args = args.bench_args[1:]
    if args.pairs < 1:
        p.error("--pairs must be at least 1")
    if any(a == "--out" or a.startswith("--out=") for a in args.bench_args):
        p.error("--out belongs to bench.compare, not to the bench runs (each gets OUT/runs/<side>-<pair>)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out or RESULTS / f"compare-{time.strftime('%Y-%m-%d-%H%M', time.gmtime())}"
    try:
        base_commit = _git("rev-parse", "--verify", f"{args.base}^{{commit}}")
    except subprocess.CalledProcessError as exc:
        print(f"bench.compare: --base {args.base!r} is not a commit here: {exc.stderr.strip()}", file=sys.stderr)
        return 2
    patch, untracked = head_edits()
    # Results written under the checkout are its own untracked files, not the experiment's.
    untracked = [u for u in untracked if not (ROOT / u).resolve().is_relative_to(out.resolve())]
    meta: dict[str, Any] = {
        "base": {"rev": args.base, "commit": base_commit},
        "head": {"commit": _git("rev-parse", "HEAD"), "dirty": bool(patch or untracked),
                 "patch": "head.patch" if patch else None, "untracked": untracked},
        "pairs": args.pairs, "bench_args": args.bench_args, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "failed": [], "unmeasured": {},
    }
    sigterm_as_ctrl_c()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    if patch:
        (out / "head.patch").write_text(patch)
    worktree = Path(tempfile.mkdtemp(prefix="dittofs-compare-")) / "base"
    roots = {"base": worktree, "head": ROOT}
    runs: dict[tuple[int, str], dict[str, tuple[float, str]]] = {}
    try:
        _git("worktree", "add", "--detach", str(worktree), base_commit)
        for pair, side in schedule(args.pairs):
            results = out / "runs" / f"{side}-{pair}"
            t0 = time.monotonic()
            ok = _bench(roots[side], args.bench_args, results)
            found = metrics(results) if results.is_dir() else {}
            if missing := (unmeasured(results) if results.is_dir() else []):
                meta["unmeasured"][f"{side}-{pair}"] = missing
            if ok and found:
                runs[pair, side] = found
            else:
                meta["failed"].append(f"{side}-{pair}")
            status = "ok" if ok and found else "FAILED" if not ok else "FAILED (nothing measured)"
            print(f"[compare] pair {pair} {side}: {status} in {time.monotonic() - t0:.0f}s; "
                  + ", ".join(f"{k} {v:g}" for k, (v, _) in list(found.items())[:4]), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("[compare] interrupted", file=sys.stderr)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False,
                       capture_output=True, timeout=60)
        shutil.rmtree(worktree.parent, ignore_errors=True)
    rows = paired(runs)
    (out / "compare.json").write_text(json.dumps({**meta, "metrics": [r.as_dict() for r in rows]}, indent=2) + "\n")
    text = markdown(rows, meta)
    (out / "COMPARE.md").write_text(text)
    print(text)
    print(f"[compare] results in {out}", file=sys.stderr)
    complete = all((pair, side) in runs for pair, side in schedule(args.pairs))
    return 0 if complete and rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
