"""A fake dynamic PV provisioner: a daemon thread that makes a PersistentVolume for every Pending PVC.

Each PV is a hostPath under the test bed's work dir (``<volumes_dir>/<pv name>``), created mode 0777 before
the PV exists: hostPath volumes get no fsGroup, and dfs on the real node runs as uid 65532. kwok pods never
mount them. Each PV is pre-bound to its
claim through ``claimRef`` (namespace, name, uid); the KCM's PV binder then completes the binding within
about a second. PVs are created with ``persistentVolumeReclaimPolicy: Retain`` and so stay ``Released``
when their claim goes; ``delete_created()`` (called at teardown) removes every PV this class made.

It also plays the external resizer for its own PVs: a bound claim whose request exceeds its capacity (the
apiserver admits that only for a StorageClass with ``allowVolumeExpansion: true``) gets its PV's and its
own ``status.capacity`` raised, as a CSI resizer would once the volume has grown.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from .api import ApiClient, ApiError

LABEL = "testbed.local/fake-pv"
PROVISIONER_NAME = "testbed.local/fake"


def pv_for_claim(pvc: dict[str, Any], volumes_dir: Path) -> dict[str, Any]:
    meta = pvc["metadata"]
    spec = pvc.get("spec", {})
    storage = spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")
    pv_spec: dict[str, Any] = {
        "capacity": {"storage": storage},
        "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
        "storageClassName": spec.get("storageClassName") or "",
        "volumeMode": spec.get("volumeMode") or "Filesystem",
        "persistentVolumeReclaimPolicy": "Retain",
        "hostPath": {"path": str(volumes_dir / f"testbed-pv-{meta['uid']}"), "type": "Directory"},
        "claimRef": {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": f"testbed-pv-{meta['uid']}",
            "labels": {LABEL: "true"},
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER_NAME},
        },
        "spec": pv_spec,
    }


class FakeProvisioner:
    def __init__(self, client: ApiClient, log_path: Path, volumes_dir: Path, interval: float = 0.5) -> None:
        self.client = client
        self.volumes_dir = volumes_dir
        self.interval = interval
        self.log_path = log_path
        self.created: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="testbed-fake-provisioner", daemon=True)
        self._last_error = ""

    def log(self, msg: str) -> None:
        with self.log_path.open("a") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {msg}\n")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        self.log("fake provisioner started")
        while not self._stop.wait(self.interval):
            try:
                self.sync_once()
                self._last_error = ""
            except Exception as exc:  # keep polling: the apiserver may be restarting
                err = f"{type(exc).__name__}: {exc}"
                if err != self._last_error:  # log each distinct error once, not every 0.5 s
                    self.log(f"sync failed: {err}")
                    self._last_error = err

    def sync_once(self) -> None:
        claims = self.client.get("/api/v1/persistentvolumeclaims")["items"]
        failed: list[Exception] = []
        for pvc in claims:
            if pvc.get("status", {}).get("phase") == "Bound":
                try:
                    self._resize(pvc)
                except Exception as exc:
                    failed.append(exc)
                continue
            if pvc.get("status", {}).get("phase") != "Pending" or pvc.get("spec", {}).get("volumeName"):
                continue
            if pvc["metadata"].get("deletionTimestamp"):
                continue
            # One claim that cannot get a PV must not starve the claims listed after it.
            try:
                self._provision(pvc)
            except Exception as exc:
                failed.append(exc)
        if failed:
            raise failed[0]

    def _provision(self, pvc: dict[str, Any]) -> None:
        pv = pv_for_claim(pvc, self.volumes_dir)
        name = pv["metadata"]["name"]
        if name in self.created:
            return
        path = Path(pv["spec"]["hostPath"]["path"])
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)  # not subject to the umask, unlike mkdir's mode
        status, body = self.client.request("POST", "/api/v1/persistentvolumes", pv)
        if status not in (200, 201, 409):
            raise ApiError("POST", "/api/v1/persistentvolumes", status, body)
        self.created.add(name)
        meta = pvc["metadata"]
        self.log(f"PV {name} for {meta['namespace']}/{meta['name']} ({status})")

    def _resize(self, pvc: dict[str, Any]) -> None:
        volume = pvc["spec"].get("volumeName") or ""
        if not volume.startswith("testbed-pv-"):
            return
        wanted = pvc["spec"].get("resources", {}).get("requests", {}).get("storage")
        if not wanted or wanted == (pvc.get("status", {}).get("capacity") or {}).get("storage"):
            return
        meta = pvc["metadata"]
        self.client.call("PATCH", f"/api/v1/persistentvolumes/{volume}", {"spec": {"capacity": {"storage": wanted}}},
                         content_type="application/merge-patch+json")
        self.client.call("PATCH", f"/api/v1/namespaces/{meta['namespace']}/persistentvolumeclaims/{meta['name']}"
                         "/status", {"status": {"capacity": {"storage": wanted}}},
                         content_type="application/merge-patch+json")
        self.log(f"resized {meta['namespace']}/{meta['name']} and PV {volume} to {wanted}")

    def delete_created(self) -> None:
        """Delete every PV this test bed created (by label, so restarts of the thread are covered)."""
        pvs = self.client.get(f"/api/v1/persistentvolumes?labelSelector={LABEL}%3Dtrue")["items"]
        for pv in pvs:
            name = pv["metadata"]["name"]
            self.client.call("DELETE", f"/api/v1/persistentvolumes/{name}", ok=(404,))
            self.created.discard(name)
