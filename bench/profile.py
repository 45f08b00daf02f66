"""Sampling profiles of the operator process (issue 15): py-spy over one experiment, kept as a flame graph.

py-spy records collapsed stacks (``--format raw``: one ``frame;frame;... count`` line per distinct stack) of
the threads holding the GIL (``--gil``), so samples ~ Python CPU time: py-spy's own idle detection counted
executor threads blocked on their queue as busy. From them this module writes, per experiment:

- ``profile_<name>.svg``: the flame graph (root at the bottom, width = share of samples; hover for figures);
- the top entries (self and inclusive), the share per package, and the share per task (``by_task``: what the event
  loop was running — the passes, kopf, the watch streams, the connections), into the figure's JSON details.

Frames are merged by function and file (line numbers dropped), so one function is one box per call path.

The control plane's Go components (kube-apiserver, kube-controller-manager, kube-scheduler) are profiled the
same way over the floor's and the burst's windows: Go's own sampler (``/debug/pprof/profile``, 100 Hz) in
slices of ``SLICE_S`` seconds, read back with ``go tool pprof -traces``. The burst's figure then names the
functions that spent more in the burst than in the floor: where the control plane's extra CPU went.
"""

from __future__ import annotations

import html
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
# The checkout the profiled operator runs from: this one, or another (CI's clone, bench.compare's worktree); its
# own packages are named from there, as site-packages' are.
PROJECT_PACKAGES = ("dittoctl", "reconciler", "webhook", "certs", "bench", "tests")
PACKAGE_ROOTS = ("site-packages/", "lib/python3.11/")
_PROJECT_FILE = re.compile(rf"^/.*?/(?=(?:{'|'.join(PROJECT_PACKAGES)})/)")
WIDTH, ROW, FONT = 1600.0, 17, 11
RATE_HZ = 100  # py-spy's rate here, and the rate Go's CPU profiler always samples at
SAMPLE_S = 1 / RATE_HZ
GO_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
SLICE_S = 2  # a window ends at most this late: the slice in flight is waited for and kept
GO_MIN_WIDTH = 1.6  # px: boxes under 0.1 % of the samples; Go's deep stacks made 3 MB graphs at 0.4
# Where the event loop hands over to a task or a callback: the frame above it names what the sample worked for.
LOOP_ENTRY = "Runner.run (asyncio/runners.py)"
OUTSIDE_LOOP, LOOP_ITSELF = "outside the event loop", "the event loop itself"
# (path prefix of that frame's file, group), first match wins. Tasks a pass gathers (its child writes) start in
# reconciler/ too, so they count with the passes.
CONNECTIONS = "connections: aiohttp's protocol callbacks, TLS"
TASKS = (
    ("kopf/", "kopf: the DittoServer stream and its workers"),
    ("reconciler/watch.py", "the operator's own watch streams"),
    ("reconciler/", "reconcile passes and the writes they gather"),
    ("aiohttp/web_", "aiohttp servers: admission webhook, health"),
    ("aiohttp/", CONNECTIONS),
    ("ssl.py", CONNECTIONS),
)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise RuntimeError("py-spy is not installed (`pip install -e .[test]` installs it)")
    return found


def _short(path: str) -> str:
    for root in PACKAGE_ROOTS:
        if root in path:
            return path.split(root, 1)[1]
    return _PROJECT_FILE.sub("", path, count=1)


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
    groups: dict[str, str] = field(default_factory=dict)
    """Frame -> its package, where the frame's name does not say it (Go frames)."""

    def package(self, frame: str) -> str:
        return self.groups.get(frame) or package_of(frame)

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
        for frames, count in self.counts.items():
            own[frames[-1]] += count
        packages, inclusive = self.self_by_package(), self.inclusive()

        def share(c: Counter[str]) -> list[dict[str, Any]]:
            return [{"frame": k, "samples": v, "pct": round(100 * v / total, 1)} for k, v in c.most_common(n)]

        out = {"samples": self.total, "self": share(own), "inclusive": share(inclusive),
               "self_by_package": {k: round(100 * v / total, 1) for k, v in packages.most_common(12)}}
        tasks = self.by_task()
        if set(tasks) != {OUTSIDE_LOOP}:  # Go's stacks have no event loop
            out["by_task"] = {k: round(100 * v / total, 1) for k, v in tasks.most_common()}
        return out

    def tree(self) -> Node:
        root = Node("all")
        for frames, count in self.counts.items():
            root.samples += count
            node = root
            for name in frames:
                node = node.children.setdefault(name, Node(name))
                node.samples += count
        return root

    def self_by_package(self) -> Counter[str]:
        """Samples per package of the frame that was running."""
        out: Counter[str] = Counter()
        for frames, count in self.counts.items():
            out[self.package(frames[-1])] += count
        return out

    def by_task(self) -> Counter[str]:
        """Samples per kind of work, named by the task or callback the event loop was running (``TASKS``): which
        part of the process a share of its CPU paid for, callees and all."""
        out: Counter[str] = Counter()
        for frames, count in self.counts.items():
            if LOOP_ENTRY not in frames:
                out[OUTSIDE_LOOP] += count
                continue
            above = frames[frames.index(LOOP_ENTRY) + 1:]
            if not above:
                out[LOOP_ITSELF] += count
                continue
            m = FRAME.match(above[0])
            path = m["file"] if m else above[0]
            out[next((group for prefix, group in TASKS if path.startswith(prefix)),
                     f"other: {self.package(above[0])}")] += count
        return out

    def inclusive(self) -> Counter[str]:
        """Samples per function, its callees included (a recursive function counted once per sample)."""
        out: Counter[str] = Counter()
        for frames, count in self.counts.items():
            for name in set(frames):
                out[name] += count
        return out


