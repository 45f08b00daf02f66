"""The shared pydantic models: defaults, constraints and the deprecated alias."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dittoctl.api.models import DEFAULT_GRACE_SECONDS, DittoServerSpec
from dittoctl.api.quantity import parse_quantity


def spec(**extra: Any) -> DittoServerSpec:
    return DittoServerSpec.model_validate({"storage": {"metadataSize": "1Gi"}, **extra})


def test_defaults_match_the_spec() -> None:
    s = spec()
    assert s.image == "marmos91c/dittofs:v0.29.0"
    assert (s.replicas, s.service.type, s.database.type) == (1, "ClusterIP", "sqlite")
    assert (s.adapters.nfs.enabled, s.adapters.nfs.port) == (True, 12049)
    assert (s.adapters.smb.enabled, s.adapters.smb.port) == (False, 1445)
    assert s.control_plane.port == 8080
    assert (s.metrics.enabled, s.metrics.port, s.metrics.path) == (False, 9090, "/metrics")
    assert s.storage.effective_content_size == "5Gi"
    assert s.storage.control_plane_size == "1Gi"
    assert s.grace_seconds == DEFAULT_GRACE_SECONDS == 105
    assert (s.percona.cr_version, s.percona.postgres_version, s.percona.database_name) == ("2.8.0", 16, "dittofs")
    assert s.percona.backup.full_schedule == "0 2 * * *"
    assert s.identity.jwt.access_token_duration == "15m"


def test_cache_size_is_an_alias_of_content_size_only_when_unset() -> None:
    assert spec(storage={"metadataSize": "1Gi", "cacheSize": "7Gi"}).storage.effective_content_size == "7Gi"
    both = spec(storage={"metadataSize": "1Gi", "cacheSize": "7Gi", "contentSize": "9Gi"})
    assert both.storage.effective_content_size == "9Gi"


@pytest.mark.parametrize(("patch", "loc"), [
    ({"replicas": 2}, ("replicas",)),
    ({"storage": {}}, ("storage", "metadataSize")),
    ({"storage": {"metadataSize": "lots"}}, ("storage", "metadataSize")),
    ({"storage": {"metadataSize": "0"}}, ("storage", "metadataSize")),
    ({"logging": {"level": "TRACE"}}, ("logging", "level")),
    ({"adapters": {"nfs": {"port": 70000}}}, ("adapters", "nfs", "port")),
    ({"percona": {"backup": {"fullSchedule": "every day"}}}, ("percona", "backup", "fullSchedule")),
    ({"percona": {"databaseName": "Ditto-FS"}}, ("percona", "databaseName")),
    ({"percona": {"replicas": 6}}, ("percona", "replicas")),
    ({"identity": {"jwt": {"accessTokenDuration": "15 minutes"}}}, ("identity", "jwt", "accessTokenDuration")),
    ({"terminationGracePeriodSeconds": 10}, ("terminationGracePeriodSeconds",)),
    ({"service": {"type": "ExternalName"}}, ("service", "type")),
    ({"imagePullPolicy": "Sometimes"}, ("imagePullPolicy",)),
    ({"typo": True}, ("typo",)),
])
def test_invalid_fields_are_reported_at_their_path(patch: dict[str, Any], loc: tuple[str, ...]) -> None:
    data: dict[str, Any] = {"storage": {"metadataSize": "1Gi"}}
    data.update(patch)
    with pytest.raises(ValidationError) as info:
        DittoServerSpec.model_validate(data)
    assert loc in [tuple(str(p) for p in e["loc"]) for e in info.value.errors()]


@pytest.mark.parametrize(("text", "value"), [("1Gi", 2**30), ("500M", 500 * 10**6), ("1e3", 1000),
                                              ("100m", 0.1), ("2", 2), ("1Ei", 2**60), ("2E", 2 * 10**18),
                                              ("1E3", 1000)])
def test_quantities(text: str, value: float) -> None:
    assert float(parse_quantity(text)) == pytest.approx(value)


def test_bad_quantity_names_the_form() -> None:
    with pytest.raises(ValueError, match="Kubernetes quantity"):
        parse_quantity("5 GB")


@pytest.mark.parametrize("text", ["8Ei", "1e999999999", "-1e30", "9" * 40 + "Ei"])
def test_a_quantity_beyond_int64_is_refused_before_anyone_makes_it_an_int(text: str) -> None:
    """int(Decimal("1e999999999")) takes minutes: a webhook or reconciler handed one would hang."""
    with pytest.raises(ValueError, match="too large: a quantity must be below 8Ei"):
        parse_quantity(text)
