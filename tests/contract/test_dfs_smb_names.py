"""Which share names SMB reaches in DittoFS v0.29.0: a tree connect looks the share up by "/" + the requested name
in lower case (docs/DITTOFS_FACTS.md). ``FileShareSpec.smb_reachable`` is held to what the real dfs answers: the
webhook's warning and ``status.shares[].smb`` rest on it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from dittoctl.api.models import FileShareSpec
from tests.support.net import free_port
from tests.support.poll import eventually
from tests.testbed.dfs import DfsServer, minimal_config
from tests.testbed.fileservice import nfs_get, nfs_put

ADMIN_PASSWORD = "it-admin-password-1"  # = conftest.dfs_env
NAMES = ("/lower", "/Upper", "/team/docs")


def _tree_connect(port: int, share: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """An anonymous ``ls`` (the shares grant read-write to clients without a grant)."""
    return subprocess.run(["smbclient", f"//127.0.0.1/{share}", "-p", str(port), "-N", "-c", "ls"],
                          capture_output=True, text=True, timeout=60, check=False, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})


def test_smb_reaches_a_share_only_by_one_lower_case_segment(dfs_env: dict[str, str], tmp_path: Path) -> None:
    smb_port, nfs_port = free_port(), free_port()
    with DfsServer(minimal_config(tmp_path / "controlplane.db"), dfs_env, tmp_path, isolate_network=False) as server:
        token = server.login("admin", ADMIN_PASSWORD)["access_token"]
        shares: list[dict[str, object]] = [{"name": name, "metadata_store_id": "meta", "local_block_store": "local",
                                            "default_permission": "read-write"} for name in NAMES]
        calls: list[tuple[str, str, dict[str, object]]] = [
            ("POST", "/api/v1/store/metadata", {"name": "meta", "type": "memory", "config": "{}"}),
            ("POST", "/api/v1/store/block/local", {"name": "local", "type": "fs",
                                                   "config": json.dumps({"path": str(tmp_path / "blocks")})}),
            *(("POST", "/api/v1/shares", share) for share in shares),
            ("PUT", "/api/v1/adapters/nfs", {"port": nfs_port}),
            ("PUT", "/api/v1/adapters/smb", {"port": smb_port}),
        ]
        for method, path, body in calls:
            status, answer = server.request(method, path, body, token=token)
            assert status in (200, 201), (path, answer)
        eventually(lambda: _tree_connect(smb_port, "lower", tmp_path).returncode == 0, timeout=20,
              what=f"an SMB ls of /lower on port {smb_port}")

        answers = {name: _tree_connect(smb_port, name[1:], tmp_path) for name in NAMES}
        for name in ("/Upper", "/team/docs"):
            assert "NT_STATUS_BAD_NETWORK_NAME" in answers[name].stdout + answers[name].stderr, answers[name]
        lowered = _tree_connect(smb_port, "upper", tmp_path)  # "/upper" is no share: the lookup is exact
        assert "NT_STATUS_BAD_NETWORK_NAME" in lowered.stdout + lowered.stderr, lowered
        assert {n: FileShareSpec(name=n).smb_reachable for n in NAMES} == {
            n: answers[n].returncode == 0 for n in NAMES}

        # NFS serves every one of them as named.
        local = tmp_path / "f.txt"
        for name in NAMES:
            local.write_text(name)
            nfs_put("127.0.0.1", local, "f.txt", name, port=nfs_port)
            assert nfs_get("127.0.0.1", "f.txt", name, port=nfs_port) == name.encode()
