"""bench/profile.py: py-spy's collapsed stacks become top entries and a flame graph."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from bench.profile import Stacks, flame_svg, frame_name, package_of

_ROOT = 'process 1:"python -m dittoctl run";main (dittoctl/cli.py:10)'
_SITE = "/work/main/.venv/lib/python3.11/site-packages"
RAW = "\n".join([
    f"{_ROOT};run ({_SITE}/kopf/_core/reactor/running.py:99);deepcopy (/usr/lib/python3.11/copy.py:128) 30",
    f"{_ROOT};reconcile (/work/main/reconciler/reconcile.py:80);build (/work/main/reconciler/specs/__init__.py:55) 60",
    'process 1:"python -m dittoctl run";main (dittoctl/cli.py:12);reconcile (/work/main/reconciler/reconcile.py:81) 10',
    "garbage line",
])


def test_frames_lose_their_line_and_their_install_prefix() -> None:
    assert frame_name("run (/x/.venv/lib/python3.11/site-packages/kopf/_core/a.py:9)") == "run (kopf/_core/a.py)"
    assert package_of("run (kopf/_core/a.py)") == "kopf"
    assert package_of("deepcopy (/usr/lib/python3.11/copy.py:128)") == "copy"


def test_top_entries_count_self_and_inclusive_samples_by_function() -> None:
    stacks = Stacks.parse(RAW)
    assert stacks.total == 100
    top = stacks.top()
    assert top["self"][0] == {"frame": "build (reconciler/specs/__init__.py)", "samples": 60, "pct": 60.0}
    inclusive = {e["frame"]: e["samples"] for e in top["inclusive"]}
    # Line numbers dropped: the two call sites of main and of reconcile are one function each.
    assert inclusive["main (dittoctl/cli.py)"] == 100
    assert inclusive["reconcile (reconciler/reconcile.py)"] == 70
    assert top["self_by_package"] == {"reconciler": 70.0, "copy": 30.0}


def test_the_flame_graph_is_svg_with_one_box_per_call_path() -> None:
    svg = flame_svg(Stacks.parse(RAW), "t")
    root = ET.fromstring(svg)  # noqa: S314 - our own output
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert titles[0].startswith("all: 100 samples")
    assert sum(t.startswith("reconcile (reconciler/reconcile.py)") for t in titles) == 1
    assert any(t.startswith("deepcopy (copy.py): 30 samples, 30.0%") for t in titles)
