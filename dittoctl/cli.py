"""`dittoctl`: run the operator, and the offline tools around it (validate, render, status, crd, certs)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dittoctl.api.crd import crd_yaml, dump_yaml
from dittoctl.settings import RunSettings

T = TypeVar("T")

OFFLINE_SKIPPED = (
    "StorageClasses exist",
    "referenced Secrets and keys exist",
    "the Percona Operator CRD is served",
)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"DITTOFS_OPERATOR_{name}", default)


# Kubernetes service links: a Service "dittofs-operator-webhook" beside the pod sets
# DITTOFS_OPERATOR_WEBHOOK_PORT=tcp://<ip>:443 in it.
SERVICE_LINK_HINT = ("; a Kubernetes Service link set it: add enableServiceLinks: false to the pod spec (the chart "
                     "does) or pass the flag instead")
TLS_MODES = ("certManager", "selfSigned", "provided")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _port(raw: str) -> int:
    if not 0 <= (port := int(raw)) <= 65535:
        raise ValueError(raw)
    return port


def _listen_host(raw: str) -> str:
    """"" for every address, IPv6 and IPv4. "::" means that too (as for Go's listeners: Python's would take IPv6
    alone), and an IPv6 address may be written in brackets."""
    host = raw.strip().removeprefix("[").removesuffix("]")
    return "" if host == "::" else host


def _count(raw: str) -> int:
    if (count := int(raw)) < 1:
        raise ValueError(raw)
    return count


def _seconds(*, zero: bool) -> Callable[[str], float]:
    def seconds(raw: str) -> float:
        value = float(raw)
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise ValueError(raw)
        return value
    return seconds


def _one_of(values: Sequence[str], *, fold: bool = False) -> Callable[[str], str]:
    def one_of(raw: str) -> str:
        value = raw.upper() if fold else raw
        if value not in values:
            raise ValueError(raw)
        return value
    return one_of


def _switch(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _listed(item: Callable[[str], object]) -> Callable[[str], list[str]]:
    def listed(raw: str) -> list[str]:
        items = [n.strip() for n in raw.split(",") if n.strip()]
        for n in items:
            item(n)
        return items
    return listed


def _namespace(raw: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", raw):
        raise ValueError(raw)
    return raw


def _checked(env: str, what: str, convert: Callable[[str], T]) -> Callable[[str], T]:
    """A flag's type that also checks its DITTOFS_OPERATOR_<env> default: argparse converts a string default with
    the flag's type when the flag is absent, so a bad variable fails `run` (exit 2) as a bad flag does, naming
    both places, and leaves every other command alone."""
    def check(raw: str) -> T:
        try:
            return convert(raw)
        except ValueError:
            hint = SERVICE_LINK_HINT if raw.startswith(("tcp://", "udp://")) else ""
            raise argparse.ArgumentTypeError(
                f"{raw!r} is not {what} (from the flag or DITTOFS_OPERATOR_{env}){hint}") from None
    return check


class _Switch(argparse.Action):
    """A store_true flag whose default is a DITTOFS_OPERATOR_* variable, checked by the flag's type."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, True)


class _KubectlLoader(yaml.SafeLoader):
    """YAML as kubectl reads it: an unquoted date or time is a string (sigs.k8s.io/yaml), not a timestamp."""


_KubectlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _load_documents(path: str) -> list[dict[str, Any]]:
    try:
        # Bytes: PyYAML reads a UTF-16 file by its byte-order mark (PowerShell's `> f.yaml`) and reports bad bytes.
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    try:
        docs = [d for d in yaml.load_all(data, Loader=_KubectlLoader) if d]
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise UsageError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:
        raise UsageError(f"{path}: nested too deeply to be a Kubernetes object") from None
    items: list[Any] = []
    for doc in docs:
        if not isinstance(doc, dict):
            raise UsageError(f"{path}: every YAML document must be a mapping")
        if isinstance(kind := doc.get("kind"), str) and kind.endswith("List"):
            if not isinstance(listed := doc.get("items") or [], list):
                raise UsageError(f"{path}: the items of a {kind} must be a list")
            items.extend(listed)
        else:
            items.append(doc)
    found = [d for d in items if isinstance(d, dict) and d.get("kind") == "DittoServer"]
    if not found:
        raise UsageError(f"{path}: no DittoServer found")
    return found