def _color(name: str, package: Callable[[str], str] = package_of) -> str:
    hue = zlib.crc32(package(name).encode()) % 60  # reds to yellows, stable per package
    return f"hsl({hue},85%,{62 + zlib.crc32(name.encode()) % 12}%)"


def flame_svg(stacks: Stacks, title: str, *, min_width: float = 0.4) -> str:
    """``min_width``: narrower boxes (px of 1600) are left out, their callees with them."""
    root = stacks.tree()
    total = root.samples or 1
    depth = 0
    boxes: list[str] = []

    def walk(node: Node, x: float, level: int) -> None:
        nonlocal depth
        width = WIDTH * node.samples / total
        if width < min_width:
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
                   f'<rect x="{x}" y="{y}" width="{width}" height="{ROW - 1}" '
                   f'fill="{_color(name, stacks.package)}"/>'
                   + (f'<text x="{float(x) + 2:.1f}" y="{y + ROW - 5}">{html.escape(label)}</text>'
                      if float(width) > 21 else "") + "</g>")
    out.append("</svg>")
    return "\n".join(out)


class Profiler:
    """``with Profiler(pid, out, name) as p: ...``; then ``p.result`` (top entries) and ``out/profile_<name>.svg``."""

    def __init__(self, pid: int, out: Path, name: str, raw: Path, *, rate: int = RATE_HZ) -> None:
        """``raw``: where the collapsed stacks stay (e.g. the run's work dir, kept with ``--keep``)."""
        self.pid, self.out, self.name, self.rate, self.raw = pid, out, name, rate, raw
        self.proc: subprocess.Popen[bytes] | None = None
        self.result: dict[str, Any] = {}

    def __enter__(self) -> Profiler:
        self.out.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            # --nonblocking: by default py-spy pauses the process for each sample, inside the measured figures
            # (round 21's profiled burst read 6.01 CPU-s, its unprofiled runs 5.58-5.77).
            [py_spy(), "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw", "--gil",
             "--nonblocking", "--output", str(self.raw)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


GO_DURATION = re.compile(r"^\s*(?P<value>[0-9.]+)(?P<unit>ns|us|µs|ms|s|min|h)\s+(?P<frame>\S.*)$")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}


def go_frame(func: str) -> tuple[str, str]:
    """A Go function's full name -> (its name as Go prints it, its module for the by-package shares):
    ``k8s.io/apiserver/pkg/endpoints/handlers.UpdateResource.func1`` -> (``handlers.UpdateResource.func1``,
    ``apiserver``); ``runtime.mallocgc (inline)`` -> (``runtime.mallocgc``, ``runtime``)."""
    func = func.removesuffix(" (inline)")
    directory, _, name = func.rpartition("/")
    parts = [*directory.split("/"), name.split(".", 1)[0]] if directory else [name.split(".", 1)[0]]
    if "." not in parts[0]:
        return name, parts[0]  # the standard library: its top package
    # A module on a host: its name (github.com and golang.org/x have one more level).
    deep = parts[0] in ("github.com", "golang.org")
    return name, parts[min(len(parts) - 1, 2 if deep else 1)]


def parse_go_traces(text: str) -> Stacks:
    """``go tool pprof -traces`` output (one block per stack, leaf first, its CPU time on the first line)."""
    counts: Counter[tuple[str, ...]] = Counter()
    groups: dict[str, str] = {}
    for block in re.split(r"^-+\+-+$", text, flags=re.M)[1:]:
        lines = [line for line in block.splitlines() if line.strip()]
        # The sample's labels, if any, come first ("  name:  value"); then its time and leaf frame.
        found = next(((i, m) for i, line in enumerate(lines) if (m := GO_DURATION.match(line))), None)
        if found is None:
            continue
        at, head = found
        frames: list[str] = []
        for func in [head["frame"], *(line.strip() for line in lines[at + 1:])]:
            name, group = go_frame(func)
            groups[name] = group
            frames.append(name)
        samples = round(float(head["value"]) * _UNIT_S[head["unit"]] / SAMPLE_S)
        if samples:
            counts[tuple(reversed(frames))] += samples
    return Stacks(counts, groups)


def go_tool() -> str:
    found = shutil.which("go")
    if found is None:
        raise RuntimeError("`go` is not on PATH: the control plane's profiles are read with `go tool pprof` "
                           "(the test bed's binaries are built with the same Go)")
    return found


