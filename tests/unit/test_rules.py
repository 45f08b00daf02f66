"""Admission rules 1-14 of SPEC §7: table-driven cases, message format, totality (hypothesis)."""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dittoctl.api.facts import ClusterFacts
from dittoctl.api.models import API_VERSION, DittoServer
from dittoctl.api.parsed import required_secrets
from dittoctl.api.rules import MAX_WARNING, Stored, Verdict, validate
from tests.support.parses import count_spec_parses
from tests.support.strategies import facts_strategy, json_values, spec_strategy

SECRETS: dict[str, frozenset[str] | None] = {
    "jwt": frozenset({"secret"}),
    "admin": frozenset({"password"}),
    "pg": frozenset({"host", "port", "database", "user", "password"}),
    "s3": frozenset({"accessKeyId", "secretAccessKey"}),
    "backup": frozenset({"s3.conf"}),
}
GOOD = ClusterFacts(storage_classes=frozenset({"standard", "fast"}), percona_served=True, secrets=SECRETS)
ERROR_FORMAT = re.compile(r"^(spec|metadata|apiVersion|kind|object)([.\[]((?!: ).)*)?: \S")


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def server(spec: dict[str, Any] | None = None, name: str = "demo") -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "DittoServer", "metadata": {"name": name, "namespace": "ns"},
            "spec": merge({"storage": {"metadataSize": "1Gi"}}, spec or {})}


def check(spec: dict[str, Any] | None = None, facts: ClusterFacts = GOOD,
          old: dict[str, Any] | None = None) -> Verdict:
    verdict = validate(server(spec), server(old) if old is not None else None, facts)
    assert_well_formed(verdict)
    return verdict


def assert_well_formed(verdict: Verdict) -> None:
    for error in verdict.messages:
        assert ERROR_FORMAT.match(error), error
    for warning in verdict.warnings:
        assert len(warning) <= MAX_WARNING, warning
        assert ERROR_FORMAT.match(warning), warning
    assert verdict.allowed == (not verdict.messages)


def paths(messages: list[str]) -> list[str]:
    return [m.split(": ", 1)[0] for m in messages]


# -- baseline ------------------------------------------------------------------------------------------------
def test_minimal_spec_is_allowed_without_warnings() -> None:
    verdict = check()
    assert (verdict.messages, verdict.warnings) == ([], [])
    assert isinstance(verdict.server, DittoServer)
    assert verdict.server.spec.storage.metadata_size == "1Gi"


def test_full_valid_spec_is_allowed() -> None:
    spec = {
        "storage": {"contentSize": "10Gi", "controlPlaneSize": "2Gi", "storageClassName": "fast"},
        "database": {"type": "postgres", "postgresSecretRef": {"name": "pg"}},
        "s3": {"credentialsSecretRef": {"secretName": "s3"}, "bucket": "bkt"},
        "adapters": {"smb": {"enabled": True, "port": 1445}},
        "metrics": {"enabled": True},
        "identity": {"jwt": {"secretRef": {"name": "jwt", "key": "secret"}},
                     "admin": {"passwordSecretRef": {"name": "admin", "key": "password"}}},
    }
    verdict = check(spec)
    assert (verdict.messages, verdict.warnings) == ([], [])


# -- rule 1: the models ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "path", "fragment"), [
    ({"replicas": 2}, "spec.replicas", "<= 1"),
    ({"storage": {"metadataSize": "lots"}}, "spec.storage.metadataSize", "quantity"),
    ({"storage": {"metadataSize": "0"}}, "spec.storage.metadataSize", "positive"),
    ({"logging": {"level": "TRACE"}}, "spec.logging.level", "'DEBUG'"),
    ({"adapters": {"nfs": {"port": 70000}}}, "spec.adapters.nfs.port", "<= 65535"),
    ({"adapters": {"nfs": {"port": "x"}}}, "spec.adapters.nfs.port", "integer"),
    ({"percona": {"backup": {"fullSchedule": "every day"}}}, "spec.percona.backup.fullSchedule", "cron"),
    ({"percona": {"backup": {"incrSchedule": "x"}}}, "spec.percona.backup.incrSchedule", "cron"),
    # croniter's L, W and #: Kubernetes' cron parser has none, so Percona's backups would never run.
    ({"percona": {"backup": {"fullSchedule": "0 2 L * *"}}}, "spec.percona.backup.fullSchedule", "cron"),
    ({"percona": {"backup": {"fullSchedule": "0 2 * * 5#3"}}}, "spec.percona.backup.fullSchedule", "cron"),
    ({"percona": {"backup": {"fullSchedule": "0 2 15W * *"}}}, "spec.percona.backup.fullSchedule", "cron"),
    # The bucket remote stores inherit: as bounded as one they name (an empty one was sent to DittoFS).
    ({"s3": {"bucket": ""}}, "spec.s3.bucket", "at least 3 characters"),
    # populate_by_name read the models' Python names: the CRD has none of them (the apiserver prunes them).
    ({"storage": {"metadataSize": "1Gi", "storage_class_name": "fast"}}, "spec.storage.storage_class_name",
     "unknown field"),
    ({"percona": {"databaseName": "Ditto-FS"}}, "spec.percona.databaseName", "identifier"),
    ({"identity": {"jwt": {"accessTokenDuration": "15 minutes"}}}, "spec.identity.jwt.accessTokenDuration",
     "duration"),
    ({"identity": {"jwt": {"secretRef": {"name": "x"}}}}, "spec.identity.jwt.secretRef.key", "required"),
    ({"terminationGracePeriodSeconds": 10}, "spec.terminationGracePeriodSeconds", ">= 36"),
    ({"startupTimeoutSeconds": 10}, "spec.startupTimeoutSeconds", ">= 30"),
    ({"startupTimeoutSeconds": 10**6}, "spec.startupTimeoutSeconds", "<= 604800"),
    ({"service": {"type": "ExternalName"}}, "spec.service.type", "one of"),
    ({"imagePullSecrets": [{"name": "Bad_Name"}]}, "spec.imagePullSecrets[0].name", "DNS name"),
    ({"typo": True}, "spec.typo", "unknown field"),
    ({"image": ""}, "spec.image", "must not be empty"),
    ({"logging": "loud"}, "spec.logging", "must be an object"),
    ({"metrics": {"path": "metrics"}}, "spec.metrics.path", "must be a URL path"),
])
def test_rule_1_model_errors_name_the_field(spec: dict[str, Any], path: str, fragment: str) -> None:
    verdict = check(spec)
    assert not verdict.allowed
    assert verdict.server is None
    matching = [e for e in verdict.messages if e.startswith(path + ": ")]
    assert matching, verdict.messages
    assert fragment in matching[0]


def test_rule_1_missing_storage_and_spec() -> None:
    assert paths(validate({"metadata": {"name": "x"}}, None, GOOD).messages) == ["spec"]
    missing = validate({"metadata": {"name": "x"}, "spec": {}}, None, GOOD)
    assert missing.messages == ["spec.storage: required; add this field"]


def test_rule_1_all_violations_are_collected_with_cross_field_rules() -> None:
    verdict = check({"replicas": 5, "logging": {"level": "LOUD"}, "storage": {"storageClassName": "nope"},
                     "adapters": {"smb": {"enabled": True, "port": 8080}}})
    assert set(paths(verdict.messages)) == {"spec.replicas", "spec.logging.level", "spec.storage.storageClassName",
                                          "spec.adapters.smb.port"}


def test_rule_1_broken_section_does_not_produce_made_up_findings() -> None:
    # adapters is broken: its defaults (nfs 12049) must not be compared with controlPlane.port 12049.
    verdict = check({"adapters": {"nfs": {"port": "nfs"}}, "controlPlane": {"port": 12049}})
    assert paths(verdict.messages) == ["spec.adapters.nfs.port"]


@pytest.mark.parametrize("name", ["a" * 53, "Upper", "dotted.name", "1starts-with-digit", "trailing-"])
def test_rule_1_metadata_name_must_fit_child_names(name: str) -> None:
    verdict = validate(server(name=name), None, GOOD)
    assert paths(verdict.messages) == ["metadata.name"]


def test_rule_1_wrong_kind_and_api_version() -> None:
    obj = server() | {"apiVersion": "v1", "kind": "Pod"}
    assert paths(validate(obj, None, GOOD).messages) == ["apiVersion", "kind"]


# -- rule 2: port conflicts -----------------------------------------------------------------------------------
PORT_FIELDS: dict[str, dict[str, Any]] = {
    "spec.adapters.nfs.port": {"adapters": {"nfs": {"enabled": True, "port": 7000}}},
    "spec.adapters.smb.port": {"adapters": {"smb": {"enabled": True, "port": 7000}}},
    "spec.controlPlane.port": {"controlPlane": {"port": 7000}},
    "spec.metrics.port": {"metrics": {"enabled": True, "port": 7000}},
}


@pytest.mark.parametrize(("a", "b"), [(a, b) for i, a in enumerate(PORT_FIELDS) for b in list(PORT_FIELDS)[i + 1:]])
def test_rule_2_every_pair_of_enabled_ports_must_differ(a: str, b: str) -> None:
    verdict = check(merge(PORT_FIELDS[a], PORT_FIELDS[b]))
    assert len(verdict.messages) == 1
    assert a in verdict.messages[0] and b in verdict.messages[0]
    assert "7000" in verdict.messages[0]


def test_rule_2_disabled_adapters_may_share_ports() -> None:
    verdict = check({"adapters": {"smb": {"enabled": False, "port": 8080}}, "metrics": {"port": 8080}})
    assert verdict.allowed


# -- rule 3: privileged ports ---------------------------------------------------------------------------------
def test_rule_3_privileged_ports_need_no_warning_the_pod_gets_the_sysctl() -> None:
    # SPEC §13.2 replaced the warning: the builder adds net.ipv4.ip_unprivileged_port_start (test_builders).
    verdict = check({"adapters": {"nfs": {"port": 2049}, "smb": {"enabled": True, "port": 445}}})
    assert verdict.allowed and verdict.warnings == []


