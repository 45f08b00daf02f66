"""Phase: our finalizer on the DittoServer, so deletion always passes through `deletion`."""

from __future__ import annotations

import logging

from dittoctl.api.kinds import DITTOSERVERS
from dittoctl.api.naming import FINALIZER
from dittoctl.kube.logs import fields
from reconciler.context import Pass

log = logging.getLogger("dittofs.reconciler")


async def ensure_finalizer(ctx: Pass) -> None:
    meta = ctx.current()["metadata"]
    if FINALIZER in (meta.get("finalizers") or []):
        return
    finalizers = [*(meta.get("finalizers") or []), FINALIZER]
    patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
    await ctx.write(DITTOSERVERS, ctx.name, ctx.gw.merge_patch(DITTOSERVERS, ctx.name, patch, ctx.namespace))
    log.info("added finalizer", extra=fields(namespace=ctx.namespace, name=ctx.name))
