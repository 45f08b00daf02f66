"""What the reconciler says about the Secrets a server waits for (pure: no API)."""

from __future__ import annotations

from dittoctl.api.models import DittoServer
from dittoctl.api.naming import Names
from reconciler.phases.secrets import Consumed, Missing, missing_secrets


def server(percona: bool) -> DittoServer:
    return DittoServer.model_validate({"metadata": {"name": "demo", "namespace": "ns", "uid": "u"},
                                       "spec": {"storage": {"metadataSize": "1Gi"},
                                                "percona": {"enabled": percona}}})


def test_an_absent_secret_is_named_once_and_a_missing_key_per_key() -> None:
    s = server(percona=False)
    consumed = Consumed(digests={}, absent=frozenset({"creds"}))
    wanted = [("creds", "accessKeyId"), ("creds", "secretAccessKey"), ("ldap", "bindPassword"), ("ldap", "x")]
    found = missing_secrets(wanted, consumed, s, Names.of(s))
    assert found == [Missing("creds"), Missing("ldap", "bindPassword"), Missing("ldap", "x")]
    assert [m.line for m in found] == ["Secret creds not found", "Secret ldap has no key bindPassword",
                                       "Secret ldap has no key x"]


def test_the_percona_user_secret_is_a_database_wait_not_a_missing_secret() -> None:
    s = server(percona=True)
    names = Names.of(s)
    consumed = Consumed(digests={}, absent=frozenset({names.percona_user_secret}))
    assert missing_secrets([(names.percona_user_secret, "host")], consumed, s, names) == []
    assert missing_secrets([(names.percona_user_secret, "host")], consumed, server(percona=False), names) == [
        Missing(names.percona_user_secret)]
