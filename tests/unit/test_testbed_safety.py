"""The test bed's network guard without root: ``ip`` is a script on PATH that records what it is asked."""

from __future__ import annotations

import os
import re
import urllib.request
from pathlib import Path

import pytest

from tests.testbed import safety
from tests.testbed.safety import BLACKHOLED, ensure_blackhole_routes


def fake_ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, present: str = "", fails: bool = False) -> Path:
    calls = tmp_path / "calls"
    script = tmp_path / "ip"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
case "$*" in
  *"route show type blackhole"*) printf '%s' '{present}' ;;
  *) {"echo 'RTNETLINK answers: Operation not permitted' >&2; exit 2" if fails else "exit 0"} ;;
esac
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_missing_routes_are_installed_with_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_ip(tmp_path, monkeypatch, present=f"blackhole {BLACKHOLED[0]} \n")
    assert ensure_blackhole_routes() == [BLACKHOLED[1]]
    assert calls.read_text().splitlines() == ["-4 route show type blackhole",
                                              f"route replace blackhole {BLACKHOLED[1]}"]


def test_a_route_that_cannot_be_installed_stops_the_test_bed_naming_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ip(tmp_path, monkeypatch, fails=True)
    with pytest.raises(PermissionError, match=re.escape("ip route replace blackhole 10.96.0.0/12; ip route replace "
                                                        "blackhole 10.244.0.0/16")):
        ensure_blackhole_routes()


def test_the_session_s_proxies_are_withheld_from_it_and_given_to_builds_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safety, "WITHHELD", {})
    monkeypatch.setattr(urllib.request, "_opener", None)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("no_proxy", "localhost")
    safety.withhold_proxies()
    assert not [k for k in os.environ if safety.is_proxy_var(k)]
    assert safety.build_env()["HTTPS_PROXY"] == "http://proxy.invalid:3128"
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")  # set again later: urllib still ignores it
    opener = urllib.request._opener  # type: ignore[attr-defined]
    assert opener is not None
    # Installed now, so not built at the first request from whatever the environment says then.
    assert not [h for h in opener.handlers if isinstance(h, urllib.request.ProxyHandler)]


def test_a_port_is_handed_out_once_per_process() -> None:
    """A port probed free and released can be probed free again before its taker binds it: a CI run drew an SMB
    port, then dfs's API port, the same one (``tests.support.net``)."""
    from tests.support.net import free_port

    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    taken: set[int] = set()
    mine = free_port(avoid=taken)
    assert taken == {mine} and mine not in ports
