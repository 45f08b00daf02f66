"""Phase: the generated Secrets exist, and the digests of every Secret key the server consumes are known.

Generated Secrets are created once and never regenerated. Digests come from the watch-fed cache, or a
point GET on a miss; bodies are never kept.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dittoctl.api.conditions import EventReason
from dittoctl.api.kinds import SECRETS
from dittoctl.api.models import DittoServer
from dittoctl.api.naming import Names
from dittoctl.api.secrets import ValueBounds, bounded_values, consumed_keys, mounted_secrets, value_length
from dittoctl.kube.background import together
from dittoctl.kube.gateway import Conflict
from dittoctl.kube.logs import fields
from reconciler.cache import SecretDigest, secret_digest
from reconciler.context import Pass
from reconciler.phases.volumes import claim
from reconciler.specs import SecretDigests
from reconciler.specs.secrets import admin_secret, jwt_secret, new_jwt_value, new_password

log = logging.getLogger("dittofs.reconciler")


async def digest(ctx: Pass, name: str) -> SecretDigest:
    """The Secret's per-key digests (None: it does not exist), from the cache or one GET."""
    key = (ctx.namespace, name)
    if key in ctx.cache.secrets:
        return ctx.cache.secrets[key]
    return await _read(ctx, name, ctx.gw.get_or_none(SECRETS, name, ctx.namespace))


async def _read(ctx: Pass, name: str, request: Awaitable[dict[str, Any] | None]) -> SecretDigest:
    """A Secret's digest from a GET or a create, yielding to the watch if it spoke meanwhile."""
    with ctx.cache.read(SECRETS, ctx.namespace, name) as read:
        obj = await request
        return ctx.cache.secret_answer(read, secret_digest(obj) if obj is not None else None)


async def ensure_generated(ctx: Pass, server: DittoServer, names: Names) -> None:
    """`<name>-jwt` and `<name>-admin-bootstrap-credentials`, unless the spec names its own Secrets."""
    identity = server.spec.identity
    wanted: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if identity.jwt.secret_ref is None:
        wanted.append((names.jwt_secret, lambda: jwt_secret(names, new_jwt_value())))
    if identity.admin.password_secret_ref is None:
        wanted.append((names.admin_secret, lambda: admin_secret(names, identity.admin.username, new_password())))
    created = await together(*(_generate(ctx, names.namespace, name, build) for name, build in wanted))
    if names.admin_secret in [name for (name, _), made in zip(wanted, created, strict=True) if made] and \
            not ctx.fresh and await _booted_before(ctx, server, names):
        # Deleted under a server that has booted: the pod needs the Secret to start, but DittoFS set its admin
        # password at first boot and ignores this one. Said, so nobody trusts it to log in.
        await ctx.post("Warning", EventReason.MISSING_SECRET, f"Secret {names.admin_secret} was deleted and is "
                       "generated again so the pod can start, but DittoFS keeps the admin password it first booted "
                       "with: the new one does not log in as admin")


async def _generate(ctx: Pass, namespace: str, name: str, build: Callable[[], dict[str, Any]]) -> bool:
    """True when this pass created the Secret."""
    known = (namespace, name) in ctx.cache.secrets
    # A fresh server's Secrets are created blind (a 409 says they exist): no GET per new server.
    if (known or not ctx.fresh) and await digest(ctx, name) is not None:
        return False
    try:
        await _read(ctx, name, ctx.gw.create(SECRETS, build(), namespace))
        log.info("generated Secret", extra=fields(namespace=namespace, name=name))
        return True
    except Conflict:
        # Kept from an earlier server of that name (they outlive it), or made by a killed run: keep it.
        ctx.memory.predecessor = True
        await _read(ctx, name, ctx.gw.get(SECRETS, name, namespace))
        return False


