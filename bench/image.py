"""The operator's image on the test bed's real node: built from the unchanged Dockerfile, installed with the
chart (selfSigned webhook TLS), run as the chart runs it (uid 65532, read-only root, restricted Pod Security).

- image size: the OCI archive (compressed layers, what a registry stores and a node pulls) and the sum of the
  uncompressed layers (what the node's disk holds);
- process start -> ready: from the container's ``dittoctl`` process start (``/proc/<pid>/stat``, CLOCK_BOOTTIME,
  10 ms resolution) to the first 200 from its ``/readyz`` on the pod IP (polled every 20 ms from the host,
  over the node's bridge); one sample per pod, the pod deleted between samples;
- RSS: the process's VmRSS 10 s after ready, with no DittoServer in the cluster.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import statistics
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.report import Check, Figure
from bench.stats import summary
from tests.support.chart import helm_runner
from tests.support.paths import CHART
from tests.testbed import Testbed
from tests.testbed.images import import_archive, operator_image
from tests.testbed.node import SUBNET, RealNode

RELEASE = "image-bench"
TICKS = os.sysconf("SC_CLK_TCK")


def layer_sizes(archive: Path) -> tuple[int, int]:
    """(compressed, uncompressed) bytes of the image's layers in an OCI archive."""
    with tarfile.open(archive) as tar:
        def read(name: str) -> bytes:
            member = tar.extractfile(name)
            assert member is not None, f"{archive}: no {name}"
            return member.read()

        def blob(digest: str) -> bytes:
            return read(f"blobs/{digest.replace(':', '/')}")

        manifest = json.loads(blob(json.loads(read("index.json"))["manifests"][0]["digest"]))
        compressed = uncompressed = 0
        for layer in manifest["layers"]:
            data = blob(layer["digest"])
            compressed += len(data)
            uncompressed += len(gzip.decompress(data)) if "gzip" in layer["mediaType"] else len(data)
    return compressed, uncompressed


def _boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _process_in_pod(pod_uid: str) -> int | None:
    markers = (pod_uid, pod_uid.replace("-", "_"))
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(m in (proc / "cgroup").read_text() for m in markers) and \
                    b"dittoctl" in (proc / "cmdline").read_bytes():
                return int(proc.name)
        except OSError:
            continue
    return None


def _started(pid: int) -> float:
    """The process's start, in CLOCK_BOOTTIME seconds (field 22 of /proc/<pid>/stat, after the comm)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19]) / TICKS


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))


def _ready(ip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:8081/readyz", timeout=0.5) as resp:
            return int(resp.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def _sample(tb: Testbed, namespace: str, old_uid: str | None, timeout: float) -> dict[str, Any]:
    """Wait for a new operator pod; measure its process start -> /readyz 200, then its RSS 10 s later."""
    deadline = time.monotonic() + timeout
    selector = "app.kubernetes.io/component=operator"
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no new operator pod with an IP in {namespace} after {timeout:.0f}s")
        pods = tb.api.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")["items"]
        fresh = [p for p in pods if p["metadata"]["uid"] != old_uid and not p["metadata"].get("deletionTimestamp")
                 and (p.get("status") or {}).get("podIP")]
        if fresh:
            pod = fresh[0]
            break
        time.sleep(0.05)
    uid, ip = pod["metadata"]["uid"], pod["status"]["podIP"]
    while not _ready(ip):
        if time.monotonic() > deadline:
            raise TimeoutError(f"pod {pod['metadata']['name']} never answered /readyz 200 at {ip}")
        time.sleep(0.02)
    ready = _boottime()
    pid = _process_in_pod(uid)
    if pid is None:
        raise RuntimeError(f"no dittoctl process in the cgroup of pod {uid}")
    started = _started(pid)
    time.sleep(10)
    return {"pod": pod["metadata"]["name"], "uid": uid, "start_to_ready_s": round(ready - started, 3),
            "vmrss_kib_10s_after_ready": _rss_kib(pid)}


async def image(tb: Testbed, namespace: str, *, starts: int = 3, timeout: float = 180.0) -> list[Figure]:
    node: RealNode = await asyncio.to_thread(tb.start_real_node)
    helm = helm_runner(tb)
    try:
        t0 = time.perf_counter()
        ref, archive = await asyncio.to_thread(operator_image)
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        await asyncio.to_thread(import_archive, node.ctr, archive)
        imported = time.perf_counter() - t0
        compressed, uncompressed = await asyncio.to_thread(layer_sizes, archive)
        await asyncio.to_thread(tb.create_namespace, namespace)
        tb.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
        placement = node.pod_placement()
        values = {"crds": {"install": False}, "webhook": {"tls": {"mode": "selfSigned"}},
                  "nodeSelector": placement["nodeSelector"], "tolerations": placement["tolerations"],
                  "extraEnv": node.in_cluster_env(),
                  "extraArgs": ["--server-address=pod", f"--provision-networks={SUBNET}"]}
        values_file = tb.workdir / "image-bench-values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        t0 = time.perf_counter()
        await asyncio.to_thread(helm, "install", RELEASE, str(CHART), "-n", namespace, "-f", str(values_file))
        samples = [await asyncio.to_thread(_sample, tb, namespace, None, timeout)]
        install_to_ready = time.perf_counter() - t0
        for _ in range(starts - 1):
            old = samples[-1]
            await asyncio.to_thread(tb.kubectl, "delete", "pod", old["pod"], "-n", namespace, "--wait=false")
            samples.append(await asyncio.to_thread(_sample, tb, namespace, old["uid"], timeout))
    finally:
        await asyncio.to_thread(helm, "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "60s",
                                check=False)
        tb.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        await asyncio.to_thread(tb.stop_real_node)
    common = {"image": ref, "archive": archive.name, "build_or_cache_s": round(built, 1),
              "containerd_import_s": round(imported, 2), "helm_install_to_first_ready_s": round(install_to_ready, 2),
              "samples": samples, "real_node_start_s": dict(node.timings),
              "run_as": "uid 65532, read-only root, Pod Security restricted, selfSigned webhook TLS"}
    times = [s["start_to_ready_s"] for s in samples]
    rss = [s["vmrss_kib_10s_after_ready"] / 1024 for s in samples]
    return [
        Figure("image_size", "operator image size (from the Dockerfile)", "< 100 MiB compressed",
               [Check("compressed layers", round(compressed / 2**20, 1), "<", 100.0, "MiB"),
                Check("uncompressed layers", round(uncompressed / 2**20, 1), "<", 300.0, "MiB")],
               f"{compressed / 2**20:.1f} MiB compressed, {uncompressed / 2**20:.1f} MiB on disk",
               details={**common, "compressed_bytes": compressed, "uncompressed_bytes": uncompressed}),
        Figure("image_start_to_ready", "in-cluster operator: process start -> /readyz 200 (real node)", "< 3 s",
               [Check("max", round(max(times), 3), "<", 3.0, "s")],
               f"p50 {statistics.median(times):.2f} s, max {max(times):.2f} s over {len(times)} pod starts",
               details={**common, "start_to_ready_s": summary(times)}),
        Figure("image_rss", "in-cluster operator RSS, idle, 10 s after ready", "< 90 MiB",
               [Check("max VmRSS", round(max(rss), 1), "<", 90.0, "MiB")],
               f"{statistics.median(rss):.1f} MiB (p50 of {len(rss)} pods)",
               details={**common, "vmrss_mib": [round(r, 1) for r in rss]}),
    ]