def test_rule_3_no_warning_when_the_capability_is_granted() -> None:
    verdict = check({"adapters": {"smb": {"enabled": True, "port": 445}},
                     "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}})
    assert verdict.warnings == []


# -- rule 4: StorageClasses -----------------------------------------------------------------------------------
def test_rule_4_unknown_storage_class_is_an_error() -> None:
    verdict = check({"storage": {"storageClassName": "gold"}})
    assert paths(verdict.messages) == ["spec.storage.storageClassName"]
    assert '"gold" not found' in verdict.messages[0] and '"fast"' in verdict.messages[0]


def test_rule_4_percona_storage_class_checked_when_enabled() -> None:
    verdict = check({"percona": {"enabled": True, "image": "pg", "storageClassName": "gold"}})
    assert paths(verdict.messages) == ["spec.percona.storageClassName"]
    assert check({"percona": {"storageClassName": "gold"}}).allowed


def test_rule_4_lookup_failure_is_a_warning() -> None:
    facts = ClusterFacts(storage_classes=None, percona_served=True, secrets=SECRETS)
    verdict = check({"storage": {"storageClassName": "gold"}}, facts)
    assert verdict.allowed
    assert verdict.warnings == ['spec.storage.storageClassName: could not verify StorageClass "gold" '
                                "(API lookup failed)"]


def test_offline_facts_give_no_could_not_verify_noise() -> None:
    verdict = check({"storage": {"storageClassName": "gold"}, "s3": {"credentialsSecretRef": {"secretName": "x"}},
                     "percona": {"enabled": True, "image": "pg"}}, ClusterFacts.offline())
    assert (verdict.messages, verdict.warnings) == ([], [])


# -- rule 5: S3 credentials -----------------------------------------------------------------------------------
def test_rule_5_missing_s3_secret_warns() -> None:
    verdict = check({"s3": {"credentialsSecretRef": {"secretName": "absent"}}},
                    ClusterFacts(frozenset(), True, {"absent": None}))
    assert verdict.allowed
    assert verdict.warnings[0].startswith('spec.s3.credentialsSecretRef: create Secret "absent"')


def test_rule_5_one_warning_per_missing_key() -> None:
    facts = ClusterFacts(frozenset(), True, {"s3": frozenset({"other"})})
    verdict = check({"s3": {"credentialsSecretRef": {"secretName": "s3", "accessKeyIdKey": "id"}}}, facts)
    assert verdict.allowed
    assert len(verdict.warnings) == 2
    assert 'add key "id"' in verdict.warnings[0] and 'add key "secretAccessKey"' in verdict.warnings[1]


def test_rule_5_unverifiable_secret_warns() -> None:
    verdict = check({"s3": {"credentialsSecretRef": {"secretName": "elsewhere"}}})
    assert verdict.warnings == ['spec.s3.credentialsSecretRef: could not verify Secret "elsewhere" '
                                "(API lookup failed)"]


# -- rule 6: Percona installed --------------------------------------------------------------------------------
def test_rule_6_percona_not_served_is_an_error() -> None:
    facts = ClusterFacts(frozenset(), False, {})
    verdict = check({"percona": {"enabled": True, "image": "pg"}}, facts)
    assert paths(verdict.messages) == ["spec.percona.enabled"]
    assert "install the Percona Operator for PostgreSQL or disable percona.enabled" in verdict.messages[0]
    assert check({"percona": {"enabled": False}}, facts).allowed


def test_rule_6_unknown_discovery_is_a_warning() -> None:
    verdict = check({"percona": {"enabled": True, "image": "pg"}}, ClusterFacts(frozenset(), None, {}))
    assert verdict.allowed
    assert paths(verdict.warnings) == ["spec.percona.enabled"]
    assert "could not verify" in verdict.warnings[0]


# -- rules 7 and 8: database precedence -----------------------------------------------------------------------
def test_rule_7_percona_and_postgres_secret_warns() -> None:
    verdict = check({"percona": {"enabled": True, "image": "pg"},
                     "database": {"type": "postgres", "postgresSecretRef": {"name": "pg"}}})
    assert verdict.allowed
    assert paths(verdict.warnings) == ["spec.database.postgresSecretRef"]
    assert "Percona" in verdict.warnings[0]


def test_rule_8_sqlite_with_postgres_secret_warns() -> None:
    verdict = check({"database": {"type": "sqlite", "postgresSecretRef": {"name": "pg"}}})
    assert verdict.allowed
    assert paths(verdict.warnings) == ["spec.database.type"]
    assert "postgres" in verdict.warnings[0]


def test_postgres_without_a_connection_is_an_error() -> None:
    verdict = check({"database": {"type": "postgres"}})
    assert paths(verdict.messages) == ["spec.database.postgresSecretRef"]
    assert check({"database": {"type": "postgres"}, "percona": {"enabled": True, "image": "pg"}}).allowed


# -- rule 9: backups ------------------------------------------------------------------------------------------
BACKUP = {"percona": {"enabled": True, "image": "pg", "backup": {"enabled": True}}}


def test_rule_9_backup_needs_bucket_and_endpoint() -> None:
    verdict = check(BACKUP)
    assert paths(verdict.messages) == ["spec.percona.backup.bucket", "spec.percona.backup.endpoint"]
    assert paths(verdict.warnings) == ["spec.percona.backup.credentialsSecretRef"]


def test_rule_9_backup_credentials_secret_must_exist() -> None:
    spec = merge(BACKUP, {"percona": {"backup": {"bucket": "b", "endpoint": "https://s3",
                                                 "credentialsSecretRef": {"name": "gone"}}}})
    verdict = check(spec, ClusterFacts(frozenset(), True, {"gone": None}))
    assert verdict.allowed
    assert verdict.warnings[0].startswith('spec.percona.backup.credentialsSecretRef: create Secret "gone"')
    spec["percona"]["backup"]["credentialsSecretRef"]["name"] = "backup"
    assert check(spec).warnings == []


# -- rule 10: referenced Secrets ------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "path"), [
    ({"identity": {"jwt": {"secretRef": {"name": "nope", "key": "k"}}}}, "spec.identity.jwt.secretRef"),
    ({"identity": {"admin": {"passwordSecretRef": {"name": "nope", "key": "k"}}}},
     "spec.identity.admin.passwordSecretRef"),
    ({"database": {"type": "postgres", "postgresSecretRef": {"name": "nope"}}}, "spec.database.postgresSecretRef"),
])
def test_rule_10_missing_secret_warns(spec: dict[str, Any], path: str) -> None:
    verdict = check(spec, ClusterFacts(frozenset(), True, {"nope": None}))
    assert verdict.allowed
    assert verdict.warnings == [f'{path}: create Secret "nope"; the pod fails with CreateContainerConfigError '
                                "until then"]


@pytest.mark.parametrize(("stores", "share", "path", "key"), [
    ({"metadata": [{"name": "pgmeta", "type": "postgres", "postgresSecretRef": {"name": "nope", "userKey": "login"}}]},
     {"metadataStore": "pgmeta"}, "spec.stores.metadata[0].postgresSecretRef", "login"),
    ({"remote": [{"name": "s3", "bucket": "bkt", "credentialsSecretRef": {"name": "nope", "accessKeyIdKey": "login"}}]},
     {"remoteBlockStore": "s3"}, "spec.stores.remote[0].credentialsSecretRef", "login"),
])
def test_a_stores_secret_is_checked_in_a_warning_that_fits(stores: dict[str, Any], share: dict[str, Any], path: str,
                                                           key: str) -> None:
    """Within MAX_WARNING, as kubectl shows it (the store's long consequence was cut short), and saying what waits:
    every file-service change, not only the store's shares."""
    spec = {"stores": stores, "shares": [{"name": "/export", **share}]}
    missing = check(spec, ClusterFacts(frozenset(), True, {"nope": None}))
    assert missing.allowed
    assert missing.warnings == [f'{path}: create Secret "nope"; no file-service change is applied until then']
    others = frozenset({"host", "port", "database", "password", "secretAccessKey"})
    keys = check(spec, ClusterFacts(frozenset(), True, {"nope": others}))
    assert keys.warnings == [f'{path}: add key "{key}" to Secret "nope"; file-service changes wait for it']


def test_rule_10_missing_keys_warn_and_sslmode_is_optional() -> None:
    verdict = check({"database": {"type": "postgres", "postgresSecretRef": {"name": "pg", "userKey": "username"}},
                     "identity": {"jwt": {"secretRef": {"name": "jwt", "key": "other"}}}})
    assert verdict.allowed
    assert paths(verdict.warnings) == ["spec.database.postgresSecretRef", "spec.identity.jwt.secretRef"]
    assert 'add key "username" to Secret "pg"' in verdict.warnings[0]
    assert 'add key "other" to Secret "jwt"' in verdict.warnings[1]


# -- rule 11: Percona image -----------------------------------------------------------------------------------
def test_rule_11_percona_without_image_warns() -> None:
    verdict = check({"percona": {"enabled": True}})
    assert paths(verdict.warnings) == ["spec.percona.image"]
    assert "RELATED_IMAGE_" in verdict.warnings[0]


# -- rule 12: storage grows (where the class allows), never shrinks, keeps its class ------------------------------
EXPANDABLE = dataclasses.replace(GOOD, expandable_classes=frozenset({"fast"}), default_storage_class="standard")


@pytest.mark.parametrize(("old", "new", "field", "was", "now"), [
    ({}, {"storage": {"metadataSize": "2Gi"}}, "metadataSize", "'1Gi'", "'2Gi'"),
    ({}, {"storage": {"contentSize": "6Gi"}}, "contentSize", "'5Gi'", "'6Gi'"),
    ({"storage": {"cacheSize": "7Gi"}}, {"storage": {"contentSize": "8Gi"}}, "contentSize", "'7Gi'", "'8Gi'"),
    ({}, {"storage": {"controlPlaneSize": "3Gi"}}, "controlPlaneSize", "'1Gi'", "'3Gi'"),
])
def test_rule_12_growth_needs_a_class_that_allows_expansion(old: dict[str, Any], new: dict[str, Any], field: str,
                                                            was: str, now: str) -> None:
    verdict = check(new, old=old, facts=EXPANDABLE)  # the default class, standard, cannot expand
    assert verdict.messages == [f'spec.storage.{field}: StorageClass "standard" does not allow volume expansion '
                                f"(was {was}, now {now}); set allowVolumeExpansion: true on it (if its driver can "
                                "resize), or revert the change"]
    fast = {"storage": {**new["storage"], "storageClassName": "fast"}}
    assert check(fast, old={"storage": {**old.get("storage", {}), "storageClassName": "fast"}},
                 facts=EXPANDABLE).allowed
    unknown = check(new, old=old)  # expansion support could not be looked up: allowed, with a warning
    assert unknown.allowed and paths(unknown.warnings) == [f"spec.storage.{field}"]


def test_rule_12_volumes_never_shrink_and_keep_their_class() -> None:
    shrink = check({"storage": {"metadataSize": "1Gi"}}, old={"storage": {"metadataSize": "2Gi"}}, facts=EXPANDABLE)
    assert shrink.messages == ["spec.storage.metadataSize: cannot shrink a volume (was '2Gi', now '1Gi'); PVCs "
                               "only grow: set '2Gi' or more"]
    for old, new, was, now in (({}, {"storage": {"storageClassName": "fast"}}, "unset", "'fast'"),
                               ({"storage": {"storageClassName": "fast"}},
                                {"storage": {"storageClassName": "standard"}}, "'fast'", "'standard'")):
        verdict = check(new, old=old, facts=EXPANDABLE)
        assert verdict.messages == [f"spec.storage.storageClassName: immutable: the PVCs keep their class (was "
                                    f"{was}, now {now}); create a new DittoServer and migrate the data, or revert "
                                    "the change"]


@pytest.mark.parametrize(("old", "new"), [
    ({"storage": {"metadataSize": "1Gi"}}, {"storage": {"metadataSize": "1024Mi"}}),
    ({"storage": {"cacheSize": "7Gi"}}, {"storage": {"contentSize": "7Gi"}}),  # the deprecation fix
    ({}, {"storage": {"contentSize": "5Gi"}}),
    ({}, {"replicas": 0, "logging": {"level": "DEBUG"}}),
])
def test_rule_12_equivalent_storage_is_not_a_change(old: dict[str, Any], new: dict[str, Any]) -> None:
    assert check(new, old=old).allowed


def test_rule_12_not_applied_on_create() -> None:
    assert check({"storage": {"metadataSize": "2Gi"}}).allowed


# -- rule 13: backend switches --------------------------------------------------------------------------------
@pytest.mark.parametrize(("old", "new", "path"), [
    ({}, {"database": {"type": "postgres", "postgresSecretRef": {"name": "pg"}}}, "spec.database"),
    ({"database": {"type": "postgres", "postgresSecretRef": {"name": "pg"}}}, {}, "spec.database"),
    ({}, {"percona": {"enabled": True, "image": "pg"}}, "spec.database"),
    ({"percona": {"enabled": True, "image": "pg"}}, {}, "spec.percona.enabled"),
])
def test_rule_13_backend_switch_warns(old: dict[str, Any], new: dict[str, Any], path: str) -> None:
    verdict = check(new, old=old)
    assert verdict.allowed
    assert path in paths(verdict.warnings)
    assert "migrate the data" in next(w for w in verdict.warnings if w.startswith(path + ":"))