def grew(before: Stacks, after: Stacks, n: int = 12) -> dict[str, Any]:
    """Where ``after`` spent more CPU than ``before``: the functions whose inclusive CPU-s grew most (a call
    chain shows as several rows with one delta; ties in name order), and the change of each package's own CPU-s."""
    b, a = before.inclusive(), after.inclusive()
    delta = {k: a[k] - b[k] for k in a.keys() | b.keys()}
    pb, pa = before.self_by_package(), after.self_by_package()
    return {
        "frames": [{"frame": k, "before_s": round(b[k] * SAMPLE_S, 2), "after_s": round(a[k] * SAMPLE_S, 2),
                    "delta_s": round(d * SAMPLE_S, 2)}
                   for k, d in sorted(delta.items(), key=lambda kv: (-kv[1], kv[0]))[:n] if d > 0],
        "self_by_package_delta_s": {k: round((pa[k] - pb[k]) * SAMPLE_S, 2)
                                    for k in sorted(pa.keys() | pb.keys(), key=lambda k: pb[k] - pa[k])[:n]},
    }


def beyond_the_floor(floor: Mapping[str, Stacks], burst: Mapping[str, Stacks],
                     label: str = "the floor") -> tuple[dict[str, Any], str]:
    """Per component profiled in both windows: ``grew`` from a floor (``label``) to the burst, and a one-line
    note."""
    parts, out = [], {}
    for component in (c for c in GO_COMPONENTS if c in floor and c in burst):
        out[component] = change = grew(floor[component], burst[component])
        before, after = floor[component].total * SAMPLE_S, burst[component].total * SAMPLE_S
        top = next(iter(change["self_by_package_delta_s"].items()), None)
        parts.append(f"{component} {before:.1f} -> {after:.1f} CPU-s ({after - before:+.1f}"
                     + (f"; the most of it in {top[0]} code, {top[1]:+.1f}" if top and top[1] > 0 else "") + ")")
    note = f"the control plane's CPU from {label}'s window to the burst's (Go's profiler): " + ", ".join(parts)
    return out, note


class ControlPlaneProfiler:
    """``with ControlPlaneProfiler(endpoints, ctx, raw_dir, name) as p: <window>``; then ``p.stacks()``.

    One thread per component fetches ``SLICE_S``-second CPU profiles back to back while the window is open;
    the slice in flight when it closes is waited for and kept."""

    def __init__(self, endpoints: Mapping[str, str], ctx: ssl.SSLContext, raw_dir: Path, name: str) -> None:
        self.endpoints, self.ctx, self.raw_dir, self.name = endpoints, ctx, raw_dir, name
        self.files: dict[str, list[Path]] = {c: [] for c in endpoints}
        self.errors: dict[str, str] = {}
        self.window_s = 0.0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._fetch, args=(c,), daemon=True) for c in endpoints]
        self._t0 = 0.0

    def _fetch(self, component: str) -> None:
        url = f"{self.endpoints[component]}/debug/pprof/profile?seconds={SLICE_S}"
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(url, context=self.ctx, timeout=SLICE_S + 30) as response:
                    data = response.read()
            except OSError as exc:
                self.errors[component] = f"{type(exc).__name__}: {exc}"
                return
            path = self.raw_dir / f"pprof_{self.name}_{component}_{len(self.files[component]):03d}.pb.gz"
            path.write_bytes(data)
            self.files[component].append(path)

    def __enter__(self) -> ControlPlaneProfiler:
        self.raw_dir.mkdir(parents=True, exist_ok=True)
        self._t0 = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(SLICE_S + 35)
        self.window_s = time.monotonic() - self._t0

    def stacks(self) -> dict[str, Stacks]:
        out: dict[str, Stacks] = {}
        for component, files in self.files.items():
            if files:
                proc = subprocess.run([go_tool(), "tool", "pprof", "-traces", *map(str, files)],
                                      capture_output=True, text=True, timeout=300, check=True)
                out[component] = parse_go_traces(proc.stdout)
        return out

    def result(self, out: Path) -> tuple[dict[str, Any], dict[str, Stacks]]:
        """Per component: its CPU-s in the window, a flame graph in ``out`` and its top entries."""
        summary: dict[str, Any] = {"window_s": round(self.window_s, 1), "slice_s": SLICE_S,
                                   **({"errors": self.errors} if self.errors else {})}
        try:
            stacks = self.stacks()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:  # a profile never costs the figure
            summary.setdefault("errors", {})["go tool pprof"] = f"{type(exc).__name__}: {exc}"
            return summary, {}
        out.mkdir(parents=True, exist_ok=True)
        for component, st in stacks.items():
            svg = out / f"profile_{self.name}_{component}.svg"
            svg.write_text(flame_svg(st, f"{component} CPU profile: {self.name} (pprof, {RATE_HZ} Hz)",
                                     min_width=GO_MIN_WIDTH))
            top = st.top(10)
            summary[component] = {"cpu_s": round(st.total * SAMPLE_S, 2), "flame_graph": svg.name,
                                  "self": top["self"], "self_by_package": top["self_by_package"]}
        return summary, stacks
