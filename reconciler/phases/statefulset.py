"""Phase: the StatefulSet, applied only when the config is complete and the database gate is open;
events for creation, Secret rotation (names the Secret, never its data) and scaling."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dittoctl.api.conditions import EventReason
from dittoctl.api.kinds import STATEFULSETS
from dittoctl.api.naming import HASH_ANNOTATION, Names
from dittoctl.api.quantity import parse_quantity
from reconciler.compare import changed_fields
from reconciler.context import Pass
from reconciler.specs import Desired, SecretDigests
from reconciler.specs.statefulset import UNPRIVILEGED_PORT_SYSCTL

log = logging.getLogger("dittofs.reconciler")
STORAGE_TEMPLATES = ("controlplane", "metadata", "content")
SIZE_FIELDS = {"controlplane": "controlPlaneSize", "metadata": "metadataSize", "content": "contentSize"}
Obj = dict[str, Any]


async def observe_statefulset(ctx: Pass, names: Names) -> Obj | None:
    return await ctx.observed(STATEFULSETS, names.statefulset)


async def apply_statefulset(ctx: Pass, names: Names, desired: Desired, previous: Obj | None,
                            digests: SecretDigests) -> Obj | None:
    written, _ = await ctx.apply(desired.statefulset, previous, known=True)
    applied_before, ctx.memory.template_generation = ctx.memory.template_generation, ctx.generation
    if not written:
        return previous
    result = ctx.cache.child(STATEFULSETS, names.namespace, names.statefulset)
    sts_name = f"StatefulSet {names.statefulset}"
    if previous is None:
        if ctx.memory.migrated:
            ctx.memory.migrated = False  # the same StatefulSet, made anew by an operator upgrade: no news
        elif ctx.memory.expanded:
            await ctx.post("Normal", EventReason.VOLUMES_EXPANDED, f"{sts_name} re-created with larger "
                           f"volumeClaimTemplates ({ctx.memory.expanded}); its pods kept running")
            ctx.memory.expanded = None
        else:
            await ctx.post("Normal", EventReason.CREATED, f"{sts_name} created")
        return result
    old_hash = previous["spec"]["template"]["metadata"].get("annotations", {}).get(HASH_ANNOTATION)
    if old_hash != desired.config_hash and ctx.memory.digests:
        before = ctx.memory.digests
        for secret in sorted({s for (s, k), d in digests.items() if before.get((s, k), d) != d}):
            # The hash tells one rotation from the next within the recorder's 10 minutes (the same text).
            await ctx.post("Normal", EventReason.SECRET_ROTATED, f"Secret {secret} changed; rolling {sts_name} "
                           f"(config hash {desired.config_hash[:12]})")
    old_replicas = previous["spec"].get("replicas")
    new_replicas = desired.statefulset["spec"]["replicas"]
    had, has = low_port_sysctl(previous), low_port_sysctl(desired.statefulset)
    if had != has:  # the config hash does not cover it: without this the roll would go unexplained
        rolling = f"; rolling {sts_name}" if new_replicas else ""
        await ctx.post("Normal", EventReason.CONFIG_UPDATED, f"pod sysctl {UNPRIVILEGED_PORT_SYSCTL} "
                       f"{'added' if has else 'removed'}{rolling} (generation {ctx.generation})")
    # The user's edit is the generation this process has not applied yet; fresh, status tells (a gate held at an
    # older generation is then taken for applied, the one case left).
    settled = applied_before == ctx.generation if applied_before is not None else \
        int((ctx.body.get("status") or {}).get("observedGeneration") or 0) >= ctx.generation
    template = ((result or {}).get("spec") or {}).get("template")
    if settled and new_replicas and old_hash == desired.config_hash and had == has and template is not None:
        # Not the user's edit, nor a config or Secret change (said above): the roll would go unexplained.
        changed = changed_fields(previous["spec"]["template"], template)
        if changed:
            await ctx.post("Normal", EventReason.CONFIG_UPDATED, f"pod template of {sts_name} changed with no change "
                           "to this server (an operator upgrade or setting, or an edit by hand taken back): "
                           f"{', '.join(changed)}; rolling its pods (generation {ctx.generation})")
    if old_replicas != new_replicas:
        # The generation tells a stop from the next one within the recorder's 10 minutes (the same text).
        await ctx.post("Normal", EventReason.SCALED, f"{sts_name} scaled from {old_replicas} to {new_replicas} "
                       f"(generation {ctx.generation})")
    return result


def low_port_sysctl(sts: Mapping[str, Any]) -> bool:
    """Whether the pod template lets the pod bind ports below 1024."""
    pod = (((sts.get("spec") or {}).get("template") or {}).get("spec") or {})
    sysctls = (pod.get("securityContext") or {}).get("sysctls") or []
    return any(s.get("name") == UNPRIVILEGED_PORT_SYSCTL for s in sysctls)


@dataclass(frozen=True)
class StorageDrift:
    """How the live volumeClaimTemplates differ from the spec: what cannot be done, and what can grow."""

    errors: list[str] = field(default_factory=list)
    grown: dict[str, str] = field(default_factory=dict)
    """Template name -> the larger size the spec asks for."""


def policy_moved(observed: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """The live StatefulSet has another podManagementPolicy (made by an operator before Parallel): immutable, so
    it is re-created around its pods."""
    if observed is None:
        return False
    live = (observed.get("spec") or {}).get("podManagementPolicy") or "OrderedReady"
    return bool(live != desired["spec"]["podManagementPolicy"])


def env_secrets(sts: Mapping[str, Any] | None) -> set[str]:
    """The Secrets the StatefulSet's containers (init containers too) read variables from."""
    pod = (((sts or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    return {str(((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name"))
            for c in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])] for e in c.get("env") or []}


def storage_drift(observed: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> StorageDrift:
    """volumeClaimTemplates cannot change in place: a class change or a smaller size is an error (the webhook
    denies both; this catches them when it was off), a larger size is a volume expansion."""
    drift = StorageDrift()
    if observed is None:
        return drift

    def claims(sts: Mapping[str, Any]) -> dict[str, tuple[str | None, str | None]]:
        out = {}
        for claim in sts.get("spec", {}).get("volumeClaimTemplates", []):
            spec = claim.get("spec", {})
            out[claim["metadata"]["name"]] = (
                spec.get("resources", {}).get("requests", {}).get("storage"), spec.get("storageClassName"))
        return out

    before, after = claims(observed), claims(desired)
    for name in STORAGE_TEMPLATES:
        if name not in before or name not in after or before[name] == after[name]:
            continue
        (old_size, old_class), (new_size, new_class) = before[name], after[name]
        if old_class != new_class and (new_class is not None or old_class is not None):
            # The webhook's words; once for all three volumes.
            error = (f"spec.storage.storageClassName: immutable: the PVCs keep their class (was "
                     f"{repr(old_class) if old_class else 'unset (the cluster default)'}, now "
                     f"{repr(new_class) if new_class else 'unset'}); "
                     "create a new DittoServer and migrate the data, or revert the change")
            if error not in drift.errors:
                drift.errors.append(error)
        if old_size is None or new_size is None or old_size == new_size:
            continue
        growth = parse_quantity(new_size) - parse_quantity(old_size)
        if growth < 0:
            drift.errors.append(f"spec.storage.{SIZE_FIELDS[name]}: cannot shrink a volume (was {old_size!r}, now "
                                f"{new_size!r}); PVCs only grow: set {old_size!r} or more")
        elif growth > 0:
            drift.grown[name] = new_size
    return drift
