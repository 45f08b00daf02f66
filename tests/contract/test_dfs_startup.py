"""Contract: dfs answers its first probe only after reading back every byte its local stores keep, so the time
it needs to start grows with the data (the operator's startup budget, ``spec.startupTimeoutSeconds``, follows
``storage.contentSize``; docs/DITTOFS_FACTS.md deviation 10)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from tests.support.net import free_port
from tests.support.prereqs import missing
from tests.testbed.dfs import DfsServer, minimal_config
from tests.testbed.fileservice import nfs_put

ADMIN_PASSWORD = "it-admin-password-1"  # = conftest.dfs_env
BLKIO = Path("/sys/fs/cgroup/blkio")
DATA_MIB = 96
READ_MIB_PER_SECOND = 3  # so reading the data back takes ~32 s


def _disk_of(path: Path) -> str:
    """The whole disk holding ``path`` as ``major:minor`` (blkio throttles disks, not partitions)."""
    dev = os.stat(path).st_dev
    sysfs = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not sysfs.exists():
        missing("blkio", f"{path} is on no block device (st_dev {os.major(dev)}:{os.minor(dev)})")
    if (sysfs / "partition").exists():
        sysfs = sysfs.resolve().parent
    return (sysfs / "dev").read_text().strip()


@contextlib.contextmanager
def _read_limit(disk: str, bytes_per_second: int) -> Iterator[Path]:
    """A cgroup whose processes read ``disk`` at most this fast; it must be empty again at the end."""
    if not (BLKIO / "blkio.throttle.read_bps_device").exists() or os.geteuid() != 0:
        missing("blkio", f"no writable cgroup v1 blkio controller at {BLKIO}")
    group = BLKIO / f"dittofs-contract-{os.getpid()}"
    group.mkdir()
    try:
        (group / "blkio.throttle.read_bps_device").write_text(f"{disk} {bytes_per_second}\n")
        yield group
    finally:
        group.rmdir()


@contextlib.contextmanager
def _forking_into(group: Path) -> Iterator[None]:
    """Processes started inside land in ``group``: this one joins it for the fork and leaves at once (cgroup v1
    limits are not inherited by child cgroups, so the server cannot be put in one below)."""
    (group / "cgroup.procs").write_text(str(os.getpid()))
    try:
        yield
    finally:
        (BLKIO / "cgroup.procs").write_text(str(os.getpid()))


def _evict(directory: Path) -> int:
    """Drop the files' pages from the page cache, so the next start reads them from the disk; their size."""
    total = 0
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                total += os.fstat(fd).st_size
            finally:
                os.close(fd)
    return total


def _logged_at(log: str, message: str) -> datetime:
    for line in log.splitlines():
        if line.startswith("{") and json.loads(line).get("msg") == message:
            return datetime.fromisoformat(json.loads(line)["time"])
    raise AssertionError(f"dfs never logged {message!r}")


def test_dfs_answers_only_after_reading_back_its_local_data(dfs_env: dict[str, str], tmp_path: Path) -> None:
    config = minimal_config(tmp_path / "controlplane.db")
    block_dir = tmp_path / "store" / "block"
    nfs_port = free_port()
    with DfsServer(config, dfs_env, tmp_path, isolate_network=False) as server:
        token = server.login("admin", ADMIN_PASSWORD)["access_token"]
        for path, body in [
            ("/api/v1/store/metadata", {"name": "meta", "type": "badger",
                                        "config": json.dumps({"path": str(tmp_path / "store" / "metadata")})}),
            ("/api/v1/store/block/local", {"name": "local", "type": "fs",
                                           "config": json.dumps({"path": str(block_dir)})}),
            ("/api/v1/shares", {"name": "/export", "metadata_store_id": "meta", "local_block_store": "local",
                                "default_permission": "read-write"}),
        ]:
            status, answer = server.request("POST", path, body, token=token)
            assert status == 201, (path, answer)
        status, answer = server.request("PUT", "/api/v1/adapters/nfs", {"port": nfs_port}, token=token)
        assert status == 200, answer
        data = tmp_path / "data.bin"
        data.write_bytes(os.urandom(DATA_MIB << 20))
        nfs_put("127.0.0.1", data, "data.bin", port=nfs_port)
    assert _evict(block_dir) >= DATA_MIB << 20, "the file's bytes are on the content volume"

    with _read_limit(_disk_of(block_dir), READ_MIB_PER_SECOND << 20) as group:
        started = time.monotonic()
        with _forking_into(group):
            again = DfsServer(config, dfs_env, tmp_path, isolate_network=False, startup_timeout=300).start()
        try:
            waited = time.monotonic() - started
            log = again.log_text()
        finally:
            again.stop()
    reading = DATA_MIB / READ_MIB_PER_SECOND
    assert waited >= 0.8 * reading, f"/health answered after {waited:.1f} s; reading the data takes {reading:.0f} s"
    opened = _logged_at(log, "Per-share BlockStore initialized")
    assert (opened - _logged_at(log, "Loaded metadata store")).total_seconds() >= 0.8 * reading
    assert _logged_at(log, "API server listening") >= opened, "the API binds after the share's data is read"
