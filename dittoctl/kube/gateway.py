"""The one async door to the Kubernetes API.

Every read and write of the operator and the webhook goes through `Gateway`, so timeouts, field manager,
error mapping and write counting live in one place. Objects are plain JSON dicts: no client model
(de)serialisation on the hot path.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import ipaddress
import os
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from dittoctl.api.kinds import Kind, kind_of
from dittoctl.kube import metrics
from dittoctl.kube.jsonbytes import dumps

FIELD_MANAGER = "dittofs-operator"
REQUESTS = 32  # requests in flight to the API server at most (more wait for a free connection)
# Each pooled TLS connection holds asyncio's 256 KiB read buffer: a burst's 32 kept open for aiohttp's default
# 15 s were 8 MiB of RSS 10 s after a restart at 300 servers (bench, issue 15). A settled operator asks the
# API nothing (its watches have connections of their own), so an idle connection goes after 2-4 s (aiohttp
# checks every keep-alive period, and rounds periods of 5 s or more up to the next second).
IDLE_CONNECTION_SECONDS = 2.0
# A 429, or a 5xx answering a read, that says when to come back (Retry-After) was not processed: the API's priority
# and fairness shedding load, a watch cache still initialising (a CRD installed with the operator), a graceful
# shutdown. It is sent again then, as client-go does (10 times at most there), instead of failing the pass with a
# warning and an Event: one more write to an apiserver that just asked for less.
RETRY_AFTER_ATTEMPTS = 5
RETRY_AFTER_MAX_SECONDS = 10.0
Obj = dict[str, Any]
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


class NotFound(Exception):
    """The object does not exist."""


class Conflict(Exception):
    """Optimistic-concurrency or apply conflict (HTTP 409)."""

    def __init__(self, message: str, causes: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.causes = causes or []


class ApiError(Exception):
    """Any other API failure; `status` is the HTTP code (0 when the server was unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class NamespaceTerminating(ApiError):
    """A write into a namespace being deleted (403): expected while it drains, retried without alarm."""


def retry_after(status: int, method: str, header: str | None) -> float | None:
    """Seconds to wait before sending the request again, or None: not a request the API asked to be retried."""
    if header is None or not (status == 429 or (status >= 500 and method == "GET")):
        return None
    try:
        seconds = float(header)
    except ValueError:
        seconds = 1.0  # an HTTP date: the apiserver sends whole seconds, so this is not one
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_SECONDS)


def _error(status: int, reason: str, raw: bytes) -> Exception:
    body: Any = {}
    with contextlib.suppress(ValueError):
        body = orjson.loads(raw) if raw else {}
    body = body if isinstance(body, dict) else {}
    message = str(body.get("message") or reason or "")
    if status == 404:
        return NotFound(message)
    if status == 409:
        return Conflict(message, (body.get("details") or {}).get("causes"))
    if status == 403 and "because it is being terminated" in message:
        return NamespaceTerminating(403, message)
    return ApiError(status, message)


class NoCredentials(ApiError):
    """Neither a usable kubeconfig nor an in-cluster service account."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, detail)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


def kubeconfig_files(kubeconfig: str) -> list[str]:
    """The files of a kubeconfig list (``KUBECONFIG=a:b``) that exist, in order: kubectl skips the others."""
    return [p for p in (os.path.expanduser(x) for x in kubeconfig.split(os.pathsep) if x) if os.path.exists(p)]


def _current_context(files: list[str]) -> str | None:
    """kubectl's rule: the first file that sets current-context names it (kubernetes_asyncio's merge takes the
    last, kopf's login the first: told explicitly, the operator's client and kopf's agree)."""
    for path in files:
        with contextlib.suppress(OSError, yaml.YAMLError):
            config = yaml.safe_load(Path(path).read_text())
            if isinstance(config, dict) and config.get("current-context"):
                return str(config["current-context"])
    return None


