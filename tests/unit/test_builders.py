"""Pure manifest builders: golden output, secure defaults, hashing rules."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittoctl.api.crd import dump_yaml
from dittoctl.api.models import DittoServer
from dittoctl.api.naming import HASH_ANNOTATION, Names
from dittoctl.api.secrets import consumed_keys, digest_of, secret_uses
from reconciler import specs
from reconciler.phases.statefulset import low_port_sysctl
from reconciler.specs.hashing import config_hash
from reconciler.specs.secrets import new_jwt_value, new_password
from tests.support.golden import updating

GOLDEN = Path(__file__).parent / "golden"


def server(**spec: Any) -> DittoServer:
    body = {"metadata": {"name": "demo", "namespace": "ns", "uid": "uid-1"},
            "spec": {"storage": {"metadataSize": "1Gi"}, **spec}}
    return DittoServer.model_validate(body)


def digests_for(s: DittoServer, value: str = "v") -> dict[tuple[str, str], str | None]:
    return {key: digest_of(value) for key in consumed_keys(s.spec, Names.of(s))}


def build(s: DittoServer, value: str = "v") -> specs.Desired:
    return specs.build(s.spec, Names.of(s), digests_for(s, value))


CASES: dict[str, dict[str, Any]] = {
    "minimal": {},
    "full": {
        "replicas": 1, "metrics": {"enabled": True}, "adapters": {"smb": {"enabled": True}},
        "s3": {"credentialsSecretRef": {"secretName": "s3"}, "bucket": "bkt"},
        "database": {"postgresSecretRef": {"name": "pg"}},
        "service": {"type": "LoadBalancer", "annotations": {"a": "b"}, "loadBalancerSourceRanges": ["10.0.0.0/8"]},
        "resources": {"requests": {"cpu": "100m"}}, "podLabels": {"team": "x"},
        "securityContext": {"readOnlyRootFilesystem": True},
        "identity": {"jwt": {"secretRef": {"name": "jwt", "key": "k"}}},
    },
    # Ingress narrowed to declared sources; metrics scraped by a labelled ServiceMonitor.
    "network": {
        "metrics": {"enabled": True, "serviceMonitor": {"labels": {"release": "prometheus"}, "interval": "30s"}},
        "adapters": {"smb": {"enabled": True, "port": 445}},
        "networkPolicy": {"apiFrom": [{"namespaces": {"kubernetes.io/metadata.name": "tools"},
                                       "pods": {"app": "dfsctl"}}],
                          "metricsFrom": [{"namespaces": {"kubernetes.io/metadata.name": "monitoring"}}],
                          "fileClients": [{"cidr": "10.20.0.0/16", "exceptCidrs": ["10.20.9.0/24"]},
                                          {"pods": {}}]},
    },
    # HTTPS API from a mounted TLS Secret: HTTPS probes, cert files in config.yaml, never in the hash.
    "tls": {"controlPlane": {"tls": {"secretName": "demo-api-tls", "minVersion": "1.3"}}},
    # The operator requests both certificates from cert-manager.
    "certificate": {"controlPlane": {"tls": {
        "secretName": "demo-api-tls", "clientCaSecretName": "demo-api-tls", "operatorClientSecretName": "demo-op",
        "certificate": {"issuerRef": {"name": "ca", "kind": "ClusterIssuer"}, "duration": "720h"}}}},
    # Mutual TLS: the client CA mounted too, TCP probes (the kubelet has no client certificate).
    "mtls": {"controlPlane": {"tls": {"secretName": "demo-api-tls", "clientCaSecretName": "demo-clients",
                                      "operatorClientSecretName": "demo-operator-client"}}},
    # LDAP + Kerberos: the first-boot seed in config.yaml, passwords as env, CA/keytab/krb5.conf mounted.
    "identity": {"identity": {
        "ldap": {"url": "ldaps://dc.example.com:636", "baseDn": "DC=example,DC=com",
                 "bindDn": "CN=svc,DC=example,DC=com",
                 "bindPasswordSecretRef": {"name": "ldap-bind", "key": "password"}, "realm": "EXAMPLE.COM",
                 "caSecretRef": {"name": "ldap-ca", "key": "ca.crt"}, "nestedGroups": True},
        "kerberos": {"servicePrincipal": "nfs/files.example.com@EXAMPLE.COM", "netbiosDomain": "EXAMPLE",
                     "keytabSecretRef": {"name": "krb", "key": "keytab"},
                     "krb5ConfSecretRef": {"name": "krb", "key": "krb5.conf"},
                     "machineAccount": {"accountName": "DITTOFS$", "secretRef": {"name": "machine", "key": "pw"},
                                        "dcAddresses": ["dc1.example.com"]}}}},
    # The PerconaPGCluster is part of the desired state, so `dittoctl render` and this golden show it.
    "percona": {"percona": {"enabled": True, "image": "percona/postgres:16", "backup": {
        "enabled": True, "bucket": "b", "endpoint": "https://s3.example", "credentialsSecretRef": {"name": "bk"}}}},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    rendered = "---\n".join(dump_yaml(obj) for obj in build(server(**CASES[case])).children())
    path = GOLDEN / f"{case}.yaml"
    if updating("UPDATE_GOLDEN"):
        path.write_text(rendered)
    assert path.read_text() == rendered, f"golden {path.name} differs: rerun with UPDATE_GOLDEN=1 and review"


def test_a_rotated_tls_secret_does_not_change_the_config_hash() -> None:
    """DittoFS reloads rotated certificate files itself: the TLS Secret is mounted, never hashed."""
    s = server(controlPlane={"tls": {"secretName": "api-tls"}})
    digests = digests_for(s)
    assert not [k for k in digests if k[0] == "api-tls"]
    rotated = {**digests, ("api-tls", "tls.crt"): "new", ("api-tls", "tls.key"): "new"}
    assert specs.build(s.spec, Names.of(s), rotated).config_hash == build(s).config_hash
    config = yaml.safe_load(build(s).config_text)["controlplane"]["tls"]
    assert config == {"cert_file": "/tls/api/tls.crt", "key_file": "/tls/api/tls.key"}


def test_a_new_client_ca_rolls_the_pod() -> None:
    """DittoFS reads the mutual-TLS client CA only at start: a new one must restart it, else it keeps refusing
    the operator's certificate from the new CA."""
    s = server(**CASES["mtls"])
    digests = digests_for(s)
    assert ("demo-clients", "ca.crt") in digests
    rotated = {**digests, ("demo-clients", "ca.crt"): digest_of(b"new CA")}
    assert specs.build(s.spec, Names.of(s), rotated).config_hash != build(s).config_hash


