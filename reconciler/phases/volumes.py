"""Phase: volume expansion (issue 14). A larger size in spec.storage raises the request of each PVC of that
volume (the storage driver resizes it), then re-creates the StatefulSet object, orphaning its pods, because
volumeClaimTemplates cannot change in place. The new StatefulSet has the same pod template, so it adopts the
running pods under the same revision: nothing restarts. PVCs are never deleted or shrunk."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from dittoctl.api.kinds import PVCS, STATEFULSETS
from dittoctl.api.naming import Names
from dittoctl.api.quantity import parse_quantity
from dittoctl.kube.gateway import ApiError, NotFound
from dittoctl.kube.logs import fields
from reconciler.context import Pass

log = logging.getLogger("dittofs.reconciler")


async def expand_volumes(ctx: Pass, names: Names, grown: dict[str, str]) -> list[str]:
    """Returns errors (a PVC that refused its new size); none means the StatefulSet was orphan-deleted and the
    next pass re-creates it."""
    errors = await grow_claims(ctx, names, grown)
    if errors:
        return errors
    ctx.memory.expanded = ", ".join(f"{t} {size}" for t, size in sorted(grown.items()))
    await orphan_statefulset(ctx, names, "to grow its volumeClaimTemplates", volumes=ctx.memory.expanded)
    return []


async def orphan_statefulset(ctx: Pass, names: Names, why: str, **details: str) -> None:
    """Deletes the StatefulSet object but not its pods, to re-create it with fields that cannot change in place:
    the next passes wait until it is gone, then create it, and it adopts the running pods under the same
    revision (the pod template is unchanged): nothing restarts."""
    await ctx.gw.delete(STATEFULSETS, names.statefulset, names.namespace, orphan=True)
    ctx.cache.drop_child(STATEFULSETS, (names.namespace, names.statefulset))
    log.info(f"StatefulSet orphan-deleted {why}", extra=fields(namespace=names.namespace, name=names.server,
                                                               **details))


async def claim(ctx: Pass, name: str) -> dict[str, Any] | None:
    """One PVC of the server's namespace, by name. A list, not a get: the operator may list and patch PVCs,
    nothing more."""
    claims = await ctx.gw.list(PVCS, ctx.namespace, field_selector=f"metadata.name={name}")
    return claims[0] if claims else None


def claim_sizes(sts: Mapping[str, Any]) -> dict[str, str]:
    """Template name -> the size its claims request."""
    return {str(c["metadata"]["name"]): str(size) for c in (sts.get("spec") or {}).get("volumeClaimTemplates") or []
            if (size := ((c.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage"))}


async def grow_claims(ctx: Pass, names: Names, sizes: dict[str, str]) -> list[str]:
    """Raise every existing PVC of the server's templates to at least ``sizes`` (template -> size); returns the
    refusals. A StatefulSet created over kept claims (a server deleted and declared again larger, or one
    re-created around its pods) never resizes them itself: its larger templates only shape new claims."""
    selector = names.selector_string()
    claims = await ctx.gw.list(PVCS, names.namespace, label_selector=selector)
    errors = []
    for pvc in sorted(claims, key=lambda c: str(c["metadata"]["name"])):
        pvc_name = str(pvc["metadata"]["name"])
        template = next((t for t in sizes if pvc_name.startswith(f"{t}-{names.statefulset}-")), None)
        if template is None:
            continue
        current = ((pvc.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
        if current is not None and parse_quantity(current) >= parse_quantity(sizes[template]):
            continue
        try:
            await ctx.gw.merge_patch(PVCS, pvc_name, {"spec": {"resources": {"requests": {
                "storage": sizes[template]}}}}, names.namespace)
        except (ApiError, NotFound) as exc:
            errors.append(f"spec.storage: PVC {pvc_name} refused {sizes[template]}: {exc}")
            continue
        log.info("PVC request raised", extra=fields(namespace=names.namespace, name=names.server, pvc=pvc_name,
                                                   size=sizes[template]))
    return errors
