"""Phase: the ConfigMap holding config.yaml, the Services, the cert-manager Certificates, the NetworkPolicy and
the ServiceMonitor (obsolete ones pruned)."""

from __future__ import annotations

import logging

from dittoctl.api.conditions import EventReason
from dittoctl.api.kinds import CERTIFICATES, NETWORKPOLICIES, SERVICEMONITORS, SERVICES
from dittoctl.api.naming import Names
from dittoctl.kube.gateway import NotFound
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
        if name not in wanted:
            await ctx.prune(SERVICES, name, ctx.cache.child(SERVICES, names.namespace, name))


async def apply_network_policy(ctx: Pass, desired: Desired, names: Names) -> None:
    if desired.network_policy is not None:
        await ctx.apply(stamp_manifest(desired.network_policy))
    else:
        await ctx.prune(NETWORKPOLICIES, names.network_policy,
                        ctx.cache.child(NETWORKPOLICIES, names.namespace, names.network_policy))


async def apply_certificates(ctx: Pass, desired: Desired, names: Names) -> list[str]:
    """Like the ServiceMonitor: not watched, read each pass while wanted. Returns the problem when cert-manager
    is asked for but not installed (the server would wait for its TLS Secret forever)."""
    discovery = ctx.shared.discovery
    wanted = {c["metadata"]["name"]: c for c in desired.certificates}
    if not wanted:
        if ctx.memory.certificates is not False and discovery.answers[CERTIFICATES]:
            for name in (names.api_certificate, names.operator_certificate):
                await ctx.prune(CERTIFICATES, name, await ctx.gw.get_or_none(CERTIFICATES, name, names.namespace))
        ctx.memory.certificates = False
        return []
    if not await discovery.serves(CERTIFICATES):
        return [f"spec.controlPlane.tls.certificate: {CERTIFICATES.kind} ({CERTIFICATES.api_version}) is not served "
                "by this cluster; install cert-manager, or create the TLS Secret yourself and remove certificate"]
    ctx.memory.certificates = True
    for name, manifest in wanted.items():
        current = await ctx.gw.get_or_none(CERTIFICATES, name, names.namespace)
        try:
            await ctx.apply(stamp_manifest(manifest), current, known=True)
        except NotFound:  # the CRD went away since discovery said it was served
            discovery.forget(CERTIFICATES)
            return [f"spec.controlPlane.tls.certificate: {CERTIFICATES.kind} is no longer served; install "
                    "cert-manager"]
    if ctx.memory.certificates and names.operator_certificate not in wanted:
        current = await ctx.gw.get_or_none(CERTIFICATES, names.operator_certificate, names.namespace)
        await ctx.prune(CERTIFICATES, names.operator_certificate, current)
    return []


async def apply_service_monitor(ctx: Pass, desired: Desired, names: Names) -> None:
    """Not watched (the CRD may come and go): read each pass while wanted, like the PerconaPGCluster. When not
    wanted, a leftover is looked for once per start, and only while the CRD is served."""
    discovery = ctx.shared.discovery
    if desired.service_monitor is None:
        if ctx.memory.service_monitor is not False and discovery.answers[SERVICEMONITORS]:
            current = await ctx.gw.get_or_none(SERVICEMONITORS, names.service_monitor, names.namespace)
            await ctx.prune(SERVICEMONITORS, names.service_monitor, current)
        ctx.memory.service_monitor = False
        return
    if not await discovery.serves(SERVICEMONITORS):
        ctx.memory.service_monitor = False
        return
    current = await ctx.gw.get_or_none(SERVICEMONITORS, names.service_monitor, names.namespace)
    ctx.memory.service_monitor = True
    try:
        await ctx.apply(stamp_manifest(desired.service_monitor), current, known=True)
    except NotFound:  # the CRD went away since discovery said it was served
        discovery.forget(SERVICEMONITORS)
        ctx.memory.service_monitor = False
