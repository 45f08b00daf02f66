"""Session-wide fixtures and the no-silent-skip rule. Keep this file small: only the shared test bed lives here."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

import pytest

from tests.support import prereqs
from tests.testbed import Testbed, ensure_binaries
from tests.testbed.node import NOT_PROVEN, RealNode, real_node_opted_out
from tests.testbed.safety import withhold_proxies


def pytest_configure(config: pytest.Config) -> None:
    # Before any test's first request: no proxy for this process, nor for what it starts (builds excepted).
    withhold_proxies()


@pytest.fixture(scope="session")
def testbed(pytestconfig: pytest.Config) -> Iterator[Testbed]:
    """One real control plane (etcd, apiserver, KCM, scheduler, kwok) for the whole session.

    Builds missing binaries first (build.sh; a cold Kubernetes build takes 15-30 min). Fails loudly, never
    skips, when the control plane cannot start. Set DITTOFS_TESTBED_KEEP=1 to keep the work dir and logs.
    """
    capman = pytestconfig.pluginmanager.getplugin("capturemanager")
    # Show build and start-up progress live instead of capturing it.
    show = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
    with show:
        binaries = ensure_binaries()
        t0 = time.monotonic()
        tb = Testbed(binaries=binaries)
        print(f"\n[testbed] starting control plane in {tb.workdir}", file=sys.stderr)
        tb.start()
        rss = sum(tb.rss_bytes().values()) / 2**20
        print(f"[testbed] ready in {time.monotonic() - t0:.1f}s, RSS {rss:.0f} MiB", file=sys.stderr)
    try:
        yield tb
    finally:
        tb.stop()


@pytest.fixture(scope="session")
def real_node(testbed: Testbed, pytestconfig: pytest.Config) -> Iterator[RealNode]:
    """``real-node-0`` (kubelet + containerd) on the session's control plane, started on first use.

    Holds the host-wide real-node lock for the session; teardown restores the host. A host that cannot run
    it fails the test loudly with the reason. ``DITTOFS_TESTBED_REAL_NODE=0`` turns it off (never on CI)
    and says what is then not proven.
    """
    if real_node_opted_out():
        # The "NOT PROVEN (opted out" prefix is what marks an explicit opt-out (tests/support/prereqs.py).
        pytest.skip("NOT PROVEN (opted out by DITTOFS_TESTBED_REAL_NODE=0): " + "; ".join(NOT_PROVEN))
    capman = pytestconfig.pluginmanager.getplugin("capturemanager")
    show = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
    with show:
        node = testbed.start_real_node()
        rss = sum(node.rss_bytes().values()) / 2**20
        print(f"[real-node] timings {node.timings}; kubelet+containerd RSS {rss:.0f} MiB", file=sys.stderr)
    try:
        yield node
    finally:
        testbed.stop_real_node()


def _not_a_pass(report: pytest.TestReport | pytest.CollectReport, nodeid: str) -> None:
    """Fail a skipped or xfailed report unless it is an explicit opt-out (tests/support/prereqs.py), which is
    listed at the end of the run instead."""
    if hasattr(report, "wasxfail"):  # xfailed, or xpassed where a marker says strict=False
        reason = f"xfail: {getattr(report, 'wasxfail')}"  # noqa: B009 - set by pytest, not declared
        delattr(report, "wasxfail")  # else the session would not count the failure
        what = "xfailed, and an expected failure" if report.skipped else "xpassed, and an xfail marker"
        report.outcome = "failed"
        report.longrepr = f"{what} is not a pass: {reason}\nFix what fails and remove the marker."
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    if not prereqs.record_skip(nodeid, reason):
        report.outcome = "failed"
        report.longrepr = (f"skipped, and a skip is not a pass: {reason}\n"
                           f"Make the prerequisite available, or use an explicit opt-out ({prereqs.OPT_OUT_VAR}).")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A skipped test proves nothing, nor does an expected failure: both fail the run unless the skip is an
    explicit opt-out."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped or hasattr(report, "wasxfail"):
        _not_a_pass(report, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_collectreport(report: pytest.CollectReport) -> Iterator[None]:
    """A module skipped whole at collection (``pytest.importorskip``, ``pytest.skip(allow_module_level=True)``)
    proves none of its tests: the same rule. A wrapper, so the report is failed before any implementation sees
    it (the session counts the failures that set the exit status in its own, ``tryfirst``, implementation)."""
    if report.skipped:
        _not_a_pass(report, report.nodeid)
    yield


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in prereqs.summary():
        terminalreporter.write_line(line, yellow=True, bold=True)
