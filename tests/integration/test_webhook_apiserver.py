"""The webhook behind the real kube-apiserver (TESTBED.md §5): what `kubectl apply` users actually see.

Objects here pass the CRD schema (the apiserver checks that before calling validating webhooks), so every
denial below comes from our rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from certs.source import CertificateSource
from dittoctl.kube.events import EventRecorder
from dittoctl.kube.gateway import Gateway, load_client
from tests.testbed.webhook import install_webhook, webhook_configuration
from webhook.facts import FactSource
from webhook.server import AdmissionHandler, WebhookServer

pytestmark = pytest.mark.integration
CONFIG_NAME = "dittofs-webhook-apiserver-test"


class Hook:
    def __init__(self, testbed: Any, server: WebhookServer) -> None:
        self.testbed = testbed
        self.server = server

    async def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        # In a thread: the webhook answering the apiserver runs on this very event loop.
        result: subprocess.CompletedProcess[str] = await asyncio.to_thread(
            self.testbed.kubectl, *args, input=input, check=False)
        return result


def manifest(name: str, namespace: str, spec: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
                       "metadata": {"name": name, "namespace": namespace},
                       "spec": {"storage": {"metadataSize": "1Gi"}, **spec}})


@pytest.fixture(scope="module")
async def hook(crd: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hook]:
    testbed = crd
    cert_dir: Path = tmp_path_factory.mktemp("webhook-certs")
    testbed.issue_serving_cert(cert_dir)  # tls.crt/tls.key with IP:127.0.0.1, signed by the test CA
    gateway = Gateway(await load_client(str(testbed.kubeconfig)))
    facts = FactSource(gateway)
    server = WebhookServer(AdmissionHandler(facts, EventRecorder(gateway)), CertificateSource(cert_dir),
                           host="127.0.0.1", port=0, services=[facts])
    await server.start()
    assert server.ready
    h = Hook(testbed, server)
    try:
        # In a thread: install_webhook blocks until the apiserver calls this loop's webhook server.
        await asyncio.to_thread(install_webhook, testbed, server.port, CONFIG_NAME)
        yield h
    finally:
        await h.kubectl("delete", "validatingwebhookconfiguration", CONFIG_NAME, "--ignore-not-found")
        await server.stop()
        await gateway.close()


async def test_kubectl_apply_shows_every_error_of_an_invalid_object(hook: Hook, namespace: str) -> None:
    spec = {"storage": {"metadataSize": "1Gi", "storageClassName": "no-such-class"},
            "adapters": {"nfs": {"port": 8080}},
            "percona": {"enabled": True, "image": "percona/pg:16", "backup": {"enabled": True}}}
    result = await hook.kubectl("apply", "-f", "-", input=manifest("bad", namespace, spec))
    assert result.returncode != 0
    err = result.stderr
    assert 'The DittoServer "bad" is invalid' in err, err
    percona_line = ("* spec.percona.enabled: PerconaPGCluster (pgv2.percona.com/v2) is not served by this cluster; "
                    "install the Percona Operator for PostgreSQL or disable percona.enabled")
    for line in (
        "* spec.adapters.nfs.port: port 8080 is also used by spec.controlPlane.port",
        '* spec.storage.storageClassName: StorageClass "no-such-class" not found; create it or use an '
        'existing one ("standard")',
        "* spec.percona.backup.bucket: required when backup is enabled",
        "* spec.percona.backup.endpoint: required when backup is enabled",
    ):
        assert line in err, err
    # Other tests of the session may have installed the stand-in Percona CRD (cluster-scoped).
    crd = await hook.kubectl("get", "crd", "perconapgclusters.pgv2.percona.com")
    assert (percona_line in err) == (crd.returncode != 0), err
    got = await hook.kubectl("get", "dittoserver", "bad", "-n", namespace)
    assert got.returncode != 0  # nothing was stored


async def test_plaintext_ldap_is_denied_with_the_fix(hook: Hook, namespace: str) -> None:
    """identity.ldap (issue 14, item 4): ldap:// without StartTLS would send the bind password in clear text
    (upstream's operator accepts it); kubectl shows the field and the three ways out."""
    ldap = {"url": "ldap://dc.example.com:389", "baseDn": "DC=example,DC=com", "bindDn": "CN=svc",
            "bindPasswordSecretRef": {"name": "bind", "key": "password"}}
    spec: dict[str, Any] = {"storage": {"metadataSize": "1Gi"}, "identity": {"ldap": ldap}}
    result = await hook.kubectl("apply", "-f", "-", input=manifest("plain", namespace, spec))
    assert result.returncode != 0
    assert ("spec.identity.ldap.url: 'ldap://dc.example.com:389' sends the bind password in clear text; use "
            "ldaps://, or set startTls: true, or (lab only) allowPlaintext: true") in result.stderr, result.stderr
    spec["identity"]["ldap"] = {**ldap, "startTls": True}
    allowed = await hook.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest("plain", namespace, spec))
    assert allowed.returncode == 0, allowed.stderr
    assert 'Warning: spec.identity.ldap.bindPasswordSecretRef: create Secret "bind"' in allowed.stderr


