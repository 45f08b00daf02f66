"""`python -m bench.compare` end to end: a worktree of the base, both sides benched, paired, nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.paths import ROOT


def _worktrees() -> str:
    return subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def test_one_pair_of_startup_runs_is_compared_and_the_worktree_removed(tmp_path: Path) -> None:
    before = _worktrees()
    compare_dirs = set(Path(tempfile.gettempdir()).glob("dittofs-compare-*"))
    proc = subprocess.run([sys.executable, "-m", "bench.compare", "--base", "HEAD", "--pairs", "1", "--out",
                           str(tmp_path), "--", "--only", "startup", "--starts", "2", "--no-profile"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "compare.json").read_text())
    assert result["failed"] == []
    rows = {m["metric"]: m for m in result["metrics"]}
    median = rows["start_to_ready: median"]
    assert len(median["base"]) == len(median["head"]) == 1
    assert 0 < median["base"][0] < 3 and 0 < median["head"][0] < 3
    # Each side's own bench results, the base's from the worktree of HEAD.
    for side in ("base", "head"):
        run = json.loads((tmp_path / "runs" / f"{side}-1" / "start_to_ready.json").read_text())
        assert len(run["details"]["starts_s"]) == 2
    assert "| start_to_ready: median | s |" in (tmp_path / "COMPARE.md").read_text()
    assert "pair 1 base: ok" in proc.stderr and "pair 1 head: ok" in proc.stderr
    assert _worktrees() == before
    assert set(Path(tempfile.gettempdir()).glob("dittofs-compare-*")) == compare_dirs
