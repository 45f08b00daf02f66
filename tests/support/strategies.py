"""Hypothesis strategies for DittoServer specs, cluster facts and arbitrary JSON.

Shared by the rule tests (tests/unit/test_rules.py) and the admission-server fuzz test
(tests/unit/test_webhook_server.py), so both explore the same space of specs.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from dittoctl.api.facts import ClusterFacts

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)
quantities = st.sampled_from(["1Gi", "0", "-1Gi", "1e3", "5Mi", ".5G", "lots", "", "1Gi ", "9" * 40])
ports = st.one_of(st.integers(-5, 70000), st.sampled_from([80, 445, 1445, 8080, 9090, 12049]), json_values)
names = st.sampled_from(["standard", "fast", "gold", "pg", "s3", "jwt", "Bad_Name", "", "x" * 300])
maybe = st.one_of(st.none(), json_values)


def spec_strategy() -> st.SearchStrategy[dict[str, Any]]:
    """DittoServer specs near the valid ones: every section, each value right, wrong or of the wrong type."""
    storage = st.fixed_dictionaries({}, optional={
        "metadataSize": quantities, "contentSize": quantities, "cacheSize": quantities,
        "controlPlaneSize": quantities, "storageClassName": names | json_values})
    adapter = st.fixed_dictionaries({}, optional={"enabled": st.booleans() | json_values, "port": ports})
    secret_ref = st.fixed_dictionaries({"name": names}, optional={"key": names, "hostKey": names})
    backup = st.fixed_dictionaries({}, optional={
        "enabled": st.booleans(), "bucket": st.none() | st.text(max_size=5), "endpoint": st.none() | names,
        "credentialsSecretRef": st.none() | secret_ref, "fullSchedule": st.sampled_from(["0 2 * * *", "x", ""])})
    return st.fixed_dictionaries({}, optional={
        "storage": storage | json_values,
        "replicas": st.integers(-1, 3) | json_values,
        "adapters": st.fixed_dictionaries({}, optional={"nfs": adapter, "smb": adapter}) | json_values,
        "controlPlane": st.fixed_dictionaries({}, optional={"port": ports}),
        "metrics": st.fixed_dictionaries({}, optional={"enabled": st.booleans(), "port": ports}),
        "database": st.fixed_dictionaries({}, optional={
            "type": st.sampled_from(["sqlite", "postgres", "mysql"]), "postgresSecretRef": st.none() | secret_ref}),
        "percona": st.fixed_dictionaries({}, optional={
            "enabled": st.booleans(), "image": st.none() | names, "storageClassName": names, "backup": backup}),
        "s3": st.none() | st.fixed_dictionaries({}, optional={"credentialsSecretRef": st.fixed_dictionaries(
            {"secretName": names}, optional={"accessKeyIdKey": names})}),
        "identity": st.fixed_dictionaries({}, optional={"jwt": st.fixed_dictionaries(
            {}, optional={"secretRef": secret_ref, "accessTokenDuration": st.sampled_from(["15m", "x", ""])})}),
        "securityContext": maybe,
        "podSecurityContext": maybe,
        "typo": json_values,
    })


facts_strategy = st.builds(
    ClusterFacts,
    storage_classes=st.none() | st.frozensets(names, max_size=3),
    percona_served=st.none() | st.booleans(),
    secrets=st.dictionaries(names, st.none() | st.frozensets(names, max_size=3), max_size=4),
    online=st.booleans(),
    expandable_classes=st.none() | st.frozensets(names, max_size=3),
    default_storage_class=st.none() | names,
)
