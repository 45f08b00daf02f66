"""`dittoctl report NAME`: one redacted support bundle (tar.gz) for a DittoServer.

It holds the DittoServer, its children, recent events, the server's and the operator's logs, the rendered
config and what DittoFS itself reports over REST (adapters, stores, shares, users, groups). Nothing leaves
unredacted: every value of every Secret in the namespace is replaced wherever it appears, as text and in
its base64 forms, and values under secret-looking keys are masked too. Secret objects are never included.
Collection is best effort (a missing piece becomes a note in the bundle); redaction is not: without the
Secrets to redact, no bundle is written.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from dittoctl.api.fileservice.planner import API
from dittoctl.api.fileservice.types import OPERATOR_ACCOUNT
from dittoctl.api.kinds import (
    CONFIGMAPS,
    CRD_NOT_SERVED,
    DITTOSERVERS,
    EVENTS,
    NETWORKPOLICIES,
    PERCONAPGCLUSTERS,
    PODS,
    PVCS,
    SECRETS,
    SERVICES,
    STATEFULSETS,
)
from dittoctl.api.models import DittoServer
from dittoctl.api.naming import Names, url_host
from dittoctl.api.secrets import (
    OPERATOR_PASSWORD_KEY,
    TLS_CA_KEY,
    TLS_CERT_KEY,
    TLS_KEY_KEY,
    api_trust,
    watched_secrets,
)
from dittoctl.kube.dittofs import DittoFsClient, DittoFsError, TlsTarget
from dittoctl.kube.gateway import ApiError, Gateway, NotFound, load_client

REDACTED = "<redacted>"
MIN_SECRET_LENGTH = 4  # shorter values (e.g. "443", "on") would shred the bundle and protect nothing
LOG_TAIL_LINES = 2000
OPERATOR_SELECTOR = "app.kubernetes.io/name=dittofs-operator"
OPERATOR_CONTAINER = "operator"
# `"password": "x"`, `password: x`, `bind_password=x`, ... in JSON, YAML and logs.
_SECRET_WORD = re.compile(r"password|passwd|secret|token|access_?key_?id|secret_access_key", re.IGNORECASE)
# A key, then its value on the same line (YAML's `passwordSecretRef:` opens a mapping). The key is a whole word
# (\b: never retried from inside one, so a long run of letters costs one pass), judged in `_secret_key`.
_KEYED_VALUE = re.compile(r'("?)\b([A-Za-z_][A-Za-z0-9_]*)\1[ \t]*[:=][ \t]*("(?:[^"\\]|\\.)*"|[^\s,}]+)')


def _secret_key(key: str) -> bool:
    """Names a secret: not a reference, a duration or a flag (`passwordSecretRef`, `accessTokenDuration`,
    `access_token_duration`, `secretFound`), nor the name of a Secret or of a key in it (`secretName`,
    `accessKeyIdKey`, `secretAccessKeyKey`: support needs them to tell which Secret is missing)."""
    return (_SECRET_WORD.search(key) is not None and not key.lower().endswith(("ref", "duration", "found"))
            and not key.endswith(("Name", "IdKey", "KeyKey")))


# Values no secret takes: a flag or nothing (`automountServiceAccountToken: false`, `"must_change_password": true`).
_PLAIN_VALUES = frozenset({"", REDACTED, "null", "none", "********", "true", "false"})


# (file in the bundle, path); /health lives outside the versioned API.
_REST_READS = (("health", "/health"), *((p.lstrip("/"), f"{API}{p}") for p in (
    "/adapters", "/adapters/nfs/settings", "/adapters/smb/settings", "/store/metadata", "/store/block/local",
    "/store/block/remote", "/shares", "/users", "/groups", "/snapshot-policies", "/identity-providers")))


def _quoted(text: str) -> set[str]:
    """The text as it appears inside a string of JSON (Python's, with and without \\u escapes; Go's, which also
    escapes <, > and &) and of single-quoted YAML."""
    go = json.dumps(text)[1:-1].replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return {json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1], go, text.replace("'", "''")}


def secret_forms(values: Iterable[bytes]) -> list[str]:
    """Every form a Secret value can take in a text: itself, escaped in a JSON or YAML string, and base64
    (standard and URL-safe, padded or not). Longest first, so a value inside another is replaced after it."""
    forms: set[str] = set()
    for raw in values:
        if len(raw) < MIN_SECRET_LENGTH:
            continue
        text = raw.decode("utf-8", "replace").strip()
        if len(text) >= MIN_SECRET_LENGTH:
            forms.update(_quoted(text))
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(raw).decode()
            forms.update({encoded, encoded.rstrip("=")})
    return sorted(forms, key=lambda f: (-len(f), f))


def redact(text: str, forms: Iterable[str]) -> tuple[str, int]:
    """(redacted text, replacements made)."""
    count = 0
    for form in forms:
        if form in text:
            count += text.count(form)
            text = text.replace(form, REDACTED)

    def mask(match: re.Match[str]) -> str:
        value = match.group(3)
        if not _secret_key(match.group(2)) or value.strip('"').lower() in _PLAIN_VALUES:
            return match.group(0)
        nonlocal count
        count += 1
        prefix = match.group(0)[: match.start(3) - match.start()]
        return prefix + (f'"{REDACTED}"' if value.startswith('"') else REDACTED)

    return _KEYED_VALUE.sub(mask, text), count


@dataclass
class Bundle:
    """Files of the report (path -> text), redacted as they are added."""

    forms: list[str]
    files: dict[str, str] = field(default_factory=dict)
    redactions: int = 0

    def add(self, path: str, content: Any) -> None:
        if not isinstance(content, str):
            # Unfolded and unescaped: a value is then written as itself, which is what redaction looks for.
            content = yaml.safe_dump(content, sort_keys=False, default_flow_style=False, allow_unicode=True,
                                     width=2**31)
        text, count = redact(content, self.forms)
        self.files[path] = text
        self.redactions += count

    def note(self, path: str, what: str, error: Exception) -> None:
        self.add(f"notes/{path}.txt", f"{what} could not be collected: {error}\n")

    def tar_gz(self) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            for path, text in sorted(self.files.items()):
                data = text.encode()
                info = tarfile.TarInfo(path)
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop managedFields: noise in a support bundle."""
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    return {**obj, "metadata": meta}


