"""Phase: the declared file service (SPEC §13), provisioned over DittoFS's REST API once the pod is Ready.

The operator logs in as its own admin-role account (created through the bootstrap `admin`, password in
the generated `<name>-operator-credentials` Secret); tokens live in memory, one client per server. Each
pass reads DittoFS (GET only), plans with the pure planner and executes only the calls that differ: an
unchanged server costs zero REST writes. What the operator created is kept in `status.provisioned` and, for a
re-created server, on its control-plane PVC.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import ssl
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any, ClassVar, Literal

from pydantic import SecretStr

from dittoctl.api.conditions import ConditionType, EventReason, Reason
from dittoctl.api.fileservice import REMOTE_PROBE_HOLD, Kind, Observed, Op, Plan, ProblemKind, Ref
from dittoctl.api.fileservice.planner import reads
from dittoctl.api.fileservice.types import OPERATOR_ACCOUNT, Call
from dittoctl.api.kinds import PVCS, SECRETS, STATEFULSETS
from dittoctl.api.models import DittoServer
from dittoctl.api.naming import ADOPT_ANNOTATION, HASH_ANNOTATION, Names
from dittoctl.api.quantity import parse_quantity
from dittoctl.api.secrets import (
    ADMIN_PASSWORD_KEY,
    OPERATOR_PASSWORD_KEY,
    TLS_CA_KEY,
    TLS_CERT_KEY,
    TLS_KEY_KEY,
    USER_PASSWORD,
    api_trust,
    provisioned_secrets,
)
from dittoctl.kube import metrics
from dittoctl.kube.dittofs import (
    DittoFsAuthError,
    DittoFsCertificateRejected,
    DittoFsClient,
    DittoFsError,
    DittoFsForbidden,
    DittoFsUnreachable,
    PlanFailed,
    TlsTarget,
    operator_login,
    restore_operator,
)
from dittoctl.kube.gateway import ApiError, Conflict, NotFound
from dittoctl.kube.logs import fields
from reconciler.context import Pass
from reconciler.phases.secrets import digest, key_digests
from reconciler.phases.volumes import claim
from reconciler.specs.fileservice import (
    ShareUsage,
    adopting,
    declared,
    dittofs_address,
    ownership_record,
    recorded_refs,
    refusal_hint,
    share_status,
    unhealthy_remotes,
)
from reconciler.specs.secrets import new_password, operator_secret
from reconciler.status import FILESERVICE_STATUS, Cond, kept_fileservice, pod_ready

log = logging.getLogger("dittofs.reconciler")
BACKOFF_FIRST = 5.0
BACKOFF_MAX = 300.0
# While the content volume is below its declared size (an expansion under way), the next look at it: the PVC's
# growth sends no event a pass waits for, and the local store's cap follows it (else the next drift pass, 5 min).
EXPANSION_POLL = 15.0
# A store config DittoFS applies only at start was sent: the next pass rolls the pod with the new storeRevision
# at once (this pass applied the StatefulSet before it knew; its own status write wakes nothing).
ROLL_NOW = 0.05


class _Unread(Enum):
    UNREAD = auto()


@dataclass
class FsMemory:
    client: DittoFsClient | None = None
    salt: str = field(default="", repr=False)  # the operator account's password: keyed digests only
    recorded: list[str] | Literal[_Unread.UNREAD] | None = _Unread.UNREAD
    """What the control-plane PVC records as created by the operator (None: no record; read once, written
    when it changes): a re-created server on retained data adopts exactly what its predecessor made."""
    failures: int = 0
    last: str | None = None
    """The last outcome posted as an event ("ok" or the failure message)."""
    converged_generation: int | None = None
    pod_uid: str | None = None
    """The pod the client logged in to: a new pod gets a fresh login (its credentials are proven again)."""
    writes: int = 0
    """DittoFS writes of the last pass."""
    reported: Counter[str] = field(default_factory=Counter)
    """The client's request counts already added to the metric."""
    cursor: int = 0
    """Where the next drift pass's round-robin of optional reads starts (``planner.reads``)."""
    tls: tuple[str, TlsTarget] | None = None
    """(secret name and ca.crt digest, what the client verifies against)."""
    record_refused: str | None = None
    """The API's last refusal of the ownership record (logged once, retried every pass)."""
    capacity: tuple[str, int | None] | None = None
    """(declared contentSize, the content PVC's capacity while below it; None once it has grown to it)."""

    def report(self) -> None:
        if self.client is None:
            return
        for method, count in self.client.requests.items():
            if count > self.reported[method]:
                metrics.DITTOFS_REQUESTS.labels(method).inc(count - self.reported[method])
        self.reported = Counter(self.client.requests)

    async def close(self) -> None:
        self.report()
        if self.client is not None:
            await self.client.close()
        self.client = None
        self.reported = Counter()


