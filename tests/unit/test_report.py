"""`dittoctl report`: the pure redaction and bundling (the collection runs in test_fileservice.py)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tarfile

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dittoctl.api.models import DittoServer
from dittoctl.api.naming import Names
from dittoctl.report import (
    REDACTED,
    Bundle,
    _dittofs_state,
    _operator_lines,
    _secret_values,
    redact,
    secret_forms,
)

PLANTED = b"planted?>secret~"  # its base64 has "+" and padding: the URL-safe and unpadded forms differ


def test_every_form_of_a_secret_value_is_redacted() -> None:
    forms = secret_forms([PLANTED])
    std, url = base64.b64encode(PLANTED).decode(), base64.urlsafe_b64encode(PLANTED).decode()
    assert std != url and std.endswith("=")
    text = f"raw {PLANTED.decode()} std {std} url {url} unpadded {std.rstrip('=')} done"
    out, count = redact(text, forms)
    assert out == f"raw {REDACTED} std {REDACTED} url {REDACTED} unpadded {REDACTED} done"
    assert count == 4


def test_values_under_secret_looking_keys_are_masked_in_json_yaml_and_logs() -> None:
    text = "\n".join([json.dumps({"secret_access_key": "abc", "access_key_id": "AKIA1", "name": "s3"}),
                      "bind_password: hunter22", 'msg="login" token=eyJhbGciOi level=info',
                      json.dumps({"password": ""}), "jwt_secret: <redacted>"])
    out, count = redact(text, [])
    assert "abc" not in out and "AKIA1" not in out and "hunter22" not in out and "eyJhbGciOi" not in out
    assert '"name": "s3"' in out and "level=info" in out
    assert '"password": ""' in out, "an empty value stays (it says the field is unset)"
    assert count == 4


def test_references_durations_and_flags_stay_and_yaml_stays_yaml() -> None:
    spec = {"identity": {"jwt": {"accessTokenDuration": "15m", "secretRef": {"name": "jwt"}}},
            "users": [{"name": "alice", "passwordSecretRef": {"name": "alice", "key": "password"}}],
            "status": {"secretFound": True}, "ldap": {"bind_password": "hunter22"},
            # DittoFS's config and users, a pod spec: a snake-case duration, flags (an exploratory session).
            "jwt": {"access_token_duration": "15m"}, "user": {"must_change_password": True},
            "pod": {"automountServiceAccountToken": False},
            # Names of a Secret and of its keys: support must see which Secret is missing (a real-node session).
            "s3": {"credentialsSecretRef": {"secretName": "s3c", "accessKeyIdKey": "id", "secretAccessKeyKey": "key"}},
            "controlPlane": {"tls": {"secretName": "api-tls", "operatorClientSecretName": "operator-tls"}}}
    text = yaml.safe_dump(spec)
    out, count = redact(text, [])
    assert count == 1 and "hunter22" not in out
    assert yaml.safe_load(out) == {**spec, "ldap": {"bind_password": REDACTED}}


@pytest.mark.timeout(20)  # a guard, not a benchmark: the quadratic pattern took 31 s on 2000 letters, this 200000
def test_a_long_run_of_letters_is_read_once_not_retried_from_every_position() -> None:
    """A tenant's annotation of repeated key words hung `dittoctl report` (the key pattern was retried from
    every position of the run)."""
    text = "token" * 40_000 + " password: hunter22\n"
    out, count = redact(text, [])
    assert count == 1 and out.endswith(f" password: {REDACTED}\n")


def test_names_are_not_treated_as_secrets() -> None:
    secret = {"data": {k: base64.b64encode(v.encode()).decode() for k, v in
                       {"username": "admin", "password": "pw-123456", "namespace": "apps"}.items()}}
    assert _secret_values([secret]) == [b"pw-123456"]
    assert secret_forms([b"abc"]) == [], "values shorter than 4 bytes are not hunted (they would shred the text)"


@settings(deadline=None)  # unit tests run last, beside the session's control plane: no per-example clock
@given(st.binary(min_size=4, max_size=40), st.text(max_size=200))
def test_redaction_leaves_no_form_of_the_value(value: bytes, noise: str) -> None:
    forms = secret_forms([value])
    text = f"{noise}{value.decode('utf-8', 'replace')}{noise}{base64.b64encode(value).decode()}"
    out, _ = redact(text, forms)
    for form in forms:
        assert form not in out.replace(REDACTED, "\0")


def test_operator_lines_keep_this_server_and_general_failures_only() -> None:
    lines = [{"level": "info", "namespace": "apps", "name": "demo", "msg": "applied"},
             {"level": "info", "namespace": "apps", "name": "other", "msg": "applied"},
             {"level": "info", "namespace": "team", "name": "demo", "msg": "applied"},
             {"level": "error", "msg": "watch stream stale"}, {"level": "info", "msg": "started"}]
    text = "\n".join(json.dumps(x) for x in lines) + "\nnot json\n"
    kept, structured = _operator_lines(text, "apps", "demo")
    assert [json.loads(x) for x in kept.splitlines() if x] == [lines[0], lines[3]] and structured == len(lines)
    assert _operator_lines("2026-12-06 INFO dittofs applied apps/demo\n", "apps", "demo") == ("\n", 0)


def test_bundle_is_a_tar_gz_of_redacted_files() -> None:
    bundle = Bundle(secret_forms([PLANTED]))
    bundle.add("a.yaml", {"metadata": {"annotations": {"x": PLANTED.decode()}}})
    bundle.add("b.log", f"{PLANTED.decode()}\n")
    with tarfile.open(fileobj=io.BytesIO(bundle.tar_gz()), mode="r:gz") as tar:
        files = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert sorted(files) == ["a.yaml", "b.log"] and bundle.redactions == 2
    assert PLANTED.decode() not in "".join(files.values())


def test_a_value_re_encoded_by_the_bundle_or_a_log_is_still_redacted() -> None:
    """YAML escapes non-ASCII and folds long lines by default, JSON escapes quotes, backslashes and non-ASCII,
    Go's JSON also <, > and &: each must still be found."""
    umlauts, quoted = "pässwörd-Geheim", 'back\\slash"q<&>'
    long = " ".join(["a-long-passphrase"] * 6)  # over 80 characters, with spaces: YAML folded it
    bundle = Bundle(secret_forms([umlauts.encode(), quoted.encode(), long.encode(), b"it's-a-secret"]))
    bundle.add("x.yaml", {"a": umlauts, "b": long, "c": "it's-a-secret", "d": quoted})
    bundle.add("y.json", json.dumps({"b": quoted, "a": umlauts}))
    bundle.add("z.log", '{"msg":"back\\\\slash\\"q\\u003c\\u0026\\u003e"}\n')
    text = "".join(bundle.files.values())
    assert not any(part in text for part in ("ssw", "slash", "passphrase", "it's", "it''s")), bundle.files
    assert bundle.redactions == 7


