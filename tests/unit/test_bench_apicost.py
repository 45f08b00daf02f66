"""The arithmetic of `apiserver_write_cost` and of the scale figure's CPU decomposition (bench/apicost.py,
bench/cli.py): plain data, no control plane."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.apicost import (
    SERVER_WRITES,
    UNDEFAULTED,
    WATCHERS,
    median_round,
    per_server_costs,
    report,
    undefaulted_crd,
    without_defaults,
)
from bench.cli import _decompose
from bench.floor import early_plan
from bench.objects import dittoserver
from bench.report import Check, Figure

CONTRACT = early_plan(dittoserver("demo", "ns")).requests()


def _ms(apiserver: float, etcd: float = 0.0) -> dict[str, float]:
    return {"kube-apiserver": apiserver, "etcd": etcd, "kube-controller-manager": 0.0}


def test_per_server_costs_weigh_each_request_by_how_often_a_create_makes_it() -> None:
    per_request = {
        "DittoServer create, through the webhook": _ms(5.0), "DittoServer finalizer patch": _ms(5.0, 1.0),
        "DittoServer status patch (1)": _ms(6.0), "DittoServer status patch (2)": _ms(8.0),
        "Secret create": _ms(1.0, 0.5), "Event create": _ms(1.0),
        "Service (ClusterIP) apply": _ms(7.0, 3.0), "ConfigMap apply": _ms(2.0),
        "ConfigMap apply, no watcher": _ms(2.0), f"ConfigMap apply, {WATCHERS} watchers": _ms(2.0 + WATCHERS * 0.25),
    }
    split = per_server_costs(per_request, {"Service (ClusterIP)": 3.0, "ConfigMap": 1.0}, CONTRACT)
    assert split.contract == {"DittoServer create, through the webhook": 5.0, "DittoServer finalizer patch": 6.0,
                              "DittoServer status patch": 14.0, "Secret create": 3.0, "Event create": 1.0}
    assert split.floor == {"Service (ClusterIP)": 30.0, "ConfigMap": 2.0}
    assert split.watch_event == pytest.approx(0.25)


def test_the_figure_passes_on_a_measurement_and_fails_on_an_empty_meter() -> None:
    costs = {"DittoServer create, through the webhook": _ms(5.0), "ConfigMap apply": _ms(2.0)}
    figure = report(costs, {"ConfigMap": 1.0}, CONTRACT, [], {"kube-apiserver": 0.02}, method="m")
    assert figure.passed, figure.checks
    assert "children 2 ms, contract writes 5 ms" in figure.measured_text
    nothing = {label: _ms(0.0) for label in costs}
    assert not report(nothing, {"ConfigMap": 1.0}, CONTRACT, [], {}, method="m").passed
    assert not report(costs, {"ConfigMap": 1.0}, CONTRACT, ["Secret create: KubeError(...)"], {}, method="m").passed


def test_a_watch_event_the_meter_did_not_resolve_is_said_so_not_read_as_free() -> None:
    per_request = {"ConfigMap apply, no watcher": _ms(2.1), f"ConfigMap apply, {WATCHERS} watchers": _ms(1.3),
                   "ConfigMap apply": _ms(1.0), "Event create": _ms(1.0)}
    assert per_server_costs(per_request, {}, CONTRACT).watch_event is None
    figure = report(per_request, {"ConfigMap": 1.0}, CONTRACT, [], {}, method="m")
    assert "a watch event delivered not resolved" in figure.measured_text
    assert figure.details["per_watch_event_delivered_ms"] is None


def test_each_side_of_the_watch_probe_keeps_its_median_round() -> None:
    # One round that absorbed an earlier block's work (3.2 ms) must not decide the side it fell on.
    rounds = [_ms(3.2), _ms(1.0, 0.1), _ms(0.9)]
    assert median_round(rounds) == _ms(1.0, 0.1)
    assert median_round([_ms(2.0)]) == _ms(2.0)


def test_what_the_schema_defaults_cost_is_the_server_writes_against_the_crd_without_them() -> None:
    per_request = {label: _ms(6.0, 1.0) for label in SERVER_WRITES}
    assert per_server_costs(per_request, {}, CONTRACT).defaults is None  # not measured, not zero
    per_request |= {label + UNDEFAULTED: _ms(3.0, 0.5) for label in SERVER_WRITES}
    assert per_server_costs(per_request, {}, CONTRACT).defaults == 4 * 3.5
    figure = report(per_request | {"ConfigMap apply": _ms(2.0)}, {"ConfigMap": 1.0}, CONTRACT, [], {}, method="m")
    assert "the CRD's schema defaults are 14 ms of the DittoServer's writes" in figure.measured_text


def test_the_undefaulted_crd_differs_from_ours_only_in_its_group_and_defaults() -> None:
    from dittoctl.api.crd import build_crd

    ours, bare = build_crd(), undefaulted_crd()
    assert bare["spec"]["group"] != ours["spec"]["group"]
    assert bare["metadata"]["name"] == f"dittoservers.{bare['spec']['group']}"
    text, bare_text = json.dumps(ours), json.dumps(bare)
    assert '"default":' in text and '"default":' not in bare_text

    def strip(node: Any) -> Any:  # naive: no property of ours is named "default"
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "default"}
        return [strip(v) for v in node] if isinstance(node, list) else node

    assert [v["schema"] for v in bare["spec"]["versions"]] == [strip(v["schema"]) for v in ours["spec"]["versions"]]
    assert bare["spec"]["names"] == ours["spec"]["names"]
    field = {"type": "object", "properties": {"default": {"type": "string", "default": "x"}}, "default": {}}
    assert without_defaults(field) == {"type": "object", "properties": {"default": {"type": "string"}}}


def _figure(name: str, value: float, **details: object) -> Figure:
    return Figure(name, name, "", [Check("x", value, ">=", 0.1, "")], "", details=dict(details))


def test_the_scale_figure_says_what_the_control_plane_spent_beyond_the_floor() -> None:
    floor = _figure("scale_300_floor", 40.0, cpu_until_all_ready={
        "window_s": 40.0,
        "this_run_by_process_pct_of_one_core": {"kube-apiserver": 100.0, "etcd": 20.0, "bench": 10.0}})
    scale = _figure("scale_300_ready", 60.0, operator_cpu_s=10.0)
    ours = {"window_s": 60.0, "this_run_by_process_pct_of_one_core": {"kube-apiserver": 100.0, "etcd": 20.0,
                                                                        "operator": 16.0, "bench": 10.0}}
    cost = _figure("apiserver_write_cost", 30.0)
    _decompose(scale, ours, floor, cost, 300)
    # control plane: 60 s x 1.2 cores - 40 s x 1.2 cores; the contract: 30 ms x 300 servers
    assert scale.details["overhead_cpu_s"] == {"control_plane_beyond_the_floor": 24.0,
                                               "of_which_the_contract_writes_measured": 9.0, "operator": 10.0}
    assert "+24.0 CPU-s" in scale.details["notes"][-1]
