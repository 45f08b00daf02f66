"""Kubernetes Events, posted on transitions only and deduplicated.

The same (object, reason, message) within `window` seconds posts nothing new, so a DittoServer stuck in
a requeue loop cannot flood `kubectl describe`.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Literal

from dittoctl.api.conditions import EventReason
from dittoctl.api.kinds import EVENTS
from dittoctl.kube.clock import rfc3339_now
from dittoctl.kube.gateway import ApiError, Conflict, Gateway, NotFound
from dittoctl.kube.logs import fields

COMPONENT = "dittofs-operator"
DEDUP_SECONDS = 600.0
_MAX_REMEMBERED = 10_000
log = logging.getLogger("dittofs.events")
EventType = Literal["Normal", "Warning"]


def event_body(regarding: Mapping[str, Any], type_: EventType, reason: EventReason, message: str,
               instance: str = COMPONENT) -> dict[str, Any]:
    """The core/v1 Event the operator posts about ``regarding`` (the bench's contract floor posts the same)."""
    meta = regarding.get("metadata", {})
    namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name") or "")
    involved = {"apiVersion": regarding.get("apiVersion"), "kind": regarding.get("kind"),
                "name": name, "namespace": namespace}
    if meta.get("uid"):
        involved["uid"] = meta["uid"]
    now = rfc3339_now()
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": involved, "reason": reason, "message": message[:1024], "type": type_,
        "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
        "reportingInstance": instance, "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


class EventRecorder:
    """Posts core/v1 Events through the gateway; never raises (events are best effort)."""

    def __init__(self, gateway: Gateway, instance: str = COMPONENT, window: float = DEDUP_SECONDS) -> None:
        self.gateway = gateway
        self.instance = instance
        self.window = window
        self._seen: OrderedDict[tuple[str, ...], float] = OrderedDict()

    def _fresh(self, key: tuple[str, ...]) -> bool:
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last < self.window:
            return False
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > _MAX_REMEMBERED:
            self._seen.popitem(last=False)
        return True

    async def post(self, regarding: Mapping[str, Any], type_: EventType, reason: EventReason, message: str) -> bool:
        """`regarding` needs apiVersion, kind, metadata.name/namespace (uid optional, e.g. on CREATE)."""
        meta = regarding.get("metadata", {})
        namespace = str(meta.get("namespace") or "default")
        name = str(meta.get("name") or "")
        # The uid too: a server re-created under the same name is another object, with events of its own.
        key = (str(regarding.get("kind")), namespace, name, str(meta.get("uid") or ""), reason, message)
        if not name or not self._fresh(key):
            return False
        event = event_body(regarding, type_, reason, message, self.instance)
        try:
            await self.gateway.create(EVENTS, event, namespace)
        except (ApiError, Conflict, NotFound) as exc:
            log.warning("event not posted", extra=fields(namespace=namespace, name=name, reason=reason,
                                                   error=str(exc)))
            self._seen.pop(key, None)
            return False
        except BaseException:  # cancelled mid-post: not posted, so not to be suppressed either
            self._seen.pop(key, None)
            raise
        return True