def _name(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata")
    return str(meta.get("name") or "<unnamed>") if isinstance(meta, dict) else "<unnamed>"


def cmd_crd(_: argparse.Namespace) -> int:
    sys.stdout.write(crd_yaml())
    return 0


def cmd_crd_reference(_: argparse.Namespace) -> int:
    from dittoctl.api.reference import crd_reference

    sys.stdout.write(crd_reference())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from dittoctl.api.crd import METADATA_SCHEMA, spec_schema, type_errors
    from dittoctl.api.facts import ClusterFacts
    from dittoctl.api.rules import validate

    docs = _load_documents(args.file)
    facts_for: Any = None
    if args.cluster:
        facts_for = asyncio.run(_cluster_facts(docs, args.kubeconfig, _namespace_of(args)))
    results: list[dict[str, Any]] = []
    schema = spec_schema()
    for doc in docs:
        facts = facts_for[id(doc)] if facts_for else ClusterFacts.offline()
        verdict = validate(doc, None, facts)
        # What the apiserver refuses before the webhook sees it (a string for an integer: the models read "1").
        reported = {m.split(": ", 1)[0] for m in verdict.messages}
        typed = type_errors(doc.get("metadata"), METADATA_SCHEMA, "metadata") + type_errors(doc.get("spec"), schema,
                                                                                           "spec")
        errors = verdict.messages + [e for e in typed if e.split(": ", 1)[0] not in reported]
        results.append({"name": _name(doc), "allowed": not errors, "errors": errors, "warnings": verdict.warnings})
    # Offline, the cluster-dependent rules had nothing to check: say so instead of an unqualified "valid".
    skipped = [] if args.cluster else list(OFFLINE_SKIPPED)
    if args.output == "json":
        print(json.dumps([{**r, "skippedChecks": skipped} for r in results], indent=2))
    else:
        for result in results:
            print(f"DittoServer {result['name']}: {'valid' if result['allowed'] else 'INVALID'}")
            for error in result["errors"]:
                print(f"  error: {error}")
            for warning in result["warnings"]:
                print(f"  warning: {warning}")
        if skipped:
            print(f"not checked offline (add --cluster): {'; '.join(skipped)}")
    return 0 if all(r["allowed"] for r in results) else 1


async def _cluster_facts(docs: list[dict[str, Any]], kubeconfig: str | None, namespace: str) -> dict[int, Any]:
    from dittoctl.api.kinds import DITTOSERVERS
    from dittoctl.kube.gateway import Gateway, load_client
    from webhook.facts import FactSource

    gateway = Gateway(await load_client(kubeconfig))
    try:
        # The lookups below turn every failure into a "could not verify" warning: an unreachable cluster would
        # read as a valid object (exit 0 in CI), so it fails here, as `status` does.
        await gateway.served(DITTOSERVERS)
        source = FactSource(gateway)
        # Where `kubectl apply` would create each: its own namespace, else the one given or the context's.
        return {id(doc): await source.facts_for(doc, namespace=_doc_namespace(doc) or namespace) for doc in docs}
    finally:
        await gateway.close()


def _doc_namespace(doc: dict[str, Any]) -> str | None:
    meta = doc.get("metadata")
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    return namespace if isinstance(namespace, str) and namespace else None


def cmd_render(args: argparse.Namespace) -> int:
    from dittoctl.api.facts import ClusterFacts
    from dittoctl.api.rules import validate
    from reconciler.specs import render_offline

    out = []
    for doc in _load_documents(args.file):
        if isinstance(doc.get("metadata") or {}, dict):  # else validate names metadata as the error
            doc["metadata"] = {"namespace": args.namespace, "uid": "00000000-0000-0000-0000-000000000000",
                               **(doc.get("metadata") or {})}
        verdict = validate(doc, None, ClusterFacts.offline())
        if verdict.allowed and verdict.server is not None and not verdict.server.metadata.get("name"):
            # The apiserver names a generateName object; its children are named after that name.
            raise UsageError("metadata.name is required to render (generateName is only known once created)",
                             code=1)
        if not verdict.allowed or verdict.server is None:
            raise UsageError(f"DittoServer {_name(doc)} is invalid, nothing rendered:\n" +
                             "\n".join(f"  error: {m}" for m in verdict.messages), code=1)
        out.extend(render_offline(verdict.server).children())
    sys.stdout.write("---\n".join(dump_yaml(obj) for obj in out))
    return 0


def _namespace_of(args: argparse.Namespace) -> str:
    from dittoctl.kube.gateway import default_namespace

    return str(args.namespace or default_namespace(args.kubeconfig))


def cmd_status(args: argparse.Namespace) -> int:
    from dittoctl.status import show

    return asyncio.run(show(args.name, _namespace_of(args), args.kubeconfig))


def cmd_report(args: argparse.Namespace) -> int:
    from dittoctl.report import write_report

    return asyncio.run(write_report(args.name, _namespace_of(args), args.kubeconfig, args.output,
                                    operator_namespace=args.operator_namespace,
                                    server_address=args.server_address))


def cmd_certs_generate(args: argparse.Namespace) -> int:
    from certs.generate import generate
    from certs.selfsigned import split_sans
    from dittoctl.api.models import DNS_SUBDOMAIN_PATTERN

    names = [args.service, f"{args.service}.{args.namespace}", *split_sans(args.san or [])[0]]
    if bad := [n for n in names if len(n) > 253 or not re.match(DNS_SUBDOMAIN_PATTERN, n.removeprefix("*."))]:
        raise UsageError(f"not a DNS name or IP address: {', '.join(map(repr, bad))} (lowercase letters, digits, "
                         "'-' and '.'; an internationalized name in its xn-- form)")
    try:
        paths = generate(args.service, args.namespace, Path(args.out_dir), extra_sans=args.san or [])
    except OSError as exc:
        raise UsageError(f"{args.out_dir}: {exc.strerror or exc}") from None
    for path in paths:
        print(path)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from dittoctl.kube import logs
    from dittoctl.main import main_run

    settings = run_settings(args)
    logs.configure(settings.log_level, settings.log_format)
    return main_run(settings)


def run_settings(args: argparse.Namespace) -> RunSettings:
    """`dittoctl run`'s parsed flags (and DITTOFS_OPERATOR_* variables) as settings."""
    return RunSettings(
        kubeconfig=args.kubeconfig,
        namespaces=args.namespaces,
        reconciler=not args.no_reconciler,
        webhook=not args.no_webhook,
        webhook_host=args.webhook_host,
        webhook_port=args.webhook_port,
        cert_dir=args.cert_dir,
        tls_mode=args.tls_mode,
        webhook_config_name=args.webhook_config_name,
        service_name=args.service_name,
        service_namespace=args.service_namespace,
        health_host=args.health_host,
        health_port=args.health_port,
        leader_election=args.leader_election,
        lease_namespace=args.lease_namespace,
        lease_name=args.lease_name,
        log_level=args.log_level,
        log_format=args.log_format,
        drift_interval=args.drift_interval,
        shutdown_delay=args.shutdown_delay,
        workers=args.workers,
        server_address=args.server_address,
        provision_networks=args.provision_networks,
        operator_namespace=args.operator_namespace,
    )


def _text(default: float) -> str:
    """A number as a flag's default is written: 300, not 300.0."""
    return str(int(default)) if float(default).is_integer() else str(default)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="dittoctl", description="DittoFS operator and tools")
    sub = root.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator and the admission webhook")
    defaults = RunSettings()  # one home for them

    def option(flag: str, env: str, default: str, what: str, convert: Callable[[str], Any], **kw: Any) -> None:
        run.add_argument(flag, default=_env(env, default), type=_checked(env, what, convert), **kw)

    def switch(flag: str, env: str) -> None:
        run.add_argument(flag, action=_Switch, default=_env(env, "false"),
                         type=_checked(env, "true or false", _switch))

    run.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None)
    option("--namespaces", "NAMESPACES", "", "a comma-separated list of namespace names", _listed(_namespace),
           help="comma-separated; default all")
    switch("--no-webhook", "NO_WEBHOOK")
    switch("--no-reconciler", "NO_RECONCILER")
    run.add_argument("--webhook-host", default=_env("WEBHOOK_HOST", defaults.webhook_host), type=_listen_host,
                     help="listen address; default (or ::) every address, IPv6 and IPv4")
    option("--webhook-port", "WEBHOOK_PORT", _text(defaults.webhook_port), "a port (0-65535)", _port)
    run.add_argument("--cert-dir", default=_env("CERT_DIR", defaults.cert_dir))
    option("--tls-mode", "TLS_MODE", defaults.tls_mode, f"one of {', '.join(TLS_MODES)}", _one_of(TLS_MODES),
           choices=TLS_MODES)
    run.add_argument("--webhook-config-name", default=_env("WEBHOOK_CONFIG_NAME", defaults.webhook_config_name))
    run.add_argument("--service-name", default=_env("SERVICE_NAME", defaults.service_name))
    run.add_argument("--service-namespace", default=_env("NAMESPACE", defaults.service_namespace))
    run.add_argument("--health-host", default=_env("HEALTH_HOST", defaults.health_host), type=_listen_host,
                     help="listen address; default (or ::) every address, IPv6 and IPv4")
    option("--health-port", "HEALTH_PORT", _text(defaults.health_port), "a port (0-65535)", _port)
    switch("--leader-election", "LEADER_ELECTION")
    run.add_argument("--lease-namespace", default=_env("NAMESPACE", defaults.lease_namespace))
    run.add_argument("--lease-name", default=_env("LEASE_NAME", defaults.lease_name),
                     help="Lease for leader election (one per release)")
    option("--log-level", "LOG_LEVEL", defaults.log_level, f"one of {', '.join(LOG_LEVELS)}",
           _one_of(LOG_LEVELS, fold=True),
           metavar="{" + ",".join(LOG_LEVELS) + "}")
    option("--log-format", "LOG_FORMAT", defaults.log_format, "json or text", _one_of(("json", "text")),
           choices=["json", "text"])
    option("--server-address", "SERVER_ADDRESS", defaults.server_address, "service or pod",
           _one_of(("service", "pod")),
           choices=["service", "pod"],
           help="how to reach a server's REST API: its <name>-api Service (in cluster) or its pod IP "
                "(out-of-cluster runs)")
    option("--provision-networks", "PROVISION_NETWORKS", "", "a comma-separated list of CIDRs",
           _listed(lambda n: ipaddress.ip_network(n, strict=False)),
           help="with --server-address pod: comma-separated CIDRs; pods outside are not provisioned")
    operator_namespace = os.environ.get("POD_NAMESPACE") or _env("NAMESPACE", defaults.operator_namespace)
    run.add_argument("--operator-namespace", default=operator_namespace,
                     help="the operator's own namespace (the chart's pod sets POD_NAMESPACE); every DittoServer's "
                          "NetworkPolicy lets it in")
    option("--drift-interval", "DRIFT_INTERVAL", _text(defaults.drift_interval), "a number of seconds above 0",
           _seconds(zero=False), metavar="SECONDS",
           help="how often every server is compared with its spec, changed or not")
    option("--shutdown-delay", "SHUTDOWN_DELAY", _text(defaults.shutdown_delay), "a number of seconds (0 or more)",
           _seconds(zero=True), metavar="SECONDS",
           help="after a stop signal, keep answering admission requests (unready) this long, until the "
                "apiserver stops routing to this pod (in a cluster: a few seconds; the chart sets 5); a second "
                "stop signal ends the delay")
    option("--workers", "WORKERS", _text(defaults.workers), "a whole number of at least 1", _count,
           help="concurrent reconciles; passes mostly wait on the API, not the CPU")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check DittoServer manifests with the webhook's rules")
    validate.add_argument("-f", "--file", required=True, help="YAML file, or - for stdin")
    validate.add_argument("--cluster", action="store_true", help="also look up StorageClasses, Secrets, CRDs")
    validate.add_argument("-n", "--namespace", help="with --cluster, for manifests that name none (default: the "
                          "kubeconfig context's, as for kubectl apply)")
    validate.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None)
    validate.add_argument("-o", "--output", choices=["text", "json"], default="text")
    validate.set_defaults(func=cmd_validate)

    render = sub.add_parser("render", help="print the child manifests the operator would apply (to read, not to "
                                           "apply: their ownerReference names a placeholder uid)")
    render.add_argument("-f", "--file", required=True, help="a DittoServer manifest (`-` reads stdin)")
    render.add_argument("-n", "--namespace", default="default",
                        help="for an object that names none (default: default; offline, no kubeconfig is read)")
    render.set_defaults(func=cmd_render)

    status = sub.add_parser("status", help="show a DittoServer's state")
    status.add_argument("name")
    status.add_argument("-n", "--namespace", help="default: the kubeconfig context's, as for kubectl")
    status.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None)
    status.set_defaults(func=cmd_status)

    report = sub.add_parser("report", help="write a redacted support bundle (tar.gz) for a DittoServer")
    report.add_argument("name")
    report.add_argument("-n", "--namespace", help="default: the kubeconfig context's, as for kubectl")
    report.add_argument("-o", "--output", help="file to write (default dittofs-report-NS-NAME-TIME.tar.gz)")
    report.add_argument("--operator-namespace", default="dittofs-system", help="where the operator's pods run")
    report.add_argument("--server-address", choices=["service", "pod"], default="service",
                        help="reach DittoFS through its API Service (in cluster) or its pod IP")
    report.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None)
    report.set_defaults(func=cmd_report)

    crd = sub.add_parser("crd", help="print the CustomResourceDefinition YAML")
    crd.set_defaults(func=cmd_crd)

    docs = sub.add_parser("docs", help="generated documentation")
    docs_sub = docs.add_subparsers(dest="docs_command", required=True)
    docs_sub.add_parser("crd-reference", help="Markdown reference of every DittoServer field").set_defaults(
        func=cmd_crd_reference)

    certs = sub.add_parser("certs", help="certificate tools")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True)
    generate = certs_sub.add_parser("generate", help="a CA + serving certificate for `provided` TLS mode")
    generate.add_argument("--service", default="dittofs-operator-webhook")
    generate.add_argument("--namespace", default="dittofs-system")
    generate.add_argument("--out-dir", default=".")
    generate.add_argument("--san", action="append", help="extra DNS name or IP (repeatable)")
    generate.set_defaults(func=cmd_certs_generate)
    return root


