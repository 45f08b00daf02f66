"""`dittoctl` offline commands: crd, render, validate."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittoctl.cli import main, parser, run_settings
from dittoctl.settings import RunSettings
from tests.support.paths import CRD as COMMITTED
from tests.support.paths import SAMPLES

SAMPLE = SAMPLES / "dittoserver-minimal.yaml"
DITTOCTL = Path(sys.executable).with_name("dittoctl")  # the console script `pip install` made


def test_run_without_flags_or_variables_runs_with_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("DITTOFS_OPERATOR_") or n in ("POD_NAMESPACE", "KUBECONFIG")]:
        monkeypatch.delenv(name)
    assert run_settings(parser().parse_args(["run"])) == RunSettings()
    monkeypatch.setenv("DITTOFS_OPERATOR_DRIFT_INTERVAL", "30")
    assert run_settings(parser().parse_args(["run", "--workers", "4"])) == RunSettings(drift_interval=30.0, workers=4)


def test_crd_prints_the_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == COMMITTED.read_text()


def test_render_prints_children_without_secret_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-f", str(SAMPLE), "-n", "prod"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert kinds == [("ConfigMap", "demo-config"), ("Service", "demo-headless"), ("Service", "demo-api"),
                     ("Service", "demo-file"), ("NetworkPolicy", "demo-ingress"), ("StatefulSet", "demo")]
    assert all(d["metadata"]["namespace"] == "prod" for d in docs)
    assert "stringData" not in json.dumps(docs)


def test_render_refuses_an_object_without_a_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unnamed = tmp_path / "unnamed.yaml"
    unnamed.write_text("apiVersion: dittofs.dittofs.com/v1alpha1\nkind: DittoServer\nmetadata: {generateName: x-}\n"
                       "spec: {storage: {metadataSize: 1Gi}}\n")
    assert main(["render", "-f", str(unnamed)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "metadata.name is required to render" in err


LAX = """apiVersion: dittofs.dittofs.com/v1alpha1
kind: DittoServer
metadata: {name: lax}
spec:
  replicas: "1"
  storage: {metadataSize: 1Gi, contentSize: 2}
  adapters: {nfs: {port: "2049"}}
  users: [{name: alice, uid: "1000", passwordSecretRef: {name: a, key: p}}]
  service: {annotations: {a: 1}}
"""


def test_validate_refuses_what_the_apiserver_refuses_by_type(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The models read "1" as 1 (lax mode); the CRD's structural schema refuses it before any webhook, so a
    "valid" here would be a false pass in CI (tests/integration/test_crd.py applies it for real)."""
    lax = tmp_path / "lax.yaml"
    lax.write_text(LAX)
    assert main(["validate", "-f", str(lax), "-o", "json"]) == 1
    (result,) = json.loads(capsys.readouterr().out)
    assert sorted(e.split(":")[0] for e in result["errors"]) == [  # each once: the models' own, or the type's
        "spec.adapters.nfs.port", "spec.replicas", "spec.service.annotations.a", "spec.storage.contentSize",
        "spec.users[0].uid"], result["errors"]
    assert ('spec.replicas: must be an integer (got a string "1"); the apiserver refuses it before the webhook'
            in result["errors"])