# Keys whose values are names, not secrets: redacting "admin" or a namespace name everywhere would shred the
# bundle and hide nothing.
NOT_SECRET_KEYS = frozenset({"username", "user", "host", "port", "database", "dbname", "sslmode", "namespace",
                             "ca.crt", "tls.crt", "region", "bucket", "endpoint"})


def _secret_values(secrets: Iterable[Mapping[str, Any]]) -> list[bytes]:
    values = []
    for secret in secrets:
        for key, encoded in (secret.get("data") or {}).items():
            if key not in NOT_SECRET_KEYS:
                values.append(base64.b64decode(encoded or ""))
        for key, text in (secret.get("stringData") or {}).items():
            if key not in NOT_SECRET_KEYS:
                values.append(str(text).encode())
    return values


async def _secrets(gateway: Gateway, namespace: str, wanted: set[str]) -> tuple[list[dict[str, Any]], bool]:
    """All Secrets of the namespace, else (no list permission) each one the server references; and whether
    that was all of them."""
    try:
        return await gateway.list(SECRETS, namespace), True
    except ApiError as exc:
        if exc.status != 403:
            raise
    found = []
    for name in sorted(wanted):
        secret = await gateway.get_or_none(SECRETS, name, namespace)
        if secret is not None:
            found.append(secret)
    return found, False


async def _log(gateway: Gateway, pod: str, namespace: str, container: str | None, previous: bool) -> str:
    query = [("tailLines", str(LOG_TAIL_LINES))] + ([("container", container)] if container else [])
    if previous:
        query.append(("previous", "true"))
    return await gateway.text(f"{PODS.path(namespace, pod)}/log", query)


def _operator_lines(text: str, namespace: str, name: str) -> tuple[str, int]:
    """The operator's lines about this server, and its warnings and errors that name no server (a log shared
    by every DittoServer must not leak other tenants' names into this bundle); and how many lines were JSON."""
    kept, structured = [], 0
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        structured += 1
        ours = entry.get("namespace") == namespace and entry.get("name") in (name, None)
        general = "namespace" not in entry and entry.get("level") in ("warning", "error", "critical")
        if ours or general:
            kept.append(line)
    return "\n".join(kept) + "\n", structured