# -- rule 14: deprecated cacheSize ----------------------------------------------------------------------------
def test_rule_14_cache_size_is_deprecated() -> None:
    verdict = check({"storage": {"cacheSize": "5Gi"}})
    assert verdict.allowed
    assert verdict.warnings[0].startswith("spec.storage.cacheSize: rename it to contentSize")
    assert verdict.server is not None and verdict.server.spec.storage.effective_content_size == "5Gi"
    both = check({"storage": {"cacheSize": "5Gi", "contentSize": "6Gi"}})
    assert both.warnings[0].startswith("spec.storage.cacheSize: remove it")


# -- updates: ratcheting --------------------------------------------------------------------------------------
def test_update_is_not_denied_for_a_problem_the_object_already_had() -> None:
    stale = {"storage": {"storageClassName": "deleted-since"}}
    assert not check(stale).allowed
    assert check(merge(stale, {"replicas": 0}), old=stale).allowed  # e.g. stopping the server
    assert not check(merge(stale, {"replicas": 9}), old=stale).allowed  # a new problem is still denied


def test_a_ratcheted_update_parses_each_spec_once(monkeypatch: pytest.MonkeyPatch) -> None:
    parses = count_spec_parses(monkeypatch)
    stale = {"storage": {"storageClassName": "deleted-since"}}
    assert check(merge(stale, {"replicas": 0}), old=stale).allowed  # the ratchet ran: the new object had an error
    assert len(parses) == 2  # the new spec, and the old one (by the update rules, then reused by the ratchet)


# -- ordering, lengths, references ----------------------------------------------------------------------------
def test_could_not_verify_warnings_come_last() -> None:
    verdict = check({"storage": {"cacheSize": "1Gi", "storageClassName": "x"}},
                    ClusterFacts(None, True, {}))
    assert "could not verify" in verdict.warnings[-1]
    assert verdict.warnings[0].startswith("spec.storage.cacheSize")


def test_long_names_keep_warnings_short() -> None:
    long = "s" * 250
    verdict = check({"s3": {"credentialsSecretRef": {"secretName": long, "accessKeyIdKey": "k" * 250}}},
                    ClusterFacts(frozenset(), True, {long: frozenset()}))
    assert len(verdict.warnings) == 2
    assert all(len(w) <= MAX_WARNING for w in verdict.warnings)


def test_required_secrets_lists_required_keys() -> None:
    spec = server({"database": {"type": "postgres", "postgresSecretRef": {"name": "pg", "hostKey": "h"}},
                   "s3": {"credentialsSecretRef": {"secretName": "s3"}},
                   "identity": {"jwt": {"secretRef": {"name": "jwt", "key": "k"}}},
                   "percona": {"backup": {"enabled": True, "credentialsSecretRef": {"name": "bk"}}}})["spec"]
    assert required_secrets(spec) == {
        "pg": {"h", "port", "database", "user", "password"},
        "s3": {"accessKeyId", "secretAccessKey"},
        "jwt": {"k"},
        "bk": set(),
    }
    assert required_secrets({"garbage": 1}) == {}
    with_percona = merge(spec, {"percona": {"enabled": True}})
    assert "pg" not in required_secrets(with_percona)  # Percona's Secret is used instead


# -- totality -------------------------------------------------------------------------------------------------
def _assert_total(obj: Any, old: Any, facts: ClusterFacts) -> None:
    verdict = validate(obj, old, facts)  # must not raise
    assert isinstance(verdict, Verdict)
    assert_well_formed(verdict)
    assert not any("internal validation error" in e for e in verdict.messages), verdict.messages
    if verdict.allowed and old is None:  # (an UPDATE may be allowed by ratcheting while still invalid)
        assert verdict.server is not None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=spec_strategy(), old_spec=st.none() | spec_strategy(), facts=facts_strategy)
def test_validate_is_total_over_generated_specs(spec: dict[str, Any], old_spec: dict[str, Any] | None,
                                                facts: ClusterFacts) -> None:
    old = {"metadata": {"name": "demo"}, "spec": old_spec} if old_spec is not None else None
    _assert_total({"apiVersion": API_VERSION, "kind": "DittoServer", "metadata": {"name": "demo"}, "spec": spec},
                  old, facts)


@settings(max_examples=300, deadline=None)
@given(obj=json_values, old=json_values, facts=facts_strategy)
def test_validate_is_total_over_garbage(obj: Any, old: Any, facts: ClusterFacts) -> None:
    _assert_total(obj, old if isinstance(old, dict) else None, facts)
    _assert_total({"metadata": obj, "spec": old}, None, facts)


# -- the declared file service (SPEC §13.1) -------------------------------------------------------------------
FILE_SERVICE: dict[str, Any] = {
    "groups": [{"name": "readers"}],
    "users": [{"name": "alice", "passwordSecretRef": {"name": "alice-pw", "key": "password"}, "groups": ["readers"]}],
    "shares": [{"name": "/projects", "defaultPermission": "none",
                "permissions": [{"user": "alice", "level": "read-write"}, {"group": "readers", "level": "read"}]}],
}
WITH_ALICE = ClusterFacts(storage_classes=GOOD.storage_classes, percona_served=True,
                          secrets={**SECRETS, "alice-pw": frozenset({"password"})})


def test_declared_file_service_is_allowed() -> None:
    verdict = check(FILE_SERVICE, WITH_ALICE)
    assert verdict.allowed and not verdict.warnings, verdict


@pytest.mark.parametrize(("patch", "path", "fragment"), [
    ({"shares": [{"name": "/a"}, {"name": "/a/"}]}, "spec.shares[1].name", "repeats"),
    ({"shares": [{"name": "export"}]}, "spec.shares[0].name", "absolute path"),
    ({"shares": [{"name": "/team%20a"}]}, "spec.shares[0].name", "may not contain '%' or '#'"),
    ({"shares": [{"name": "/a#b"}]}, "spec.shares[0].name", "may not contain '%' or '#'"),
    ({"shares": [{"name": "/team//docs"}]}, "spec.shares[0].name", "empty, '.' or '..' path segment"),
    ({"shares": [{"name": "/team/.."}]}, "spec.shares[0].name", "empty, '.' or '..' path segment"),
    ({"shares": [{"name": "/./x"}]}, "spec.shares[0].name", "empty, '.' or '..' path segment"),
    ({"shares": [{"name": "/a/"}]}, "spec.shares[0].name", "ends with '/', and DittoFS would serve it as a "
                                                          'share apart from "/a"; name it "/a"'),
    ({"users": [FILE_SERVICE["users"][0], FILE_SERVICE["users"][0]]}, "spec.users[1].name", "repeats"),
    ({"groups": [{"name": "g"}, {"name": "g"}]}, "spec.groups[1].name", "repeats"),
    ({"groups": [{"name": "admins"}]}, "spec.groups[0].name", "system group"),
    ({"users": [{"name": "admin", "passwordSecretRef": {"name": "alice-pw", "key": "password"}}]},
     "spec.users[0].name", "reserved"),
    ({"users": [{"name": "bob", "passwordSecretRef": {"name": "alice-pw", "key": "password"}, "groups": ["nope"]}]},
     "spec.users[0].groups[0]", "not declared in spec.groups"),
    # DittoFS's admin has uid 0 and uids are unique: it answered "Failed to update user" (a real-node session).
    ({"users": [{"name": "bob", "passwordSecretRef": {"name": "alice-pw", "key": "password"}, "uid": 0}]},
     "spec.users[0].uid", "uid 0 is DittoFS's admin's"),
    ({"shares": [{"name": "/p", "permissions": [{"user": "carol", "level": "read"}]}]},
     "spec.shares[0].permissions[0].user", "not declared in spec.users"),
    ({"shares": [{"name": "/p", "permissions": [{"group": "nobody", "level": "read"}]}]},
     "spec.shares[0].permissions[0].group", "not declared in spec.groups"),
    ({"shares": [{"name": "/p", "permissions": [{"level": "read"}]}]},
     "spec.shares[0].permissions[0]", "exactly one of user and group"),
    ({"shares": [{"name": "/p", "defaultPermission": "write"}]}, "spec.shares[0].defaultPermission", ""),
])
def test_file_service_rules_name_the_field(patch: dict[str, Any], path: str, fragment: str) -> None:
    verdict = check({**FILE_SERVICE, **patch}, WITH_ALICE)
    assert not verdict.allowed
    assert any(str(e).startswith(f"{path}: ") and fragment in str(e) for e in verdict.errors), verdict.errors


def test_a_share_kept_with_a_trailing_slash_stays_allowed_but_a_new_one_is_refused() -> None:
    # DittoFS serves "/a/" apart from "/a": only a new share is refused, so one declared before the rule is kept.
    old = {"shares": [{"name": "/a/"}]}
    moved = {"shares": [{"name": "/b"}, {"name": "/a/"}]}
    assert check(moved, old=old).allowed  # kept, at another index
    added = check({"shares": [{"name": "/a/"}, {"name": "/c/"}]}, old=old)
    assert paths(added.messages) == ["spec.shares[1].name"], added.messages
    assert validate(server(old), None, GOOD, stored=Stored()).allowed  # the reconciler's re-check keeps it
    # "/a" is another share than a kept "/a/" in DittoFS: the read-only one's rules do not follow the rename.
    renamed = check({"shares": [{"name": "/a", "readOnly": False}]},
                    old={"shares": [{"name": "/a/", "readOnly": True}]})
    assert renamed.allowed, renamed.messages


def test_a_share_smb_cannot_reach_is_a_warning_while_smb_is_enabled() -> None:
    # DittoFS v0.29.0 looks an SMB share up by "/" + the UNC's share part in lower case: NFS still serves these.
    smb = {"adapters": {"smb": {"enabled": True}}}
    verdict = check({**FILE_SERVICE, **smb, "shares": [{"name": "/Team"}, {"name": "/team/docs"}, {"name": "/a"}]},
                    WITH_ALICE)
    assert verdict.allowed
    assert verdict.warnings == [
        'spec.shares[0].name: "/Team" is served over NFS only: DittoFS finds SMB shares by one lower-case segment, '
        'e.g. "/team"',
        'spec.shares[1].name: "/team/docs" is served over NFS only (SMB: one lower-case segment)']
    assert check({**FILE_SERVICE, "shares": [{"name": "/Team"}]}, WITH_ALICE).warnings == []  # SMB is off


def test_a_moved_uid_or_gid_and_a_repeated_group_are_warnings() -> None:
    # DittoFS applies a new uid live, but files keep the old owner: seen on the real node, alice (2001 -> 2011) was
    # refused her own share's listing and her 0660 file.
    old = {**FILE_SERVICE, "groups": [{"name": "readers", "gid": 3000}],
           "users": [{**FILE_SERVICE["users"][0], "uid": 2001}]}
    new = {**FILE_SERVICE, "groups": [{"name": "readers", "gid": 3001}],
           "users": [{**FILE_SERVICE["users"][0], "uid": 2011, "groups": ["readers", "readers"]}]}
    verdict = check(new, WITH_ALICE, old=old)
    assert verdict.allowed, verdict.messages
    assert sorted(verdict.warnings) == [
        'spec.groups[0].gid: files of "readers" keep group gid 3000: its members lose group access (chgrp them, or '
        'keep 3000)',
        'spec.users[0].groups[1]: "readers" is listed twice; remove the repeat',
        'spec.users[0].uid: files of "alice" keep owner uid 2001: "alice" loses owner access (chown them, or keep '
        '2001)']
    assert check(old, WITH_ALICE, old=old).warnings == []


