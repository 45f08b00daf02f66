"""Phase: reconciliation switched off by the annotation; only the status says so."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dittoctl.api.naming import PAUSE_ANNOTATION
from reconciler.context import Pass
from reconciler.status import paused_status


def is_paused(body: Mapping[str, Any]) -> bool:
    return (body.get("metadata", {}).get("annotations") or {}).get(PAUSE_ANNOTATION) == "disabled"


async def report_paused(ctx: Pass) -> None:
    await ctx.write_status(paused_status(ctx.body.get("status"), ctx.generation))