async def refused_values(ctx: Pass, server: DittoServer, names: Names, digests: SecretDigests, *,
                         has_statefulset: bool) -> list[tuple[ValueBounds, str]]:
    """The user's Secret values DittoFS would exit on at start (a JWT secret under 32 characters; before the
    first boot, an admin password outside 8-72 bytes), each with its error. One GET per new value: the verdict
    is remembered by the value's digest, the value itself is dropped at once, and its length is never shown."""
    refused: list[tuple[ValueBounds, str]] = []
    for _, ref, bounds in bounded_values(server.spec):
        digest = digests.get((ref.name, ref.key))
        if digest is None or (bounds.first_boot_only and has_statefulset):
            continue
        known = ctx.memory.value_lengths.get((ref.name, ref.key))
        if known is None or known[0] != digest:
            obj = await ctx.gw.get_or_none(SECRETS, ref.name, ctx.namespace)
            raw = ((obj or {}).get("data") or {}).get(ref.key) or ""
            known = ctx.memory.value_lengths[(ref.name, ref.key)] = (digest, value_length(raw))
        if bounds.refuses(known[1]) and not (bounds.first_boot_only and await _booted_before(ctx, server, names)):
            refused.append((bounds, bounds.refusal(f"Secret {ref.name} key {ref.key}")))
    return refused


async def _booted_before(ctx: Pass, server: DittoServer, names: Names) -> bool:
    """A control-plane volume exists (kept from an earlier server of this name, or its StatefulSet is being
    re-created around it): its database has its admin, and DittoFS ignores the bootstrap password. With
    PostgreSQL the database lives elsewhere and may have its admin already: not known, so not held."""
    if server.spec.uses_postgres:
        return True
    return await claim(ctx, names.control_plane_claim) is not None


async def s3_secret(ctx: Pass, server: DittoServer) -> SecretDigest:
    """Key digests of spec.s3's credentials Secret, for status.s3 (None: absent or not declared)."""
    s3 = server.spec.s3
    if s3 is None or s3.credentials_secret_ref is None:
        return None
    return await digest(ctx, s3.credentials_secret_ref.secret_name)


@dataclass(frozen=True)
class Consumed:
    digests: SecretDigests
    """(secret, key) -> digest of the value, None when the Secret or key is missing."""
    absent: frozenset[str]
    """Secrets that do not exist at all."""


async def key_digests(ctx: Pass, keys: Iterable[tuple[str, str]]) -> Consumed:
    """The digest of each (Secret, key)'s value, and the Secrets that do not exist."""
    digests: dict[tuple[str, str], str | None] = {}
    absent: set[str] = set()
    for secret, key in keys:
        data = await digest(ctx, secret)
        if data is None:
            absent.add(secret)
        digests[(secret, key)] = None if data is None else data.get(key)
    return Consumed(digests, frozenset(absent))


async def consumed_digests(ctx: Pass, server: DittoServer, names: Names) -> Consumed:
    return await key_digests(ctx, consumed_keys(server.spec, names))


@dataclass(frozen=True)
class Missing:
    """A Secret the pod needs that does not exist (`key` None) or lacks a key: kept as parts, so a caller can
    sort them by Secret without reading its own message back."""

    secret: str
    key: str | None = None

    @property
    def line(self) -> str:
        return f"Secret {self.secret} not found" if self.key is None else f"Secret {self.secret} has no key {self.key}"


def missing_secrets(missing: list[tuple[str, str]], consumed: Consumed, server: DittoServer,
                    names: Names) -> list[Missing]:
    """One per problem: a Secret that does not exist is named once, a missing key per key. The Percona user
    Secret is a database wait (it appears with the database), reported by DatabaseReady."""
    found: list[Missing] = []
    for secret, key in missing:
        if server.spec.percona.enabled and secret == names.percona_user_secret:
            continue
        problem = Missing(secret) if secret in consumed.absent else Missing(secret, key)
        if problem not in found:
            found.append(problem)
    return found


async def missing_mounted(ctx: Pass, server: DittoServer) -> list[Missing]:
    """Secrets the pod mounts as files (the API's TLS pair): without them it would sit in ContainerCreating."""
    found: list[Missing] = []
    for mounted in mounted_secrets(server.spec):
        data = await digest(ctx, mounted.secret)
        if data is None:
            found.append(Missing(mounted.secret))
        else:
            found += [Missing(mounted.secret, key) for key in mounted.keys if key not in data]
    return found


async def report_missing(ctx: Pass, missing: list[Missing]) -> None:
    """One Warning event when the server starts waiting for a Secret (or waits for another one)."""
    waiting = "; ".join(m.line for m in missing) or None
    if waiting is not None and waiting != ctx.memory.waiting:
        await ctx.post("Warning", EventReason.MISSING_SECRET, f"waiting for {waiting}; the server starts once "
                       "it exists (create it, or fix the reference in the spec)")
    ctx.memory.waiting = waiting
