"""Session-wide fixtures. Keep this file small: only the shared test bed lives here."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

import pytest

from tests.testbed import Testbed, ensure_binaries
from tests.testbed.node import NOT_PROVEN, RealNode


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
    if os.environ.get("DITTOFS_TESTBED_REAL_NODE") == "0" and os.environ.get("CI", "").lower() not in ("1", "true"):
        pytest.skip("DITTOFS_TESTBED_REAL_NODE=0: real node disabled; NOT PROVEN: " + "; ".join(NOT_PROVEN))
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