def test_identity_edits_and_password_rotations_restart_nothing_a_new_krb5_conf_does() -> None:
    """DittoFS reads the identity sections only at first boot (the planner converges them over REST) and
    re-reads the keytab and the LDAP CA itself; only krb5.conf is read once at start."""
    spec = CASES["identity"]
    s = server(**spec)
    base = build(s)
    config = yaml.safe_load(base.config_text)
    assert config["ldap"]["tls"] == {"min_version": "1.2", "ca_cert_file": "/identity/ldap-ca/ca.crt"}
    assert (config["kerberos"]["keytab_path"], config["kerberos"]["krb5_conf"]) == (
        "/identity/kerberos/krb5.keytab", "/identity/krb5/krb5.conf")
    assert (config["kerberos"]["realm"], config["kerberos"]["dns_domain"]) == ("EXAMPLE.COM", "example.com")
    assert "password" not in base.config_text and "secret" not in base.config_text
    env = {e["name"]: e for e in base.statefulset["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DITTOFS_LDAP_BIND_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "ldap-bind", "key": "password"}
    machine = env["DITTOFS_KERBEROS_MACHINE_ACCOUNT_SECRET"]["valueFrom"]["secretKeyRef"]
    assert machine == {"name": "machine", "key": "pw"}
    edited = server(**merge_spec(spec, {"identity": {"ldap": {"nestedGroups": False, "timeout": "30s"},
                                                      "kerberos": {"contextTtl": "1h"}}}))
    assert build(edited).config_text != base.config_text  # the seed follows (a re-created server needs it)
    assert build(edited).config_hash == base.config_hash
    digests = digests_for(s)
    for rotated in (("ldap-bind", "password"), ("machine", "pw"), ("krb", "keytab"), ("ldap-ca", "ca.crt")):
        assert specs.build(s.spec, Names.of(s), {**digests, rotated: "new"}).config_hash == base.config_hash, rotated
    krb5 = specs.build(s.spec, Names.of(s), {**digests, ("krb", "krb5.conf"): "new"})
    assert krb5.config_hash != base.config_hash


def merge_spec(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        out[key] = merge_spec(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def test_optional_children_follow_their_switches() -> None:
    """No policy when disabled, no ServiceMonitor without metrics or with it turned off, no metrics rule
    for metricsFrom: [], no file rule without an enabled adapter; the operator's namespace is always let in
    to the API and the file ports, whatever the declared sources."""
    assert build(server(networkPolicy={"enabled": False})).network_policy is None
    assert build(server()).service_monitor is None
    assert build(server(metrics={"enabled": True, "serviceMonitor": {"enabled": False}})).service_monitor is None
    s = server(metrics={"enabled": True}, networkPolicy={"metricsFrom": [], "fileClients": []},
               adapters={"nfs": {"enabled": False}})
    policy = specs.build(s.spec, Names.of(s), digests_for(s), operator_namespace="ops").network_policy
    assert policy is not None
    (api,) = policy["spec"]["ingress"]
    assert api["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}]
    nobody = server(networkPolicy={"fileClients": []})
    file_rule = build(nobody).network_policy["spec"]["ingress"][-1]  # type: ignore[index]
    assert file_rule["ports"] == [{"port": 12049, "protocol": "TCP"}]
    assert file_rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name":
                                                                        "dittofs-system"}}}]
    anyone = build(server()).network_policy["spec"]["ingress"][-1]  # type: ignore[index]
    assert "from" not in anyone, "fileClients unset: any source may mount"


def test_config_has_no_secret_values_and_is_deterministic() -> None:
    a, b = build(server()), build(server())
    assert a.config_text == b.config_text and a.config_hash == b.config_hash
    assert "secret" not in a.config_text.lower() and "password" not in a.config_text.lower()
    config = yaml.safe_load(a.config_text)
    assert set(config) == {"logging", "shutdown_timeout", "database", "controlplane"}
    assert config["controlplane"]["host"] == "0.0.0.0"  # noqa: S104 - asserting the rendered value


def test_postgres_config_leaves_connection_to_the_environment() -> None:
    config = yaml.safe_load(build(server(database={"postgresSecretRef": {"name": "pg"}})).config_text)
    assert config["database"] == {"type": "postgres"}


def test_hash_ignores_labels_and_service_annotations_but_not_logging_or_secrets() -> None:
    base = build(server()).config_hash
    assert build(server(service={"annotations": {"x": "y"}}, podLabels={"a": "b"})).config_hash == base
    assert build(server(logging={"level": "DEBUG"})).config_hash != base
    assert build(server(), value="rotated").config_hash != base


def test_hash_is_length_framed() -> None:
    assert config_hash("ab", [("c", "d", "e")]) != config_hash("a", [("bc", "d", "e")])


def test_secure_defaults_are_merged_not_replaced() -> None:
    sts = build(server(securityContext={"readOnlyRootFilesystem": True, "runAsUser": 1000},
                       podSecurityContext={"fsGroup": 2000})).statefulset
    pod = sts["spec"]["template"]["spec"]
    ctx = pod["containers"][0]["securityContext"]
    assert ctx["runAsUser"] == 1000 and ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["fsGroup"] == 2000 and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False


def test_volumes_are_chowned_only_when_their_root_is_not_the_servers() -> None:
    pod = build(server()).statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    own = build(server(podSecurityContext={"fsGroupChangePolicy": "Always"})).statefulset
    assert own["spec"]["template"]["spec"]["securityContext"]["fsGroupChangePolicy"] == "Always"


def test_statefulset_shape() -> None:
    desired = build(server(storage={"metadataSize": "2Gi", "cacheSize": "3Gi", "storageClassName": "fast"}))
    sts = desired.statefulset
    assert sts["spec"]["serviceName"] == "demo-headless"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    claims = {c["metadata"]["name"]: c["spec"] for c in sts["spec"]["volumeClaimTemplates"]}
    assert claims["metadata"]["resources"]["requests"]["storage"] == "2Gi"
    assert claims["content"]["resources"]["requests"]["storage"] == "3Gi"
    assert claims["controlplane"]["resources"]["requests"]["storage"] == "1Gi"
    assert {c["storageClassName"] for c in claims.values()} == {"fast"}
    pod = sts["spec"]["template"]
    assert pod["metadata"]["annotations"][HASH_ANNOTATION] == desired.config_hash
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["/app/dfs"]
    assert container["args"] == ["start", "--foreground", "--config", "/config/config.yaml"]
    assert container["startupProbe"]["failureThreshold"] == 720  # an hour, 5 s apart
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 105
    # No Service links: DittoFS reads every DITTOFS_* variable (tests/contract/test_dfs_smoke.py).
    assert pod["spec"]["enableServiceLinks"] is False
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"config": "/config", "controlplane": "/data/controlplane",
                      "metadata": "/data/store/metadata", "content": "/data/store/block"}


