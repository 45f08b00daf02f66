"""Phase: the ConfigMap holding config.yaml, and the Services (obsolete ones pruned)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from dittoctl.api.conditions import EventReason
from dittoctl.api.kinds import SERVICES
from dittoctl.api.naming import Names
from dittoctl.kube.logs import fields
from reconciler.compare import stamp_manifest
from reconciler.context import Pass
from reconciler.specs import Desired

log = logging.getLogger("dittofs.reconciler")


async def apply_config_map(ctx: Pass, desired: Desired, names: Names) -> None:
    written, old = await ctx.apply(stamp_manifest(desired.config_map))
    if written and old is not None:
        await ctx.post("Normal", EventReason.CONFIG_UPDATED,
                       f"ConfigMap {names.config_map} updated (config hash {desired.config_hash[:12]})")


async def apply_services(ctx: Pass, desired: Desired, names: Names) -> None:
    for service in desired.services:
        await ctx.apply(stamp_manifest(service))
    wanted = {s["metadata"]["name"] for s in desired.services}
    # Only the optional Services can become obsolete (metrics off, no file adapter left).
    for name in (names.metrics_service, names.file_service):
        current = ctx.cache.child(SERVICES, names.namespace, name)
        if name in wanted or current is None or not _owned_by(current, names.uid):
            continue
        await ctx.gw.delete(SERVICES, name, names.namespace)
        log.info("deleted obsolete Service", extra=fields(namespace=names.namespace, name=name))
        ctx.cache.drop_child(SERVICES, (names.namespace, name))


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences", []))
