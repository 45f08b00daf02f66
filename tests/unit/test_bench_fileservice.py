"""The fileservice benchmark's object is valid for the webhook's rules, and its watch bookkeeping counts a
transition once (a new pod uid Ready, Provisioned or Ready turning True at the current generation)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.fileservice import Transitions, _create_to_ready_figure, rest_delta
from bench.kube import WatchEvent
from bench.objects import fileserver
from dittoctl.api.facts import ClusterFacts
from dittoctl.api.rules import validate
from tests.testbed.node import NODE_IP


def test_the_file_server_is_valid_offline() -> None:
    obj = fileserver("demo", "ns", s3_endpoint=f"http://{NODE_IP}:5000",
                     placement={"nodeSelector": {"kubernetes.io/hostname": "real-node-0"}})
    verdict = validate(obj, None, ClusterFacts.offline())
    assert verdict.allowed, verdict.messages
    spec = obj["spec"]
    assert len(spec["users"]) == 5 and len(spec["shares"]) == 10
    assert [s["name"] for s in spec["shares"] if s.get("remoteBlockStore") == "s3"] == ["/s0"]


def _server(provisioned: str, ready: str = "False", generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": "demo", "generation": generation},
            "status": {"conditions": [{"type": kind, "status": status, "observedGeneration": observed}
                                      for kind, status in (("Provisioned", provisioned), ("Ready", ready))]}}


def _pod(uid: str, ready: str) -> dict[str, Any]:
    return {"metadata": {"name": "demo-0", "uid": uid, "labels": {"app.kubernetes.io/instance": "demo"}},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}


def test_transitions_count_each_pod_and_each_condition_once() -> None:
    t = Transitions()
    for arrived, obj in [(1.0, _pod("a", "False")), (2.0, _pod("a", "True")), (2.5, _pod("a", "True")),
                         (6.0, _pod("b", "True"))]:
        t.on_pod(WatchEvent("MODIFIED", obj, arrived))
    for arrived, obj in [(3.0, _server("True", "True", 2, 1)), (3.2, _server("True", "False", 2, 2)),
                         (3.4, _server("True", "True", 2, 2)), (3.6, _server("True", "True", 2, 2)),
                         (5.0, _server("False", "False", 2, 2)), (7.0, _server("True", "True", 2, 2))]:
        t.on_server(WatchEvent("MODIFIED", obj, arrived))
    assert t.pod_ready == {"demo": [2.0, 6.0]}
    # A stale True (observedGeneration behind) does not count.
    assert t.turned == {("demo", "Provisioned"): [3.2, 7.0], ("demo", "Ready"): [3.4, 7.0]}
    assert t.sample("demo", 0.0) == (2.0, 3.2, 3.4)
    assert t.sample("demo", 4.0) == (6.0, 7.0, 7.0)
    assert t.sample("demo", 8.0) is None
    assert rest_delta(Counter({"GET": 5, "POST": 1}), Counter({"GET": 12, "POST": 1, "PUT": 1})) == {
        "GET": 7, "PUT": 1}


def test_create_to_ready_subtracts_each_servers_probe_delay() -> None:
    figure = _create_to_ready_figure([12.4, 11.1, 14.2], [10, 10, 10], {"file_servers": 3})
    assert figure.details["net_s"] == [2.4, 1.1, 4.2]
    check = figure.checks[0]
    assert (check.value, check.op, check.target) == (4.2, "<", 3.0)
    assert not figure.passed
    assert figure.measured_text == "max 4.20 s, median 2.40 s over 3 creates (initial delay 10 s subtracted)"