def _credentials_problem(kubeconfig: str | None) -> str | None:
    """Checked first: the loaders print their own line and raise a vaguer error for a missing file."""
    if kubeconfig:
        return None if kubeconfig_files(kubeconfig) else f"kubeconfig {kubeconfig} does not exist"
    if os.environ.get("KUBERNETES_SERVICE_HOST") or os.path.exists(os.path.expanduser("~/.kube/config")):
        return None
    return "no --kubeconfig, no KUBECONFIG, no ~/.kube/config, and not inside a cluster"


IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def default_namespace(kubeconfig: str | None = None) -> str:
    """The namespace kubectl would use without -n, from where ``load_client`` takes its credentials: the
    kubeconfig's current context, or in a pod without one the pod's own; else "default"."""
    if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
        with contextlib.suppress(OSError):
            if namespace := Path(IN_CLUSTER_NAMESPACE).read_text().strip():
                return namespace
    files = kubeconfig_files(kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config")
    if not files or (current := _current_context(files)) is None:
        return "default"
    with contextlib.suppress(Exception):  # an unusable kubeconfig: load_client says why, with the fix
        contexts, _ = k8s_config.list_kube_config_contexts(os.pathsep.join(files))
        for context in contexts:
            if context.get("name") == current:
                return str((context.get("context") or {}).get("namespace") or "default")
    return "default"


async def load_client(kubeconfig: str | None = None, *, streams: int = 0) -> k8s.ApiClient:
    """An ApiClient from a kubeconfig file, else the in-cluster service account. ``streams``: watch streams
    that will each hold a connection for their lifetime, on top of the ``REQUESTS`` in flight."""
    if (problem := _credentials_problem(kubeconfig)) is not None:
        raise NoCredentials(problem)
    try:
        if kubeconfig:
            configuration = k8s.Configuration()
            files = kubeconfig_files(kubeconfig)
            await k8s_config.load_kube_config(config_file=os.pathsep.join(files), context=_current_context(files),
                                              client_configuration=configuration)
        else:
            try:
                configuration = k8s.Configuration()
                k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except k8s_config.ConfigException:
                configuration = k8s.Configuration()
                await k8s_config.load_kube_config(client_configuration=configuration)
        # The certificates are read here: a CA or client pair that is not PEM fails as ssl.SSLError (an OSError).
        api = k8s.ApiClient(configuration)
    except (k8s_config.ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as exc:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "no --kubeconfig, KUBECONFIG or in-cluster account"
        raise NoCredentials(f"{where}: {str(exc).strip() or type(exc).__name__}") from None
    try:
        await _own_session(api, streams)
    except (OSError, ValueError) as exc:
        await api.close()
        raise NoCredentials(f"kubeconfig {kubeconfig or '(default)'}: TLS settings do not load: {exc}") from None
    return api


async def _own_session(api: k8s.ApiClient, streams: int) -> None:
    """Replace kubernetes_asyncio's HTTP session with one made for the operator:

    - a pool of ``REQUESTS`` + ``streams`` connections (its default of 100 was 20 MiB of RSS after a 300-server
      burst, with the API server the bottleneck anyway), closed after ``IDLE_CONNECTION_SECONDS`` idle;
    - no ``trust_env``: aiohttp would look up the proxy variables and ~/.netrc in a worker thread on every
      request (10 % of the operator's CPU in the 300 burst). The proxy is resolved once here instead; an API
      server authenticates by token or certificate, never netrc.
    """
    rest, configuration = api.rest_client, api.configuration
    host = str(urllib.parse.urlsplit(str(configuration.host)).hostname or "")
    proxy = urllib.request.getproxies_environment().get("https")
    if not rest.proxy and proxy and host and not _loopback(host) and not urllib.request.proxy_bypass(host):
        rest.proxy = proxy
    await rest.pool_manager.close()  # never used: no connection yet
    connector = aiohttp.TCPConnector(limit=REQUESTS + streams, ssl=_tls_context(configuration),
                                     keepalive_timeout=IDLE_CONNECTION_SECONDS)
    rest.pool_manager = aiohttp.ClientSession(connector=connector, trust_env=False, read_bufsize=2**21)


def _loopback(host: str) -> bool:
    """Never through a proxy, as in Go's net/http (kubectl's): urllib would send an API server on 127.0.0.1 to an
    HTTPS_PROXY unless NO_PROXY names it."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_context(configuration: k8s.Configuration) -> ssl.SSLContext:
    """The TLS settings kubernetes_asyncio's REST client derives from a configuration (rest.py), unchanged
    (a unit test compares the two contexts, so an upgrade that changes them fails there)."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.disable_strict_ssl_verification:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


class Gateway:
    """Thin async CRUD + server-side apply over raw JSON."""

    def __init__(self, api: k8s.ApiClient, *, request_timeout: float = 30.0) -> None:
        self.api = api
        self.timeout = request_timeout

    async def close(self) -> None:
        await self.api.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float | None = None,
    ) -> aiohttp.ClientResponse:
        """One request over kubernetes_asyncio's session (its TLS and proxy) with its token refresh, without
        ``call_api``: that walks every request body in Python to sanitise it (a StatefulSet is hundreds of
        fields) and decodes each response twice, 18 % of the operator's CPU in the 300 burst. Its REST layer is
        skipped too: it encodes every body with stdlib json, 3 % of the burst, where orjson takes a tenth."""
        api = self.api
        rest = api.rest_client
        headers = {**api.default_headers, "Content-Type": content_type, "Accept": accept}
        params: Any = list(query or ())  # pairs, as urlencode takes them (the stub says dict)
        await api.update_params_for_auth(headers, params, ["BearerToken"])
        url = str(api.configuration.host) + path + ("?" + urllib.parse.urlencode(params) if params else "")
        options: dict[str, Any] = {"headers": headers,
                                   "timeout": aiohttp.ClientTimeout(total=timeout or self.timeout)}
        if body is not None:
            options["data"] = dumps(body)
        if rest.proxy:
            options["proxy"] = rest.proxy
            if rest.proxy_headers:
                options["proxy_headers"] = rest.proxy_headers
        if rest.server_hostname:
            options["server_hostname"] = rest.server_hostname
        try:
            response: aiohttp.ClientResponse = await rest.pool_manager.request(method, url, **options)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            metrics.API_REQUESTS.labels("0", method).inc()
            raise ApiError(0, f"API unreachable: {exc}") from exc
        metrics.API_REQUESTS.labels(str(response.status), method).inc()
        return response

    async def _exchange(self, method: str, path: str, **kwargs: Any) -> bytes:
        """The body of a 2xx answer; any other status raises its mapped error, once the retries the API asked
        for (``RETRY_AFTER_ATTEMPTS``) are spent."""
        attempt = 0
        while True:
            response = await self._send(method, path, **kwargs)
            try:
                raw = await response.read()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise ApiError(0, f"API unreachable: {exc}") from exc
            finally:
                response.release()
            if 200 <= response.status < 300:
                return raw
            wait = retry_after(response.status, method, response.headers.get("Retry-After"))
            if wait is None or attempt >= RETRY_AFTER_ATTEMPTS:
                raise _error(response.status, str(response.reason or ""), raw)
            attempt += 1
            await asyncio.sleep(wait)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        accept: str = "application/json",
    ) -> Obj:
        raw = await self._exchange(method, path, body=body, query=query, content_type=content_type,
                                   timeout=timeout, accept=accept)
        result = orjson.loads(raw) if raw else {}
        return result if isinstance(result, dict) else {}

    async def text(self, path: str, query: list[tuple[str, str]] | None = None) -> str:
        """A plain-text GET (pod logs), the raw body as it came."""
        raw = await self._exchange("GET", path, query=query, accept="*/*")
        return raw.decode("utf-8", "replace")

    async def get(self, kind: Kind, name: str, namespace: str | None = None, *, timeout: float | None = None) -> Obj:
        return await self._call("GET", kind.path(namespace, name), timeout=timeout)

    async def get_or_none(self, kind: Kind, name: str, namespace: str | None = None) -> Obj | None:
        try:
            return await self.get(kind, name, namespace)
        except NotFound:
            return None

    async def list(
        self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        query = [("labelSelector", label_selector)] if label_selector else []
        if field_selector:
            query.append(("fieldSelector", field_selector))
        result = await self._call("GET", kind.path(namespace), query=query)
        items: list[Obj] = result.get("items", [])
        return items

    async def list_keys(self, kind: Kind, namespace: str | None = None) -> tuple[tuple[str, str], ...]:
        """(namespace, name) of each object, listed as metadata only (PartialObjectMetadataList): a fraction
        of the full objects' bytes and parsing, for callers that need to know only what exists. An empty
        list has ``items: null`` in that form."""
        result = await self._call("GET", kind.path(namespace), accept=_METADATA_LIST)
        return tuple((str(m.get("namespace") or ""), str(m.get("name") or ""))
                     for m in (item.get("metadata") or {} for item in result.get("items") or ()))

    async def apply(self, obj: Mapping[str, Any], *, force: bool = True) -> Obj:
        """Server-side apply of `obj` (only the fields we own) with our field manager."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        query = [("fieldManager", FIELD_MANAGER)]
        if force:
            query.append(("force", "true"))
        return await self._call(
            "PATCH",
            kind.path(meta.get("namespace"), meta["name"]),
            body=dict(obj),
            query=query,
            content_type="application/apply-patch+yaml",
        )

    async def create(self, kind: Kind, obj: Mapping[str, Any], namespace: str | None = None) -> Obj:
        return await self._call("POST", kind.path(namespace), body=dict(obj))

    async def merge_patch(
        self, kind: Kind, name: str, patch: Mapping[str, Any], namespace: str | None = None,
        *, subresource: str | None = None,
    ) -> Obj:
        return await self._call(
            "PATCH", kind.path(namespace, name, subresource), body=dict(patch),
            content_type="application/merge-patch+json",
        )

    async def json_patch(
        self, kind: Kind, name: str, ops: builtins.list[dict[str, Any]], namespace: str | None = None,
    ) -> Obj:
        return await self._call(
            "PATCH", kind.path(namespace, name), body=ops, content_type="application/json-patch+json"
        )

    async def delete(self, kind: Kind, name: str, namespace: str | None = None, *,
                     orphan: bool = False) -> None:
        """``orphan``: the object goes, its dependents (a StatefulSet's pods) stay."""
        try:
            await self._call("DELETE", kind.path(namespace, name),
                             query=[("propagationPolicy", "Orphan")] if orphan else None)
        except NotFound:
            return

    async def pages(self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None,
                    limit: int = 500) -> AsyncGenerator[Obj, None]:
        """A listing in pages of at most `limit` objects, all from one snapshot (``metadata.resourceVersion``
        is the snapshot's, to watch from)."""
        token = ""
        while True:
            query = [("limit", str(limit))]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            page = await self._call("GET", kind.path(namespace), query=query)
            yield page
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                return

    async def watch(self, kind: Kind, resource_version: str, *, timeout_seconds: int = 290,
                    namespace: str | None = None, label_selector: str | None = None,
                    ) -> AsyncIterator[dict[str, Any]]:
        """Raw watch events, one decoded JSON line at a time (nothing is accumulated)."""
        query = [("watch", "true"), ("resourceVersion", resource_version), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", str(timeout_seconds))]
        if label_selector:
            query.append(("labelSelector", label_selector))
        response = await self._send("GET", kind.path(namespace), query=query, timeout=timeout_seconds + 30)
        try:
            if response.status >= 400:
                raise _error(response.status, str(response.reason or ""), await response.read())
            while True:
                try:
                    line = await response.content.readline()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise ApiError(0, f"watch stream broken: {exc}") from exc
                if not line:
                    return
                yield orjson.loads(line)
        finally:
            response.release()

    async def served(self, kind: Kind) -> bool:
        """Discovery: does the apiserver serve `kind` right now?"""
        try:
            result = await self._call("GET", f"/apis/{kind.group}/{kind.version}")
        except NotFound:
            return False
        return any(r.get("name") == kind.plural for r in result.get("resources", []))