def test_validate_refuses_metadata_the_apiserver_cannot_decode(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`tier: 1` in labels is a number; kubectl and the apiserver refuse it (render wrote namespace '5')."""
    path = tmp_path / "meta.yaml"
    path.write_text(LAX.replace("metadata: {name: lax}", "metadata: {name: lax, namespace: 5, labels: {tier: 1}, "
                                "annotations: {ok: x}}").split("spec:")[0] + "spec: {storage: {metadataSize: 1Gi}}\n")
    assert main(["validate", "-f", str(path), "-o", "json"]) == 1
    (result,) = json.loads(capsys.readouterr().out)
    assert sorted(e.split(":")[0] for e in result["errors"]) == ["metadata.labels.tier", "metadata.namespace"], result


def test_validate_accepts_the_sample(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(SAMPLE)]) == 0
    assert "valid" in capsys.readouterr().out


def test_validate_reports_every_error_with_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = yaml.safe_load(SAMPLE.read_text())
    bad["spec"].update({"replicas": 3, "controlPlane": {"port": 12049}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["validate", "-f", str(path), "-o", "json"]) == 1
    (result,) = json.loads(capsys.readouterr().out)
    assert result["allowed"] is False
    joined = "\n".join(result["errors"])
    assert "spec.replicas" in joined


def test_validate_without_dittoserver_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert main(["validate", "-f", str(path)]) == 2


def test_offline_validate_says_which_checks_need_the_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == ("not checked offline (add --cluster): StorageClasses exist; referenced "
                                    "Secrets and keys exist; the Percona Operator CRD is served")
    assert main(["validate", "-f", str(SAMPLE), "-o", "json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["allowed"] is True and len(result["skippedChecks"]) == 3


BAD_QUANTITY = "apiVersion: dittofs.dittofs.com/v1alpha1\nkind: DittoServer\nmetadata: {name: bad}\n" \
               "spec: {storage: {metadataSize: 10Gb}}\n"
UNREACHABLE = "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n" \
              "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n" \
              "users: [{name: u, user: {token: x}}]\n"


@pytest.mark.parametrize(("args", "expected"), [
    (["render", "-f", "{bad}"], "dittoctl render: DittoServer bad is invalid, nothing rendered:\n"
                                "  error: spec.storage.metadataSize: must be a Kubernetes quantity such as 1Gi, "
                                "500Mi or 10G (got '10Gb')"),
    (["render", "-f", "{missing}"], "2 dittoctl render: {missing}: No such file or directory"),
    (["render", "-f", "{empty}"], "2 dittoctl render: {empty}: no DittoServer found"),
    (["validate", "-f", "{missing}"], "2 dittoctl validate: {missing}: No such file or directory"),
    (["validate", "-f", "{odd}"], "2 dittoctl validate: {odd}: the items of a List must be a list"),
    (["validate", "-f", "{broken}"], "2 dittoctl validate: {broken}: not valid YAML (line 2): expected the node "
                                     "content, but found '<stream end>'"),
    (["certs", "generate", "--out-dir", "{dir}", "--san", "ünicode.example", "--san", "10.0.0.1"],
     "2 dittoctl certs: not a DNS name or IP address: 'ünicode.example' (lowercase letters"),
    (["status", "demo", "--kubeconfig", "{broken}"], "dittoctl status: no Kubernetes credentials: kubeconfig "
                                                     "{broken}: while parsing a flow node"),
    (["run", "--no-reconciler", "--no-webhook", "--kubeconfig", "{unreachable}", "--health-host", "127.0.0.1",
      "--health-port", "{taken}"], '{{"ts":'),
    (["status", "demo", "--kubeconfig", "{missing}"], "dittoctl status: no Kubernetes credentials: kubeconfig "
                                                      "{missing} does not exist; pass --kubeconfig FILE or set "
                                                      "KUBECONFIG"),
    (["validate", "--cluster", "-f", "{bad}"], "dittoctl validate: no Kubernetes credentials: no --kubeconfig, "
                                               "no KUBECONFIG, no ~/.kube/config, and not inside a cluster; pass "
                                               "--kubeconfig FILE or set KUBECONFIG"),
    (["run", "--no-webhook"], "dittoctl run: no Kubernetes credentials: no --kubeconfig, no KUBECONFIG, no "
                              "~/.kube/config, and not inside a cluster; pass --kubeconfig FILE or set KUBECONFIG"),
    (["status", "demo", "--kubeconfig", "{unreachable}"], "dittoctl status: cannot reach the Kubernetes API"),
    # Every lookup of --cluster failing must not read as "valid".
    (["validate", "--cluster", "--kubeconfig", "{unreachable}", "-f", str(SAMPLE)],
     "dittoctl validate: cannot reach the Kubernetes API"),
    (["status", "demo", "--kubeconfig", "{badca}"], "dittoctl status: no Kubernetes credentials: kubeconfig {badca}: "),
    (["validate", "-f", "{latin}"], "2 dittoctl validate: {latin}: not valid YAML"),
    (["validate", "-f", "{deep}"], "2 dittoctl validate: {deep}: nested too deeply to be a Kubernetes object"),
    (["certs", "generate", "--out-dir", "{file}"], "2 dittoctl certs: {file}: File exists"),
])
def test_cli_errors_are_a_few_lines_never_a_traceback(tmp_path: Path, args: list[str], expected: str) -> None:
    """Through the installed `dittoctl` console script, as a user runs it. Exit code 2 (written first in
    ``expected``) for the command's input, 1 for an invalid object or a failure; a port taken is the operator's
    one JSON log line, with no warning about an unclosed session after it."""
    files = {"bad": tmp_path / "bad.yaml", "missing": tmp_path / "missing.yaml", "broken": tmp_path / "broken.yaml",
             "unreachable": tmp_path / "kubeconfig", "empty": tmp_path / "empty.yaml", "odd": tmp_path / "odd.yaml",
             "badca": tmp_path / "badca", "latin": tmp_path / "latin.yaml", "deep": tmp_path / "deep.yaml",
             "file": tmp_path / "file"}
    files["bad"].write_text(BAD_QUANTITY)
    files["badca"].write_text(UNREACHABLE.replace("server: ", "certificate-authority-data: bm90IGEgY2VydAo=, server: "))
    files["latin"].write_bytes(b"kind: DittoServer\nmetadata: {name: s\xe9rver}\n")
    files["deep"].write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    files["file"].write_text("")
    files["broken"].write_text("a: [\n")
    files["unreachable"].write_text(UNREACHABLE)
    files["empty"].write_text("kind: ConfigMap\n")
    files["odd"].write_text("kind: List\nitems: {a: 1}\n")
    code, _, expected = expected.partition(" ") if expected[:2] == "2 " else ("1", "", expected)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        values = {k: str(v) for k, v in files.items()} | {"taken": str(taken.getsockname()[1]), "dir": str(tmp_path)}
        argv = [a.format(**values) for a in args]
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
        env["HOME"] = str(tmp_path)  # no ~/.kube/config
        proc = subprocess.run([str(DITTOCTL), *argv], capture_output=True, text=True, env=env, timeout=60,
                              check=False)
    assert proc.returncode == int(code), proc
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) <= 3, proc.stderr
    assert proc.stderr.startswith(expected.format(**values)), proc.stderr
    if "{taken}" in args:
        (line,) = proc.stderr.splitlines()
        assert json.loads(line)["msg"] == (f"cannot listen for health and metrics on 127.0.0.1:{values['taken']}: "
                                           f"error while attempting to bind on address ('127.0.0.1', "
                                           f"{values['taken']}): address already in use")


def test_status_screen_shows_adapters_and_shares() -> None:
    from dittoctl.status import render as screen

    server = {"metadata": {"name": "demo", "namespace": "apps", "generation": 2}, "status": {
        "phase": "Running", "ready": "1/1", "observedGeneration": 2,
        "adapters": [{"type": "nfs", "port": 2049, "enabled": True, "listening": True},
                     {"type": "smb", "port": 445, "enabled": True, "listening": False}],
        "shares": [{"name": "/export", "readOnly": False, "nfs": "nfs://demo-file.apps.svc:2049/export"},
                   {"name": "/tiered", "readOnly": False, "remoteHealthy": False, "nfs": "nfs://h:2049/tiered"}]}}
    text = screen(server, [], [], None, [])
    assert "  nfs  port 2049   listening" in text and "  smb  port 445    NOT listening" in text
    assert "  /export          rw  nfs://demo-file.apps.svc:2049/export\n" in text
    assert "  /tiered          rw  nfs://h:2049/tiered  (remote store NOT healthy)" in text


def test_status_screen_shows_pods_volumes_percona_and_the_last_events() -> None:
    """SPEC §8: phase, conditions, pods, PVCs, Percona state and recent events on one screen."""
    from dittoctl.status import render as screen

    server = {"metadata": {"name": "demo", "namespace": "apps", "generation": 3}, "status": {
        "phase": "Pending", "ready": "0/1", "observedGeneration": 2,
        "conditions": [{"type": "DatabaseReady", "status": "False", "reason": "PerconaNotReady",
                        "message": "PerconaPGCluster demo-postgres state: initializing"}]}}
    pod = {"metadata": {"name": "demo-0"}, "spec": {"nodeName": "real-node-0"}, "status": {
        "phase": "Pending", "containerStatuses": [{"name": "dittofs", "state": {"waiting": {
            "reason": "CreateContainerConfigError"}}}]}}
    pvc = {"metadata": {"name": "controlplane-demo-0"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}},
           "status": {"phase": "Bound"}}
    percona = {"metadata": {"name": "demo-postgres"}, "status": {"state": "initializing"}}
    events = [{"lastTimestamp": f"2026-12-06T07:{m:02d}:00Z", "type": "Normal", "reason": "Created",
               "message": f"event {m}"} for m in range(12)]
    text = screen(server, [pod], [pvc], percona, events)
    assert "  phase: Pending   ready: 0/1   generation: 3 (observed 2)" in text
    assert "the operator has not caught up yet" in text
    assert "  DatabaseReady          False  PerconaNotReady" in text
    assert "  demo-0" in text and "node=real-node-0 dittofs=waiting:CreateContainerConfigError" in text
    assert "  controlplane-demo-0          Bound    1Gi" in text
    assert "PerconaPGCluster demo-postgres: state=initializing" in text
    shown = [line for line in text.splitlines() if " Created " in line]
    assert len(shown) == 10 and "event 11" in shown[-1] and "event 1\n" not in text  # the last ten, oldest first
    empty = screen(server, [], [], None, [])
    assert "deleting" not in empty
    assert "Pods:\n  (none)" in empty and "PersistentVolumeClaims:\n  (none)" in empty
    assert "state=" not in empty and "Recent events" not in empty


def test_status_screen_says_a_paused_server_is_paused_not_behind() -> None:
    from dittoctl.status import render as screen

    server = {"metadata": {"name": "demo", "namespace": "apps", "generation": 3,
                           "annotations": {"dittofs.dittofs.com/reconcile": "disabled"}},
              "status": {"phase": "Running", "observedGeneration": 2}}
    text = screen(server, [], [], None, [])
    assert "reconciliation is paused (dittofs.dittofs.com/reconcile: disabled)" in text
    assert "has not caught up" not in text


def test_status_screen_says_a_server_is_being_deleted_and_what_holds_it() -> None:
    from dittoctl.status import render as screen

    server = {"metadata": {"name": "demo", "namespace": "apps", "generation": 3,
                           "deletionTimestamp": "2026-12-06T07:00:00Z",
                           "finalizers": ["dittofs.dittofs.com/finalizer"]},
              "status": {"phase": "Running", "observedGeneration": 2}}
    text = screen(server, [], [], None, [])
    assert "  deleting since 2026-12-06T07:00:00Z; waiting on finalizers: dittofs.dittofs.com/finalizer" in text
    assert "the operator has not caught up yet" in text, "no Deleting pass yet: the operator is not running"


def test_status_and_report_default_to_the_contexts_namespace_as_kubectl_does(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from dittoctl.kube.gateway import default_namespace

    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with_ns, without = tmp_path / "apps.yaml", tmp_path / "plain.yaml"
    with_ns.write_text(UNREACHABLE.replace("{cluster: c, user: u}", "{cluster: c, user: u, namespace: apps}"))
    without.write_text(UNREACHABLE)
    assert default_namespace(str(with_ns)) == "apps"
    assert default_namespace(str(without)) == "default"
    assert default_namespace(f"{tmp_path / 'missing.yaml'}{os.pathsep}{with_ns}") == "apps"
    assert default_namespace(str(tmp_path / "missing.yaml")) == "default"
    monkeypatch.setenv("KUBECONFIG", str(with_ns))
    assert default_namespace(None) == "apps"


async def test_a_kubeconfig_list_is_read_as_kubectl_reads_it_by_the_client_and_by_kopf(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KUBECONFIG=a:b: the first file that names a current context wins and missing files are skipped. The
    client library took the last file's context and kopf the first's (kopf watched one cluster while the
    operator wrote to another), and kopf failed on a missing file."""
    import kopf

    from dittoctl.kube.gateway import default_namespace, kubeconfig_files, load_client

    for name, ip in (("one", "127.0.0.1"), ("two", "127.0.0.2")):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": name,
            "clusters": [{"name": name, "cluster": {"server": f"https://{ip}:6443"}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": name}}],
            "users": [{"name": name, "user": {"token": "x"}}]}))
    listed = f"{tmp_path / 'missing.yaml'}{os.pathsep}{tmp_path / 'one.yaml'}{os.pathsep}{tmp_path / 'two.yaml'}"
    api = await load_client(listed)
    try:
        assert api.configuration.host == "https://127.0.0.1:6443"
    finally:
        await api.close()
    assert default_namespace(listed) == "one"
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(kubeconfig_files(listed)))  # what `dittoctl run` hands kopf
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None and info.server == "https://127.0.0.1:6443" and info.default_namespace == "one"