async def _dittofs(bundle: Bundle, base_url: str, password: str, tls: TlsTarget | None) -> None:
    async with DittoFsClient(base_url, OPERATOR_ACCOUNT, SecretStr(password), timeout=10.0, tls=tls) as client:
        await client.login()
        reads = list(_REST_READS)
        while reads:
            name, path = reads.pop(0)
            try:
                answer = await client.request("GET", path)
            except DittoFsError as exc:
                bundle.note(f"dittofs_{name.replace('/', '_')}", f"GET {path}", exc)
                continue
            bundle.add(f"dittofs/{name}.json", json.dumps(answer, indent=2, ensure_ascii=False))
            if name == "identity-providers":  # each configured one (DittoFS redacts its passwords)
                reads += [(f"{name}/{p['type']}", f"{API}/{name}/{p['type']}/config") for p in answer or []
                          if p.get("configured")]


async def collect(gateway: Gateway, name: str, namespace: str, *, operator_namespace: str,
                  server_address: str = "service") -> Bundle:
    server = await gateway.get(DITTOSERVERS, name, namespace)
    names = Names(name, namespace, str(server["metadata"].get("uid", "")))
    try:
        model: DittoServer | None = DittoServer.model_validate({**server, "status": None})
    except ValidationError:
        model = None  # a spec the webhook would refuse: still worth a bundle, without what needs the model
    wanted = {names.operator_secret, names.admin_secret, names.jwt_secret}
    if model is not None:
        wanted |= watched_secrets(model.spec, names)
    secrets, every = await _secrets(gateway, namespace, wanted)
    bundle = Bundle(secret_forms(_secret_values(secrets)))
    if not every:
        bundle.add("notes/redaction.txt", f"listing the Secrets of {namespace} was forbidden: only the values of the "
                   f"{len(secrets)} this server references were looked for (and fields named like passwords)\n")

    bundle.add("dittoserver.yaml", _strip(server))
    selector = names.selector_string()
    children = {"pods": PODS, "pvcs": PVCS, "services": SERVICES, "statefulsets": STATEFULSETS,
                "configmaps": CONFIGMAPS, "networkpolicies": NETWORKPOLICIES}
    listed: dict[str, list[dict[str, Any]]] = {}
    for label, kind in children.items():
        try:
            listed[label] = await gateway.list(kind, namespace, label_selector=selector)
        except ApiError as exc:
            bundle.note(label, label, exc)
            continue
        for obj in listed[label]:
            bundle.add(f"{label}/{obj['metadata']['name']}.yaml", _strip(obj))
    for config in listed.get("configmaps", []):
        for key, text in (config.get("data") or {}).items():
            bundle.add(f"config/{key}", text)
    if cluster := (server.get("status") or {}).get("perconaClusterName"):
        try:
            bundle.add(f"perconapgclusters/{cluster}.yaml", _strip(await gateway.get(PERCONAPGCLUSTERS, cluster,
                                                                                      namespace)))
        except (NotFound, ApiError) as exc:
            bundle.note("perconapgcluster", f"PerconaPGCluster {cluster}", exc)

    involved = {name, *(o["metadata"]["name"] for objs in listed.values() for o in objs)}
    try:
        events = [e for e in await gateway.list(EVENTS, namespace)
                  if (e.get("involvedObject") or {}).get("name") in involved]
        events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        bundle.add("events.yaml", [_strip(e) for e in events])
    except ApiError as exc:
        bundle.note("events", "events", exc)

    for pod in listed.get("pods", []):
        pod_name = pod["metadata"]["name"]
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            container = status["name"]
            for previous in (False, True) if status.get("restartCount") else (False,):
                suffix = ".previous" if previous else ""
                try:
                    text = await _log(gateway, pod_name, namespace, container, previous)
                    bundle.add(f"logs/{pod_name}.{container}{suffix}.log", text)
                except ApiError as exc:
                    bundle.note(f"logs_{pod_name}_{container}{suffix}", f"log of {pod_name}/{container}", exc)
    try:
        operators = await gateway.list(PODS, operator_namespace, label_selector=OPERATOR_SELECTOR)
    except ApiError as exc:
        bundle.note("operator_logs", f"operator logs in {operator_namespace}", exc)
        operators = []
    else:
        if not operators:
            bundle.add("notes/operator_logs.txt", f"no operator pod ({OPERATOR_SELECTOR}) in namespace "
                       f"{operator_namespace}: no operator log is included; pass --operator-namespace where it runs\n")
    for op in operators:
        op_name = op["metadata"]["name"]
        # The chart's container; a sidecar beside it makes a log request without a container name a 400.
        named = {c.get("name") for c in (op.get("spec") or {}).get("containers") or []}
        try:
            text = await _log(gateway, op_name, operator_namespace, OPERATOR_CONTAINER if OPERATOR_CONTAINER in named
                              else None, False)
        except ApiError as exc:
            bundle.note(f"operator_{op_name}", f"log of operator pod {op_name}", exc)
            continue
        kept, structured = _operator_lines(text, namespace, name)
        bundle.add(f"operator/{op_name}.log", kept)
        if text.strip() and not structured:
            bundle.add(f"notes/operator_{op_name}.txt", "the operator logs in text (--log-format text): a log "
                       "shared by every DittoServer is filtered by its JSON fields, so none of it is included; "
                       "run the operator with --log-format json (the chart's default)\n")

    if model is None:
        bundle.add("notes/dittofs.txt", "the spec does not validate; DittoFS's own state was not read\n")
    else:
        await _dittofs_state(bundle, names, model, listed.get("pods", []), server_address, secrets)
    return bundle


