"""Sampling profiles of the operator process (issue 15): py-spy over one experiment, kept as a flame graph.

py-spy records collapsed stacks (``--format raw``: one ``frame;frame;... count`` line per distinct stack) of
the threads holding the GIL (``--gil``), so samples ~ Python CPU time: py-spy's own idle detection counted
executor threads blocked on their queue as busy. From them this module writes, per experiment:

- ``profile_<name>.svg``: the flame graph (root at the bottom, width = share of samples; hover for figures);
- the top entries (self and inclusive) and the share per package, into the figure's JSON details.

Frames are merged by function and file (line numbers dropped), so one function is one box per call path.
"""

from __future__ import annotations

import html
import re
import shutil
import signal
import subprocess
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
PACKAGE_ROOTS = ("site-packages/", "/work/main/", "lib/python3.11/")
WIDTH, ROW, FONT = 1600.0, 17, 11


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise RuntimeError("py-spy is not installed (`pip install -e .[test]` installs it)")
    return found


def _short(path: str) -> str:
    for root in PACKAGE_ROOTS:
        if root in path:
            return path.split(root, 1)[1]
    return path


def frame_name(frame: str) -> str:
    """``func (/long/path/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``."""
    m = FRAME.match(frame)
    return f"{m['func']} ({_short(m['file'])})" if m else frame


def package_of(frame: str) -> str:
    m = FRAME.match(frame)
    path = _short(m["file"]) if m else frame
    top = path.split("/", 1)[0]
    return top.removesuffix(".py") if "/" in path or top.endswith(".py") else top


@dataclass
class Node:
    name: str
    samples: int = 0
    children: dict[str, Node] = field(default_factory=dict)


@dataclass
class Stacks:
    """Collapsed stacks, frames already shortened."""

    counts: Counter[tuple[str, ...]]

    @classmethod
    def parse(cls, text: str) -> Stacks:
        counts: Counter[tuple[str, ...]] = Counter()
        for line in text.splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                # The thread's own frame ("process 1:"...) is py-spy's root; keep Python frames only.
                frames = tuple(frame_name(f) for f in stack.split(";") if "(" in f)
                if frames:
                    counts[frames] += int(count)
        return cls(counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def top(self, n: int = 15) -> dict[str, Any]:
        total = self.total or 1
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        packages: Counter[str] = Counter()
        for frames, count in self.counts.items():
            own[frames[-1]] += count
            packages[package_of(frames[-1])] += count
            for name in set(frames):
                inclusive[name] += count

        def share(c: Counter[str]) -> list[dict[str, Any]]:
            return [{"frame": k, "samples": v, "pct": round(100 * v / total, 1)} for k, v in c.most_common(n)]

        return {"samples": self.total, "self": share(own), "inclusive": share(inclusive),
                "self_by_package": {k: round(100 * v / total, 1) for k, v in packages.most_common(12)}}

    def tree(self) -> Node:
        root = Node("all")
        for frames, count in self.counts.items():
            root.samples += count
            node = root
            for name in frames:
                node = node.children.setdefault(name, Node(name))
                node.samples += count
        return root


def _color(name: str) -> str:
    hue = zlib.crc32(package_of(name).encode()) % 60  # reds to yellows, stable per package
    return f"hsl({hue},85%,{62 + zlib.crc32(name.encode()) % 12}%)"


def flame_svg(stacks: Stacks, title: str) -> str:
    root = stacks.tree()
    total = root.samples or 1
    depth = 0
    boxes: list[str] = []

    def walk(node: Node, x: float, level: int) -> None:
        nonlocal depth
        width = WIDTH * node.samples / total
        if width < 0.4:
            return
        depth = max(depth, level)
        boxes.append(f'{x:.1f}|{level}|{width:.1f}|{node.name}|{node.samples}')
        cx = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            walk(child, cx, level + 1)
            cx += WIDTH * child.samples / total

    walk(root, 0.0, 0)
    height = (depth + 1) * ROW + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0f}" height="{height}" '
           f'font-family="monospace" font-size="{FONT}">',
           f'<rect width="100%" height="100%" fill="#fdfdf6"/><text x="4" y="16" font-size="13">'
           f'{html.escape(title)} ({total} samples)</text>']
    for box in boxes:
        x, level, width, name, samples = box.split("|")
        y = height - (int(level) + 1) * ROW - 4
        label = name if float(width) > 7 * len(name) else name[: max(0, int(float(width) / 7) - 2)] + ".."
        out.append(f'<g><title>{html.escape(name)}: {samples} samples, '
                   f'{100 * int(samples) / total:.1f}%</title>'
                   f'<rect x="{x}" y="{y}" width="{width}" height="{ROW - 1}" fill="{_color(name)}"/>'
                   + (f'<text x="{float(x) + 2:.1f}" y="{y + ROW - 5}">{html.escape(label)}</text>'
                      if float(width) > 21 else "") + "</g>")
    out.append("</svg>")
    return "\n".join(out)


class Profiler:
    """``with Profiler(pid, out, name) as p: ...``; then ``p.result`` (top entries) and ``out/profile_<name>.svg``."""

    def __init__(self, pid: int, out: Path, name: str, raw: Path, *, rate: int = 100) -> None:
        """``raw``: where the collapsed stacks stay (e.g. the run's work dir, kept with ``--keep``)."""
        self.pid, self.out, self.name, self.rate, self.raw = pid, out, name, rate, raw
        self.proc: subprocess.Popen[bytes] | None = None
        self.result: dict[str, Any] = {}

    def __enter__(self) -> Profiler:
        self.out.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [py_spy(), "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw", "--gil",
             "--output", str(self.raw)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.raw.exists():
            self.result = {"error": f"py-spy wrote no profile: {err.decode(errors='replace')[-300:]}"}
            return
        stacks = Stacks.parse(self.raw.read_text(errors="replace"))
        svg = self.out / f"profile_{self.name}.svg"
        svg.write_text(flame_svg(stacks, f"operator CPU profile: {self.name} (py-spy, {self.rate} Hz)"))
        self.result = {"flame_graph": svg.name, "rate_hz": self.rate, **stacks.top()}
