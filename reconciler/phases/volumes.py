"""Phase: volume expansion (issue 14). A larger size in spec.storage raises the request of each PVC of that
volume (the storage driver resizes it), then re-creates the StatefulSet object, orphaning its pods, because
volumeClaimTemplates cannot change in place. The new StatefulSet has the same pod template, so it adopts the
running pods under the same revision: nothing restarts. PVCs are never deleted or shrunk."""

from __future__ import annotations

import logging

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
    selector = names.selector_string()
    claims = await ctx.gw.list(PVCS, names.namespace, label_selector=selector)
    errors = []
    for pvc in sorted(claims, key=lambda c: str(c["metadata"]["name"])):
        pvc_name = str(pvc["metadata"]["name"])
        template = next((t for t in grown if pvc_name.startswith(f"{t}-{names.statefulset}-")), None)
        if template is None:
            continue
        current = ((pvc.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
        if current is not None and parse_quantity(current) >= parse_quantity(grown[template]):
            continue
        try:
            await ctx.gw.merge_patch(PVCS, pvc_name, {"spec": {"resources": {"requests": {
                "storage": grown[template]}}}}, names.namespace)
        except (ApiError, NotFound) as exc:
            errors.append(f"spec.storage: PVC {pvc_name} refused {grown[template]}: {exc}")
            continue
        log.info("PVC request raised", extra=fields(namespace=names.namespace, name=names.server, pvc=pvc_name,
                                                   size=grown[template]))
    if errors:
        return errors
    await ctx.gw.delete(STATEFULSETS, names.statefulset, names.namespace, orphan=True)
    ctx.cache.drop_child(STATEFULSETS, (names.namespace, names.statefulset))
    ctx.memory.expanded = ", ".join(f"{t} {size}" for t, size in sorted(grown.items()))
    log.info("StatefulSet orphan-deleted to grow its volumeClaimTemplates",
             extra=fields(namespace=names.namespace, name=names.server, volumes=ctx.memory.expanded))
    return []