def test_a_quota_on_a_metadata_store_other_shares_use_is_a_warning() -> None:
    # DittoFS v0.29.0 compares a share's quota with its metadata store's total (pkg/metadata/io.go): seen on the
    # real node, a 1 KiB write to a share under its quota failed once another share on the store held more.
    shared = check({"shares": [{"name": "/export"}, {"name": "/projects", "quota": "10Gi"}]})
    assert shared.allowed
    assert shared.warnings == ['spec.shares[1].quota: counts all shares on metadata store "default" ("/export"): '
                               'give this share a store of its own']
    own = check({"stores": {"metadata": [{"name": "default"}, {"name": "projects", "type": "memory"}]},
                 "shares": [{"name": "/export"}, {"name": "/projects", "quota": "10Gi", "metadataStore": "projects"}]})
    assert own.allowed and own.warnings == [], own.warnings
    assert check({"shares": [{"name": "/projects", "quota": "10Gi"}]}).warnings == []  # alone on its store


def test_lists_the_crd_bounds_are_bounded_here_too_with_a_clear_message() -> None:
    # The CRD bounds them so its CEL rules may explain a mistyped quota or interval (dittoctl.api.crd._humane).
    verdict = check({"shares": [{"name": f"/s{i}"} for i in range(1001)]})
    assert verdict.messages == ["spec.shares: must have at most 1000 items, not 1001 (serve more from another "
                                "DittoServer)"]


def test_a_missing_user_password_secret_is_a_warning_like_other_secrets() -> None:
    assert required_secrets(server(FILE_SERVICE)["spec"]).get("alice-pw") == {"password"}
    verdict = check(FILE_SERVICE)  # the facts know no alice-pw
    assert verdict.allowed
    assert any(w.startswith("spec.users[0].passwordSecretRef: ") and "alice-pw" in w for w in verdict.warnings)
    lacking = ClusterFacts(storage_classes=GOOD.storage_classes, percona_served=True,
                           secrets={**SECRETS, "alice-pw": frozenset({"other"})})
    verdict = check(FILE_SERVICE, lacking)
    assert any("add key 'password'" in w or 'add key "password"' in w for w in verdict.warnings), verdict.warnings


# -- stores, adapters and identity of the declared file service (SPEC §13.1, §13.2) ---------------------------
def test_store_references_paths_endpoints_and_credentials_are_checked_all_at_once() -> None:
    verdict = check({
        "stores": {"metadata": [{"name": "meta"}, {"name": "meta"}, {"name": "x", "path": "/etc/badger"}],
                   "local": [{"name": "mem", "type": "memory", "path": "/data/store/block/m"}],
                   "remote": [{"name": "s3", "endpoint": "http://10.88.0.1:9000"},
                              {"name": "aws", "bucket": "bkt", "endpoint": "https://s3.amazonaws.com",
                               "credentialsSecretRef": {"name": "s3"}}]},
        "shares": [{"name": "/a", "metadataStore": "default", "localBlockStore": "mem", "remoteBlockStore": "nope"}],
    })
    assert paths(verdict.messages) == [
        "spec.stores.metadata[1].name", "spec.stores.metadata[2].path", "spec.stores.local[0].path",
        "spec.stores.remote[0].bucket", "spec.stores.remote[0].credentialsSecretRef", "spec.stores.remote[0].endpoint",
        "spec.shares[0].metadataStore", "spec.shares[0].remoteBlockStore"]
    text = "\n".join(verdict.messages)
    assert "must be a directory under /data/store/metadata" in text
    assert "a memory store has no path" in text
    assert "set allowPrivateEndpoint: true" in text
    assert "metadata store \"default\" is not declared in spec.stores.metadata (declared: \"meta\", \"x\")" in text


@pytest.mark.parametrize("endpoint", ["http://[::1", "http://[foo]:9000", "https://a]b", "http://",
                                      "http://minio .local", "http://s3.example.com:99999"])
def test_a_malformed_endpoint_is_named_not_a_crash(endpoint: str) -> None:
    """urlsplit raised on these inside the validator ("internal validation error", naming no field); a URL
    without a host read as a private address."""
    verdict = check({"stores": {"remote": [{"name": "r", "bucket": "bkt", "endpoint": endpoint,
                                            "credentialsSecretRef": {"name": "s3"}}]}})
    assert verdict.messages == [f'spec.stores.remote[0].endpoint: "{endpoint}" is not a valid URL with a host '
                                "name, e.g. https://s3.example.com or http://[fd00::10]:9000"]


@pytest.mark.parametrize(("stores", "kind"), [({"metadata": [{"name": "fast"}]}, "metadata"),
                                              ({"metadata": []}, "metadata"),
                                              ({"local": [{"name": "cache", "type": "memory"}]}, "local")])
def test_the_implicit_default_share_needs_its_default_stores(stores: dict[str, Any], kind: str) -> None:
    """spec.shares unset serves /export on the "default" stores: a store list without "default" was admitted and
    failed only at provisioning (the same share written out was denied)."""
    verdict = check({"stores": stores})
    assert verdict.messages == [
        f'spec.stores.{kind}: the default share /export (spec.shares is unset) uses {kind} store "default", which '
        "this list does not declare; add {name: default} here, or declare spec.shares naming one of its stores"]
    written_out = check({"stores": stores, "shares": [{"name": "/export"}]})
    key = "localBlockStore" if kind == "local" else "metadataStore"
    assert paths(written_out.messages) == [f"spec.shares[0].{key}"]
    assert check({"stores": stores, "shares": []}).messages == []


@pytest.mark.parametrize(("stores", "path", "other"), [
    ({"metadata": [{"name": "default"}, {"name": "badger"}]}, "spec.stores.metadata[1]", "default"),
    ({"local": [{"name": "default"}, {"name": "blocks"}]}, "spec.stores.local[1]", "default"),
    ({"local": [{"name": "a", "path": "/data/store/block/x"}, {"name": "b", "path": "/data/store/block/x/y"}]},
     "spec.stores.local[1].path", "a"),
    ({"metadata": [{"name": "a", "path": "/data/store/metadata/x/y"}, {"name": "b", "path": "/data/store/metadata/x"}]},
     "spec.stores.metadata[1].path", "a"),
])
def test_two_stores_never_share_a_directory(stores: dict[str, Any], path: str, other: str) -> None:
    """Found only at run time before: badger locks its directory, fs stores would mix their blocks."""
    verdict = check({"stores": stores, "shares": []})
    assert paths(verdict.messages) == [path]
    assert f'in or around the directory of store "{other}"' in verdict.messages[0]


def test_stores_in_neighbouring_directories_or_without_one_are_fine() -> None:
    assert check({"stores": {"local": [{"name": "a", "path": "/data/store/block/x"},
                                       {"name": "b", "path": "/data/store/block/xy"}],
                             "metadata": [{"name": "default"}, {"name": "m", "type": "memory"}, {"name": "fast"}]},
                  "shares": []}).allowed


def test_a_repeated_name_is_reported_once_naming_the_first() -> None:
    verdict = check({"shares": [{"name": "/a"}, {"name": "/a/"}, {"name": "/b"}, {"name": "/a"}],
                     "groups": [{"name": "g"}] * 3000})
    assert verdict.messages == [
        'spec.groups[1].name: "g" repeats spec.groups[0], 3000 times in all; names must be unique (remove or '
        "rename the repeats)",
        'spec.shares[1].name: "/a/" repeats spec.shares[0] ("/a"), 3 times in all; names must be unique (remove '
        "or rename the repeats)",
        'spec.shares[1].name: "/a/" ends with \'/\', and DittoFS would serve it as a share apart from "/a"; name it '
        '"/a"']


@pytest.mark.parametrize(("spec", "message"), [
    ({"users": [{"name": "bob", "password": "hunter2"}]},
     "spec.users[0].password: unknown field; a password never goes in the spec: put it in a Secret and name it "
     "in passwordSecretRef: {name, key}"),
    ({"stores": {"remote": [{"name": "r", "bucket": "bkt", "credentialsSecretRef": {"secretName": "s3"}}]}},
     "spec.stores.remote[0].credentialsSecretRef.secretName: unknown field; here the Secret is named by name "
     "(spec.s3.credentialsSecretRef uses secretName)"),
    ({"shares": [{"name": "x"}]}, "spec.shares[0].name: must name a share below '/', e.g. /export (got 'x')"),
    ({"adapters": {"nfs": {"settings": {"minVersion": 3}}}},
     "spec.adapters.nfs.settings.minVersion: must be one of '3', '4.0' or '4.1' (got 3): a string, so quote it "
     '("3")'),
    ({"shares": [{"name": "/e", "nfs": {"anonymousUid": 5}}]},
     "spec.shares[0].nfs.anonymousUid: unknown field; did you mean anonymousUID? (`kubectl explain "
     "dittoserver.spec` lists the fields)"),
    ({"storage": {"metadataSize": "1Gi", "metadatasize": "1Gi"}},
     "spec.storage.metadatasize: unknown field; did you mean metadataSize? (`kubectl explain dittoserver.spec` "
     "lists the fields)"),
    ({"zzz": 1}, "spec.zzz: unknown field; remove it or fix its spelling (`kubectl explain dittoserver.spec` "
     "lists the fields)"),
])
def test_a_likely_slip_gets_the_fix_not_only_the_fault(spec: dict[str, Any], message: str) -> None:
    assert message in check(spec).messages


def test_a_declared_remote_store_with_defaults_from_spec_s3_is_allowed() -> None:
    verdict = check({"s3": {"credentialsSecretRef": {"secretName": "s3"}, "bucket": "bkt"},
                     "stores": {"remote": [{"name": "s3", "endpoint": "http://minio.storage.svc:9000",
                                            "allowPrivateEndpoint": True}]},
                     "shares": [{"name": "/export", "remoteBlockStore": "s3"}]})
    assert (verdict.messages, verdict.warnings) == ([], [])


def test_store_type_and_path_and_share_stores_are_immutable() -> None:
    local: list[dict[str, Any]] = [{"name": "default"}, {"name": "big", "path": "/data/store/block/big"}]
    old: dict[str, Any] = {"stores": {"local": local}, "shares": [{"name": "/export", "localBlockStore": "big"}]}
    new = {"stores": {"local": [{"name": "default", "type": "memory"},
                                {"name": "big", "path": "/data/store/block/b2"}]},
           "shares": [{"name": "/export", "localBlockStore": "default"}]}
    verdict = check(new, old=old)
    assert paths(verdict.messages) == ["spec.stores.local[0].type", "spec.stores.local[1].path",
                                       "spec.shares[0].localBlockStore"]
    assert all("immutable" in m for m in verdict.messages)
    # Adding a store or a share, or changing a mutable field, is fine.
    more = merge(old, {"stores": {"local": [*local, {"name": "new"}]},
                       "shares": [{"name": "/export", "localBlockStore": "big", "readOnly": True}]})
    assert check(more, old=old).allowed


