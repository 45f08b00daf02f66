"""Phase: the ConfigMap holding config.yaml, the Services, the cert-manager Certificates, the NetworkPolicy and
the ServiceMonitor (obsolete ones pruned)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dittoctl.api.conditions import EventReason
from dittoctl.api.kinds import CERTIFICATES, NETWORKPOLICIES, SERVICEMONITORS, SERVICES, Kind
from dittoctl.api.naming import Names
from dittoctl.kube.gateway import ApiError, NamespaceTerminating, NotFound
from reconciler.context import Deferred, Pass
from reconciler.specs import Desired

log = logging.getLogger("dittofs.reconciler")
TRANSIENT = frozenset({408, 409, 429})
"""Refusals that say "not now" (a timeout, a create racing another, throttling), not "never": retried unreported."""


async def apply_config_map(ctx: Pass, desired: Desired, names: Names) -> ApiError | None:
    """Returns the API's refusal (a quota, an admission policy, a config over 1 MiB) to create the ConfigMap or to
    bring it up to date: ConfigReady says so (``ConfigMapMissing``) instead of its last, stale word."""
    try:
        written, old = await ctx.apply(desired.config_map)
    except ApiError as exc:
        if isinstance(exc, NamespaceTerminating) or not 400 <= exc.status < 500 or exc.status in TRANSIENT:
            raise
        return exc
    if written and old is not None:
        await ctx.post("Normal", EventReason.CONFIG_UPDATED,
                       f"ConfigMap {names.config_map} updated (config hash {desired.config_hash[:12]})")
    return None


def config_map_refusal(names: Names, refused: ApiError, existed: bool) -> str:
    if existed:
        return (f"ConfigMap {names.config_map} cannot be updated to the current config.yaml, so the pods keep "
                f"the previous one: {refused}")[:500]
    return f"ConfigMap {names.config_map} is missing and cannot be created: {refused}"[:500]


async def apply_services(ctx: Pass, desired: Desired, names: Names) -> None:
    results = await asyncio.gather(*(ctx.apply(service, lane=ctx.shared.service_lane)
                                     for service in desired.services), return_exceptions=True)
    for result in results:
        if isinstance(result, Deferred):
            ctx.deferred.append(result.name)
        elif isinstance(result, BaseException):
            raise result
    if ctx.deferred:
        ctx.shared.service_lane.defer(ctx.key, len(ctx.deferred))
    wanted = {s["metadata"]["name"] for s in desired.services}
    # Only the optional Services can become obsolete (metrics off, no file adapter left).
    for name in (names.metrics_service, names.file_service):
        if name not in wanted:
            await ctx.prune(SERVICES, name, ctx.cache.child(SERVICES, names.namespace, name))


async def apply_network_policy(ctx: Pass, desired: Desired, names: Names) -> None:
    if desired.network_policy is not None:
        await ctx.apply(desired.network_policy)
    else:
        await ctx.prune(NETWORKPOLICIES, names.network_policy,
                        ctx.cache.child(NETWORKPOLICIES, names.namespace, names.network_policy))


async def _apply_optional(ctx: Pass, kind: Kind, wanted: list[dict[str, Any]], candidates: tuple[str, ...]) -> None:
    """Children of an optional kind (cert-manager's, the Prometheus Operator's), applied only while discovery
    says its CRD is served, and read with ``Pass.optional_child``: from the cache once the kind's watch has
    listed, else with a GET. Without the watch, a candidate no longer wanted is looked for only when this process
    applied it, or once after a start (nothing remembered): an unchanged server costs no GET for what it does
    not want."""
    discovery = ctx.shared.discovery
    by_name = {m["metadata"]["name"]: m for m in wanted}
    # Discovery is asked only while something is wanted; otherwise its last answer will do.
    served = await discovery.serves(kind) if by_name else bool(discovery.answers.get(kind))
    before = None if ctx.shared.follows(kind) else ctx.memory.optional.get(kind.plural)
    if served:
        for name in candidates:
            if name not in by_name and (before is None or name in before):
                await ctx.prune(kind, name, await ctx.optional_child(kind, name))
    ctx.memory.optional[kind.plural] = frozenset()
    if not by_name or not served:
        return
    for name, manifest in by_name.items():
        try:
            await ctx.apply(manifest, await ctx.optional_child(kind, name), known=True)
        except NotFound:  # the CRD went away since discovery said it was served
            discovery.forget(kind)
            return
        ctx.memory.optional[kind.plural] |= {name}


async def apply_certificates(ctx: Pass, desired: Desired, names: Names) -> None:
    await _apply_optional(ctx, CERTIFICATES, desired.certificates, (names.api_certificate, names.operator_certificate))


async def unserved_certificates(ctx: Pass, desired: Desired) -> list[str]:
    """The problem when cert-manager is asked for but not installed (the server would wait for its TLS Secret
    forever): a gate of the StatefulSet, so decided from discovery before anything is applied."""
    if desired.certificates and not await ctx.shared.discovery.serves(CERTIFICATES):
        return [f"spec.controlPlane.tls.certificate: {CERTIFICATES.kind} ({CERTIFICATES.api_version}) is not served "
                "by this cluster; install cert-manager, or create the TLS Secret yourself and remove certificate"]
    return []


async def apply_service_monitor(ctx: Pass, desired: Desired, names: Names) -> None:
    wanted = [] if desired.service_monitor is None else [desired.service_monitor]
    await _apply_optional(ctx, SERVICEMONITORS, wanted, (names.service_monitor,))
