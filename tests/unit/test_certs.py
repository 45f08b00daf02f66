"""certs.selfsigned (CA/leaf, renewal, the selfSigned manager) and certs.generate."""

from __future__ import annotations

import asyncio
import base64
import copy
import ipaddress
import itertools
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography import x509

from certs.generate import generate
from certs.selfsigned import (
    CA_CERT,
    PREVIOUS_CA,
    TLS_CERT,
    TLS_KEY,
    SelfSignedManager,
    bundle_of,
    covers,
    needs_renewal,
    new_ca,
    new_leaf,
    not_after,
    pair_matches,
    service_dns_names,
    signed_by,
    split_sans,
)
from certs.source import CertificateSource
from dittoctl.api.kinds import SECRETS, WEBHOOKCONFIGS, Kind
from dittoctl.kube.gateway import ApiError, Conflict, Gateway, NotFound

T0 = datetime(2030, 1, 1, tzinfo=UTC)


# -- pure functions -------------------------------------------------------------------------------------------
def test_leaf_has_the_sans_and_chains_to_the_ca() -> None:
    ca = new_ca(now=T0)
    leaf = new_leaf(ca, service_dns_names("hook", "sys"), ["127.0.0.1", "::1"], days=90, now=T0)
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["hook", "hook.sys", "hook.sys.svc", "hook.sys.svc.cluster.local"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert signed_by(leaf.cert_pem, ca.cert_pem) and not signed_by(leaf.cert_pem, new_ca().cert_pem)
    assert pair_matches(leaf.cert_pem, leaf.key_pem) and not pair_matches(leaf.cert_pem, ca.key_pem)
    assert covers(leaf.cert_pem, ["hook.sys.svc"], ["127.0.0.1"]) and not covers(leaf.cert_pem, ["other"])
    assert not_after(leaf.cert_pem) == T0 + timedelta(days=90)
    assert x509.load_pem_x509_certificate(ca.cert_pem).extensions.get_extension_for_class(
        x509.BasicConstraints).value.ca


def test_leaf_never_outlives_its_ca() -> None:
    ca = new_ca(days=10, now=T0)
    assert not_after(new_leaf(ca, ["x"], days=365, now=T0).cert_pem) == not_after(ca.cert_pem)


def test_renewal_when_less_than_a_third_of_the_lifetime_remains() -> None:
    leaf = new_leaf(new_ca(now=T0), ["x"], days=90, now=T0)
    lifetime = not_after(leaf.cert_pem) - (T0 - timedelta(minutes=5))
    assert not needs_renewal(leaf.cert_pem, now=T0 + lifetime * 0.6)
    assert needs_renewal(leaf.cert_pem, now=T0 + lifetime * 0.7)
    assert needs_renewal(b"garbage")


def test_split_sans() -> None:
    assert split_sans(["a.example", "10.0.0.1", " ", "::1"]) == (["a.example"], ["10.0.0.1", "::1"])


def test_generate_writes_a_provided_mode_bundle(tmp_path: Path) -> None:
    paths = generate("hook", "sys", tmp_path / "out", extra_sans=["127.0.0.1", "hook.example"])
    assert [p.name for p in paths] == ["ca.crt", "tls.crt", "tls.key"]
    ca, crt, key = (p.read_bytes() for p in paths)
    assert signed_by(crt, ca) and pair_matches(crt, key)
    assert covers(crt, [*service_dns_names("hook", "sys"), "hook.example"], ["127.0.0.1"])
    assert stat.S_IMODE((tmp_path / "out" / "tls.key").stat().st_mode) == 0o600
    assert CertificateSource(tmp_path / "out").reload()


# -- the selfSigned manager against an in-memory API ----------------------------------------------------------
class FakeApi:
    """Just enough of Gateway for the manager: Secrets with resourceVersions, and a webhook config."""

    def __init__(self, webhooks: int = 2) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.versions = itertools.count(1)
        self.writes: list[str] = []
        if webhooks:
            self.objects[("validatingwebhookconfigurations", None, "dittofs")] = {
                "metadata": {"name": "dittofs", "resourceVersion": "0"},
                "webhooks": [{"name": f"w{i}.dittofs.com", "clientConfig": {"service": {"name": "hook"}}}
                             for i in range(webhooks)]}

    def _key(self, kind: Kind, name: str, namespace: str | None) -> tuple[str, str | None, str]:
        return (kind.plural, namespace if kind.namespaced else None, name)

    async def get_or_none(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        obj = self.objects.get(self._key(kind, name, namespace))
        return copy.deepcopy(obj) if obj is not None else None

    async def create(self, kind: Kind, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        key = self._key(kind, obj["metadata"]["name"], namespace)
        if key in self.objects:
            raise Conflict("already exists")
        if obj.get("type") == "kubernetes.io/tls" and not {TLS_CERT, TLS_KEY} <= set(obj.get("data") or {}):
            raise ApiError(422, "data[tls.crt]: Required value")  # the apiserver's ValidateSecret
        self.writes.append(f"create {kind.plural}")
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(next(self.versions))
        self.objects[key] = stored
        return copy.deepcopy(stored)

    async def merge_patch(self, kind: Kind, name: str, patch: dict[str, Any],
                          namespace: str | None = None) -> dict[str, Any]:
        obj = self.objects.get(self._key(kind, name, namespace))
        if obj is None:
            raise NotFound(name)
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified")
        self.writes.append(f"patch {kind.plural}")
        for key, value in patch.get("data", {}).items():
            if value is None:
                obj["data"].pop(key, None)
            else:
                obj["data"][key] = value
        obj["metadata"]["resourceVersion"] = str(next(self.versions))
        return copy.deepcopy(obj)

    async def json_patch(self, kind: Kind, name: str, ops: list[dict[str, Any]],
                         namespace: str | None = None) -> dict[str, Any]:
        obj = copy.deepcopy(self.objects[self._key(kind, name, namespace)])
        for op in ops:
            *parents, last = op["path"].strip("/").split("/")
            node: Any = obj
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            if op["op"] == "test":
                assert node[int(last) if isinstance(node, list) else last] == op["value"], "test op failed"
            else:
                node[last] = op["value"]
        self.writes.append(f"json-patch {kind.plural}")
        self.objects[self._key(kind, name, namespace)] = obj
        return copy.deepcopy(obj)

    def secret(self) -> dict[str, bytes]:
        data = self.objects[("secrets", "sys", "hook-tls")]["data"]
        return {k: base64.b64decode(v) for k, v in data.items()}

    def bundles(self) -> list[bytes]:
        return bundle_of(self.objects[("validatingwebhookconfigurations", None, "dittofs")])


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def manager(api: FakeApi, cert_dir: Path, clock: Clock, **kwargs: Any) -> SelfSignedManager:
    return SelfSignedManager(cast(Gateway, api), namespace="sys", secret_name="hook-tls", service="hook",
                             webhook_config_name="dittofs", cert_dir=cert_dir, extra_sans=["127.0.0.1"],
                             ca_days=30, leaf_days=9, clock=clock, **kwargs)


def ca_count(bundle: bytes) -> int:
    return bundle.count(b"BEGIN CERTIFICATE")


async def test_first_pass_creates_secret_files_and_ca_bundle(tmp_path: Path) -> None:
    api, clock = FakeApi(), Clock()
    mgr = manager(api, tmp_path, clock)
    assert await mgr.ensure()
    secret = api.secret()
    assert api.objects[("secrets", "sys", "hook-tls")]["type"] == "kubernetes.io/tls"
    assert signed_by(secret[TLS_CERT], secret[CA_CERT]) and pair_matches(secret[TLS_CERT], secret[TLS_KEY])
    assert covers(secret[TLS_CERT], service_dns_names("hook", "sys"), ["127.0.0.1"])
    assert api.bundles() == [secret[CA_CERT]] * 2
    assert (tmp_path / "tls.crt").read_bytes() == secret[TLS_CERT]
    assert stat.S_IMODE((tmp_path / "tls.key").stat().st_mode) == 0o600
    assert CertificateSource(tmp_path).reload()

    api.writes.clear()
    assert await mgr.ensure()
    assert api.writes == []  # steady state: reads only


async def test_the_secret_is_owned_by_the_webhook_configuration(tmp_path: Path) -> None:
    """`helm uninstall` deletes the configuration; the garbage collector then deletes the Secret."""
    api = FakeApi()
    api.objects[("validatingwebhookconfigurations", None, "dittofs")]["metadata"]["uid"] = "c0ffee"
    assert await manager(api, tmp_path, Clock()).ensure()
    owners = api.objects[("secrets", "sys", "hook-tls")]["metadata"]["ownerReferences"]
    assert owners == [{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                       "name": "dittofs", "uid": "c0ffee", "blockOwnerDeletion": False}]
    without = FakeApi(webhooks=0)  # no configuration (yet): the Secret is still made, unowned
    assert not await manager(without, tmp_path / "b", Clock()).ensure()
    assert without.objects[("secrets", "sys", "hook-tls")]["metadata"]["ownerReferences"] == []


async def test_leaf_is_renewed_before_expiry_with_the_same_ca(tmp_path: Path) -> None:
    api, clock = FakeApi(), Clock()
    mgr = manager(api, tmp_path, clock)
    await mgr.ensure()
    before = api.secret()
    clock.now = T0 + timedelta(days=7)  # 2 of 9 days left: < 1/3
    assert await mgr.ensure()
    after = api.secret()
    assert after[CA_CERT] == before[CA_CERT] and after[TLS_CERT] != before[TLS_CERT]
    assert signed_by(after[TLS_CERT], after[CA_CERT])
    assert (tmp_path / "tls.crt").read_bytes() == after[TLS_CERT]


async def test_ca_rotation_publishes_old_and_new_ca_before_switching_the_leaf(tmp_path: Path) -> None:
    api, clock = FakeApi(), Clock()
    mgr = manager(api, tmp_path, clock)
    await mgr.ensure()
    old_ca = api.secret()[CA_CERT]
    clock.now = T0 + timedelta(days=21)  # 9 of 30 days left: < 1/3, and the leaf is due as well
    served_before = (tmp_path / "tls.crt").read_bytes()

    assert not await mgr.ensure()  # step 1: new CA published next to the old one
    secret = api.secret()
    new_ca_pem = secret[CA_CERT]
    assert new_ca_pem != old_ca and secret[PREVIOUS_CA] == old_ca
    assert api.bundles() == [new_ca_pem + old_ca] * 2
    assert signed_by((tmp_path / "tls.crt").read_bytes(), old_ca)  # still the leaf the apiserver trusts
    assert (tmp_path / "tls.crt").read_bytes() == served_before

    assert await mgr.ensure()  # step 2: the leaf moves to the new CA
    leaf = api.secret()[TLS_CERT]
    assert signed_by(leaf, new_ca_pem) and (tmp_path / "tls.crt").read_bytes() == leaf
    assert (tmp_path / "ca.crt").read_bytes() == new_ca_pem + old_ca

    clock.now = T0 + timedelta(days=31)  # the old CA expired: dropped from the bundle
    await mgr.ensure()
    assert [ca_count(b) for b in api.bundles()] == [1, 1]
    assert PREVIOUS_CA not in api.secret()


async def test_a_ca_replaced_without_its_predecessor_keeps_what_the_apiserver_trusts_until_the_switch(
        tmp_path: Path) -> None:
    """The Secret deleted (the usual "regenerate my certificates"): the new CA was published alone, and every
    replica still serving a leaf of the old one failed admissions ("unknown authority") until its next pass."""
    api, clock = FakeApi(), Clock()
    a, b = manager(api, tmp_path / "a", clock), manager(api, tmp_path / "b", clock)
    assert await a.ensure() and await b.ensure()
    old_ca, old_leaf = api.secret()[CA_CERT], (tmp_path / "b" / "tls.crt").read_bytes()
    del api.objects[("secrets", "sys", "hook-tls")]

    assert not await a.ensure()  # step 1: the new CA published beside the one trusted today
    new_ca_pem = api.secret()[CA_CERT]
    assert new_ca_pem != old_ca and api.bundles() == [new_ca_pem + old_ca] * 2
    assert (tmp_path / "b" / "tls.crt").read_bytes() == old_leaf and signed_by(old_leaf, api.bundles()[0])
    assert await a.ensure()  # step 2: the leaf moves to the new CA
    assert await b.ensure()
    for replica in ("a", "b"):
        assert signed_by((tmp_path / replica / "tls.crt").read_bytes(), new_ca_pem)
    # Once every replica has had its passes to serve it, the old CA (maybe why the Secret was deleted) goes.
    assert api.bundles() == [new_ca_pem + old_ca] * 2
    clock.now = T0 + timedelta(minutes=4)
    assert await a.ensure()
    assert api.bundles() == [new_ca_pem] * 2 and PREVIOUS_CA not in api.secret()


async def test_taking_over_cert_managers_secret_keeps_its_ca_trusted_until_the_switch(tmp_path: Path) -> None:
    """certManager -> selfSigned: the same Secret name, with cert-manager's leaf and CA but no CA key."""
    api, clock = FakeApi(), Clock()
    cm_ca = new_ca(now=T0)
    cm_leaf = new_leaf(cm_ca, service_dns_names("hook", "sys"), ["127.0.0.1"], now=T0)
    api.objects[("secrets", "sys", "hook-tls")] = {"metadata": {"name": "hook-tls", "resourceVersion": "1"},
                                                   "data": {k: base64.b64encode(v).decode() for k, v in {
                                                       TLS_CERT: cm_leaf.cert_pem, TLS_KEY: cm_leaf.key_pem,
                                                       CA_CERT: cm_ca.cert_pem}.items()}}
    for hook in api.objects[("validatingwebhookconfigurations", None, "dittofs")]["webhooks"]:
        hook["clientConfig"]["caBundle"] = base64.b64encode(cm_ca.cert_pem).decode()  # cainjector's
    mgr = manager(api, tmp_path, clock)
    assert not await mgr.ensure()
    ours = api.secret()[CA_CERT]
    assert ours != cm_ca.cert_pem and api.bundles() == [ours + cm_ca.cert_pem] * 2
    assert (tmp_path / "tls.crt").read_bytes() == cm_leaf.cert_pem, "cert-manager's leaf until the bundle is out"
    assert await mgr.ensure()
    assert signed_by((tmp_path / "tls.crt").read_bytes(), ours)
    clock.now = T0 + timedelta(minutes=4)
    assert await mgr.ensure() and api.bundles() == [ours] * 2, "cert-manager's CA trusted no longer"
    api.writes.clear()
    assert await mgr.ensure() and api.writes == [], "settled: reads only"


async def test_a_refused_ca_bundle_patch_still_serves_and_is_said_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """RBAC without the caBundle patch: the leaf was never written, so the webhook never became ready, while the
    docs blamed an unknown authority; and the same warning came every 5 s."""
    class Forbidden(FakeApi):
        async def json_patch(self, kind: Kind, name: str, ops: list[dict[str, Any]],
                             namespace: str | None = None) -> dict[str, Any]:
            raise ApiError(403, "validatingwebhookconfigurations \"dittofs\" is forbidden")

    api = Forbidden()
    mgr = manager(api, tmp_path, Clock())
    for _ in range(3):
        assert not await mgr.ensure()
    assert CertificateSource(tmp_path).reload(), "the leaf is served"
    assert caplog.text.count("webhook caBundle not updated: ") == 1 and "forbidden" in caplog.text


async def test_replicas_agree_on_one_ca(tmp_path: Path) -> None:
    api, clock = FakeApi(), Clock()
    a, b = manager(api, tmp_path / "a", clock), manager(api, tmp_path / "b", clock)
    await a.ensure()
    assert await b.ensure()
    assert (tmp_path / "a" / "tls.crt").read_bytes() == (tmp_path / "b" / "tls.crt").read_bytes()

    # Both notice renewal at once: one write wins, the loser re-reads and adopts it.
    clock.now = T0 + timedelta(days=7)
    results = [await a.ensure(), await b.ensure()]
    assert results == [True, True]
    assert api.secret()[TLS_CERT] == (tmp_path / "a" / "tls.crt").read_bytes() == (
        tmp_path / "b" / "tls.crt").read_bytes()


async def test_stale_resource_version_conflicts_and_retries(tmp_path: Path) -> None:
    api, clock = FakeApi(), Clock()
    await manager(api, tmp_path / "a", clock).ensure()
    api.objects[("secrets", "sys", "hook-tls")]["data"][TLS_CERT] = ""  # someone broke the leaf
    mgr = manager(api, tmp_path / "b", clock)
    original = api.merge_patch

    async def bump_then_patch(*args: Any, **kwargs: Any) -> dict[str, Any]:
        api.objects[("secrets", "sys", "hook-tls")]["metadata"]["resourceVersion"] = "999"
        api.merge_patch = original  # type: ignore[method-assign]
        return await original(*args, **kwargs)

    api.merge_patch = bump_then_patch  # type: ignore[method-assign]
    assert not await mgr.ensure()  # conflict: nothing half-applied
    assert await mgr.ensure()
    assert pair_matches(api.secret()[TLS_CERT], api.secret()[TLS_KEY])


async def test_missing_webhook_configuration_is_retried(tmp_path: Path) -> None:
    api, clock = FakeApi(webhooks=0), Clock()
    mgr = manager(api, tmp_path, clock)
    assert not await mgr.ensure()
    assert (tmp_path / "tls.crt").exists()  # the server can already serve; caBundle follows later
    api.objects[("validatingwebhookconfigurations", None, "dittofs")] = {
        "metadata": {"name": "dittofs"}, "webhooks": [{"name": "w", "clientConfig": {"caBundle": "b2xk"}}]}
    assert await mgr.ensure()
    assert api.bundles() == [api.secret()[CA_CERT]]


async def test_run_loop_survives_failures(tmp_path: Path) -> None:
    class Broken(FakeApi):
        async def get_or_none(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any] | None:
            raise RuntimeError("API on fire")

    mgr = manager(Broken(), tmp_path, Clock(), interval=0.01)
    await mgr.start()
    await asyncio.sleep(0.05)
    assert mgr._loop.running
    await mgr.stop()


def test_fake_api_uses_the_real_kinds() -> None:
    assert (SECRETS.plural, WEBHOOKCONFIGS.plural, WEBHOOKCONFIGS.namespaced) == (
        "secrets", "validatingwebhookconfigurations", False)


@pytest.mark.parametrize("days", [1, 400])
def test_ca_days_are_respected(days: int) -> None:
    assert not_after(new_ca(days=days, now=T0).cert_pem) == T0 + timedelta(days=days)


async def test_written_files_are_served_without_waiting_for_a_poll(tmp_path: Path) -> None:
    source = CertificateSource(tmp_path, interval=3600)
    mgr = manager(FakeApi(), tmp_path, Clock(), on_files_written=source.reload)
    assert not source.ready
    await mgr.ensure()
    assert source.ready and source.info is not None
    assert source.info.serial == x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes()).serial_number


def test_one_unreadable_block_does_not_cost_a_bundle_its_other_certificates() -> None:
    from certs.selfsigned import _still_trusted

    a, b, new = new_ca(now=T0), new_ca(now=T0), new_ca(now=T0)
    bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert _still_trusted(a.cert_pem + bad + b.cert_pem, new.cert_pem, T0) == a.cert_pem + b.cert_pem
    assert _still_trusted(a.cert_pem + new.cert_pem, new.cert_pem, T0) == a.cert_pem
    assert _still_trusted(bad, new.cert_pem, T0) is None
    assert signed_by(new_leaf(b, ["x"], now=T0).cert_pem, a.cert_pem + bad + b.cert_pem)