def test_where_a_remote_store_keeps_its_blocks_is_immutable() -> None:
    """Another bucket or prefix (set on the store, or inherited from spec.s3.bucket) would have DittoFS read
    blocks evicted from local disk from where they are not; the endpoint and region may change (a renamed
    service, a fixed region)."""
    store = {"name": "s3", "credentialsSecretRef": {"name": "s3"}}
    old: dict[str, Any] = {"s3": {"bucket": "bkt", "credentialsSecretRef": {"secretName": "s3"}},
                           "stores": {"remote": [{**store, "prefix": "a/"}]}}
    for change, path in ((merge(old, {"stores": {"remote": [{**store, "prefix": "b/"}]}}), "stores.remote[0].prefix"),
                         (merge(old, {"stores": {"remote": [store]}}), "stores.remote[0].prefix"),
                         (merge(old, {"s3": {"bucket": "other"}}), "s3.bucket"),  # where the user changed it
                         (merge(old, {"stores": {"remote": [{**store, "prefix": "a/", "bucket": "bkt2"}]}}),
                          "stores.remote[0].bucket")):
        verdict = check(change, old=old)
        assert paths(verdict.messages) == [f"spec.{path}"], verdict.messages
        assert "DittoFS would no longer find them" in verdict.messages[0]
    inherited = check(merge(old, {"s3": {"bucket": "other"}}), old=old).messages[0]
    assert inherited.endswith("revert it, or keep this store where it is with bucket: 'bkt' on "
                              "spec.stores.remote[0]"), inherited
    assert "under prefix 'a/', now unset" in check(merge(old, {"stores": {"remote": [store]}}), old=old).messages[0]
    same = merge(old, {"stores": {"remote": [{**store, "prefix": "a/", "bucket": "bkt", "region": "eu-west-3",
                                              "endpoint": "https://s3.eu-west-3.amazonaws.com"}]}})
    assert check(same, old=old).allowed


def test_writing_out_the_default_path_a_store_already_uses_is_not_a_change() -> None:
    old: dict[str, Any] = {"stores": {"metadata": [{"name": "default"}, {"name": "fast"}],
                                      "local": [{"name": "default"}, {"name": "big"}]}}
    spelled = {"stores": {"metadata": [{"name": "default", "path": "/data/store/metadata/badger"},
                                       {"name": "fast", "path": "/data/store/metadata/fast"}],
                          "local": [{"name": "default", "path": "/data/store/block/blocks"},
                                    {"name": "big", "path": "/data/store/block/big"}]}}
    assert check(spelled, old=old).allowed
    assert check(old, old=spelled).allowed
    moved = merge(old, {"stores": {"metadata": [{"name": "default", "path": "/data/store/metadata/default"},
                                                {"name": "fast"}]}})
    assert paths(check(moved, old=old).messages) == ["spec.stores.metadata[0].path"]


def test_the_implicit_default_stores_are_immutable_too() -> None:
    # No stores list: the server has a default badger and a default fs store, at their default paths.
    implicit: dict[str, Any] = {}
    memory = {"stores": {"metadata": [{"name": "default", "type": "memory"}],
                         "local": [{"name": "default", "path": "/data/store/block/other"}]}}
    assert paths(check(memory, old=implicit).messages) == ["spec.stores.metadata[0].type",
                                                           "spec.stores.local[0].path"]
    # And back: dropping the lists brings the implicit stores, which differ from the declared ones.
    assert paths(check(implicit, old=memory).messages) == ["spec.stores.metadata", "spec.stores.local"]
    # Writing the implicit stores out, or adding one beside them, changes nothing.
    spelled = {"stores": {"metadata": [{"name": "default"}, {"name": "fast"}], "local": [{"name": "default"}]}}
    assert check(spelled, old=implicit).allowed
    assert check(implicit, old={"stores": {"local": [{"name": "default"}]}}).allowed


def test_the_api_tls_secret_must_exist_with_its_pair() -> None:
    spec = {"controlPlane": {"tls": {"secretName": "api-tls"}}}
    missing = check(spec, facts=dataclasses.replace(GOOD, secrets={"api-tls": None}))
    assert missing.allowed and paths(missing.warnings) == ["spec.controlPlane.tls.secretName"]
    assert 'create Secret "api-tls"; the pod cannot start' in missing.warnings[0]
    no_key = check(spec, facts=dataclasses.replace(GOOD, secrets={"api-tls": frozenset({"tls.crt", "ca.crt"})}))
    assert no_key.warnings == ['spec.controlPlane.tls.secretName: add key "tls.key" to Secret "api-tls"; the pod '
                               "cannot start"]
    fine = check(spec, facts=dataclasses.replace(GOOD, secrets={"api-tls": frozenset({"tls.crt", "tls.key"})}))
    assert (fine.messages, fine.warnings) == ([], [])


def test_mutual_tls_needs_a_client_certificate_for_the_operator() -> None:
    secrets = {"api-tls": frozenset({"tls.crt", "tls.key"}), "clients": frozenset({"ca.crt"}),
               "op": frozenset({"tls.crt", "tls.key"})}
    facts = dataclasses.replace(GOOD, secrets=secrets)
    lockout = check({"controlPlane": {"tls": {"secretName": "api-tls", "clientCaSecretName": "clients"}}},
                    facts=facts)
    assert paths(lockout.messages) == ["spec.controlPlane.tls.operatorClientSecretName"]
    assert "lock the operator out" in lockout.messages[0]
    stray = check({"controlPlane": {"tls": {"secretName": "api-tls", "operatorClientSecretName": "op"}}}, facts=facts)
    assert paths(stray.messages) == ["spec.controlPlane.tls.operatorClientSecretName"]
    full = {"controlPlane": {"tls": {"secretName": "api-tls", "clientCaSecretName": "clients",
                                     "operatorClientSecretName": "op"}}}
    assert (check(full, facts=facts).messages, check(full, facts=facts).warnings) == ([], [])
    no_ca = check(full, facts=dataclasses.replace(GOOD, secrets={**secrets, "clients": frozenset({"x"})}))
    assert no_ca.warnings == ['spec.controlPlane.tls.clientCaSecretName: add key "ca.crt" to Secret "clients"; the '
                              "pod cannot start"]


def test_network_peers_name_one_kind_of_source_with_valid_cidrs() -> None:
    verdict = check({"networkPolicy": {
        "apiFrom": [{}, {"cidr": "10.0.0.0/8", "pods": {"a": "b"}}],
        "metricsFrom": [{"pods": {}, "exceptCidrs": ["10.0.0.0/24"]}],
        "fileClients": [{"cidr": "10.300.0.0/16"}, {"cidr": "10.20.0.0/16", "exceptCidrs": ["10.21.0.0/24", "x/8"]},
                        {"cidr": "fd00::/8", "exceptCidrs": ["10.20.1.0/24"]}]}})
    assert paths(verdict.messages) == [
        "spec.networkPolicy.apiFrom[0]", "spec.networkPolicy.apiFrom[1]",
        "spec.networkPolicy.metricsFrom[0].exceptCidrs",
        "spec.networkPolicy.fileClients[0].cidr", "spec.networkPolicy.fileClients[1].exceptCidrs[0]",
        "spec.networkPolicy.fileClients[1].exceptCidrs[1]", "spec.networkPolicy.fileClients[2].exceptCidrs[0]"]
    assert "must lie strictly inside cidr 10.20.0.0/16" in verdict.messages[4]
    good = check({"networkPolicy": {"apiFrom": [{"namespaces": {}}], "fileClients": [
        {"cidr": "10.20.0.0/16", "exceptCidrs": ["10.20.9.0/24"]}, {"pods": {"app": "x"}, "namespaces": {"t": "1"}}]}})
    assert (good.messages, good.warnings) == ([], [])


def test_adapter_settings_are_checked_against_dittofs_ranges() -> None:
    verdict = check({"adapters": {"nfs": {"settings": {"minVersion": "4.1", "maxVersion": "3", "leaseTime": "5s"}},
                                  "smb": {"settings": {"minDialect": "SMB3.1.1", "maxDialect": "SMB2.0",
                                                       "sessionTimeout": "48h"}}}})
    assert paths(verdict.messages) == [
        "spec.adapters.nfs.settings.minVersion", "spec.adapters.smb.settings.minDialect",
        "spec.adapters.nfs.settings.leaseTime", "spec.adapters.smb.settings.sessionTimeout"]
    assert "outside DittoFS's range 10s to 3600s" in verdict.messages[2]
    bad_enum = check({"adapters": {"smb": {"settings": {"signing": "maybe"}}}})
    assert paths(bad_enum.messages) == ["spec.adapters.smb.settings.signing"]


def test_admin_username_other_than_admin_is_denied() -> None:
    verdict = check({"identity": {"admin": {"username": "root"}}})
    assert paths(verdict.messages) == ["spec.identity.admin.username"]
    assert "always bootstraps the account 'admin'" in verdict.messages[0]
    assert check({"identity": {"admin": {"username": "admin"}}}).allowed


def lengths(**by_secret: dict[str, int]) -> ClusterFacts:
    return ClusterFacts(storage_classes=GOOD.storage_classes, percona_served=True, secrets=SECRETS,
                        key_lengths=by_secret)


def test_a_jwt_secret_shorter_than_32_characters_is_denied_when_it_can_be_read() -> None:
    spec = {"identity": {"jwt": {"secretRef": {"name": "jwt", "key": "secret"}}}}
    verdict = check(spec, facts=lengths(jwt={"secret": 31}))
    assert paths(verdict.messages) == ["spec.identity.jwt.secretRef"]
    assert "needs at least 32 characters" in verdict.messages[0] and "openssl rand -hex 32" in verdict.messages[0]
    assert "31" not in verdict.messages[0]  # a denial never measures a Secret
    assert check(spec, facts=lengths(jwt={"secret": 32})).allowed
    assert check(spec).allowed  # unknown: allowed


def test_an_admin_password_dittofs_cannot_hash_is_denied_on_create_and_a_warning_after() -> None:
    """v0.29.0 creates the admin at first boot with bcrypt (8 to 72 bytes) and exits on any other length."""
    spec = {"identity": {"admin": {"passwordSecretRef": {"name": "jwt", "key": "secret"}}}}
    for bad in (7, 73):
        verdict = check(spec, facts=lengths(jwt={"secret": bad}))
        assert paths(verdict.messages) == ["spec.identity.admin.passwordSecretRef"], verdict.messages
        assert "needs 8 to 72 bytes for the admin password" in verdict.messages[0]
        assert not re.search(rf"\b{bad}\b", verdict.messages[0]), "a denial never measures a Secret"
    for fine in (8, 72):
        assert check(spec, facts=lengths(jwt={"secret": fine})).allowed
    # A running server created its admin long ago and ignores the value: warned, not refused.
    update = check(spec, facts=lengths(jwt={"secret": 5}), old=spec)
    assert update.allowed and any("spec.identity.admin.passwordSecretRef" in w and "new server" in w
                                  for w in update.warnings), update.warnings


def test_percona_changes_that_start_over_or_cannot_be_made_are_denied() -> None:
    on = {"percona": {"enabled": True, "image": "pg", "databaseName": "files", "storageSize": "20Gi",
                      "storageClassName": "fast", "postgresVersion": 16}}
    for change, path, words in [
        ({"databaseName": "other"}, "spec.percona.databaseName", 'new, empty database "other"'),
        ({"storageClassName": "standard"}, "spec.percona.storageClassName", "keep their class"),
        ({"storageSize": "10Gi"}, "spec.percona.storageSize", "set '20Gi' or more"),
        ({"postgresVersion": 15}, "spec.percona.postgresVersion", "do not downgrade"),
    ]:
        verdict = check(merge(on, {"percona": change}), old=on)
        assert paths(verdict.messages) == [path] and words in verdict.messages[0], verdict.messages
    grown = check(merge(on, {"percona": {"storageSize": "30Gi", "postgresVersion": 17}}), old=on)
    assert grown.allowed and any(w.startswith("spec.percona.postgresVersion: a major upgrade (16 -> 17) needs a "
                                              "PerconaPGUpgrade") for w in grown.warnings), grown.warnings
    # Turning Percona on, or off, starts from nothing: nothing to compare.
    assert check(merge(on, {"percona": {"databaseName": "other"}}), old={}).allowed


