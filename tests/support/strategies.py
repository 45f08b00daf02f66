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


share_names = st.sampled_from(["/export", "/projects", "/a/", "export", "", "/" + "x" * 300])
principals = st.sampled_from(["alice", "bob", "readers", "admin", "admins", "Bad Name", ""])
durations = st.sampled_from(["90s", "15m", "@daily", "0", "x", "", "1h30m"]) | json_values
levels = st.sampled_from(["none", "read", "read-write", "admin", "write"]) | json_values


def _file_service() -> dict[str, st.SearchStrategy[Any]]:
    """SPEC §13.1's sections: stores, shares, users, groups, each entry right, wrong or of the wrong type."""
    store = st.fixed_dictionaries({"name": names}, optional={
        "type": st.sampled_from(["badger", "fs", "memory", "s3", "postgres", "zip"]),
        "path": st.sampled_from(["/data/store/metadata/m", "/data/store/block/b", "/etc", "rel"]) | json_values,
        "endpoint": st.sampled_from(["http://minio.storage.svc:9000", "https://s3.amazonaws.com",
                                     "http://10.88.0.1:9000", "ftp://x"]) | json_values,
        "allowPrivateEndpoint": st.booleans() | json_values, "bucket": names, "prefix": names,
        "credentialsSecretRef": st.none() | st.fixed_dictionaries({"name": names})})
    grant = st.fixed_dictionaries({}, optional={"user": principals, "group": principals, "level": levels})
    share = st.fixed_dictionaries({"name": share_names}, optional={
        "defaultPermission": levels, "readOnly": st.booleans() | json_values, "quota": quantities,
        "metadataStore": names, "localBlockStore": names, "remoteBlockStore": st.none() | names,
        "nfs": st.fixed_dictionaries({}, optional={
            "squash": st.sampled_from(["none", "root_to_guest", "all_to_admin", "everyone"]),
            "anonymousUID": st.integers(-1, 2**32) | json_values, "anonymousGID": st.integers(-1, 70000)}),
        "permissions": st.lists(grant, max_size=3) | json_values,
        "snapshotPolicy": st.fixed_dictionaries({}, optional={
            "interval": durations, "keepLast": st.integers(-1, 100) | json_values, "ttl": durations,
            "namePrefix": names, "enabled": st.booleans()})})
    user = st.fixed_dictionaries({"name": principals}, optional={
        "passwordSecretRef": st.fixed_dictionaries({"name": names}, optional={"key": names}) | json_values,
        "uid": st.integers(-1, 2**32) | json_values, "gid": st.integers(-1, 70000),
        "groups": st.lists(principals, max_size=3) | json_values,
        "role": st.sampled_from(["user", "admin", "root"])})
    group = st.fixed_dictionaries({"name": principals}, optional={"gid": st.integers(-1, 70000) | json_values})
    return {
        "stores": st.fixed_dictionaries({}, optional={
            kind: st.lists(store, max_size=3) | json_values for kind in ("metadata", "local", "remote")}),
        "shares": st.lists(share, max_size=3) | json_values,
        "users": st.lists(user, max_size=3) | json_values,
        "groups": st.lists(group, max_size=3) | json_values,
    }


def spec_strategy() -> st.SearchStrategy[dict[str, Any]]:
    """DittoServer specs near the valid ones: every section, each value right, wrong or of the wrong type."""
    storage = st.fixed_dictionaries({}, optional={
        "metadataSize": quantities, "contentSize": quantities, "cacheSize": quantities,
        "controlPlaneSize": quantities, "storageClassName": names | json_values})
    nfs_settings = st.fixed_dictionaries({}, optional={
        "minVersion": st.sampled_from(["3", "4.0", "4.1", "5"]), "maxVersion": st.sampled_from(["3", "4.1", 4]),
        "leaseTime": durations, "gracePeriod": durations, "maxConnections": st.integers(-1, 200000)})
    smb_settings = st.fixed_dictionaries({}, optional={
        "minDialect": st.sampled_from(["SMB2.0", "SMB3.1.1", "SMB1"]), "maxDialect": st.sampled_from(["SMB3.0"]),
        "signing": st.sampled_from(["disabled", "required", "maybe"]), "enableEncryption": st.booleans() | maybe,
        "sessionTimeout": durations})
    adapter = st.fixed_dictionaries({}, optional={"enabled": st.booleans() | json_values, "port": ports})
    nfs = st.fixed_dictionaries({}, optional={"enabled": st.booleans() | json_values, "port": ports,
                                              "settings": nfs_settings | json_values})
    smb = st.fixed_dictionaries({}, optional={"enabled": st.booleans() | json_values, "port": ports,
                                              "settings": smb_settings | json_values})
    secret_ref = st.fixed_dictionaries({"name": names}, optional={"key": names, "hostKey": names})
    backup = st.fixed_dictionaries({}, optional={
        "enabled": st.booleans(), "bucket": st.none() | st.text(max_size=5), "endpoint": st.none() | names,
        "credentialsSecretRef": st.none() | secret_ref, "fullSchedule": st.sampled_from(["0 2 * * *", "x", ""])})
    return st.fixed_dictionaries({}, optional={
        "storage": storage | json_values,
        "replicas": st.integers(-1, 3) | json_values,
        "adapters": st.fixed_dictionaries({}, optional={"nfs": nfs | adapter, "smb": smb | adapter}) | json_values,
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
        **_file_service(),
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