@dataclass
class Provisioned:
    """What the pass reports: the condition (None: not reported) and the status fields (None: keep)."""

    condition: Cond | None = None
    provisioned: list[str] | None = None
    applied: dict[str, str] | None = None
    shares: list[dict[str, Any]] | None = None
    adapters: list[dict[str, Any]] | None = None
    adapters_ready: Cond | None = None
    store_revision: int | None = None
    requeue: float | None = None

    _ATTRIBUTE: ClassVar[dict[str, str]] = {"provisioned": "provisioned", "appliedSecrets": "applied",
                                            "shares": "shares", "adapters": "adapters",
                                            "storeRevision": "store_revision"}
    """Where each of ``FILESERVICE_STATUS`` is kept."""

    @classmethod
    def kept(cls, status: Mapping[str, Any] | None) -> Provisioned:
        """The last status's fields (``kept_fileservice``), reported again."""
        return cls(**{cls._ATTRIBUTE[k]: v for k, v in kept_fileservice(status).items()})

    def status(self) -> dict[str, Any]:
        return {k: getattr(self, self._ATTRIBUTE[k]) for k in FILESERVICE_STATUS}


class _Failed(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def backoff_seconds(failures: int) -> float:
    """5 s after the first failure, doubling, capped at 5 minutes."""
    return min(BACKOFF_FIRST * float(1 << min(max(failures, 1) - 1, 16)), BACKOFF_MAX)


def memory(ctx: Pass) -> FsMemory:
    if not isinstance(ctx.memory.fileservice, FsMemory):
        ctx.memory.fileservice = FsMemory()
    mem: FsMemory = ctx.memory.fileservice
    return mem


def _recall(mem: FsMemory, status: dict[str, Any], generation: int) -> None:
    """A new process (a restart, a new leader) starts from what the status already says: events go out on
    transitions only, not once per server per restart, and a repair at a converged generation is drift."""
    cond = next((c for c in status.get("conditions") or () if c.get("type") == ConditionType.PROVISIONED), None)
    if cond is None:
        return
    if cond.get("status") == "True":
        mem.last = "ok"
        if cond.get("observedGeneration") == generation:
            mem.converged_generation = generation
    else:
        mem.last = _outcome(str(cond.get("reason") or ""), str(cond.get("message") or ""))


def _pod(ctx: Pass, names: Names) -> dict[str, Any] | None:
    for pod in ctx.cache.pods_of(names.namespace, names.server):
        if pod.get("metadata", {}).get("name") == names.pod:
            return pod
    return None


def rolling(pod: Mapping[str, Any], sts: Mapping[str, Any] | None) -> bool:
    """The pod runs another config than its StatefulSet's template now carries: it is about to be replaced."""
    template = ((((sts or {}).get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations")
    want = (template or {}).get(HASH_ANNOTATION)
    return want is not None and ((pod.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION) != want


def _ready(pod: dict[str, Any]) -> bool:
    """Running and Ready, and not terminating: a pod being replaced stays Ready until its probe fails, but
    its server is about to stop (calling it would fail as ApiUnreachable for nothing)."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return (pod.get("status") or {}).get("phase") == "Running" and pod_ready(pod)


def _reachable(ctx: Pass, ip: str) -> bool:
    networks = ctx.shared.provisioning.networks
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in networks)


async def provision(ctx: Pass, server: DittoServer, names: Names) -> Provisioned:
    previous = ctx.current().get("status") or {}
    keep = Provisioned.kept(previous)
    mem = memory(ctx)
    if mem.last is None:
        _recall(mem, previous, ctx.generation)
    if server.spec.replicas == 0:
        await mem.close()
        keep.adapters = _adapters(server, set())  # stopped: nothing listens
        keep.shares = unserved(keep.shares)
        return keep
    pod = _pod(ctx, names)
    pod_mode = ctx.shared.provisioning.server_address == "pod"
    ip = str(((pod or {}).get("status") or {}).get("podIP") or "")
    if pod_mode and ip and not _reachable(ctx, ip):
        return keep  # outside --provision-networks (a simulated pod): nothing to reach, nothing to report
    if pod is None or not _ready(pod) or (pod_mode and not ip):
        waiting = f"waiting for pod {names.pod} to be Ready"
        keep.condition = Cond(ConditionType.PROVISIONED, False, Reason.WAITING_FOR_SERVER, waiting)
        keep.adapters_ready = Cond(ConditionType.ADAPTERS_READY, False, Reason.WAITING_FOR_SERVER, waiting)
        keep.adapters = _adapters(server, set())
        return keep
    if rolling(pod, ctx.cache.child(STATEFULSETS, names.namespace, names.statefulset)):
        # The old pod runs the old config (a TLS change: another scheme or CA), so calls shaped for the new one
        # would fail there and read as a failure; its replacement is provisioned.
        keep.condition = Cond(ConditionType.PROVISIONED, False, Reason.WAITING_FOR_SERVER,
                              f"waiting for pod {names.pod} to restart with the current configuration")
        return keep
    uid = str((pod.get("metadata") or {}).get("uid") or "")
    if uid != mem.pod_uid:
        await mem.close()
        mem.pod_uid = uid
    base_url, file_host = dittofs_address(server.spec, names, ip if pod_mode else None)
    try:
        result = await _provision(ctx, server, names, base_url, file_host, keep)
    except _Failed as failed:
        # Adapters first: an outage that also hides them must keep the failure's backoff, not their 5 s retry.
        await _check_adapters(server, file_host, keep, patient=False)
        return await _failure(ctx, mem, keep, failed.reason, failed.message)
    finally:
        mem.report()
    await _check_adapters(server, file_host, result, patient=mem.writes > 0)
    return await _settle(ctx, mem, result)


async def _settle(ctx: Pass, mem: FsMemory, result: Provisioned) -> Provisioned:
    """A pass that reached DittoFS: a refused write or a problem only a human can solve (NotOwned, InUse,
    HoldsSnapshots) backs off like an unreachable server; only success starts the backoff over."""
    if result.condition is not None and not result.condition.status:
        return await _failure(ctx, mem, result, result.condition.reason, result.condition.message)
    recovered, mem.failures = mem.failures, 0
    if result.condition is not None:
        if mem.last != "ok":
            # After a failure the same text as the last success would be dropped by the recorder's 10 minutes.
            again = f" (again, after {recovered} failed pass{'es' if recovered > 1 else ''})" if recovered else ""
            await ctx.post("Normal", EventReason.PROVISIONED, result.condition.message + again)
        mem.last = "ok"
        mem.converged_generation = ctx.generation
    return result


async def _listening(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _adapters(server: DittoServer, listening: set[str]) -> list[dict[str, Any]]:
    spec = server.spec.adapters
    return [{"type": kind, "port": a.port, "enabled": a.enabled, "listening": kind in listening}
            for kind, a in spec.by_type()]


async def _check_adapters(server: DittoServer, host: str, result: Provisioned, *, patient: bool) -> None:
    """AdaptersReady from a TCP connect per enabled adapter: DittoFS says `running: true` even for a listener
    that failed to bind (docs/DITTOFS_FACTS.md). ``patient``: adapters were just reconfigured, and DittoFS
    restarts a listener within about a second."""
    spec = server.spec.adapters
    up: set[str] = set()
    down: list[str] = []
    for kind, adapter in spec.enabled():
        for attempt in range(6 if patient else 1):
            if attempt:
                await asyncio.sleep(0.5)
            if await _listening(host, adapter.port):
                up.add(kind)
                break
        else:
            down.append(f"{kind} port {adapter.port}")
    adapters = result.adapters = _adapters(server, up)
    if down:
        result.adapters_ready = Cond(ConditionType.ADAPTERS_READY, False, Reason.NOT_LISTENING,
                                     f"no TCP listener on {', '.join(down)} at {host} (the server log names the "
                                     "bind error, e.g. the port is taken)")
        result.requeue = min(result.requeue or BACKOFF_MAX, BACKOFF_FIRST)
    else:
        enabled = [f"{a['type']}:{a['port']}" for a in adapters if a["enabled"]]
        result.adapters_ready = Cond(ConditionType.ADAPTERS_READY, True, Reason.LISTENING,
                                     f"accepting connections: {', '.join(enabled) or 'no adapter enabled'}")


def _outcome(reason: str, message: str) -> str:
    """A failure as ``FsMemory.last`` remembers it. An unreachable server fails on whichever parallel read times
    out first, so its message varies: one outage, one event."""
    return reason if reason == Reason.API_UNREACHABLE else message


async def _failure(ctx: Pass, mem: FsMemory, result: Provisioned, reason: Reason, message: str) -> Provisioned:
    mem.failures += 1
    metrics.PROVISIONING_FAILURES.labels(str(reason)).inc()
    outcome = _outcome(reason, message)
    if mem.last != outcome:
        await ctx.post("Warning", EventReason.PROVISIONING_FAILED, message[:900])
        log.warning("provisioning failed", extra=fields(namespace=ctx.namespace, name=ctx.name, reason=reason,
                                                       error=message[:300]))
    mem.last = outcome
    result.condition = Cond(ConditionType.PROVISIONED, False, reason, message[:1000])
    result.requeue = backoff_seconds(mem.failures)
    return result


async def _secret_data(ctx: Pass, name: str) -> dict[str, str] | None:
    obj = await ctx.gw.get_or_none(SECRETS, name, ctx.namespace)
    if obj is None:
        return None
    return {k: base64.b64decode(v or "").decode(errors="replace") for k, v in (obj.get("data") or {}).items()}


async def _secret_value(ctx: Pass, name: str, key: str) -> str:
    data = await _secret_data(ctx, name)
    if data is None or key not in data:
        raise _Failed(Reason.MISSING_SECRET, f"Secret {name} key {key} is missing")
    return data[key]


async def _operator_password(ctx: Pass, names: Names) -> str:
    data = await _secret_data(ctx, names.operator_secret)
    if data is None:
        try:
            await ctx.gw.create(SECRETS, operator_secret(names, OPERATOR_ACCOUNT, new_password()), names.namespace)
            log.info("generated Secret", extra=fields(namespace=names.namespace, name=names.operator_secret))
        except Conflict:
            pass
        data = await _secret_data(ctx, names.operator_secret)
    if not data or not data.get(OPERATOR_PASSWORD_KEY):
        raise _Failed(Reason.MISSING_SECRET, f"Secret {names.operator_secret} key {OPERATOR_PASSWORD_KEY} is missing")
    return data[OPERATOR_PASSWORD_KEY]


async def _recorded(ctx: Pass, names: Names) -> list[str] | None:
    """The ownership the control-plane PVC records (read once per process and server)."""
    mem = memory(ctx)
    if mem.recorded is _Unread.UNREAD:
        found = await claim(ctx, names.control_plane_claim)
        mem.recorded = recorded_refs(found["metadata"].get("annotations")) if found else None
    return mem.recorded


async def _content_capacity(ctx: Pass, server: DittoServer, names: Names) -> int | None:
    """The content PVC's capacity while it is below the declared size (an expansion under way: a local store's
    default cap follows the filesystem, not the request); None once it has grown, or when it cannot be told.
    Read once per declared size, and again only while the volume has not grown: no read per pass."""
    mem = memory(ctx)
    size = server.spec.storage.effective_content_size
    if mem.capacity == (size, None):
        return None
    try:
        found = await claim(ctx, names.content_claim)
    except ApiError:
        return None  # the declared size, as before this was read; asked again next pass
    reported = ((found.get("status") or {}).get("capacity") or {}).get("storage") if found else None
    capacity = int(parse_quantity(str(reported))) if reported else None
    if capacity is not None and capacity >= parse_quantity(size):
        capacity = None
    mem.capacity = (size, capacity)
    return capacity


async def _record(ctx: Pass, names: Names, refs: list[str]) -> None:
    """Keep the control-plane PVC's ownership record equal to ``refs`` (a write only when it changes). The
    record lives exactly as long as the data: deleting the volumes leaves nothing to adopt."""
    if refs == await _recorded(ctx, names):
        return
    try:
        await ctx.gw.merge_patch(PVCS, names.control_plane_claim, ownership_record(refs), names.namespace)
    except NotFound:
        pass  # no such volume: the status alone records ownership
    except (ApiError, Conflict) as exc:
        # Never a reason to stop provisioning: only a re-created server would miss the record (NotOwned). Not
        # remembered as written either: the next pass tries again (it waited for the next change of refs).
        mem = memory(ctx)
        if mem.record_refused != str(exc):
            mem.record_refused = str(exc)
            log.warning("ownership not recorded on the control-plane PVC", extra=fields(
                namespace=ctx.namespace, name=ctx.name, pvc=names.control_plane_claim, error=str(exc)[:300]))
        return
    memory(ctx).recorded = refs


async def _tls(ctx: Pass, server: DittoServer, names: Names) -> TlsTarget | None:
    """The CA of the control-plane TLS Secret (ca.crt), else the system's; the certificate must name the API
    Service; with mutual TLS, the operator's client certificate. Rebuilt only when one of those changes (a
    rotated serving leaf needs nothing: DittoFS reloads it)."""
    trust = api_trust(server.spec)
    if trust is None:
        return None
    mem = memory(ctx)
    digests = await digest(ctx, trust.ca_secret) or {}
    client = trust.client_secret
    client_digests = (await digest(ctx, client) or {}) if client else {}
    key = "|".join([trust.ca_secret, digests.get(TLS_CA_KEY, ""), client or "",
                    client_digests.get(TLS_CERT_KEY, ""), client_digests.get(TLS_KEY_KEY, "")])
    if mem.tls is None or mem.tls[0] != key:
        ca = await _secret_value(ctx, trust.ca_secret, TLS_CA_KEY) if TLS_CA_KEY in digests else None
        pair = (await _secret_value(ctx, client, TLS_CERT_KEY), await _secret_value(ctx, client, TLS_KEY_KEY)) \
            if client else None
        try:
            mem.tls = (key, TlsTarget.of(names.host(names.api_service), ca, pair))
        except ssl.SSLError as exc:
            raise _Failed(Reason.AUTH_FAILED, f"the operator's client certificate in Secret {client} does not "
                          f"load: {exc.reason}") from None
    return mem.tls[1]


async def _client(ctx: Pass, server: DittoServer, names: Names, base_url: str) -> DittoFsClient:
    mem = memory(ctx)
    tls = await _tls(ctx, server, names)
    if mem.client is not None and mem.client.base_url == base_url and mem.client.tls is tls:
        return mem.client
    await mem.close()
    password = await _operator_password(ctx, names)
    client = await operator_login(base_url, OPERATOR_ACCOUNT, SecretStr(password), tls=tls)
    if client is None:
        ref = server.spec.identity.admin.password_secret_ref
        secret, key = (ref.name, ref.key) if ref else (names.admin_secret, ADMIN_PASSWORD_KEY)
        admin = await _secret_value(ctx, secret, key)
        try:
            client = await restore_operator(base_url, SecretStr(admin), OPERATOR_ACCOUNT, SecretStr(password),
                                            tls=tls)
        except DittoFsAuthError as exc:
            # Say which account is lost and which Secret would re-create it, not only "401 on login".
            raise DittoFsAuthError(
                f"the operator's account {OPERATOR_ACCOUNT} cannot log in, and re-creating it through the bootstrap "
                f"admin failed: DittoFS refuses the admin password in Secret {secret} key {key} (store admin's "
                f"current password there: the one the server first booted with, unless it was changed over the "
                f"API since): {exc}", method=exc.method, path=exc.path, status=exc.status,
                detail=exc.detail) from None
    mem.client, mem.salt = client, password
    return client


_HELD = "no other file-service change is applied until then"


def _refused_passwords(the_plan: Plan, values: dict[str, SecretStr]) -> list[str]:
    """A user's password bcrypt cannot take, named by its Secret (never measured)."""
    refs = sorted({sf.secret.ref for c in the_plan.calls if c.kind is Kind.USER for sf in c.secrets})
    return [USER_PASSWORD.refusal("Secret {} key {}".format(*ref.split("/", 1))) for ref in refs
            if USER_PASSWORD.refuses(len(values[ref].get_secret_value().encode()))]


def _maybe_created(error: PlanFailed) -> bool:
    """A failed create that may have happened keeps its claim (else the next pass finds it NotOwned for good): no
    answer to it, a 5xx, or a follow-up call failing after DittoFS's 201 (an admin-role user's first login). A 4xx
    refusal, or a call never sent (a token refresh failing first), drops it, so a later object of that name made
    by hand is not taken."""
    cause = error.cause
    unanswered = cause.path == error.call.path and (
        isinstance(cause, DittoFsUnreachable) or (cause.status or 0) >= 500)
    return error.call.op is Op.CREATE and (cause.after_success or unanswered)


def _map_error(exc: DittoFsError) -> Reason:
    cause = exc.cause if isinstance(exc, PlanFailed) else exc
    if isinstance(cause, DittoFsUnreachable):
        return Reason.API_UNREACHABLE
    if isinstance(cause, DittoFsCertificateRejected):
        return Reason.CERTIFICATE_REJECTED
    if isinstance(cause, (DittoFsAuthError, DittoFsForbidden)):
        return Reason.AUTH_FAILED
    return Reason.REJECTED


def _tls_hint(reason: Reason, server: DittoServer, names: Names) -> str:
    """What a rejected certificate must be (FILE_SERVICE "TLS on the API"), the Secret named."""
    trust = api_trust(server.spec)
    if reason is not Reason.CERTIFICATE_REJECTED or trust is None:
        return ""
    return (f" (the certificate in Secret {trust.ca_secret} must name {names.host(names.api_service)} and chain to "
            "that Secret's ca.crt, or to the operator's system CAs when it has none)")


def _failed(exc: DittoFsError, message: str, server: DittoServer, names: Names) -> _Failed:
    reason = _map_error(exc)
    return _Failed(reason, message + _tls_hint(reason, server, names))


async def _provision(ctx: Pass, server: DittoServer, names: Names, base_url: str, file_host: str,
                     keep: Provisioned) -> Provisioned:
    mem = memory(ctx)
    first = keep.provisioned is None
    try:
        client = await _client(ctx, server, names, base_url)
    except DittoFsError as exc:
        await mem.close()
        raise _failed(exc, f"cannot log in to DittoFS at {base_url}: {exc}", server, names) from None
    digests = (await key_digests(ctx, ((use.secret, use.key) for use in provisioned_secrets(server.spec)))).digests
    capacity = await _content_capacity(ctx, server, names)
    want, missing = declared(server.spec, lambda s, k: digests.get((s, k)), mem.salt, capacity)
    if missing:
        raise _Failed(Reason.MISSING_SECRET, "waiting for " + "; ".join(missing) + f" ({_HELD})")
    owned = {Ref.parse(r) for r in keep.provisioned or []}
    applied = dict(keep.applied or {})
    try:
        # A converged generation is re-read as a drift pass: a bounded number of reads, round-robin.
        full = mem.last != "ok" or mem.converged_generation != ctx.generation
        wanted = reads(want, owned, full=full, cursor=mem.cursor)
        mem.cursor = 0 if full else mem.cursor + wanted.advance
        seen = await client.observe(wanted)
        consent = ctx.consents(ADOPT_ANNOTATION)
        the_plan, adopted = adopting(want, seen, owned, applied, await _recorded(ctx, names) if first else None,
                                     consent=consent)
        if adopted:
            log.info("adopted objects " + ("made by hand, as the user asked" if consent else
                                           "of a previous incarnation"),
                     extra=fields(namespace=ctx.namespace, name=ctx.name, refs=",".join(sorted(map(str, adopted)))))
        values = {}
        for ref in sorted({sf.secret.ref for c in the_plan.calls for sf in c.secrets}):
            secret, _, key = ref.partition("/")
            values[ref] = SecretStr(await _secret_value(ctx, secret, key))
        refused = _refused_passwords(the_plan, values)
        if refused:  # else DittoFS answers 500 `Failed to hash password`, which names neither Secret nor rule
            raise _Failed(Reason.REJECTED, "; ".join(refused) + f" ({_HELD})")
        await _claim(ctx, names, the_plan, keep.provisioned, adopted)
        if consent:  # the adopted objects are recorded as the operator's: the consent is used
            await ctx.forget_consent(ADOPT_ANNOTATION)
        done: list[Call] = []
        error: PlanFailed | None = None
        try:
            done = await client.execute(the_plan, values)
        except PlanFailed as exc:
            done, error = exc.done, exc
    except DittoFsError as exc:
        if isinstance(exc, (DittoFsAuthError, DittoFsForbidden)):
            await mem.close()  # the next pass logs in afresh, and restores an account changed by hand
        raise _failed(exc, f"DittoFS at {base_url}: {exc.detail or exc}", server, names) from None
    mem.writes = len(done)
    if done:
        log.info("dittofs provisioned", extra=fields(namespace=ctx.namespace, name=ctx.name, writes=len(done),
                                                    calls="; ".join(str(c) for c in done)[:1000]))
    claimed = [*done, error.call] if error is not None and _maybe_created(error) else done
    result = Provisioned(provisioned=sorted(str(r) for r in the_plan.owned_after(claimed)),
                         applied=the_plan.digests_after(applied, done) or None, store_revision=keep.store_revision)
    await _record(ctx, names, result.provisioned or [])
    restart = [c for c in done if c.needs_restart]
    if capacity is not None:
        result.requeue = EXPANSION_POLL
    if restart:
        result.store_revision = (keep.store_revision or 0) + 1
        result.requeue = ROLL_NOW
        await ctx.post("Normal", EventReason.CONFIG_UPDATED, f"{', '.join(str(c.ref) for c in restart)} "
                       "reconfigured in DittoFS, which applies it at its next start: rolling the pod (store "
                       f"revision {result.store_revision})")
    present = _usage(seen, done)
    result.shares = share_status(server.spec, file_host, present)
    await _call_events(ctx, done)
    if error is not None:
        if isinstance(error.cause, (DittoFsAuthError, DittoFsForbidden)):
            await mem.close()
        detail = error.cause.detail or str(error.cause)
        reaching = _map_error(error) in (Reason.API_UNREACHABLE, Reason.CERTIFICATE_REJECTED)
        where = f"DittoFS at {base_url}: " if reaching else ""
        failed = _failed(error, f"{where}{error.call}: {detail}"
                         f"{refusal_hint(error.call, detail, the_plan.owned, names.pod)}", server, names)
        result.condition = Cond(ConditionType.PROVISIONED, False, failed.reason, failed.message)
        return result
    if the_plan.problems:
        kinds = {p.kind for p in the_plan.problems}
        reason = (Reason.NOT_OWNED if ProblemKind.NOT_OWNED in kinds else
                  Reason.IMMUTABLE if ProblemKind.IMMUTABLE in kinds else Reason.REJECTED)
        # The command first: a long list of objects would cut it off (conditions keep 1000 characters).
        adopt = (f"objects made by hand in DittoFS have declared names; to keep them, with their data, and manage them "
                 f"as declared: {names.consent(ADOPT_ANNOTATION)} (or rename the declared objects). "
                 if ProblemKind.NOT_OWNED in kinds else "")
        result.condition = Cond(ConditionType.PROVISIONED, False, reason,
                                adopt + "; ".join(str(p) for p in the_plan.problems))
        return result
    shares = len(result.shares)
    # Left alone (made by hand, or by an earlier server of this name on these volumes), but clients can mount them.
    others = sorted(set(present) - {s.key for s in want.shares})
    also = (f"; it also serves {', '.join(others[:5])}{' and more' if len(others) > 5 else ''}, not declared (made by "
            "hand or by an earlier server of this name): left alone, delete them in DittoFS or declare them"
            if others else "")
    # Ready all the same (the shares are served), but their writes pile up on the pod's volume meanwhile.
    unhealthy = unhealthy_remotes(seen)
    remote = (f"; remote store {', '.join(unhealthy)} does not answer DittoFS's probe: its shares' writes stay on the "
              f"pod's volume until it does, and each start of the server waits {REMOTE_PROBE_HOLD} for it" if unhealthy
              else "")
    result.condition = Cond(ConditionType.PROVISIONED, True, Reason.CONVERGED,
                            f"DittoFS serves {shares} declared share(s), {len(want.users)} user(s), "
                            f"{len(want.groups)} group(s){also}{remote}")
    return result


async def _claim(ctx: Pass, names: Names, the_plan: Plan, recorded: list[str] | None, adopted: set[Ref]) -> None:
    """Record what is about to be created, and what was just adopted, as owned *before* creating it, on the
    control-plane PVC (for a re-created server) and in the status. An operator killed between DittoFS's 201 and
    the status write would otherwise find its own objects unowned (NotOwned) forever. A claim whose create never
    happened is harmless: the object is absent, so it is created (declared) or forgotten."""
    creates = [c for c in the_plan.calls if c.op is Op.CREATE]
    if not creates and not adopted:
        return
    claimed = sorted(str(r) for r in the_plan.owned_after(creates))
    await _record(ctx, names, claimed)
    if claimed != sorted(recorded or []):
        await ctx.write_status({"provisioned": claimed})


def _usage(seen: Observed, done: list[Call]) -> dict[str, ShareUsage]:
    """Shares present after ``done``, with what the pass read of them (a share created now: not known yet)."""
    present: dict[str, ShareUsage] = {}
    for name, share in seen.shares.items():
        present[name] = (share.used_bytes, seen.remote_health(share))
    for call in done:
        if call.kind is Kind.SHARE and call.op is Op.CREATE:
            present.setdefault(call.name, (None, None))
        elif call.kind is Kind.SHARE and call.op is Op.DELETE:
            present.pop(call.name, None)
    return present


async def _call_events(ctx: Pass, done: list[Call]) -> None:
    mem = memory(ctx)
    repaired = [c for c in done if not c.follows_input]  # a rotated Secret, a grown volume: no drift
    if repaired and mem.converged_generation == ctx.generation:
        await ctx.post("Normal", EventReason.DRIFT_REPAIRED,
                       "repaired in DittoFS: " + ", ".join(str(c.ref) for c in repaired)[:800])
    # The generation tells a transition from its flip-back within the recorder's 10 minutes (the same text).
    at = f"generation {ctx.generation}"
    for call in done:
        if call.kind is Kind.SHARE and call.op is Op.CREATE:
            await ctx.post("Normal", EventReason.SHARE_CREATED, f"share {call.name} created in DittoFS ({at})")
        elif call.kind is Kind.SHARE and call.op is Op.DELETE:
            await ctx.post("Normal", EventReason.SHARE_DELETED,
                           f"share {call.name} deleted in DittoFS, its data kept in the stores ({at})")
        elif call.kind is Kind.USER and call.op is Op.CREATE:
            await ctx.post("Normal", EventReason.USER_CREATED, f"user {call.name} created in DittoFS ({at})")
    changed = adapter_changes(done)
    if changed:
        await ctx.post("Normal", EventReason.ADAPTER_RECONFIGURED,
                       f"reconfigured live in DittoFS ({at}): {changed}")


def unserved(shares: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The shares of a stopped server: still in DittoFS, at no address."""
    return None if shares is None else [{k: v for k, v in s.items() if k not in ("nfs", "smb")} for s in shares]


def adapter_changes(done: Sequence[Call]) -> str:
    """What the adapter calls left changed, e.g. "nfs port 2049; smb disabled, settings signing" (a port swap
    stops an adapter first: only its final state is told)."""
    state: dict[str, dict[str, Any]] = {}
    settings: dict[str, set[str]] = {}
    created: set[str] = set()
    for call in done:
        if call.kind is Kind.ADAPTER:
            state.setdefault(call.name, {}).update(call.body or {})
            if call.op is Op.CREATE:
                created.add(call.name)
        elif call.kind is Kind.ADAPTER_SETTINGS:
            settings.setdefault(call.name, set()).update(call.body or {})
    told = []
    for name in sorted(state.keys() | settings.keys()):
        final = state.get(name, {})
        words = ["created"] if name in created else []
        words += [f"port {final['port']}"] if "port" in final else []
        if "enabled" in final and not (name in created and final["enabled"]):  # created: enabled goes unsaid
            words.append("enabled" if final["enabled"] else "disabled")
        words += [f"settings {', '.join(sorted(settings[name]))}"] if name in settings else []
        told.append(f"{name} {', '.join(words)}")
    return "; ".join(told)