def test_the_reconciler_s_recheck_lets_a_stored_server_keep_what_an_update_may_keep() -> None:
    """The reconciler judges a stored object without its previous spec: a server created before the SQLite-path
    rule (or with Percona on and a long name) must not turn InvalidSpec at its next edit, which the webhook
    admitted with a warning."""
    old_path = server({"database": {"sqlite": {"path": "/var/lib/dittofs/cp.db"}}, "replicas": 0})
    assert not validate(old_path, None, GOOD).allowed  # a new server
    kept = validate(old_path, None, GOOD, stored=Stored(sqlite_path="/var/lib/dittofs/cp.db"))
    assert kept.allowed and [w.split(": ")[0] for w in kept.warnings] == ["spec.database.sqlite.path"]
    # A path changed while the webhook was off is judged like a new one; so is a server not rolled out yet.
    assert not validate(old_path, None, GOOD, stored=Stored(sqlite_path="/data/controlplane/cp.db")).allowed
    assert not validate(old_path, None, GOOD, stored=Stored()).allowed
    long_name = server({"percona": {"enabled": True, "image": "pg"}}, name="n" * 40)
    assert not validate(long_name, None, GOOD).allowed
    assert not validate(long_name, None, GOOD, stored=Stored()).allowed  # Percona turned on now
    assert validate(long_name, None, GOOD, stored=Stored(percona=True)).allowed


def test_a_user_password_bcrypt_cannot_take_is_denied() -> None:
    """DittoFS answers a bare 500 `Failed to hash password` to such a user (tests/contract/test_dittofs_client)."""
    users = {"users": [{"name": "alice", "passwordSecretRef": {"name": "admin", "key": "password"}}]}
    for bad in (7, 73):
        verdict = check(users, facts=lengths(admin={"password": bad}))
        assert paths(verdict.messages) == ["spec.users[0].passwordSecretRef"], verdict.messages
        assert "needs 8 to 72 bytes for the user's password, else it refuses the account" in verdict.messages[0]
        assert not re.search(rf"\b{bad}\b", verdict.messages[0]), "a denial never measures a Secret"
    assert check(users, facts=lengths(admin={"password": 8})).allowed


def test_an_empty_postgres_or_ldap_bind_value_is_denied() -> None:
    """DittoFS's config check stops every start on them (tests/contract/test_rendered_config.py)."""
    postgres = {"database": {"type": "postgres", "postgresSecretRef": {"name": "pg", "userKey": "login"}}}
    full = {"host": 9, "port": 4, "database": 6, "login": 6, "password": 0}  # an empty password is DittoFS's call
    assert check(postgres, facts=lengths(pg=full)).allowed
    for key, what in (("host", "PostgreSQL host"), ("database", "PostgreSQL database"), ("login", "PostgreSQL user")):
        verdict = check(postgres, facts=lengths(pg={**full, key: 0}))
        assert paths(verdict.messages) == ["spec.database.postgresSecretRef"], verdict.messages
        assert f'Secret "pg" key "{key}": DittoFS needs a value that is not empty for the {what}' \
            in verdict.messages[0]
        # An update that moves to such a Secret is denied; one that keeps it is not (the ratchet).
        assert not check(postgres, facts=lengths(pg={**full, key: 0}), old=merge(postgres, {
            "database": {"postgresSecretRef": {"name": "pg-old"}}})).allowed
        assert check(postgres, facts=lengths(pg={**full, key: 0}), old=postgres).allowed
    # Percona's own Secret is used instead (a warning says so): the user's is not checked.
    percona = merge(postgres, {"percona": {"enabled": True}})
    assert check(percona, facts=lengths(pg={**full, "host": 0})).allowed
    ldap = {"identity": {"ldap": {"url": "ldaps://dc.example.com", "baseDn": "dc=example", "bindDn": "cn=svc",
                                  "bindPasswordSecretRef": {"name": "admin", "key": "password"}}}}
    verdict = check(ldap, facts=lengths(admin={"password": 0}))
    assert paths(verdict.messages) == ["spec.identity.ldap.bindPasswordSecretRef"]
    assert "refuses an anonymous bind" in verdict.messages[0]
    assert check(ldap, facts=lengths(admin={"password": 1})).allowed


@pytest.mark.parametrize("path", ["/tmp/cp.db", "/data/controlplane", "/data/controlplane/",
                                  "/data/controlplane-x/cp.db", "/data/controlplane/../cp.db", "/var/lib/cp.db"])
def test_a_sqlite_database_off_the_control_plane_volume_is_denied(path: str) -> None:
    """DittoFS cannot create it there (exit at start), or keeps its users and shares on the container's
    filesystem, gone with the next restart."""
    verdict = check({"database": {"sqlite": {"path": path}}})
    assert paths(verdict.messages) == ["spec.database.sqlite.path"]
    assert "use e.g. /data/controlplane/controlplane.db" in verdict.messages[0]
    # An existing server is not locked out of its updates (warned), unless it moves the database again.
    kept = check({"database": {"sqlite": {"path": path}}, "logging": {"level": "DEBUG"}},
                 old={"database": {"sqlite": {"path": path}}})
    assert kept.allowed and [w.split(": ")[0] for w in kept.warnings] == ["spec.database.sqlite.path"]
    assert not check({"database": {"sqlite": {"path": path}}},
                     old={"database": {"sqlite": {"path": "/other/cp.db"}}}).allowed


def test_a_sqlite_database_on_the_control_plane_volume_is_allowed() -> None:
    for path in ("/data/controlplane/controlplane.db", "/data/controlplane/sub/cp.db"):
        assert check({"database": {"sqlite": {"path": path}}}).allowed
    # Not used with PostgreSQL: not checked.
    assert check({"database": {"type": "postgres", "sqlite": {"path": "/tmp/x.db"},
                               "postgresSecretRef": {"name": "pg"}}}).allowed


def test_snapshot_policy_interval_below_a_minute_is_denied() -> None:
    verdict = check({"shares": [{"name": "/export", "snapshotPolicy": {"interval": "30s"}},
                                {"name": "/b", "snapshotPolicy": {"interval": "@hourly"}}]})
    assert paths(verdict.messages) == ["spec.shares[0].snapshotPolicy.interval"]
    malformed = check({"shares": [{"name": "/b", "snapshotPolicy": {"interval": "daily", "namePrefix": "a b"}}]})
    assert paths(malformed.messages) == ["spec.shares[0].snapshotPolicy.interval",
                                         "spec.shares[0].snapshotPolicy.namePrefix"]
    assert "or @hourly, @daily, @weekly" in malformed.messages[0]


# -- identity providers (issue 14, item 4) -------------------------------------------------------------------
IDENTITY_SECRETS: dict[str, frozenset[str] | None] = {
    **SECRETS, "bind": frozenset({"password"}), "ldap-ca": frozenset({"ca.crt"}),
    "krb": frozenset({"keytab", "krb5.conf"}), "machine": frozenset({"password"}),
}
IDENTITY_FACTS = dataclasses.replace(GOOD, secrets=IDENTITY_SECRETS)
LDAP = {"url": "ldaps://dc.example.com:636", "baseDn": "DC=example,DC=com", "bindDn": "CN=svc,DC=example,DC=com",
        "bindPasswordSecretRef": {"name": "bind", "key": "password"}}
KERBEROS = {"servicePrincipal": "nfs/files.example.com@EXAMPLE.COM",
            "keytabSecretRef": {"name": "krb", "key": "keytab"},
            "krb5ConfSecretRef": {"name": "krb", "key": "krb5.conf"}}


def test_ldap_and_kerberos_with_their_secrets_are_allowed_without_warnings() -> None:
    verdict = check({"identity": {"ldap": {**LDAP, "caSecretRef": {"name": "ldap-ca", "key": "ca.crt"}},
                                  "kerberos": {**KERBEROS, "netbiosDomain": "EXAMPLE", "machineAccount": {
                                      "accountName": "DITTOFS$",
                                      "secretRef": {"name": "machine", "key": "password"}}}}},
                    IDENTITY_FACTS)
    assert verdict.allowed and verdict.warnings == [], verdict


def test_plaintext_ldap_needs_start_tls_or_an_explicit_opt_in() -> None:
    plain = {**LDAP, "url": "ldap://dc.example.com:389"}
    denied = check({"identity": {"ldap": plain}}, IDENTITY_FACTS)
    assert not denied.allowed and paths(denied.messages) == ["spec.identity.ldap.url"]
    assert "clear text" in denied.messages[0] and "startTls: true" in denied.messages[0]
    assert check({"identity": {"ldap": {**plain, "startTls": True}}}, IDENTITY_FACTS).allowed
    assert check({"identity": {"ldap": {**plain, "allowPlaintext": True}}}, IDENTITY_FACTS).allowed
    ignored = check({"identity": {"ldap": {**LDAP, "startTls": True}}}, IDENTITY_FACTS)
    assert ignored.allowed and paths(ignored.warnings) == ["spec.identity.ldap.startTls"]


@pytest.mark.parametrize(("patch", "path", "fragment"), [
    ({"url": "http://dc:389"}, "spec.identity.ldap.url", "ldaps://host"),
    ({"userAttribute": "sam account"}, "spec.identity.ldap.userAttribute", "attribute name"),
    ({"idMapping": "ad"}, "spec.identity.ldap.idMapping", "rfc2307"),
    ({"bindPasswordSecretRef": None}, "spec.identity.ldap.bindPasswordSecretRef", ""),
])
def test_ldap_field_errors_name_the_field(patch: dict[str, Any], path: str, fragment: str) -> None:
    verdict = check({"identity": {"ldap": {**LDAP, **patch}}}, IDENTITY_FACTS)
    assert not verdict.allowed and path in paths(verdict.messages), verdict.messages
    assert fragment in " ".join(verdict.messages)


def test_kerberos_realm_must_be_known_and_agree_with_the_principal() -> None:
    bare = check({"identity": {"kerberos": {**KERBEROS, "servicePrincipal": "nfs/files.example.com"}}}, IDENTITY_FACTS)
    assert not bare.allowed and paths(bare.messages) == ["spec.identity.kerberos.realm"]
    other = check({"identity": {"kerberos": {**KERBEROS, "realm": "OTHER.COM"}}}, IDENTITY_FACTS)
    assert not other.allowed and "differs from the service principal's realm" in other.messages[0]
    assert check({"identity": {"kerberos": {**KERBEROS, "realm": "EXAMPLE.COM"}}}, IDENTITY_FACTS).allowed
    dotted = check({"identity": {"kerberos": {**KERBEROS, "netbiosDomain": "example.com"}}}, IDENTITY_FACTS)
    assert paths(dotted.messages) == ["spec.identity.kerberos.netbiosDomain"]
    assert "single label" in dotted.messages[0]


def test_a_machine_account_needs_the_netbios_domain() -> None:
    machine = {"accountName": "DITTOFS$", "secretRef": {"name": "machine", "key": "password"}}
    verdict = check({"identity": {"kerberos": {**KERBEROS, "machineAccount": machine}}}, IDENTITY_FACTS)
    assert not verdict.allowed and paths(verdict.messages) == ["spec.identity.kerberos.netbiosDomain"]


