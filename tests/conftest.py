"""Session-wide fixtures. Keep this file small: only the shared test bed lives here."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

import pytest

from tests.testbed import Testbed, ensure_binaries


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
