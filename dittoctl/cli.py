"""`dittoctl`: run the operator, and the offline tools around it (validate, render, status, crd, certs)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dittoctl.api.crd import crd_yaml, dump_yaml

OFFLINE_SKIPPED = (
    "StorageClasses exist",
    "referenced Secrets and keys exist",
    "the Percona Operator CRD is served",
)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"DITTOFS_OPERATOR_{name}", default)


def _number_env(name: str, default: str, kind: type[int] | type[float]) -> int | float:
    raw = _env(name, default)
    try:
        return kind(raw)
    except ValueError:
        # Kubernetes service links: a Service "dittofs-operator-webhook" beside the pod sets
        # DITTOFS_OPERATOR_WEBHOOK_PORT=tcp://<ip>:443 in it.
        hint = ("; a Kubernetes Service link set it: add enableServiceLinks: false to the pod spec (the chart "
                "does) or pass the flag instead") if raw.startswith(("tcp://", "udp://")) else ""
        raise UsageError(f"DITTOFS_OPERATOR_{name}={raw!r} is not a number{hint}") from None


def _bool_env(name: str, default: bool) -> bool:
    return _env(name, str(default)).lower() in ("1", "true", "yes", "on")


def _load_documents(path: str) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise UsageError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', None) or exc}") from None
    items: list[dict[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, dict):
            raise UsageError(f"{path}: every YAML document must be a mapping")
        items.extend(doc.get("items", []) if doc.get("kind", "").endswith("List") else [doc])
    return [d for d in items if d.get("kind") == "DittoServer"]


def cmd_crd(_: argparse.Namespace) -> int:
    sys.stdout.write(crd_yaml())
    return 0


def cmd_crd_reference(_: argparse.Namespace) -> int:
    from dittoctl.api.reference import crd_reference

    sys.stdout.write(crd_reference())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from dittoctl.api.facts import ClusterFacts
    from dittoctl.api.rules import validate

    docs = _load_documents(args.file)
    if not docs:
        print(f"{args.file}: no DittoServer found", file=sys.stderr)
        return 2
    facts_for: Any = None
    if args.cluster:
        facts_for = asyncio.run(_cluster_facts(docs, args.kubeconfig))
    results = []
    for doc in docs:
        facts = facts_for[id(doc)] if facts_for else ClusterFacts.offline()
        verdict = validate(doc, None, facts)
        name = (doc.get("metadata") or {}).get("name", "<unnamed>")
        results.append({"name": name, "allowed": verdict.allowed, "errors": verdict.messages,
                        "warnings": verdict.warnings})
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


async def _cluster_facts(docs: list[dict[str, Any]], kubeconfig: str | None) -> dict[int, Any]:
    from dittoctl.kube.gateway import Gateway, load_client
    from webhook.facts import FactSource

    gateway = Gateway(await load_client(kubeconfig))
    try:
        source = FactSource(gateway)
        return {id(doc): await source.facts_for(doc) for doc in docs}
    finally:
        await gateway.close()


def cmd_render(args: argparse.Namespace) -> int:
    from dittoctl.api.facts import ClusterFacts
    from dittoctl.api.rules import validate
    from reconciler.specs import render_offline

    out = []
    for doc in _load_documents(args.file):
        doc.setdefault("metadata", {}).setdefault("namespace", args.namespace)
        doc["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000000")
        verdict = validate(doc, None, ClusterFacts.offline())
        if not verdict.allowed or verdict.server is None:
            name = doc["metadata"].get("name", "<unnamed>")
            raise UsageError(f"DittoServer {name} is invalid, nothing rendered:\n" +
                             "\n".join(f"  error: {m}" for m in verdict.messages))
        out.extend(render_offline(verdict.server).children())
    sys.stdout.write("---\n".join(dump_yaml(obj) for obj in out))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from dittoctl.status import show

    return asyncio.run(show(args.name, args.namespace, args.kubeconfig))


def cmd_report(args: argparse.Namespace) -> int:
    from dittoctl.report import write_report

    return asyncio.run(write_report(args.name, args.namespace, args.kubeconfig, args.output,
                                    operator_namespace=args.operator_namespace,
                                    server_address=args.server_address))


def cmd_certs_generate(args: argparse.Namespace) -> int:
    from certs.generate import generate

    paths = generate(args.service, args.namespace, Path(args.out_dir), extra_sans=args.san or [])
    for path in paths:
        print(path)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from dittoctl.kube import logs
    from dittoctl.main import RunSettings, main_run

    settings = RunSettings(
        kubeconfig=args.kubeconfig,
        namespaces=[n for n in args.namespaces.split(",") if n] if args.namespaces else [],
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
        provision_networks=[n for n in args.provision_networks.split(",") if n],
        operator_namespace=args.operator_namespace,
    )
    logs.configure(settings.log_level, settings.log_format)
    return main_run(settings)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="dittoctl", description="DittoFS operator and tools")
    sub = root.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator and the admission webhook")
    run.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None)
    run.add_argument("--namespaces", default=_env("NAMESPACES", ""), help="comma-separated; default all")
    run.add_argument("--no-webhook", action="store_true", default=_bool_env("NO_WEBHOOK", False))
    run.add_argument("--no-reconciler", action="store_true", default=_bool_env("NO_RECONCILER", False))
    run.add_argument("--webhook-host", default=_env("WEBHOOK_HOST", "0.0.0.0"))  # noqa: S104
    run.add_argument("--webhook-port", type=int, default=_number_env("WEBHOOK_PORT", "9443", int))
    run.add_argument("--cert-dir", default=_env("CERT_DIR", "/tmp/k8s-webhook-server/serving-certs"))  # noqa: S108
    run.add_argument("--tls-mode", choices=["certManager", "selfSigned", "provided"],
                     default=_env("TLS_MODE", "provided"))
    run.add_argument("--webhook-config-name", default=_env("WEBHOOK_CONFIG_NAME", "dittofs-operator"))
    run.add_argument("--service-name", default=_env("SERVICE_NAME", "dittofs-operator-webhook"))
    run.add_argument("--service-namespace", default=_env("NAMESPACE", "dittofs-system"))
    run.add_argument("--health-host", default=_env("HEALTH_HOST", "0.0.0.0"))  # noqa: S104
    run.add_argument("--health-port", type=int, default=_number_env("HEALTH_PORT", "8081", int))
    run.add_argument("--leader-election", action="store_true", default=_bool_env("LEADER_ELECTION", False))
    run.add_argument("--lease-namespace", default=_env("NAMESPACE", "dittofs-system"))
    run.add_argument("--lease-name", default=_env("LEASE_NAME", "dittofs-operator"),
                     help="Lease for leader election (one per release)")
    run.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    run.add_argument("--log-format", choices=["json", "text"], default=_env("LOG_FORMAT", "json"))
    run.add_argument("--server-address", choices=["service", "pod"], default=_env("SERVER_ADDRESS", "service"),
                     help="how to reach a server's REST API: its <name>-api Service (in cluster) or its pod IP "
                          "(out-of-cluster runs)")
    run.add_argument("--provision-networks", default=_env("PROVISION_NETWORKS", ""),
                     help="with --server-address pod: comma-separated CIDRs; pods outside are not provisioned")
    operator_namespace = os.environ.get("POD_NAMESPACE") or _env("NAMESPACE", "dittofs-system")
    run.add_argument("--operator-namespace", default=operator_namespace,
                     help="the operator's own namespace (the chart's pod sets POD_NAMESPACE); every DittoServer's "
                          "NetworkPolicy lets it in")
    run.add_argument("--drift-interval", type=float, default=_number_env("DRIFT_INTERVAL", "300", float))
    run.add_argument("--shutdown-delay", type=float, default=_number_env("SHUTDOWN_DELAY", "0", float),
                     metavar="SECONDS",
                     help="after a stop signal, keep answering admission requests (unready) this long, until the "
                          "apiserver stops routing to this pod (in a cluster: a few seconds; the chart sets 5)")
    run.add_argument("--workers", type=int, default=_number_env("WORKERS", "32", int),
                     help="concurrent reconciles; passes mostly wait on the API, not the CPU")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check DittoServer manifests with the webhook's rules")
    validate.add_argument("-f", "--file", required=True, help="YAML file, or - for stdin")
    validate.add_argument("--cluster", action="store_true", help="also look up StorageClasses, Secrets, CRDs")
    validate.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None)
    validate.add_argument("-o", "--output", choices=["text", "json"], default="text")
    validate.set_defaults(func=cmd_validate)

    render = sub.add_parser("render", help="print the child manifests the operator would apply")
    render.add_argument("-f", "--file", required=True)
    render.add_argument("-n", "--namespace", default="default")
    render.set_defaults(func=cmd_render)

    status = sub.add_parser("status", help="show a DittoServer's state")
    status.add_argument("name")
    status.add_argument("-n", "--namespace", default="default")
    status.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None)
    status.set_defaults(func=cmd_status)

    report = sub.add_parser("report", help="write a redacted support bundle (tar.gz) for a DittoServer")
    report.add_argument("name")
    report.add_argument("-n", "--namespace", default="default")
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
    """A problem the user fixes (bad file, invalid object): printed as one or a few lines, exit code 1."""


def main(argv: Sequence[str] | None = None) -> int:
    # `run` imports and wires objects that live as long as the process: the cyclic collector's passes among
    # them as they are made are wasted (~25 ms of its start). It turns the collector back on once started, with
    # those objects frozen (dittoctl/main.py); every other command runs with it on.
    gc.disable()
    try:
        cli = parser()
    except UsageError as exc:  # an unusable DITTOFS_OPERATOR_* default
        print(f"dittoctl: {exc}", file=sys.stderr)
        return 2
    args = cli.parse_args(argv)
    if args.command != "run":
        gc.enable()
    try:
        result: int = args.func(args)
    except UsageError as exc:
        print(f"dittoctl {args.command}: {exc}", file=sys.stderr)
        return 1
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