class UsageError(Exception):
    """A problem the user fixes, printed as one or a few lines: exit code 2 for the command's input (a file that
    cannot be read or holds no DittoServer), 1 for an object found invalid (as `validate` says INVALID)."""

    def __init__(self, message: str, *, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    # `run` imports and wires objects that live as long as the process: the cyclic collector's passes among
    # them as they are made are wasted (~25 ms of its start). It turns the collector back on once started, with
    # those objects frozen (dittoctl/main.py); every other command runs with it on.
    gc.disable()
    args = parser().parse_args(argv)
    if args.command != "run":
        gc.enable()
    try:
        result: int = args.func(args)
    except UsageError as exc:
        print(f"dittoctl {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the CLI's edge: one line with the fix, never a traceback
        from dittoctl.kube.gateway import ApiError, NoCredentials

        if isinstance(exc, NoCredentials):
            message = f"no Kubernetes credentials: {exc}; pass --kubeconfig FILE or set KUBECONFIG"
        elif isinstance(exc, ApiError) and exc.status == 0:
            message = f"cannot reach the Kubernetes API ({exc}); check the kubeconfig's server and the network"
        elif isinstance(exc, ApiError):
            message = f"the Kubernetes API refused the request: {exc}"
        else:
            raise
        print(f"dittoctl {args.command}: {message}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    raise SystemExit(main())