def test_every_sample_is_valid_offline(capsys: pytest.CaptureFixture[str]) -> None:
    samples = sorted(SAMPLES.glob("*.yaml"))
    assert len(samples) >= 2
    for sample in samples:
        assert main(["validate", "-f", str(sample)]) == 0, capsys.readouterr().out


def test_a_service_link_in_the_operator_env_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Found on the real node: a Service "dittofs-operator-webhook" beside a pod with service links on sets
    DITTOFS_OPERATOR_WEBHOOK_PORT=tcp://<ClusterIP>:443, which `dittoctl run` read as its own port."""
    monkeypatch.setenv("DITTOFS_OPERATOR_WEBHOOK_PORT", "tcp://10.96.45.131:443")
    with pytest.raises(SystemExit) as exited:
        main(["run"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert ("argument --webhook-port: 'tcp://10.96.45.131:443' is not a port (0-65535) (from the flag or "
            "DITTOFS_OPERATOR_WEBHOOK_PORT); a Kubernetes Service link set it") in err, err
    assert "enableServiceLinks: false" in err
    assert "Traceback" not in err
    assert main(["crd"]) == 0, "a variable only `run` reads leaves the other commands alone"


@pytest.mark.parametrize(("flag", "env", "value", "says"), [
    ("--drift-interval", "DRIFT_INTERVAL", "0", "is not a number of seconds above 0"),
    ("--drift-interval", "DRIFT_INTERVAL", "-5", "is not a number of seconds above 0"),
    ("--shutdown-delay", "SHUTDOWN_DELAY", "inf", "is not a number of seconds (0 or more)"),
    ("--shutdown-delay", "SHUTDOWN_DELAY", "nan", "is not a number of seconds (0 or more)"),
    ("--workers", "WORKERS", "0", "is not a whole number of at least 1"),
    ("--health-port", "HEALTH_PORT", "99999", "is not a port (0-65535)"),
    ("--webhook-port", "WEBHOOK_PORT", "-1", "is not a port (0-65535)"),
    ("--tls-mode", "TLS_MODE", "selfsigned", "is not one of certManager, selfSigned, provided"),
    ("--log-format", "LOG_FORMAT", "JSON", "is not json or text"),
    ("--log-level", "LOG_LEVEL", "loud", "is not one of DEBUG, INFO, WARNING, ERROR"),
    ("--server-address", "SERVER_ADDRESS", "Pod", "is not service or pod"),
    ("--provision-networks", "PROVISION_NETWORKS", "10.0.0.0/8,nope", "is not a comma-separated list of CIDRs"),
    ("--namespaces", "NAMESPACES", "apps,Team_A", "is not a comma-separated list of namespace names"),
    (None, "NO_WEBHOOK", "ture", "is not true or false"),
    (None, "LEADER_ELECTION", "2", "is not true or false"),
])
def test_run_refuses_a_setting_it_cannot_use_from_a_flag_or_the_environment(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flag: str | None, env: str, value: str,
        says: str) -> None:
    """An interval of 0 spun the drift loop (806 discovery refreshes a second), 0 workers reconciled nothing,
    port 99999 listened on 34463, and the environment skipped the flags' choices (LOG_FORMAT=JSON logged text)."""
    attempts = [["run", f"{flag}={value}"]] if flag else []
    for argv in attempts:
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert f"'{value}' {says} (from the flag or DITTOFS_OPERATOR_{env})" in capsys.readouterr().err
    monkeypatch.setenv(f"DITTOFS_OPERATOR_{env}", value)
    with pytest.raises(SystemExit) as exited:
        main(["run"])
    assert exited.value.code == 2
    assert f"'{value}' {says} (from the flag or DITTOFS_OPERATOR_{env})" in capsys.readouterr().err


def test_run_reads_the_environment_as_its_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    from dittoctl.cli import parser

    for name, value in {"LEADER_ELECTION": "Yes", "NO_WEBHOOK": "0", "LOG_LEVEL": "debug", "WORKERS": "4",
                        "PROVISION_NETWORKS": "10.1.0.0/16, 192.168.0.0/24", "NAMESPACES": "a,b",
                        "DRIFT_INTERVAL": "0.5", "WEBHOOK_PORT": "0"}.items():
        monkeypatch.setenv(f"DITTOFS_OPERATOR_{name}", value)
    args = parser().parse_args(["run"])
    assert (args.leader_election, args.no_webhook, args.log_level, args.workers) == (True, False, "DEBUG", 4)
    assert args.provision_networks == ["10.1.0.0/16", "192.168.0.0/24"] and args.namespaces == ["a", "b"]
    assert (args.drift_interval, args.webhook_port) == (0.5, 0)
    flags = parser().parse_args(["run", "--no-webhook", "--workers", "8", "--namespaces", ""])
    assert (flags.no_webhook, flags.workers, flags.namespaces) == (True, 8, []), "a flag wins over the environment"


def test_a_second_stop_signal_ends_the_shutdown_delay(tmp_path: Path) -> None:
    """controller-runtime and DittoFS itself stop at once on a second signal; a 30 s drain waited it out."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(UNREACHABLE)
    proc = subprocess.Popen(
        [str(DITTOCTL), "run", "--no-reconciler", "--kubeconfig", str(kubeconfig), "--webhook-host", "127.0.0.1",
         "--webhook-port", "0", "--health-host", "127.0.0.1", "--health-port", "0", "--cert-dir", str(tmp_path),
         "--shutdown-delay", "30"], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        lines = iter(proc.stderr.readline, "")
        assert any('"msg":"dittofs-operator started"' in line for line in lines)
        proc.send_signal(signal.SIGTERM)
        assert any("a second stop signal ends it" in line for line in lines)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
        assert any('"msg":"dittofs-operator stopped"' in line for line in lines)
    finally:
        proc.kill()
        proc.wait()


def test_an_unquoted_date_is_a_string_as_kubectl_reads_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dated = tmp_path / "dated.yaml"
    dated.write_text("apiVersion: dittofs.dittofs.com/v1alpha1\nkind: DittoServer\nmetadata: {name: d}\n"
                     "spec: {storage: {metadataSize: 1Gi}, users: [{name: u, passwordSecretRef: {name: 2024-01-01, "
                     "key: p}}]}\n")
    assert main(["validate", "-f", str(dated)]) == 0, capsys.readouterr().out


def test_a_utf16_manifest_validates_as_kubectl_reads_it(tmp_path: Path) -> None:
    """Windows PowerShell's `kubectl get ... -o yaml > f.yaml` writes UTF-16 with a byte-order mark."""
    path = tmp_path / "utf16.yaml"
    path.write_text(SAMPLE.read_text(), encoding="utf-16")
    assert main(["validate", "-f", str(path)]) == 0


def test_certs_for_a_long_namespace(tmp_path: Path) -> None:
    """X.509 bounds a common name at 64 characters; a 31-character namespace took the CA's past it."""
    assert main(["certs", "generate", "--out-dir", str(tmp_path), "--namespace",
                 "platform-storage-operators-prod"]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"ca.crt", "tls.crt", "tls.key"}


def test_status_shows_the_events_of_the_server_s_pods_and_pvcs_not_of_an_earlier_namesake() -> None:
    from dittoctl.status import about

    server = {"metadata": {"name": "demo", "namespace": "apps", "uid": "now"}}

    def event(kind: str, name: str, uid: str | None = None, reason: str = "X") -> dict[str, Any]:
        return {"involvedObject": {"kind": kind, "name": name, **({"uid": uid} if uid else {})}, "reason": reason}

    events = [event("DittoServer", "demo", "now", "Ready"), event("DittoServer", "demo", "before", "Old"),
              event("Pod", "demo-0", reason="FailedScheduling"), event("PersistentVolumeClaim", "data-demo-0",
                                                                       reason="ProvisioningFailed"),
              event("Pod", "other-0")]
    kept = about(events, server, {"demo", "demo-0", "data-demo-0"})
    assert [e["reason"] for e in kept] == ["Ready", "FailedScheduling", "ProvisioningFailed"]


@pytest.mark.asyncio
async def test_status_shows_what_it_can_read_when_a_listing_is_forbidden(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dittoctl.status import show
    from tests.support.scripted_api import ScriptedApi, response, scripted_api

    server = {"metadata": {"name": "demo", "namespace": "apps", "uid": "u", "generation": 1},
              "status": {"phase": "Running", "observedGeneration": 1}}
    opened: list[ScriptedApi] = []

    def answer(n: int) -> bytes:
        path = opened[0].served[n]
        if b"/events" in path:
            return response("403 Forbidden", json.dumps({"kind": "Status", "code": 403, "reason": "Forbidden",
                                                         "message": "events is forbidden"}).encode())
        if b"/dittoservers/" in path:
            return response("200 OK", json.dumps(server).encode())
        return response("200 OK", b'{"items": []}')

    async with scripted_api(tmp_path, answer) as api:
        opened.append(api)
        assert await show("demo", "apps", str(tmp_path / "kubeconfig")) == 0  # the one scripted_api wrote
    out = capsys.readouterr().out
    assert "phase: Running" in out and "Recent events:\n  (not readable: " in out and "events is forbidden" in out


@pytest.mark.asyncio
async def test_report_names_a_missing_crd_not_a_missing_server(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from dittoctl.api.kinds import CRD_NOT_SERVED
    from dittoctl.report import write_report
    from tests.support.scripted_api import response, scripted_api

    missing = json.dumps({"kind": "Status", "code": 404, "reason": "NotFound", "message": "not found"}).encode()
    async with scripted_api(tmp_path, lambda _: response("404 Not Found", missing)):
        code = await write_report("demo", "apps", str(tmp_path / "kubeconfig"), str(tmp_path / "r.tar.gz"),
                                  operator_namespace="dittofs-system", server_address="service")
    assert code == 1 and capsys.readouterr().err == f"dittoctl report: {CRD_NOT_SERVED}\n"
