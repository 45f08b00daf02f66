"""Phase: the webhook's rules again, so an object admitted while the webhook was off is still judged
(CloudNativePG's pattern). An invalid spec stops the pass with ConfigReady=False/InvalidSpec."""

from __future__ import annotations

from dittoctl.api.conditions import EventReason
from dittoctl.api.facts import ClusterFacts
from dittoctl.api.kinds import CONFIGMAPS, STATEFULSETS
from dittoctl.api.models import DittoServer
from dittoctl.api.naming import CONFIG_FILE, Names
from dittoctl.api.rules import Stored, validate
from reconciler.context import Pass
from reconciler.phases.statefulset import env_secrets
from reconciler.specs.config import rendered_sqlite_path
from reconciler.status import Observation, build_status, carried_over


def stored(ctx: Pass) -> Stored:
    """What the server's rendered ConfigMap and StatefulSet show it runs with; nothing before its first rollout
    (or while its StatefulSet is re-created). Always given: the rules that judge only admissions then stay off."""
    names = Names(ctx.name, ctx.namespace, "")
    sts = ctx.cache.child(STATEFULSETS, ctx.namespace, names.server)
    config_map = ctx.cache.child(CONFIGMAPS, ctx.namespace, names.config_map)
    if sts is None or config_map is None:
        return Stored()
    return Stored(sqlite_path=rendered_sqlite_path((config_map.get("data") or {}).get(CONFIG_FILE) or ""),
                  percona=names.percona_user_secret in env_secrets(sts))


async def check_spec(ctx: Pass) -> DittoServer | None:
    """The parsed server, or None once the problems are reported (event on change, status)."""
    body = ctx.current()
    inputs = (ctx.uid, ctx.generation)
    known = ctx.shared.parsed.get(ctx.key, inputs) if ctx.generation else None  # no generation: nothing to key on
    if known is not None:
        return known
    # No cluster facts here: a StorageClass deleted since admission must not block, and a missing Percona
    # CRD is a wait the database phase reports (DatabaseReady=False/PerconaNotFound), not an invalid spec.
    facts = ClusterFacts(storage_classes=None, percona_served=None, secrets={})
    # A running server may keep what the webhook lets an existing server keep (it warns on update): judged by what
    # its children run with, not by status (a refusal writes status too).
    verdict = validate(body, None, facts, stored=stored(ctx))
    if verdict.allowed and verdict.server is not None:
        ctx.memory.invalid = None
        return ctx.shared.parsed.put(ctx.key, inputs, verdict.server)
    messages = verdict.messages
    joined = "; ".join(messages)
    if ctx.memory.invalid != joined:
        ctx.memory.invalid = joined
        await ctx.post("Warning", EventReason.VALIDATION_FAILED, joined[:1000])
    replicas = int((body.get("spec") or {}).get("replicas", 1) or 0)
    previous = body.get("status")
    await ctx.write_status(build_status(Observation(
        generation=ctx.generation, desired_replicas=replicas, config_errors=messages,
        statefulset=ctx.cache.child(STATEFULSETS, *ctx.key), pods=ctx.cache.pods_of(*ctx.key),
        **carried_over(previous)), previous))
    return None
