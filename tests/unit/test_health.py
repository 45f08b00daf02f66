"""/healthz and /readyz say what is true: caches listed, watch streams alive, kopf running."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import cast

import aiohttp
import pytest

from dittoctl.api.kinds import DITTOSERVERS, Kind
from dittoctl.cli import parser
from dittoctl.kube.gateway import ApiError, Gateway
from dittoctl.main import Health, main_run
from dittoctl.settings import RunSettings
from reconciler.handlers import CRD_MISSING, Controller
from reconciler.watch import STALE_SECONDS


def controller() -> Controller:
    # Nothing in the constructor touches the API; these checks read only in-memory state.
    return Controller(cast(Gateway, object()))


async def test_ready_only_after_the_first_listing_and_kopf() -> None:
    health = Health(controller(), None)
    assert "watch caches not warm yet (first listing pending)" in health.readiness_problems()
    health.kopf_ready.set()  # kopf raises it before its watchers list anything: not enough alone
    assert "watch caches not warm yet (first listing pending)" in health.readiness_problems()
    assert health.controller is not None
    health.controller.primed.set()
    assert health.readiness_problems() == []


async def test_readiness_names_what_the_caches_wait_for() -> None:
    ctl = controller()
    health = Health(ctl, None)
    policies = next(w for w in ctl.watches if w.kind.plural == "networkpolicies")
    policies.error = "Forbidden: HTTP 403: networkpolicies is forbidden"  # the ClusterRole lacks list/watch
    assert health.readiness_problems() == ["watch caches not warm yet (first listing pending)",
                                           "networkpolicies watch failing (retrying): Forbidden: HTTP 403: "
                                           "networkpolicies is forbidden"]
    policies.started.set()  # an error after the first listing (a dropped stream) is not readiness's concern
    assert health.readiness_problems() == ["watch caches not warm yet (first listing pending)"]
    ctl.waiting = "listing DittoServers failed (retrying): Forbidden: HTTP 403: cannot list dittoservers"
    assert health.readiness_problems() == [ctl.waiting], "the cause, not only 'not warm yet'"


async def test_liveness_fails_on_a_silent_watch_and_a_stopped_kopf() -> None:
    ctl = controller()
    health = Health(ctl, None)
    assert health.liveness_problems() == []
    assert {w.kind.plural for w in ctl.watches} == {"configmaps", "services", "statefulsets", "networkpolicies",
                                                     "pods", "secrets"}
    for watch in ctl.watches:
        watch.last_activity = time.monotonic() - STALE_SECONDS - 5
        if watch.after is not None:  # waiting for kopf's first delivery is not silence (test_watch.py)
            assert health.liveness_problems() == []
            watch.after.set()
        (problem,) = health.liveness_problems()
        assert problem.startswith(f"{watch.kind.plural} watch silent for ")
        watch.last_activity = time.monotonic()

    async def finished() -> None:
        return None

    health.kopf_task = asyncio.create_task(finished())
    await health.kopf_task
    assert health.liveness_problems() == ["kopf (the watch streams) stopped"]


async def test_the_caches_wait_for_the_crd_and_readiness_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    answers: list[bool | Exception] = [False, False, ApiError(0, "connection refused"), False, True]

    class Discovery:
        async def served(self, kind: Kind) -> bool:
            assert kind is DITTOSERVERS
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    monkeypatch.setattr("reconciler.handlers.SERVED_POLL", (0.001, 0.002))
    caplog.set_level(logging.INFO, logger="dittofs.handlers")
    ctl = Controller(cast(Gateway, Discovery()))
    health = Health(ctl, None)
    seen: list[list[str]] = []
    task = asyncio.create_task(ctl._until_served())
    while not task.done():
        seen.append(health.readiness_problems())
        await asyncio.sleep(0)
    await task
    assert ctl.crd_served.is_set() and ctl.waiting is None and answers == []
    assert [CRD_MISSING] in seen
    assert any(p[0].startswith("discovery of the DittoServer API failed (retrying): ApiError") for p in seen if p)
    assert "dittoctl crd | kubectl apply -f -" in CRD_MISSING and "dittoservers.dittofs.dittofs.com" in CRD_MISSING
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [CRD_MISSING], "said once"
    assert "DittoServer CRD served; starting to watch" in caplog.text


async def test_a_webhook_without_a_certificate_is_unready_but_alive() -> None:
    """SPEC §7-§8: /readyz is false while the webhook has no valid certificate (the apiserver must not route to
    it); the reconciler keeps working and /healthz stays true, so the pod is not restarted for it."""
    class Webhook:
        ready = False

    webhook = Webhook()
    health = Health(controller(), webhook)
    health.kopf_ready.set()
    assert health.controller is not None
    health.controller.primed.set()
    assert health.readiness_problems() == ["webhook not serving (no valid certificate loaded)"]
    assert health.liveness_problems() == []
    webhook.ready = True  # a certificate arrived (cert-manager, hot reload)
    assert health.readiness_problems() == []
    assert Health(None, webhook).readiness_problems() == []  # --no-reconciler: the webhook alone decides


def _free_port() -> int:
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as probe:
        return int(probe.getsockname()[1])


async def test_by_default_health_answers_on_ipv6_and_ipv4() -> None:
    """An IPv6-only or IPv6-first cluster probes the pod's IPv6 address: listening on IPv4 alone, the startup
    probe failed and the pod restarted for good."""
    assert socket.has_dualstack_ipv6(), "this machine has no IPv6 loopback: the test cannot show anything"
    health, port = Health(None, None), _free_port()
    await health.start(parser().parse_args(["run"]).health_host, port)  # the default the chart's pod runs with
    try:
        async with aiohttp.ClientSession() as session:
            for host in ("127.0.0.1", "[::1]"):
                async with session.get(f"http://{host}:{port}/healthz") as resp:
                    assert resp.status == 200, host
    finally:
        await health.stop()


def test_a_component_that_stops_for_good_exits_1_with_one_error_line(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """kopf's watcher refused (the operator's RBAC taken away) ended the process with a bare traceback on stderr
    and no ERROR record, so a log search or alert on the operator's JSON lines found nothing (a real-node
    session)."""
    async def refused(settings: RunSettings, stop: asyncio.Event, hurry: asyncio.Event) -> None:
        raise PermissionError("dittoservers.dittofs.dittofs.com is forbidden")

    monkeypatch.setattr("dittoctl.main.run", refused)
    caplog.set_level(logging.INFO, logger="dittofs.main")
    assert main_run(RunSettings()) == 1
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.getMessage() == ("dittofs-operator stopped on an error: PermissionError: "
                                   "dittoservers.dittofs.dittofs.com is forbidden")
    assert record.exc_info is not None, "the traceback goes with it, as the record's error field"