async def test_warnings_are_printed_and_the_object_is_created(hook: Hook, namespace: str) -> None:
    spec = {"storage": {"metadataSize": "1Gi", "cacheSize": "2Gi", "storageClassName": "standard"},
            "s3": {"credentialsSecretRef": {"secretName": "s3-creds"}}}
    result = await hook.kubectl("apply", "-f", "-", input=manifest("warned", namespace, spec))
    assert result.returncode == 0, result.stderr
    assert "dittoserver.dittofs.dittofs.com/warned created" in result.stdout
    assert "Warning: spec.storage.cacheSize: rename it to contentSize" in result.stderr
    assert 'Warning: spec.s3.credentialsSecretRef: create Secret "s3-creds"' in result.stderr

    # Once the Secret exists (with one key missing) the warning names the key instead.
    secret = await hook.kubectl("create", "secret", "generic", "s3-creds", "-n", namespace,
                                "--from-literal=accessKeyId=AKIA")
    assert secret.returncode == 0, secret.stderr
    changed = manifest("warned", namespace, {**spec, "replicas": 0})  # unchanged objects are not even sent
    again = await hook.kubectl("apply", "--dry-run=server", "-f", "-", input=changed)
    assert again.returncode == 0, again.stderr
    assert 'add key "secretAccessKey" to Secret "s3-creds"' in again.stderr
    assert 'create Secret "s3-creds"' not in again.stderr


async def test_storage_grows_only_where_the_class_allows_it(hook: Hook, namespace: str) -> None:
    created = await hook.kubectl("apply", "-f", "-", input=manifest("grow", namespace, {}))
    assert created.returncode == 0, created.stderr
    grown = manifest("grow", namespace, {"storage": {"metadataSize": "2Gi"}})
    result = await hook.kubectl("apply", "-f", "-", input=grown)
    assert result.returncode != 0
    # No class in the spec: the webhook looked up the cluster's default (the test bed's "standard").
    assert ('spec.storage.metadataSize: StorageClass "standard" does not allow volume expansion '
            "(was '1Gi', now '2Gi')") in result.stderr, result.stderr
    shrunk = await hook.kubectl("apply", "-f", "-", input=manifest("grow", namespace,
                                                                   {"storage": {"metadataSize": "512Mi"}}))
    assert shrunk.returncode != 0 and "cannot shrink a volume (was '1Gi', now '512Mi')" in shrunk.stderr
    # Other edits still go through, and deletion never depends on the webhook.
    ok = await hook.kubectl("apply", "-f", "-", input=manifest("grow", namespace, {"replicas": 0}))
    assert ok.returncode == 0, ok.stderr
    deleted = await hook.kubectl("delete", "dittoserver", "grow", "-n", namespace, "--wait=false")
    assert deleted.returncode == 0, deleted.stderr


async def test_denials_post_an_event_except_on_dry_run(hook: Hook, namespace: str) -> None:
    bad = manifest("evented", namespace, {"adapters": {"smb": {"enabled": True, "port": 12049}}})

    async def events() -> list[dict[str, Any]]:
        out = await hook.kubectl("get", "events", "-n", namespace, "-o", "json")
        items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
        return [e for e in items if e.get("reason") == "ValidationFailed"]

    dry = await hook.kubectl("apply", "--dry-run=server", "-f", "-", input=bad)
    assert dry.returncode != 0
    await hook.server.handler.flush()
    assert await events() == []

    real = await hook.kubectl("apply", "-f", "-", input=bad)
    assert real.returncode != 0
    await hook.server.handler.flush()
    [event] = await events()
    assert event["type"] == "Warning"
    assert event["involvedObject"]["name"] == "evented" and event["involvedObject"]["kind"] == "DittoServer"
    assert event["message"].startswith("spec.adapters.smb.port: port 12049 is also used by spec.adapters.nfs.port")


async def test_namespaces_can_opt_out(hook: Hook, namespace: str) -> None:
    label = await hook.kubectl("label", "namespace", namespace, "dittofs.dittofs.com/validation=disabled")
    assert label.returncode == 0, label.stderr
    bad = manifest("unchecked", namespace, {"adapters": {"nfs": {"port": 8080}}})
    result = await hook.kubectl("apply", "--dry-run=server", "-f", "-", input=bad)
    assert result.returncode == 0, result.stderr