@pytest.mark.parametrize(("spec", "budget"), [
    ({}, 3600),  # not SPEC §4.6's 150 s: DittoFS reads its local data back before it answers
    ({"storage": {"metadataSize": "1Gi", "contentSize": "100Gi"}}, 3600),  # an expansion changes no template
    ({"startupTimeoutSeconds": 7200}, 7200),
    ({"startupTimeoutSeconds": 31}, 35),  # rounded up to the probe period
])
def test_the_startup_budget_leaves_dittofs_time_to_read_its_data_back(spec: dict[str, Any], budget: int) -> None:
    probe = build(server(**spec)).statefulset["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert (probe["periodSeconds"], probe["httpGet"]["path"]) == (5, "/health")
    assert probe["periodSeconds"] * probe["failureThreshold"] == budget


def test_a_pod_that_never_gets_ready_is_replaced_by_a_fixed_template() -> None:
    """OrderedReady waits for a pod that never becomes Ready (a wrong image, a crash-looping config) before it
    replaces it with the fixed template: the server stayed down until someone deleted the pod. A StatefulSet an
    earlier operator made with it is re-created around its pods (the field is immutable)."""
    from reconciler.phases.statefulset import policy_moved

    sts = build(server()).statefulset
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    earlier = {**sts, "spec": {**sts["spec"], "podManagementPolicy": "OrderedReady"}}
    unset = {**sts, "spec": {k: v for k, v in sts["spec"].items() if k != "podManagementPolicy"}}  # the default
    assert policy_moved(earlier, sts) and policy_moved(unset, sts)
    assert not policy_moved(sts, sts) and not policy_moved(None, sts)


def test_secrets_only_by_reference() -> None:
    s = server(s3={"credentialsSecretRef": {"secretName": "s3"}}, database={"postgresSecretRef": {"name": "pg"}})
    env = build(s).statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
    by_name = {e["name"]: e for e in env}
    for name in ("DITTOFS_CONTROLPLANE_SECRET", "DITTOFS_ADMIN_INITIAL_PASSWORD", "DITTOFS_DATABASE_POSTGRES_PASSWORD"):
        assert "value" not in by_name[name] and "secretKeyRef" in by_name[name]["valueFrom"]
    # v0.29.0 never reads S3 credentials from the environment: they go into each remote store's config.
    assert not [n for n in by_name if n.startswith("AWS_")]
    assert by_name["DITTOFS_CONTROLPLANE_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "demo-jwt",
                                                                                  "key": "jwt-secret"}


def test_missing_secret_keys_are_reported() -> None:
    s = server()
    assert specs.build(s.spec, Names.of(s), {}).missing_secret_keys == [
        ("demo-admin-bootstrap-credentials", "password"), ("demo-jwt", "jwt-secret")]


def test_services() -> None:
    desired = build(server(metrics={"enabled": True}, adapters={"smb": {"enabled": True}}))
    by_name = {s["metadata"]["name"]: s for s in desired.services}
    assert set(by_name) == {"demo-headless", "demo-api", "demo-file", "demo-metrics"}
    assert by_name["demo-headless"]["spec"]["clusterIP"] == "None"
    assert [p["port"] for p in by_name["demo-file"]["spec"]["ports"]] == [12049, 1445]
    assert by_name["demo-api"]["spec"]["type"] == "ClusterIP"
    assert by_name["demo-metrics"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert by_name["demo-api"]["spec"]["selector"] == {"app.kubernetes.io/name": "dittofs",
                                                       "app.kubernetes.io/instance": "demo"}


def test_adapter_ports_move_without_a_pod_template_change() -> None:
    before = build(server(adapters={"smb": {"enabled": True}}))
    after = build(server(adapters={"nfs": {"port": 2049}, "smb": {"enabled": True, "port": 4450}}))
    assert before.statefulset["spec"]["template"] == after.statefulset["spec"]["template"]
    assert before.config_hash == after.config_hash
    file_svc = next(s for s in after.services if s["metadata"]["name"] == "demo-file")
    assert [(p["port"], p["targetPort"]) for p in file_svc["spec"]["ports"]] == [(2049, 2049), (4450, 4450)]


def test_ports_below_1024_get_the_safe_sysctl_not_a_capability() -> None:
    low = build(server(adapters={"smb": {"enabled": True, "port": 445}})).statefulset
    pod = low["spec"]["template"]["spec"]
    assert pod["securityContext"]["sysctls"] == [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]
    assert "capabilities" not in pod["containers"][0]["securityContext"] or "add" not in \
        pod["containers"][0]["securityContext"]["capabilities"]
    high = build(server()).statefulset["spec"]["template"]["spec"]
    assert "sysctls" not in high["securityContext"]
    # The user's own value wins.
    own = build(server(adapters={"nfs": {"port": 2049}, "smb": {"enabled": True, "port": 445}}, podSecurityContext={
        "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "400"}]})).statefulset
    assert own["spec"]["template"]["spec"]["securityContext"]["sysctls"] == [
        {"name": "net.ipv4.ip_unprivileged_port_start", "value": "400"}]
    # What the phase reads to explain the roll the sysctl causes (the config hash does not cover it).
    assert [low_port_sysctl(s) for s in (low, build(server()).statefulset, own)] == [True, False, True]


def test_a_store_revision_rolls_the_pod_once() -> None:
    s = server()
    names = Names.of(s)
    digests = {(u.secret, u.key): "d" for u in secret_uses(s.spec, names)}
    zero, one = specs.build(s.spec, names, digests), specs.build(s.spec, names, digests, store_revision=1)
    assert zero.config_hash == specs.build(s.spec, names, digests, store_revision=0).config_hash
    assert zero.config_hash != one.config_hash != specs.build(s.spec, names, digests, store_revision=2).config_hash


def test_generated_secret_values_have_the_spec_s_strength() -> None:
    """SPEC §4.1: the JWT secret is 64 hex characters from a CSPRNG; passwords are long and URL-safe."""
    jwts = {new_jwt_value() for _ in range(50)}
    passwords = {new_password() for _ in range(50)}
    assert len(jwts) == 50 and len(passwords) == 50  # fresh every time
    assert all(len(v) == 64 and set(v) <= set("0123456789abcdef") for v in jwts)
    assert all(len(p) >= 24 and set(p) <= set(string.ascii_letters + string.digits + "-_") for p in passwords)


def test_a_statefulset_of_no_replicas_adopts_and_stops_pods_left_without_one() -> None:
    """A server deleted while its StatefulSet was being re-created around its pods kept them running for ever
    (the operator may not delete pods): this one adopts them (same selector, no other owner) and scales to 0."""
    from reconciler.specs.statefulset import drain_statefulset

    names = Names("demo", "ns", "uid-1")
    sts = drain_statefulset(names)
    spec = sts["spec"]
    assert (spec["replicas"], spec["selector"]["matchLabels"]) == (0, names.selector())
    assert spec["template"]["metadata"]["labels"] == names.selector()
    assert sts["metadata"]["name"] == build(server()).statefulset["metadata"]["name"]
    assert sts["metadata"]["ownerReferences"][0]["uid"] == "uid-1", "gone with the server"
