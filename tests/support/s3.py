"""A real S3 API for tests: ``moto_server`` (PyPI ``moto[server]``) on a local address, no cloud.

DittoFS's remote block stores talk to it with path-style addressing; it needs ``allow_private_endpoint``
because the address is loopback or on the test bed's bridge. Requests from here never use a proxy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.support.net import free_port
from tests.support.process import stop_process
from tests.testbed.cluster import die_with_parent

ACCESS_KEY_ID = "AKIATESTBEDDITTOFS01"  # moto accepts any key pair; these are never real credentials


class MotoServer:
    """``moto_server -H host -p port`` as a context manager, with bucket helpers over plain HTTP."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self.log_path = workdir / "moto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> MotoServer:
        binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
        if binary is None:
            raise RuntimeError("moto_server not found: install the test extras (`make bootstrap`)")
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("AWS_")}
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen([binary, "-H", self.host, "-p", str(self.port)], stdout=log,
                                          stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited {self._proc.returncode}: {self.log_path.read_text()[-500:]}")
            try:
                self._request("GET", "/")
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"moto_server did not answer on {self.endpoint} within 30 s")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        stop_process(self._proc)

    def _request(self, method: str, path: str) -> bytes:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(urllib.request.Request(self.endpoint + path, method=method), timeout=10) as resp:
            return bytes(resp.read())

    def create_bucket(self, bucket: str) -> None:
        self._request("PUT", f"/{bucket}")

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Object keys in ``bucket`` (path style, ListObjectsV2; at most 1000, plenty for a test)."""
        body = self._request("GET", f"/{bucket}?list-type=2&prefix={prefix}").decode()
        return re.findall(r"<Key>([^<]+)</Key>", body)