@contextlib.contextmanager
def _reviews_of(hook: Hook, namespace: str, name: str) -> Iterator[set[str]]:
    """The request UIDs of the reviews the apiserver sent for one object: distinct UIDs, because the apiserver
    may resend a review (same UID) after a dropped connection, and other tests' namespaces are being torn
    down meanwhile."""
    seen: set[str] = set()
    decide = hook.server.handler.decide

    async def recording(request: Mapping[str, Any]) -> dict[str, Any]:
        obj = request.get("object")
        named = request.get("name") or (obj.get("metadata", {}).get("name") if isinstance(obj, Mapping) else None)
        if request.get("namespace") == namespace and named == name:
            seen.add(str(request.get("uid")))
        return await decide(request)

    hook.server.handler.decide = recording  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        hook.server.handler.decide = decide  # type: ignore[method-assign]


async def test_only_writes_that_touch_the_spec_are_sent(hook: Hook, namespace: str) -> None:
    """The configuration's matchConditions: a label, an annotation or the operator's finalizer patch never
    costs a webhook round trip; a spec change still does, and is still judged."""
    created = await hook.kubectl("apply", "-f", "-", input=manifest("quiet", namespace, {}))
    assert created.returncode == 0, created.stderr
    with _reviews_of(hook, namespace, "quiet") as reviews:
        for args in (("label", "dittoserver", "quiet", "team=storage"),
                     ("annotate", "dittoserver", "quiet", "note=metadata only"),
                     ("patch", "dittoserver", "quiet", "--type=merge", "-p",
                      '{"metadata": {"finalizers": ["dittofs.dittofs.com/finalizer"]}}')):
            result = await hook.kubectl(*args, "-n", namespace)
            assert result.returncode == 0, result.stderr
        assert reviews == set()
        bad = await hook.kubectl("patch", "dittoserver", "quiet", "-n", namespace, "--type=merge", "-p",
                                 '{"spec": {"adapters": {"nfs": {"port": 8080}}}}')
        assert bad.returncode != 0 and "port 8080 is also used by spec.controlPlane.port" in bad.stderr, bad.stderr
        # Sent, and judged. Twice at most: the apiserver first tries the patch on its watch cache's copy, and when
        # admission refuses and that copy was stale (the finalizer patch just before), it reads etcd and asks
        # again (k8s.io/apiserver etcd3 store GuaranteedUpdate, origStateIsCurrent): a CI run saw two reviews.
        assert 1 <= len(reviews) <= 2, reviews
    released = await hook.kubectl("patch", "dittoserver", "quiet", "-n", namespace, "--type=merge", "-p",
                                  '{"metadata": {"finalizers": null}}')
    assert released.returncode == 0, released.stderr


async def test_metadata_writes_do_not_depend_on_the_webhook(hook: Hook, namespace: str) -> None:
    """With the webhook unreachable (failurePolicy Fail), a spec change is refused, but labels and the
    operator's finalizer still go through: the operator can always add and remove its finalizer."""
    created = await hook.kubectl("apply", "-f", "-", input=manifest("steady", namespace, {}))
    assert created.returncode == 0, created.stderr
    dead = webhook_configuration(1, hook.testbed.ca_b64, "dittofs-unreachable-test")  # nothing listens on port 1
    dead["webhooks"][0]["namespaceSelector"]["matchExpressions"].append(
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace]})
    registered = await hook.kubectl("apply", "-f", "-", input=json.dumps(dead))
    assert registered.returncode == 0, registered.stderr
    try:
        change = ["patch", "dittoserver", "steady", "-n", namespace, "--type=merge", "-p",
                  '{"spec": {"replicas": 0}}', "--dry-run=server"]
        for _ in range(100):  # the apiserver loads configurations asynchronously
            refused = await hook.kubectl(*change)
            if refused.returncode != 0:
                break
            await asyncio.sleep(0.3)
        assert refused.returncode != 0 and "failed calling webhook" in refused.stderr, refused.stderr
        for patch in ('{"metadata": {"labels": {"team": "storage"}}}',
                      '{"metadata": {"finalizers": ["dittofs.dittofs.com/finalizer"]}}',
                      '{"metadata": {"finalizers": null}}'):
            result = await hook.kubectl("patch", "dittoserver", "steady", "-n", namespace, "--type=merge", "-p", patch)
            assert result.returncode == 0, result.stderr
    finally:
        await hook.kubectl("delete", "validatingwebhookconfiguration", "dittofs-unreachable-test", "--ignore-not-found")
