"""bench/profile.py: py-spy's collapsed stacks and Go's pprof traces become top entries, a flame graph and what
grew between two windows."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter

from bench.profile import (
    Stacks,
    beyond_the_floor,
    flame_svg,
    frame_name,
    go_frame,
    grew,
    package_of,
    parse_go_traces,
)

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
    # The project's own files from any checkout: CI's clone, bench.compare's worktree.
    for root in ("/work/main", "/tmp/ci-check", "/tmp/dittofs-compare-x1/base"):
        assert frame_name(f"pass_ ({root}/reconciler/reconcile.py:80)") == "pass_ (reconciler/reconcile.py)"
        assert package_of(frame_name(f"f ({root}/dittoctl/kube/gateway.py:9)")) == "dittoctl"
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


def test_samples_are_grouped_by_the_task_the_event_loop_was_running() -> None:
    loop = f"{_ROOT};Runner.run (/usr/lib/python3.11/asyncio/runners.py:118)"
    raw = "\n".join([
        f"{loop};worker ({_SITE}/kopf/_core/reactor/queueing.py:50);invoke ({_SITE}/kopf/_core/actions/x.py:9) 14",
        f"{loop};Watch._run (/work/main/reconciler/watch.py:170);Gateway.watch (/work/main/dittoctl/kube/g.py:9) 13",
        f"{loop};WorkQueue._run (/work/main/reconciler/queue.py:97) 40",
        f"{loop};apply_services (/work/main/reconciler/phases/config.py:37) 14",  # a write a pass gathered
        f"{loop};ResponseHandler.data_received ({_SITE}/aiohttp/client_proto.py:300) 6",
        f"{loop};SSLObject.read (/usr/lib/python3.11/ssl.py:900) 4",
        f"{loop};RequestHandler._handle_request ({_SITE}/aiohttp/web_protocol.py:400) 2",
        f"{loop};Queue.get (/usr/lib/python3.11/asyncio/queues.py:160) 1",
        f"{loop} 5",
        f"{_ROOT};_worker (/usr/lib/python3.11/concurrent/futures/thread.py:80) 1",
    ])
    stacks = Stacks.parse(raw)
    assert stacks.total == 100
    assert stacks.top()["by_task"] == {
        "reconcile passes and the writes they gather": 54.0,
        "kopf: the DittoServer stream and its workers": 14.0,
        "the operator's own watch streams": 13.0,
        "connections: aiohttp's protocol callbacks, TLS": 10.0,
        "the event loop itself": 5.0,
        "aiohttp servers: admission webhook, health": 2.0,
        "other: asyncio": 1.0,
        "outside the event loop": 1.0,
    }


def test_the_flame_graph_is_svg_with_one_box_per_call_path() -> None:
    svg = flame_svg(Stacks.parse(RAW), "t")
    root = ET.fromstring(svg)  # noqa: S314 - our own output
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert titles[0].startswith("all: 100 samples")
    assert sum(t.startswith("reconcile (reconciler/reconcile.py)") for t in titles) == 1
    assert any(t.startswith("deepcopy (copy.py): 30 samples, 30.0%") for t in titles)


SEP = "-----------+-------------------------------------------------------"
# `go tool pprof -traces`: leaf first; a sample's labels (if any) before its time.
TRACES = "\n".join([
    "File: kube-apiserver", "Type: cpu", "Duration: 2s, Total samples = 1.50s (75.00%)",
    SEP,
    "      1.20s   runtime.mallocgc (inline)",
    "             k8s.io/apiserver/pkg/endpoints/handlers.UpdateResource.func1",
    "             net/http.HandlerFunc.ServeHTTP",
    SEP,
    "  workqueue:  statefulset",
    "     200ms   encoding/json.Marshal",
    "             k8s.io/apiserver/pkg/endpoints/handlers.UpdateResource.func1",
    "             net/http.HandlerFunc.ServeHTTP",
    SEP,
    "     100ms   runtime.gcBgMarkWorker",
    SEP,
])


def test_go_frames_keep_the_name_go_prints_and_group_by_module() -> None:
    assert go_frame("k8s.io/apiserver/pkg/endpoints/handlers.UpdateResource.func1") == (
        "handlers.UpdateResource.func1", "apiserver")
    assert go_frame("runtime.mallocgc (inline)") == ("runtime.mallocgc", "runtime")
    assert go_frame("crypto/tls.(*Conn).Write") == ("tls.(*Conn).Write", "crypto")
    assert go_frame("golang.org/x/net/http2.(*serverConn).serve") == ("http2.(*serverConn).serve", "net")
    assert go_frame("github.com/google/cel-go/interpreter.(*evalOr).Eval") == ("interpreter.(*evalOr).Eval", "cel-go")


def test_pprof_traces_become_stacks_root_first_in_100_hz_samples() -> None:
    stacks = parse_go_traces(TRACES)
    assert stacks.total == 150
    assert stacks.counts[("http.HandlerFunc.ServeHTTP", "handlers.UpdateResource.func1", "runtime.mallocgc")] == 120
    assert stacks.counts[("http.HandlerFunc.ServeHTTP", "handlers.UpdateResource.func1", "json.Marshal")] == 20
    assert stacks.inclusive()["handlers.UpdateResource.func1"] == 140
    assert stacks.top()["self_by_package"] == {"runtime": 86.7, "encoding": 13.3}
    assert "by_task" not in stacks.top()  # no event loop in Go
    svg = flame_svg(stacks, "t")
    assert "handlers.UpdateResource.func1: 140 samples, 93.3%" in svg


def test_what_grew_lists_the_functions_that_spent_more_biggest_first() -> None:
    before = parse_go_traces(TRACES)
    after = Stacks(before.counts + Stacks.parse("a (x.py);b (x.py) 40").counts, before.groups)
    after.counts[("http.HandlerFunc.ServeHTTP", "handlers.UpdateResource.func1", "json.Marshal")] += 100
    change = grew(before, after)
    rows = change["frames"]
    # Ties in name order, so a figure's JSON does not change between two reads of one profile.
    assert [r["frame"] for r in rows] == ["handlers.UpdateResource.func1", "http.HandlerFunc.ServeHTTP",
                                          "json.Marshal", "a (x.py)", "b (x.py)"]
    assert rows[1] == {"frame": "http.HandlerFunc.ServeHTTP", "before_s": 1.4, "after_s": 2.4, "delta_s": 1.0}
    assert rows[3]["delta_s"] == 0.4
    assert "runtime.gcBgMarkWorker" not in {r["frame"] for r in rows}  # unchanged: not listed
    # The running frame's package: json.Marshal's +1.0 s is the standard library's encoding, b's +0.4 s x.py's.
    assert change["self_by_package_delta_s"] == {"encoding": 1.0, "x": 0.4, "runtime": 0.0}


def test_the_burst_is_compared_with_the_floor_component_by_component_in_one_note() -> None:
    floor = parse_go_traces(TRACES)
    burst = Stacks(floor.counts + Counter({("runtime.gcBgMarkWorker",): 250}), floor.groups)
    change, note = beyond_the_floor(
        {"kube-apiserver": floor, "kube-scheduler": floor},
        {"kube-apiserver": burst, "kube-scheduler": floor, "kube-controller-manager": floor})
    assert set(change) == {"kube-apiserver", "kube-scheduler"}  # the manager was profiled in one window only
    assert change["kube-apiserver"]["frames"][0] == {"frame": "runtime.gcBgMarkWorker", "before_s": 0.1,
                                                     "after_s": 2.6, "delta_s": 2.5}
    assert note == ("the control plane's CPU from the floor's window to the burst's (Go's profiler): "
                    "kube-apiserver 1.5 -> 4.0 CPU-s (+2.5; the most of it in runtime code, +2.5), "
                    "kube-scheduler 1.5 -> 1.5 CPU-s (+0.0)")
