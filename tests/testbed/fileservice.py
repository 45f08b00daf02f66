"""Talk to a real ``dfs`` on the real node: REST login and reads, NFS through ``libnfs-utils``.

The operator provisions the declared shares over REST (SPEC §13); a minimal DittoServer serves ``/export``
read-write. NFS goes straight to the pod IP on the bridge (no kernel mount: the host has no NFS client),
v3 with MOUNT on the same port.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SHARE = "/export"
NFS_PORT = 12049
API_PORT = 8080


class DfsApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> {status}: {body[:300]}")
        self.status = status


def nfs_url(pod_ip: str, name: str, share: str = SHARE, *, port: int = NFS_PORT, uid: int = 65532) -> str:
    # uid/gid: root (the default) is squashed to 65534; 65532 matches the server's own files.
    return f"nfs://{pod_ip}{share}/{name}?nfsport={port}&mountport={port}&version=3&uid={uid}&gid={uid}"


class DfsRest:
    """A minimal REST client for one dfs (pod IP on the bridge, port 8080)."""

    def __init__(self, host: str, port: int = API_PORT, timeout: float = 10.0) -> None:
        self.base = f"http://{host}:{port}"
        self.timeout = timeout
        self.token: str | None = None

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        # No proxy, whatever the environment says: the pod IP is on the local bridge.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read().decode()
                status = int(resp.status)
        except urllib.error.HTTPError as exc:
            raw, status = exc.read().decode(errors="replace"), int(exc.code)
        parsed: Any = json.loads(raw) if raw.strip().startswith(("{", "[")) else raw
        if status >= 300 and status not in ok:
            raise DfsApiError(method, path, status, raw)
        return status, parsed

    def login(self, username: str, password: str) -> int:
        """Log in; returns the HTTP status (200, or 401 for a wrong password) and keeps the token."""
        status, body = self.call("POST", "/api/v1/auth/login", {"username": username, "password": password},
                                 ok=(401,))
        if status == 200:
            self.token = body["access_token"]
        return status

    def shares(self) -> set[str]:
        """Share names DittoFS serves now (needs a login)."""
        return {str(s["name"]) for s in self._list("/api/v1/shares")}

    def _list(self, path: str) -> list[dict[str, Any]]:
        _, body = self.call("GET", path)
        items: list[dict[str, Any]] = body if isinstance(body, list) else (body or {}).get("items") or []
        return items


def bootstrap_admin(tb: Any, namespace: str, server: str = "demo") -> tuple[str, str]:
    """(username, password) from a server's generated bootstrap admin Secret (``tb``: the Testbed)."""
    data = tb.secret_data(namespace, f"{server}-admin-bootstrap-credentials")
    return data["username"].decode(), data["password"].decode()


def admin_rest(tb: Any, namespace: str, pod_ip: str, server: str = "demo") -> DfsRest:
    """A REST client logged in to the server's dfs as its bootstrap admin (fails loudly otherwise)."""
    rest = DfsRest(pod_ip)
    status = rest.login(*bootstrap_admin(tb, namespace, server))
    if status != 200:
        raise DfsApiError("POST", "/api/v1/auth/login", status, "the bootstrap admin Secret does not log in")
    return rest


def nfs_put(pod_ip: str, local: Path, name: str, share: str = SHARE, *, port: int = NFS_PORT,
            uid: int = 65532) -> None:
    _nfs("nfs-cp", str(local), nfs_url(pod_ip, name, share, port=port, uid=uid))


def nfs_get(pod_ip: str, name: str, share: str = SHARE, *, port: int = NFS_PORT, uid: int = 65532) -> bytes:
    url = nfs_url(pod_ip, name, share, port=port, uid=uid)
    proc = subprocess.run(["nfs-cat", url], capture_output=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"nfs-cat {url} exited {proc.returncode}: {proc.stderr.decode()}")
    return proc.stdout


def _nfs(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")


def smb(pod_ip: str, port: int, share: str, user: str, password: str, command: str,
        cwd: Path) -> subprocess.CompletedProcess[str]:
    """``smbclient //ip/share -p port -U user%password -c command`` in ``cwd`` (NTLM with the REST password;
    the share name has no leading slash). The password travels in the environment, not argv."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "PASSWD": password}
    return subprocess.run(["smbclient", f"//{pod_ip}/{share.lstrip('/')}", "-p", str(port), "-U", user, "-c",
                           command], capture_output=True, text=True, timeout=60, check=False, cwd=cwd, env=env)


def smb_get(pod_ip: str, port: int, share: str, user: str, password: str, name: str, cwd: Path) -> bytes:
    proc = smb(pod_ip, port, share, user, password, f"get {name} smb-{name}", cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"smbclient get {name} as {user} exited {proc.returncode}: {proc.stdout[-300:]}"
                           f"{proc.stderr[-300:]}")
    return (cwd / f"smb-{name}").read_bytes()


def dfs_pid(pod_uid: str) -> int:
    """The host PID of the pod's dfs process (found by its cgroup, which names the pod UID)."""
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or not (proc / "cmdline").read_bytes().startswith(b"/app/dfs\0start"):
                continue
            cgroup = (proc / "cgroup").read_text()
        except OSError:
            continue
        if pod_uid in cgroup or pod_uid.replace("-", "_") in cgroup:
            return int(proc.name)
    raise RuntimeError(f"no dfs process of pod {pod_uid} on this host")
