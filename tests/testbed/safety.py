"""No packet leaves the machine (SPEC §14): proxy-free component environments and blackhole routes.

Nothing in the test bed may dial an address that would leave the host. The apiserver could otherwise
follow a Service reference (a webhook's ClusterIP) or a kwok pod IP through the default route; with a
blackhole route the kernel refuses such a connect at once (``EINVAL``/``ENETUNREACH``). Only the Service
and kwok pod CIDRs are blackholed: a broader range can cut off the machine's DNS resolver.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

SERVICE_CIDR = "10.96.0.0/12"  # contains the apiserver's --service-cluster-ip-range
KWOK_POD_CIDR = "10.244.0.0/16"  # kwok --cidr
BLACKHOLED = (SERVICE_CIDR, KWOK_POD_CIDR)


def is_proxy_var(name: str) -> bool:
    return name.lower() in ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "ftp_proxy")


WITHHELD: dict[str, str] = {}
"""The proxy variables the test session started with: only builds get them (they fetch modules and packages)."""


def withhold_proxies() -> None:
    """Take the proxy variables out of this process for good, and make ``urllib`` ignore any set later: it
    honours them even for 127.0.0.1 and the bridge (``proxy_bypass`` says no), so a test's own request to the
    operator's /readyz or a DittoFS pod would leave the machine through the proxy."""
    for name in [k for k in os.environ if is_proxy_var(k)]:
        WITHHELD[name] = os.environ.pop(name)
    urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({})))


def build_env() -> dict[str, str]:
    """A build's environment: this process's, with the proxies it was started with."""
    return {**os.environ, **WITHHELD}


def clean_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default os.environ) without proxy variables: components must never go through a proxy."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not is_proxy_var(k)}
    env.update(extra)
    return env


def blackhole_routes() -> set[str]:
    """The blackhole routes of the main table, as CIDR strings."""
    out = subprocess.run(["ip", "-4", "route", "show", "type", "blackhole"], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith("blackhole ")}


def ensure_blackhole_routes() -> list[str]:
    """Install the missing blackhole routes; returns the ones added. They are left in place at teardown:
    another test bed on the host (a demo, a second run) may still rely on them, and they cover only the
    test bed's own ranges.

    Raises ``PermissionError`` when a route is missing and cannot be added (not root): a test bed without them
    would let a ClusterIP or kwok pod IP dial leave the machine.
    """
    present = blackhole_routes()
    added: list[str] = []
    for cidr in BLACKHOLED:
        if cidr in present:
            continue
        # replace, not add: another test bed starting at the same moment may have added it ("File exists").
        proc = subprocess.run(["ip", "route", "replace", "blackhole", cidr], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise PermissionError(
                f"cannot install blackhole route {cidr} ({proc.stderr.strip()}); without it a dial to a ClusterIP "
                f"or kwok pod IP would leave the machine. Run as root, or have root run once: "
                + "; ".join(f"ip route replace blackhole {c}" for c in BLACKHOLED))
        added.append(cidr)
    return added


def missing_blackhole_routes() -> list[str]:
    return sorted(set(BLACKHOLED) - blackhole_routes())


def proxy_vars_of(pid: int) -> list[str]:
    """The proxy variables in a running process's environment."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return [name for name in (item.decode(errors="replace").split("=", 1)[0] for item in raw if b"=" in item)
            if is_proxy_var(name)]


def connect_error(ip: str, port: int) -> tuple[int | None, float]:
    """(errno of a TCP connect to ``ip:port``, seconds it took); errno None: it connected."""
    t0 = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect((ip, port))
        except OSError as exc:
            return exc.errno, time.monotonic() - t0
    return None, time.monotonic() - t0