def test_the_report_s_own_note_is_not_masked() -> None:
    server = DittoServer.model_validate({"metadata": {"name": "demo", "namespace": "apps", "uid": "u"},
                                         "spec": {"storage": {"metadataSize": "1Gi"}}})
    bundle = Bundle(secret_forms([]))
    asyncio.run(_dittofs_state(bundle, Names.of(server), server, [], "service", []))
    assert bundle.files["notes/dittofs.txt"].startswith(
        "the Secret demo-operator-credentials does not exist: the operator never provisioned this server")
    assert bundle.redactions == 0


def test_pod_mode_without_a_pod_ip_never_falls_back_to_the_service_name() -> None:
    """From outside the cluster (the mode's purpose) a `.svc` name resolves through the host's resolver, off the
    machine, or not at all."""
    server = DittoServer.model_validate({"metadata": {"name": "demo", "namespace": "apps", "uid": "u"},
                                         "spec": {"storage": {"metadataSize": "1Gi"}}})
    secrets = [{"metadata": {"name": "demo-operator-credentials"},
                "data": {"password": base64.b64encode(b"operator-password").decode()}}]
    bundle = Bundle(secret_forms([]))
    asyncio.run(_dittofs_state(bundle, Names.of(server), server, [{"status": {}}], "pod", secrets))
    assert bundle.files["notes/dittofs.txt"].startswith("no pod of this server has an IP (--server-address pod)")
