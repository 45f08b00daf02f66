"""The one async REST client of a DittoFS v0.29.0 server (SPEC §13.2): login, tokens, typed reads, execute.

The pure half lives in ``dittoctl.api.fileservice`` (records, planner); this module is its only I/O.
Behaviour the client relies on was proven against the real ``dfs`` in tests/contract/test_dittofs_client.py:
- Tokens live in memory only. They are refreshed shortly before ``expires_in`` runs out, and a 401 (the
  text/plain ``Invalid or expired token``) triggers one refresh-or-login and one retry.
- A new (or admin-reset) admin-role account has ``must_change_password`` and gets a text/plain 403 for
  everything else, so its first login self-changes the password to the same value (v0.29.0 accepts that).
- Errors arrive as problem+json, text/plain (middleware) or an empty 500 body (a recovered panic); each
  maps to a ``DittoFsError`` subclass whose message never carries a secret value or a token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from pydantic import SecretStr

from dittoctl.api.fileservice.observed import (
    Observed,
    parse_adapters,
    parse_groups,
    parse_permissions,
    parse_share_nfs,
    parse_shares,
    parse_snapshot_policies,
    parse_stores,
    parse_users,
)
from dittoctl.api.fileservice.planner import API, Plan, Reads, share_path, store_body_json
from dittoctl.api.fileservice.types import Call, Kind, Op, StoreKind, share_name
from dittoctl.kube.background import together

log = logging.getLogger("dittoctl.dittofs")
_STORE_CALLS = (Kind.METADATA_STORE, Kind.LOCAL_STORE, Kind.REMOTE_STORE)
_REDACTED = "***"


# ---------------------------------------------------------------------------------------------------------
# errors


class DittoFsError(Exception):
    """A DittoFS call failed. ``detail`` is DittoFS's own message (secrets scrubbed), fit for an event."""

    def __init__(self, message: str, *, method: str = "", path: str = "", status: int | None = None,
                 detail: str = "", errors: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        self.errors = dict(errors or {})
        self.after_success = False
        """The call itself was answered 2xx; what failed came after it (an admin-role user's first login)."""


class DittoFsUnreachable(DittoFsError):
    """No HTTP answer: connection refused, reset, timeout (SPEC §13.3 ``ApiUnreachable``)."""


class DittoFsCertificateRejected(DittoFsError):
    """The TLS handshake failed on the server's certificate (another name, an untrusted CA, expired): the server
    answered, but not as one the operator may trust, and no request was sent (``CertificateRejected``)."""


class DittoFsAuthError(DittoFsError):
    """401: bad credentials, or a token that refresh and re-login could not replace (``AuthFailed``)."""


class DittoFsForbidden(DittoFsError):
    """403: not an admin (``Admin access required``), a pending password change, or a protected object."""


class DittoFsNotFound(DittoFsError):
    """404."""

    @property
    def no_route(self) -> bool:
        """Go's own "404 page not found": no such route (another DittoFS version, a path built wrong), not a
        handler saying the object is absent (those answer a problem document)."""
        return self.detail == "404 page not found"


class DittoFsConflict(DittoFsError):
    """409: it already exists, or it is still in use."""


class DittoFsRejected(DittoFsError):
    """400/405/413/422: DittoFS refused the request (``Rejected`` with its detail and per-field errors)."""


class MetadataStoreLocked(DittoFsRejected):
    """400 on a metadata store POST whose badger directory is already open: v0.29.0's answer to a re-POST
    (not 409) and to re-creating a deleted store before a restart."""


class DittoFsServerError(DittoFsError):
    """5xx, including the empty-bodied 500 of a recovered panic (e.g. an adapter port above 65535)."""


class PlanFailed(DittoFsError):
    """A plan stopped at ``call``; ``done`` lists the calls that succeeded before it (record them)."""

    def __init__(self, call: Call, done: list[Call], cause: DittoFsError) -> None:
        super().__init__(f"{call} failed: {cause}", method=cause.method, path=cause.path, status=cause.status,
                         detail=cause.detail, errors=cause.errors)
        self.call = call
        self.done = done
        self.cause = cause


_BY_STATUS: dict[int, type[DittoFsError]] = {
    401: DittoFsAuthError, 403: DittoFsForbidden, 404: DittoFsNotFound, 409: DittoFsConflict,
}


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        if value and len(value) >= 4:
            text = text.replace(value, _REDACTED)
    return text


def _error(method: str, path: str, status: int, content_type: str, raw: bytes, secrets: Iterable[str]) -> DittoFsError:
    """Map any of DittoFS's three error bodies (problem+json, text/plain, empty) to a typed error."""
    text = raw.decode(errors="replace").strip()
    detail, errors = text, {}
    if "json" in content_type and text:
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            detail = str(doc.get("detail") or doc.get("title") or text)
            if isinstance(doc.get("errors"), dict):
                errors = {str(k): str(v) for k, v in doc["errors"].items()}
    if not detail:
        detail = "empty response body (DittoFS recovered from a panic; see its log)" if status >= 500 else "no detail"
    secrets = list(secrets)
    detail = _scrub(detail[:1000], secrets)
    errors = {k: _scrub(v, secrets) for k, v in errors.items()}
    suffix = "".join(f"; {k}: {v}" for k, v in sorted(errors.items()))
    message = f"{method} {path} -> HTTP {status}: {detail}{suffix}"
    if status >= 500:
        cls: type[DittoFsError] = DittoFsServerError
    elif status == 400 and "locked by another process" in detail:
        cls = MetadataStoreLocked
    else:
        cls = _BY_STATUS.get(status, DittoFsRejected)
    return cls(message, method=method, path=path, status=status, detail=detail, errors=errors)


# ---------------------------------------------------------------------------------------------------------
# the client


@dataclass
class _Tokens:
    access: str = field(default="", repr=False)
    refresh: str = field(default="", repr=False)
    expires: float = 0.0  # on the client's clock
    lifetime: float = 0.0


@dataclass(frozen=True)
class TlsTarget:
    """How to verify an https DittoFS: the trusted CAs and the certificate's expected name."""

    context: ssl.SSLContext
    server_hostname: str

    @classmethod
    def of(cls, server_hostname: str, ca_pem: str | None = None,
           client_pair: tuple[str, str] | None = None) -> TlsTarget:
        """Trust ``ca_pem`` (else the system's CAs); present ``client_pair`` (cert, key PEM) for mutual TLS.
        Raises ``ssl.SSLError`` for a pair that does not load."""
        context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
        if client_pair is not None:
            # ssl loads a key pair only from files: a private directory that lives for the load only.
            with tempfile.TemporaryDirectory(prefix="dittofs-client-") as tmp:
                cert_path, key_path = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
                cert_path.write_text(client_pair[0])
                key_path.touch(mode=0o600)
                key_path.write_text(client_pair[1])
                context.load_cert_chain(cert_path, key_path)
        return cls(context, server_hostname)


class DittoFsClient:
    """One logged-in identity on one DittoFS server. Use as ``async with``; share an aiohttp session or not."""

    def __init__(self, base_url: str, username: str, password: SecretStr, *,
                 session: aiohttp.ClientSession | None = None, timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, tls: TlsTarget | None = None) -> None:
        """``tls``: for an https base URL, the CA to trust and the name the certificate must carry (the pod IP
        is dialled, the certificate names the API Service)."""
        self.base_url = base_url.rstrip("/")
        self.tls = tls
        self.username = username
        self._password = password
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._tokens = _Tokens()
        self._auth_lock = asyncio.Lock()
        self.requests: Counter[str] = Counter()  # HTTP requests sent, by method (drift passes: reads only)
        self.role: str | None = None  # as of the last login

    def __repr__(self) -> str:
        return f"DittoFsClient({self.base_url!r}, user={self.username!r})"

    async def __aenter__(self) -> DittoFsClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # trust_env=False: a proxy from the environment must never carry a DittoFS token.
            self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=False)
            self._own_session = True
        return self._session

    # -- transport ---------------------------------------------------------------------------------------

    async def _send(self, method: str, path: str, body: Any, token: str | None,
                    secrets: Iterable[str] = ()) -> Any:
        """One HTTP exchange; parsed JSON (or None) on 2xx, a typed error otherwise."""
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.requests[method] += 1
        try:
            extra: dict[str, Any] = {}
            if self.tls is not None:
                extra = {"ssl": self.tls.context, "server_hostname": self.tls.server_hostname}
            async with self._http().request(method, self.base_url + path, json=body, headers=headers,
                                            timeout=self._timeout, **extra) as resp:
                raw = await resp.read()
                status, ctype = resp.status, resp.headers.get("Content-Type", "")
        # No address in these messages: their callers (the phase, the report) name it once.
        except aiohttp.ClientConnectorCertificateError as exc:
            cause = exc.certificate_error
            why = getattr(cause, "verify_message", None) or str(cause)
            name = self.tls.server_hostname if self.tls is not None else self.base_url
            raise DittoFsCertificateRejected(
                f"{method} {path}: the server's certificate was rejected (expected name {name}): {why}", method=method,
                path=path,
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            why = _scrub(str(exc), secrets) or "no answer in time"  # a timeout's own text is empty
            raise DittoFsUnreachable(f"{method} {path}: unreachable: {type(exc).__name__}: {why}",
                                     method=method, path=path) from None
        log.debug("dittofs %s %s -> %d", method, path, status)
        if status >= 300:
            raise _error(method, path, status, ctype, raw, secrets)
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def _keep(self, pair: Any) -> None:
        lifetime = float(pair.get("expires_in") or 900)
        self._tokens = _Tokens(str(pair["access_token"]), str(pair["refresh_token"]),
                               self._clock() + lifetime, lifetime)

    async def login(self) -> None:
        """Log in; a pending first-login password change is completed with the same password."""
        password = self._password.get_secret_value()
        pair = await self._send("POST", f"{API}/auth/login", {"username": self.username, "password": password},
                                None, (password,))
        self._keep(pair)
        user = pair.get("user") or {}
        self.role = user.get("role")
        if user.get("must_change_password"):
            await self._complete_first_login(self._tokens.access, password)

    async def _complete_first_login(self, token: str, password: str) -> None:
        pair = await self._send("POST", f"{API}/users/me/password",
                                {"current_password": password, "new_password": password}, token, (password,))
        if isinstance(pair, dict) and pair.get("access_token"):
            self._keep(pair)

    async def _refresh_or_login(self) -> None:
        if self._tokens.refresh:
            try:
                self._keep(await self._send("POST", f"{API}/auth/refresh", {"refresh_token": self._tokens.refresh},
                                            None, (self._tokens.refresh,)))
                return
            except DittoFsAuthError:
                log.info("dittofs refresh token of %s refused; logging in again", self.username)
        await self.login()

    async def _token(self, stale: str | None = None) -> str:
        async with self._auth_lock:
            t = self._tokens
            # Refresh a fifth of the lifetime (at most a minute) before expiry, so a call never races it.
            due = t.expires - min(60.0, t.lifetime / 5)
            if not t.access or self._clock() >= due or (stale is not None and t.access == stale):
                await self._refresh_or_login()
            return self._tokens.access

    async def request(self, method: str, path: str, body: Any = None, secrets: Iterable[str] = ()) -> Any:
        """An authenticated call; a 401 gets one refresh-or-login and one retry."""
        secrets = list(secrets)
        token = await self._token()
        try:
            return await self._send(method, path, body, token, secrets)
        except DittoFsAuthError:
            token = await self._token(stale=token)
            return await self._send(method, path, body, token, secrets)

    # -- typed reads ---------------------------------------------------------------------------------------

    async def me(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"{API}/auth/me")
        return result

    async def observe(self, wanted: Reads | None = None) -> Observed:
        """Everything the planner compares, by GET only: 5 lists, the optional ones ``wanted`` names, and 2 per
        share read in detail (``wanted.details``; None = all)."""
        wanted = wanted or Reads()
        paths = ["/users", "/adapters", "/store/metadata", "/store/block/local", "/shares"]
        optional = {"/groups": wanted.groups, "/store/block/remote": wanted.remote,
                    "/snapshot-policies": wanted.policies,
                    **{f"/adapters/{t}/settings": t in wanted.settings for t in ("nfs", "smb")}}
        paths += [p for p, read in optional.items() if read]
        # An adapter deleted by hand has no settings (404): absent, so the planner re-creates it.
        got = dict(zip(paths, await together(*(self._get(f"{API}{p}", absent="/settings" in p) for p in paths)),
                       strict=True))
        stores = {StoreKind.METADATA: parse_stores(got["/store/metadata"]),
                  StoreKind.LOCAL: parse_stores(got["/store/block/local"]),
                  StoreKind.REMOTE: parse_stores(got.get("/store/block/remote"))}
        shares_raw = got["/shares"]
        names = [share_name(s["name"]) for s in shares_raw or []]

        def present(wanted_names: tuple[str, ...] | None) -> list[str]:  # None: every share
            return names if wanted_names is None else sorted({share_name(n) for n in wanted_names} & set(names))

        detail = present(wanted.details)
        details = await together(*(self._share_details(n) for n in detail))
        counted = present(wanted.snapshots)
        snapshots = await together(*(self.request("GET", f"{share_path(n)}/snapshots") for n in counted))
        identity = await together(*(self._identity_provider(t) for t in wanted.identity))
        return Observed(
            identity={t: record for t, record in zip(wanted.identity, identity, strict=True) if record is not None},
            users=parse_users(got["/users"]), groups=parse_groups(got.get("/groups")),
            adapters=parse_adapters(got["/adapters"]),
            adapter_settings={t: got.get(f"/adapters/{t}/settings") or {} for t in ("nfs", "smb")}, stores=stores,
            shares=parse_shares(shares_raw, stores, {n: nfs for n, (nfs, _) in zip(detail, details, strict=True)},
                                {n: perms for n, (_, perms) in zip(detail, details, strict=True)},
                                {n: len(snaps or []) for n, snaps in zip(counted, snapshots, strict=True)}),
            snapshot_policies=parse_snapshot_policies(got.get("/snapshot-policies")), unread=wanted.skipped())

    async def _identity_provider(self, kind: str) -> dict[str, Any] | None:
        record: dict[str, Any] | None = await self._get(f"{API}/identity-providers/{kind}/config", absent=True)
        return record  # None: never configured

    async def _get(self, path: str, *, absent: bool = False) -> Any:
        """A GET; with ``absent``, a 404 is None (the object does not exist) instead of an error."""
        try:
            return await self.request("GET", path)
        except DittoFsNotFound:
            if absent:
                return None
            raise

    async def _share_details(self, name: str) -> tuple[Any, Any]:
        base = share_path(name)
        nfs, perms = await together(self.request("GET", f"{base}/adapters/nfs/config"),
                                    self.request("GET", f"{base}/permissions"))
        return parse_share_nfs(nfs), parse_permissions(perms)

    # -- writes --------------------------------------------------------------------------------------------

    async def execute(self, plan: Plan, secrets: Mapping[str, SecretStr]) -> list[Call]:
        """Run the plan's calls in order; stop at the first failure (``PlanFailed`` lists what succeeded).

        ``secrets`` maps each ``SecretValue.ref`` to its value; a missing one fails that call, not the process.
        """
        done: list[Call] = []
        created: set[str] = set()
        for call in plan.calls:
            try:
                if call.kind is Kind.ADAPTER_SETTINGS and call.name in created:
                    # DittoFS makes a new adapter's settings row on its first GET, not on the POST (v0.29.0).
                    await self.request("GET", call.path)
                if call.kind is Kind.SHARE and call.op is Op.DELETE:
                    await self._still_without_snapshots(call)
                await self.apply(call, secrets)
            except DittoFsError as exc:
                # A DELETE answered 404: gone already (deleted by hand since the pass read it), so done.
                if not (isinstance(exc, DittoFsNotFound) and call.op is Op.DELETE and not exc.no_route):
                    raise PlanFailed(call, done, exc) from None
            done.append(call)
            if call.kind is Kind.ADAPTER and call.op is Op.CREATE:
                created.add(call.name)
        return done

    async def _still_without_snapshots(self, call: Call) -> None:
        """DittoFS deletes a share's snapshots with it. The plan counted none when the pass began, but one taken
        since (its schedule, a user's) would go too: counted again right before the DELETE."""
        held = await self.request("GET", f"{call.path}/snapshots")
        if held:
            raise DittoFsConflict(f"{call}: the share now holds {len(held)} snapshot(s), which DittoFS would delete "
                                  "with it; kept", method=call.method, path=call.path, status=409)

    async def apply(self, call: Call, secrets: Mapping[str, SecretStr]) -> None:
        body: dict[str, Any] | None = None if call.body is None else json.loads(json.dumps(call.body))
        values: list[str] = []
        for sf in call.secrets:
            secret = secrets.get(sf.secret.ref)
            if secret is None:
                raise DittoFsRejected(f"{call}: secret {sf.secret.ref!r} is not available", method=call.method,
                                      path=call.path)
            value = secret.get_secret_value()
            values.append(value)
            target = body.setdefault(sf.within, {}) if sf.within and body is not None else body
            if target is not None:
                target[sf.key] = _integer(call, sf.key, value) if sf.integer else value
        if body is not None and call.kind in _STORE_CALLS:
            body = store_body_json(body)
        log.info("dittofs %s", call)
        await self.request(call.method, call.path, body, values)
        if call.admin_first_login and values:
            try:
                await self._first_login_of(call.name, values[0])
            except DittoFsError as exc:
                exc.after_success = True
                raise

    async def _first_login_of(self, username: str, password: str) -> None:
        """A new/reset admin-role account: log in as it and self-change to the same password (v0.29.0 sets
        must_change_password for admins; until changed, the account can do nothing)."""
        other = DittoFsClient(self.base_url, username, SecretStr(password), session=self._http(),
                              timeout=self._timeout.total or 10.0, clock=self._clock, tls=self.tls)
        await other.login()
        self.requests.update(other.requests)


def _integer(call: Call, key: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise DittoFsRejected(f"{call}: {key} must be a number", method=call.method, path=call.path) from None


async def bootstrap_operator(base_url: str, admin_password: SecretStr, operator_name: str,
                             operator_password: SecretStr, *, session: aiohttp.ClientSession | None = None,
                             timeout: float = 10.0, tls: TlsTarget | None = None) -> DittoFsClient:
    """The operator's own admin-role account (SPEC §13.2), restored through the bootstrap ``admin`` when it
    cannot log in as an enabled admin."""
    return (await operator_login(base_url, operator_name, operator_password, session=session, timeout=timeout,
                                 tls=tls)
            or await restore_operator(base_url, admin_password, operator_name, operator_password, session=session,
                                      timeout=timeout, tls=tls))


async def operator_login(base_url: str, operator_name: str, operator_password: SecretStr, *,
                         session: aiohttp.ClientSession | None = None, timeout: float = 10.0,
                         tls: TlsTarget | None = None) -> DittoFsClient | None:
    """Logged in as the operator's account, or None when it must be restored: refused (401: gone, or its
    password changed by hand; 403: disabled by hand) or no longer an admin (demoted by hand, it could log in but
    provision nothing)."""
    client = DittoFsClient(base_url, operator_name, operator_password, session=session, timeout=timeout, tls=tls)
    try:
        await client.login()
        if client.role == "admin":
            return client
    except (DittoFsAuthError, DittoFsForbidden):
        pass
    except BaseException:  # unreachable, a 5xx, cancelled: the session is not the caller's to close
        await client.close()
        raise
    await client.close()
    return None


async def restore_operator(base_url: str, admin_password: SecretStr, operator_name: str,
                           operator_password: SecretStr, *, session: aiohttp.ClientSession | None = None,
                           timeout: float = 10.0, tls: TlsTarget | None = None) -> DittoFsClient:
    """(Re)creates the operator's account through the bootstrap ``admin`` and logs in as it. An account that
    exists (409) was changed by hand: it is made an enabled admin again (a disabled one cannot log in, 403; a
    demoted one can but provisions nothing) and given the operator's password back."""
    log.info("dittofs account %s cannot log in as an enabled admin (a new server has none yet): creating or "
             "restoring it through admin", operator_name)
    client = DittoFsClient(base_url, operator_name, operator_password, session=session, timeout=timeout, tls=tls)
    password = operator_password.get_secret_value()
    admin = DittoFsClient(base_url, "admin", admin_password, session=client._http(), timeout=timeout, tls=tls)
    try:
        try:
            await admin.request("POST", f"{API}/users", {"username": operator_name, "password": password,
                                                          "role": "admin"}, (password,))
        except DittoFsConflict:
            await admin.request("PUT", f"{API}/users/{operator_name}", {"role": "admin", "enabled": True})
            await admin.request("POST", f"{API}/users/{operator_name}/password", {"new_password": password},
                                (password,))
        client.requests.update(admin.requests)
        await client.login()
    except BaseException:  # admin refused, unreachable, cancelled: nobody else would close the session
        await client.close()
        raise
    return client