def test_identity_secrets_are_checked_and_listed_as_required() -> None:
    spec = {"identity": {"ldap": {**LDAP, "caSecretRef": {"name": "ldap-ca", "key": "ca.crt"}}, "kerberos": KERBEROS}}
    verdict = check(spec, GOOD)  # none of them exists
    assert verdict.allowed
    assert sorted(paths(verdict.warnings)) == ["spec.identity.kerberos.keytabSecretRef",
                                               "spec.identity.kerberos.krb5ConfSecretRef",
                                               "spec.identity.ldap.bindPasswordSecretRef",
                                               "spec.identity.ldap.caSecretRef"]
    keytab_only = {**IDENTITY_SECRETS, "krb": frozenset({"keytab"})}
    wrong_key = check(spec, dataclasses.replace(IDENTITY_FACTS, secrets=keytab_only))
    assert paths(wrong_key.warnings) == ["spec.identity.kerberos.krb5ConfSecretRef"]
    assert 'add key "krb5.conf" to Secret "krb"' in wrong_key.warnings[0]
    assert required_secrets(DittoServer.model_validate(server(spec)).spec) == {
        "bind": {"password"}, "ldap-ca": {"ca.crt"}, "krb": {"keytab", "krb5.conf"}}


@pytest.mark.parametrize(("spec", "message"), [
    ({"identity": {"jwt": {"accessTokenDuration": "2562048h"}}},
     "spec.identity.jwt.accessTokenDuration: '2562048h' is longer than the longest duration DittoFS can read "
     "(2562047h)"),
    ({"identity": {"kerberos": {"servicePrincipal": "nfs/h@R", "keytabSecretRef": {"name": "kt", "key": "k"},
                                "maxClockSkew": "9999999999h"}}},
     "spec.identity.kerberos.maxClockSkew: '9999999999h' is longer than the longest duration DittoFS can read "
     "(2562047h)"),
    ({"shares": [{"name": "/a", "snapshotPolicy": {"interval": "2562047h48m"}}]},
     "spec.shares[0].snapshotPolicy.interval: '2562047h48m' is longer than the longest duration DittoFS can read "
     "(2562047h)"),
    ({"identity": {"jwt": {"accessTokenDuration": "999ms"}}},
     'spec.identity.jwt.accessTokenDuration: "999ms" is shorter than a minute; every client, the operator too, '
     "would log in again all the time: use 1m or more (default 15m)"),
    ({"metrics": {"enabled": True, "path": "/my metrics"}},
     "spec.metrics.path: must be a URL path such as /metrics (letters, digits and - . _ ~ /): DittoFS registers it "
     "as a Go HTTP route, and any other character stops it at start (got '/my metrics')"),
])
def test_values_dittofs_would_crash_on_or_that_lock_out_its_clients_are_denied(spec: dict[str, Any],
                                                                               message: str) -> None:
    verdict = check(spec)
    assert not verdict.allowed and message in verdict.messages, verdict.messages


def test_the_longest_go_durations_and_a_plain_metrics_path_are_allowed() -> None:
    verdict = check({"identity": {"jwt": {"accessTokenDuration": "1m", "refreshTokenDuration": "2562047h"}},
                     "metrics": {"enabled": True, "path": "/a/b-c_d.e~f"},
                     "shares": [{"name": "/a", "snapshotPolicy": {"interval": "@daily", "ttl": "2562047h"}}]})
    assert verdict.allowed, verdict.messages


@pytest.mark.parametrize(("spec", "field", "fragment"), [
    ({"podLabels": {"bad key!": "x"}}, "spec.podLabels[bad key!]", "is not a valid key"),
    ({"podLabels": {"team": "x" * 64}}, "spec.podLabels[team]", "is not a label value"),
    ({"nodeSelector": {"zone": "a b"}}, "spec.nodeSelector[zone]", "is not a label value"),
    ({"nodeSelector": {"Example.com/zone": "a"}}, "spec.nodeSelector[Example.com/zone]", "is not a valid key"),
    ({"podAnnotations": {"-bad": "anything goes in a value"}}, "spec.podAnnotations[-bad]", "is not a valid key"),
    ({"service": {"annotations": {"a/b/c": "v"}}}, "spec.service.annotations[a/b/c]", "is not a valid key"),
    ({"metrics": {"serviceMonitor": {"labels": {"release": "prom etheus"}}}},
     "spec.metrics.serviceMonitor.labels[release]", "is not a label value"),
    ({"networkPolicy": {"apiFrom": [{"namespaces": {"bad key!": "x"}}]}},
     "spec.networkPolicy.apiFrom[0].namespaces[bad key!]", "is not a valid key"),
    ({"priorityClassName": "Not_Valid"}, "spec.priorityClassName", "is not a PriorityClass name"),
    ({"service": {"loadBalancerSourceRanges": ["not-a-cidr"]}}, "spec.service.loadBalancerSourceRanges[0]",
     "is not a CIDR"),
    ({"resources": {"requests": {"cpu": "lots"}}}, "spec.resources.requests[cpu]", "is not a quantity"),
    ({"resources": {"limits": "2Gi"}}, "spec.resources.limits", "must be a map"),
    ({"podSecurityContext": {"sysctls": "abc"}}, "spec.podSecurityContext.sysctls", "list of {name, value}"),
    ({"podSecurityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": 1024}]}},
     "spec.podSecurityContext.sysctls", "list of {name, value}"),
    ({"networkPolicy": {"fileClients": [{"cidr": "10.0.0.0/8", "exceptCidrs": ["10.0.0.0/8"]}]}},
     "spec.networkPolicy.fileClients[0].exceptCidrs[0]", "strictly inside"),
])
def test_values_the_apiserver_would_refuse_on_a_child_are_denied_here(spec: dict[str, Any], field: str,
                                                                      fragment: str) -> None:
    verdict = check(spec)
    assert not verdict.allowed
    assert [m for m in verdict.messages if m.startswith(f"{field}: ") and fragment in m], verdict.messages


def test_ordinary_kubernetes_values_are_allowed() -> None:
    verdict = check({
        "podLabels": {"app.kubernetes.io/part-of": "files", "tier": ""},
        "nodeSelector": {"kubernetes.io/arch": "amd64", "topology.kubernetes.io/zone": "eu-west-1a"},
        "podAnnotations": {"prometheus.io/scrape": "true", "note": "any text: even spaces"},
        "priorityClassName": "system-cluster-critical",
        "service": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["203.0.113.0/24", "2001:db8::/32"]},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": 2147483648}},
        "podSecurityContext": {"sysctls": [{"name": "net.ipv4.tcp_keepalive_time", "value": "600"}]},
        "networkPolicy": {"fileClients": [{"cidr": "10.0.0.0/8", "exceptCidrs": ["10.1.0.0/16"]}]},
    })
    assert verdict.allowed, verdict.messages


@pytest.mark.parametrize(("spec", "message"), [
    ({"shares": [{"name": "/a", "quota": "500m"}]},
     "spec.shares[0].quota: '500m' is less than one byte ('m' is milli); use e.g. 500Mi or 10Gi"),
    ({"stores": {"local": [{"name": "default", "maxSize": "0.5"}]}},
     "spec.stores.local[0].maxSize: '0.5' is less than one byte ('m' is milli); use e.g. 500Mi or 10Gi"),
    ({"stores": {"metadata": [{"name": "default"}, {"name": "m2", "path": "/data/store/metadata//badger"}]}},
     "spec.stores.metadata[1].path: write it as /data/store/metadata/badger (got '/data/store/metadata//badger')"),
    ({"stores": {"local": [{"name": "default"}, {"name": "b", "path": "/data/store/block/."}]}},
     "spec.stores.local[1].path: must be a directory under /data/store/block (the volume mounted there keeps the "
     "data); got '/data/store/block/.'"),
])
def test_sizes_under_a_byte_and_unnormalized_store_paths_are_denied(spec: dict[str, Any], message: str) -> None:
    verdict = check(spec)
    assert message in verdict.messages, verdict.messages


@pytest.mark.parametrize(("spec", "message"), [
    ({"metrics": {"enabled": True, "serviceMonitor": {"interval": "1.5m"}}},
     "spec.metrics.serviceMonitor.interval: must be a Prometheus duration such as 30s, 1m or 1m30s (whole numbers; "
     "units y, w, d, h, m, s, ms in that order) (got '1.5m')"),
    ({"controlPlane": {"tls": {"secretName": "t", "certificate": {"issuerRef": {"name": "ca"}, "duration": "10m"}}}},
     "spec.controlPlane.tls.certificate.duration: '10m' is shorter than cert-manager's minimum of 1h"),
    ({"controlPlane": {"tls": {"secretName": "t", "certificate": {"issuerRef": {"name": "ca"},
                                                                  "renewBefore": "1m"}}}},
     "spec.controlPlane.tls.certificate.renewBefore: '1m' is shorter than cert-manager's minimum of 5m"),
    ({"controlPlane": {"tls": {"secretName": "t", "certificate": {"issuerRef": {"name": "ca"}, "duration": "2h",
                                                                  "renewBefore": "2h"}}}},
     "spec.controlPlane.tls.certificate.renewBefore: '2h' must be shorter than the duration (2h)"),
])
def test_values_another_operator_s_webhook_would_refuse_are_denied_here(spec: dict[str, Any], message: str) -> None:
    verdict = check(spec)
    assert message in verdict.messages, verdict.messages


def test_a_name_too_long_for_percona_s_pods_is_denied_when_percona_is_turned_on() -> None:
    percona = {"percona": {"enabled": True, "image": "pg:16"}}
    long_name, fits = "a" * 29, "a" * 28
    verdict = validate(server(percona, name=long_name), None, GOOD)
    assert [m for m in verdict.messages if m.startswith("spec.percona.enabled: ")] == [
        f'spec.percona.enabled: the server\'s name "{long_name}" has 29 characters; with Percona it may have at '
        f"most 28, as Percona's pods carry {long_name}-postgres-instance1-<hash> in a 63-character label: use a "
        "shorter name"], verdict.messages
    assert validate(server(percona, name=fits), None, GOOD).allowed
    # Turned on by an update: denied too; already on (a server from before this rule): its updates still pass.
    assert not validate(server(percona, name=long_name), server({}, name=long_name), GOOD).allowed
    changed = merge(percona, {"replicas": 1, "percona": {"replicas": 2}})
    assert validate(server(changed, name=long_name), server(percona, name=long_name), GOOD).allowed


def test_repeated_grants_are_one_error_per_principal_and_an_exception_outside_its_block_says_so() -> None:
    grant = {"user": "ghost", "level": "read"}
    verdict = check({"shares": [{"name": "/x", "permissions": [grant] * 5000}]})
    assert verdict.messages == [
        'spec.shares[0].permissions[0].user: user "ghost" is not declared in spec.users; declare it or remove this '
        'grant',
        'spec.shares[0].permissions[0]: user "ghost" has 5000 grants on this share; keep one']
    outside = check({"networkPolicy": {"fileClients": [{"cidr": "10.0.0.0/8", "exceptCidrs": ["11.0.0.0/8"]}]}})
    assert outside.messages == ["spec.networkPolicy.fileClients[0].exceptCidrs[0]: '11.0.0.0/8' must lie strictly "
                                "inside cidr 10.0.0.0/8 (an exception outside the block excepts nothing; Kubernetes "
                                "refuses it)"]


def test_name_in_the_s3_credentials_reference_points_to_secret_name() -> None:
    verdict = check({"s3": {"credentialsSecretRef": {"name": "s3"}}})
    assert any(m.startswith("spec.s3.credentialsSecretRef.name: unknown field; spec.s3.credentialsSecretRef names "
                            "its Secret by secretName") for m in verdict.messages), verdict.messages


