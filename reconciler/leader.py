"""Lease-based leader election (client-go semantics): every replica serves the webhook, only the Lease
holder reconciles, and a replica that cannot renew in time stops reconciling at once."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dittoctl.api.kinds import LEASES
from dittoctl.kube import metrics
from dittoctl.kube.anchor import anchor_owners
from dittoctl.kube.gateway import ApiError, Conflict, Gateway, NotFound
from dittoctl.kube.logs import fields

if TYPE_CHECKING:
    from reconciler.handlers import Controller

log = logging.getLogger("dittofs.leader")


def _micro(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def own_identity() -> str:
    """This replica's name: the pod's (the chart sets POD_NAME), else the host's; never the user's.

    A numeric non-root user (65532 in our image) has no passwd entry, so getpass.getuser() fails.
    """
    return os.environ.get("POD_NAME") or socket.gethostname()


class LeaderElector:
    def __init__(self, gateway: Gateway, name: str, namespace: str, controller: Controller, *,
                 lease_seconds: int = 15, renew_deadline: float = 10.0, retry: float = 2.0,
                 anchor: str | None = None) -> None:
        self.gw = gateway
        self.anchor = anchor  # the webhook configuration that owns the Lease (dittoctl.kube.anchor)
        self.name = name
        self.namespace = namespace
        self.controller = controller
        self.identity = f"{own_identity()}_{uuid.uuid4().hex[:8]}"
        self.lease_seconds = lease_seconds
        self.renew_deadline = renew_deadline
        self.retry = retry
        self.leading = False
        self.holder: str | None = None  # the holder the last read of the Lease named
        self._seen: tuple[str, float] | None = None  # (the Lease's resourceVersion, loop time it was first read)

    def _spec(self, now: datetime, acquired: str | None, transitions: int) -> dict[str, Any]:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_seconds,
                "acquireTime": acquired or _micro(now), "renewTime": _micro(now),
                "leaseTransitions": transitions}

    async def try_acquire(self) -> bool:
        now = datetime.now(UTC)
        try:
            lease = await self.gw.get(LEASES, self.name, self.namespace, timeout=self.retry * 2)
        except NotFound:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace,
                                 "ownerReferences": await anchor_owners(self.gw, self.anchor)},
                    "spec": self._spec(now, None, 0)}
            try:
                await self.gw.create(LEASES, body, self.namespace)
                return True
            except (Conflict, ApiError):
                return False
        spec = lease.get("spec") or {}
        holder = self.holder = spec.get("holderIdentity")
        duration = int(spec.get("leaseDurationSeconds") or self.lease_seconds)
        mine = holder == self.identity
        if not mine and holder and not self._expired(str(lease["metadata"].get("resourceVersion")), duration):
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        patch = {"metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                 "spec": self._spec(now, spec.get("acquireTime") if mine else None, transitions)}
        try:
            await self.gw.merge_patch(LEASES, self.name, patch, self.namespace)
        except (Conflict, ApiError, NotFound):
            return False
        return True

    def _expired(self, version: str, duration: float) -> bool:
        """Judged on this replica's own clock, as client-go does: the Lease unchanged for its duration since this
        replica first read it that way. Comparing the holder's renewTime with this node's wall clock let a clock
        running ahead take a live Lease (two replicas reconciling for a renew deadline)."""
        now = asyncio.get_running_loop().time()
        if self._seen is None or self._seen[0] != version:
            self._seen = (version, now)
        return now - self._seen[1] > duration

    def _set(self, leading: bool, *, stopping: bool = False) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        metrics.LEADER.labels(self.name).set(1 if leading else 0)
        if leading:
            log.info("became leader", extra=fields(identity=self.identity, lease=self.name))
            self.controller.resume()
        elif stopping:  # every shutdown and rollout: nothing lost, a warning would read as a failure
            log.info("stepping down as the process stops; another replica takes the Lease",
                     extra=fields(identity=self.identity, lease=self.name))
            self.controller.pause()
        else:
            log.warning("lost leadership; reconciling stops", extra=fields(identity=self.identity))
            self.controller.pause()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last_renew = 0.0  # when the renewal that holds the Lease now began (its renewTime)

        def left() -> float:
            """While leading: the time until the renew deadline, counted from that renewTime, which is what other
            replicas judge by (a slow attempt or the retry sleep must not stretch it)."""
            return self.renew_deadline - (loop.time() - last_renew) if self.leading else self.renew_deadline

        try:
            while True:
                began, ok = loop.time(), False
                if left() > 0:
                    try:
                        # Not wait_for: on 3.11 it returns the result and loses a cancellation (shutdown) that
                        # arrives in the step the renewal answers, and the old leader would go on leading.
                        async with asyncio.timeout(left()):
                            ok = await self.try_acquire()
                    except (TimeoutError, ApiError):
                        ok = False
                if ok:
                    last_renew = began
                    self._set(True)
                elif not self.leading or left() <= 0 or self.holder not in (None, "", self.identity):
                    self._set(False)  # another replica holds it now: stop at once, not at the deadline
                await asyncio.sleep(max(0.0, min(self.retry, left())))
        except asyncio.CancelledError:
            self._set(False, stopping=True)
            raise
        finally:
            self._set(False)
            await self.release()

    async def release(self) -> None:
        """On shutdown, hand the Lease over at once instead of letting it expire."""
        try:
            lease = await self.gw.get(LEASES, self.name, self.namespace, timeout=2)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                await self.gw.merge_patch(LEASES, self.name, {
                    "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                    "spec": {"holderIdentity": None, "renewTime": None}}, self.namespace)
        except (ApiError, Conflict, NotFound, asyncio.CancelledError):
            return