def _value(secrets: list[dict[str, Any]], name: str | None, key: str) -> str:
    found = next((s for s in secrets if s["metadata"]["name"] == name), None)
    return base64.b64decode(((found or {}).get("data") or {}).get(key) or "").decode()


def _tls(server: DittoServer, names: Names, secrets: list[dict[str, Any]]) -> TlsTarget | None:
    """The API's TLS as the operator sees it: the Secret's ca.crt, and the operator's client pair."""
    trust = api_trust(server.spec)
    if trust is None:
        return None
    client = trust.client_secret
    pair = (_value(secrets, client, TLS_CERT_KEY), _value(secrets, client, TLS_KEY_KEY)) if client else None
    return TlsTarget.of(names.host(names.api_service), _value(secrets, trust.ca_secret, TLS_CA_KEY) or None, pair)


async def _dittofs_state(bundle: Bundle, names: Names, server: DittoServer, pods: list[dict[str, Any]],
                         server_address: str, secrets: list[dict[str, Any]]) -> None:
    password = _value(secrets, names.operator_secret, OPERATOR_PASSWORD_KEY)
    if not password:
        # Worded so that no `Secret: value` shape is masked by the redaction of this very note.
        bundle.add("notes/dittofs.txt", f"the Secret {names.operator_secret} does not exist: the operator never "
                                        "provisioned this server, so there is no account to read DittoFS with\n")
        return
    if server_address == "pod":
        ip = next((str((p.get("status") or {}).get("podIP") or "") for p in pods), "")
        if not ip:  # from outside the cluster the Service name does not resolve, or resolves elsewhere
            bundle.add("notes/dittofs.txt", "no pod of this server has an IP (--server-address pod): DittoFS's own "
                                            "state was not read\n")
            return
        host = ip
    else:
        host = names.host(names.api_service)
    try:
        tls = _tls(server, names, secrets)
        scheme = "https" if tls is not None else "http"
        await _dittofs(bundle, f"{scheme}://{url_host(host)}:{server.spec.control_plane.port}", password, tls)
    except (TimeoutError, DittoFsError, OSError) as exc:  # ssl.SSLError is an OSError
        bundle.note("dittofs", f"DittoFS's own state at {host}", exc)


async def write_report(name: str, namespace: str, kubeconfig: str | None, output: str | None, *,
                       operator_namespace: str, server_address: str) -> int:
    path = Path(output or f"dittofs-report-{namespace}-{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.tar.gz")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        print(f"cannot write {path}: {path.parent} is not a writable directory", file=sys.stderr)
        return 2
    gateway = Gateway(await load_client(kubeconfig))
    try:
        try:
            bundle = await collect(gateway, name, namespace, operator_namespace=operator_namespace,
                                   server_address=server_address)
        except NotFound:
            served = await gateway.served(DITTOSERVERS)
            print(f"DittoServer {namespace}/{name} not found" if served else f"dittoctl report: {CRD_NOT_SERVED}",
                  file=sys.stderr)
            return 1
        except ApiError as exc:
            print(f"cannot collect the report (no bundle written, nothing could be redacted safely): {exc}",
                  file=sys.stderr)
            return 1
    finally:
        await gateway.close()
    try:
        path.write_bytes(bundle.tar_gz())  # noqa: ASYNC240 - the CLI is done with the event loop
    except OSError as exc:
        print(f"cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    notes = [p for p in bundle.files if p.startswith("notes/")]
    print(f"wrote {path}: {len(bundle.files)} files, {bundle.redactions} values redacted"
          + (f"; {len(notes)} {'piece' if len(notes) == 1 else 'pieces'} missing (see notes/ in the bundle)"
             if notes else ""))
    return 0