def test_a_review_with_thousands_of_schema_errors_describes_fifty_and_counts_the_rest() -> None:
    """Only a direct caller can send one (the apiserver prunes unknown fields): it must not hold the event loop
    while each gets its "did you mean", nor get back an answer of megabytes."""
    from dittoctl.api.rules import MAX_ERRORS

    verdict = check({f"unknown{i}": i for i in range(5000)})
    assert len(verdict.messages) == MAX_ERRORS + 1
    assert verdict.messages[-1] == (f"spec: and {5000 - MAX_ERRORS} more problems like these; fix the ones above "
                                    "first")


@settings(deadline=None)  # beside CI's control plane a stall is not a failure
@given(broken=st.frozensets(st.lists(st.sampled_from(["a", "b", "c", 0, 1]), max_size=3).map(tuple), min_size=1,
                            max_size=4),
       path=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(".".join))
def test_usable_answers_as_a_scan_of_every_broken_path_would(broken: frozenset[tuple[Any, ...]], path: str) -> None:
    from dittoctl.api.models import DittoServerSpec
    from dittoctl.api.parsed import ParsedSpec

    want = tuple(path.split("."))
    scanned = not any(loc[:min(len(loc), len(want))] == want[:min(len(loc), len(want))] for loc in broken)
    spec = DittoServerSpec.model_validate({"storage": {"metadataSize": "1Gi"}})
    assert ParsedSpec(spec=spec, broken=broken).usable(path) == scanned


def test_an_update_that_replaces_a_default_without_naming_it_is_warned() -> None:
    """Declaring the implicit /export share (to give it a quota) turned its read-write for every client into the
    list item's default, none; adding spec.s3 moved the region of stores that named none."""
    declared = check({"shares": [{"name": "/export", "quota": "10Gi"}]}, old={})
    assert declared.allowed and paths(declared.warnings) == ["spec.shares[0].defaultPermission"], declared.warnings
    assert declared.warnings[0] == ("spec.shares[0].defaultPermission: 'none' for clients without a grant "
                                    "(implicit, /export was read-write)")
    same = check({"shares": [{"name": "/export", "defaultPermission": "read-write"}]}, old={})
    assert same.allowed and same.warnings == []
    remote = {"stores": {"remote": [{"name": "s3", "bucket": "bkt", "credentialsSecretRef": {"name": "k"}}]}}
    moved = check(merge(remote, {"s3": {"credentialsSecretRef": {"secretName": "k"}}}), old=remote)
    assert moved.allowed and paths(moved.warnings)[0] == "spec.stores.remote[0].region", moved.warnings
    assert moved.warnings[0] == ("spec.stores.remote[0].region: now 'eu-west-1' (was 'us-east-1'); set it on the "
                                 "store to keep it")


@pytest.mark.parametrize(("spec", "path", "fragment"), [
    ({"affinity": {"nodeAfinity": {}}}, "spec.affinity.nodeAfinity", "unknown field of a Kubernetes Affinity"),
    ({"tolerations": [{"key": "k", "tolerationSeconds": "300"}]}, "spec.tolerations[0].tolerationSeconds",
     "must be an integer (got a string \"300\")"),
    ({"securityContext": {"capabilities": "NET_ADMIN"}}, "spec.securityContext.capabilities", "must be an object"),
    ({"topologySpreadConstraints": [{"maxSkew": "1", "topologyKey": "k", "whenUnsatisfiable": "DoNotSchedule"}]},
     "spec.topologySpreadConstraints[0].maxSkew", "must be an integer"),
    ({"resources": {"request": {"cpu": "1"}}}, "spec.resources.request", "unknown field"),
    ({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "podAffinityTerm": {"topologyKey": "k", "labelSelector": {"matchLabels": {"a": 1}}}}]}}},
     "spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm."
     "labelSelector.matchLabels[a]", "must be a string"),
])
def test_pass_through_pod_fields_are_checked_against_kubernetes_own_types(spec: dict[str, Any], path: str,
                                                                           fragment: str) -> None:
    """The CRD keeps them free-form: stored with a typo or a string for an integer, the StatefulSet's apply failed
    on every pass and the server stopped converging."""
    verdict = check(spec)
    matching = [e for e in verdict.messages if e.startswith(path + ": ")]
    assert not verdict.allowed and matching, verdict.messages
    assert fragment in matching[0]


def test_valid_pass_through_pod_fields_are_allowed() -> None:
    assert check({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                            "labelSelector": {"matchLabels": {"app": "x"}}}}]}},
                  "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30}],
                  "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                                                 "whenUnsatisfiable": "ScheduleAnyway"}],
                  "securityContext": {"capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True},
                  "resources": {"requests": {"cpu": 1, "memory": "1Gi"}, "limits": {"memory": "2Gi"}}}).allowed


def test_a_badger_store_renamed_in_place_is_denied() -> None:
    """A new store in the directory of one leaving the spec: DittoFS keeps the old badger directory locked
    until it restarts and reopens it at every start, so the new store's creation failed for ever."""
    old: dict[str, Any] = {"stores": {"metadata": [{"name": "meta1"}]},
                           "shares": [{"name": "/a", "metadataStore": "meta1"}]}
    renamed = {"stores": {"metadata": [{"name": "meta2", "path": "/data/store/metadata/meta1"}]},
               "shares": [{"name": "/b", "metadataStore": "meta2"}]}
    verdict = check(renamed, old=old)
    assert paths(verdict.messages) == ["spec.stores.metadata[0].path"], verdict.messages
    assert 'in or around the directory of store "meta1", which leaves the spec' in verdict.messages[0]
    # The implicit default replaced by a store named like its directory.
    badger = {"stores": {"metadata": [{"name": "badger"}]}, "shares": [{"name": "/b", "metadataStore": "badger"}]}
    assert paths(check(badger, old={}).messages) == ["spec.stores.metadata[0]"]
    # Kept, or beside it, or a memory store leaving: fine.
    assert check({**renamed, "stores": {"metadata": [{"name": "meta1"}, {"name": "meta2"}]}}, old=old).allowed
    assert check(merge(renamed, {"stores": {"metadata": [{"name": "meta2"}]}}), old=old).allowed
    assert check(badger, old={"stores": {"metadata": [{"name": "default", "type": "memory"}]}}).allowed


def test_a_read_only_share_stays_read_only() -> None:
    """DittoFS v0.29.0 keeps refusing a read-only share's writes once it was loaded read-only (its store option is
    never cleared); making a share read-only is allowed (enforced from DittoFS's next start, a pod roll)."""
    ro, rw = [{"name": "/export", "readOnly": True}], [{"name": "/export", "readOnly": False}]
    assert check({"shares": ro}, old={"shares": rw}).allowed
    back = check({"shares": rw}, old={"shares": ro})
    assert back.messages == ['spec.shares[0].readOnly: share "/export" is read-only for good: DittoFS keeps refusing '
                             "its writes once it was read-only; declare a new share for writes, or revert the change"]
    assert check({"shares": [*ro, {"name": "/new"}]}, old={"shares": ro}).allowed


def test_a_users_missing_password_secret_warns_in_full_that_the_file_service_waits() -> None:
    """The warning was cut mid-sentence ('... (the ser...'), and named only the user, while every file-service
    change waits for the Secret."""
    spec = {"users": [{"name": "carol", "passwordSecretRef": {"name": "carol-password", "key": "password"}}]}
    verdict = check(spec, ClusterFacts(frozenset(), True, {"carol-password": None}))
    assert verdict.warnings == ['spec.users[0].passwordSecretRef: create Secret "carol-password"; no file-service '
                                "change is applied until then"]


def pw(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "passwordSecretRef": {"name": "alice-pw", "key": "password"}, **extra}


def test_uids_and_gids_are_unique_and_clear_of_dittofs_system_groups() -> None:
    """DittoFS keeps them unique: a repeat failed only when provisioned, as a bare 500 or 'already exists'."""
    verdict = check({"users": [pw("alice", uid=1000), pw("bob", uid=1000)],
                     "groups": [{"name": "team", "gid": 2000}, {"name": "crew", "gid": 2000},
                                {"name": "devs", "gid": 1000}]}, WITH_ALICE)
    assert sorted(verdict.messages) == [
        "spec.groups[1].gid: gid 2000 is also spec.groups[0]'s; DittoFS keeps gids unique (choose another)",
        'spec.groups[2].gid: gid 1000 is DittoFS\'s system group "users", and gids are unique there; choose another, '
        "e.g. 2000",
        "spec.users[1].uid: uid 1000 is also spec.users[0]'s; DittoFS keeps uids unique (choose another)"]


def test_a_user_or_group_renamed_with_its_id_is_done_in_two_steps() -> None:
    """The operator creates before it deletes, and DittoFS refuses the id while the old name holds it: the change
    was stuck at Provisioned=False ('User already exists')."""
    old = {"users": [pw("bob", uid=1001)], "groups": [{"name": "team", "gid": 2000}]}
    renamed = check({"users": [pw("robert", uid=1001)], "groups": [{"name": "staff", "gid": 2000}]}, WITH_ALICE,
                    old=old)
    assert sorted(renamed.messages) == [
        'spec.groups[0].gid: gid 2000 is still "team"\'s, which leaves spec.groups in this change; DittoFS refuses '
        'it until that one is deleted: remove "team" first, then add "staff"',
        'spec.users[0].uid: uid 1001 is still "bob"\'s, which leaves spec.users in this change; DittoFS refuses it '
        'until that one is deleted: remove "bob" first, then add "robert"']
    assert check({"users": [], "groups": []}, WITH_ALICE, old=old).allowed
    assert check({"users": [pw("robert", uid=1001)], "groups": [{"name": "staff", "gid": 2000}]}, WITH_ALICE,
                 old={"users": [], "groups": []}).allowed


def test_a_share_leaving_the_spec_is_a_warning() -> None:
    """The next pass stops serving it (deleted in DittoFS, or disabled while it has snapshots); an edit that
    lists shares where the implicit /export stood, or renames one, said nothing of it (a data-loss review)."""
    implicit = check({"shares": [{"name": "/projects"}]}, old={})
    assert implicit.allowed and implicit.warnings == [
        'spec.shares: "/export" (the implicit default share) leaves the spec: DittoFS stops serving it; its files '
        'stay']
    renamed = check({"shares": [{"name": "/b"}]}, old={"shares": [{"name": "/a"}]})
    assert renamed.warnings == ['spec.shares: "/a" leaves the spec: DittoFS stops serving it, its clients lose the '
                                'mount; its files stay']
    # Written another way, the same share stays (DittoFS keys shares by one leading slash).
    assert check({"shares": [{"name": "//a"}]}, old={"shares": [{"name": "/a"}]}).warnings == []
    kept = {"shares": [{"name": "/export", "defaultPermission": "read-write"}, {"name": "/b"}]}
    assert check(kept, old={}).warnings == []
    # One the operator does not own (made by hand, reported NotOwned) it never touches: no warning.
    owned = {**server({"shares": [{"name": "/a"}, {"name": "/c"}]}), "status": {"provisioned": ["share:/a"]}}
    verdict = validate(server({"shares": [{"name": "/b"}]}), owned, GOOD)
    assert [w.split(":")[1] for w in verdict.warnings] == [' "/a" leaves the spec'], verdict.warnings
    long = check({"shares": [{"name": "/b"}]}, old={"shares": [{"name": "/" + "a" * 250}]})
    assert len(long.warnings) == 1 and len(long.warnings[0]) <= MAX_WARNING
