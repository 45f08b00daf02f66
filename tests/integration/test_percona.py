"""PostgreSQL through Percona (SPEC §4.8, §5): the tests play the Percona operator's part."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.support.kube import absent, apply_server, condition, events, kubectl_json, server, wait_ready
from tests.support.operator import OperatorProcess
from tests.support.percona import (
    PERCONA_BACKUP_CRD,
    cluster,
    install_crd,
    percona_spec,
    play_percona_ready,
    wait_gc_follows_clusters,
)
from tests.support.poll import eventually

pytestmark = pytest.mark.integration


def test_crd_installed_after_start_then_waiting_then_ready(testbed: Any, operator: OperatorProcess,
                                                           namespace: str) -> None:
    # Start without Percona, whatever ran before in this session (the CRD is cluster-scoped).
    testbed.kubectl("delete", "crd", "perconapgclusters.pgv2.percona.com", "--ignore-not-found", "--timeout=60s")
    apply_server(testbed, namespace, percona=percona_spec())

    # A missing Percona Operator is a wait the database reports, not an invalid spec (docs/TROUBLESHOOTING.md).
    def refused() -> dict[str, Any] | None:
        obj = server(testbed, namespace)
        cond = condition(obj, "DatabaseReady")
        return obj if cond and cond["reason"] == "PerconaNotFound" else None

    obj = eventually(refused, what="DatabaseReady=False/PerconaNotFound while Percona is absent")
    cond = condition(obj, "DatabaseReady")
    assert cond is not None and "install the Percona Operator" in cond["message"]
    assert condition(obj, "ConfigReady")["status"] == "True"  # type: ignore[index]
    assert obj["status"]["phase"] == "Pending"

    install_crd(testbed)
    created = eventually(lambda: cluster(testbed, namespace), timeout=60, what="PerconaPGCluster created")
    spec = created["spec"]
    assert spec["backups"] == {"enabled": False}
    assert spec["proxy"] == {"pgBouncer": {"replicas": 0}}
    assert spec["users"] == [{"name": "dittofs", "databases": ["dittofs"]}]
    assert spec["crVersion"] == "2.8.0" and spec["postgresVersion"] == 16
    # Kept when the server goes (deleteWithServer false): marked, not owned, so no cascade can reach it.
    uid = server(testbed, namespace)["metadata"]["uid"]
    assert created["metadata"]["annotations"]["dittofs.io/owner-uid"] == uid
    assert "ownerReferences" not in created["metadata"]

    def waiting() -> dict[str, Any] | None:
        obj = server(testbed, namespace)
        db = condition(obj, "DatabaseReady")
        return obj if db and db["reason"] == "PerconaNotReady" else None

    obj = eventually(waiting, what="DatabaseReady=False/PerconaNotReady")
    assert obj["status"]["perconaClusterName"] == "demo-postgres"
    assert condition(obj, "Progressing")["reason"] == "WaitingForDatabase"  # type: ignore[index]
    assert absent(testbed, "statefulset", "demo", namespace)

    # Ready, but Percona has not published the user Secret yet: still a wait (no pod stuck on a missing Secret).
    generation = cluster(testbed, namespace)["metadata"]["generation"]
    testbed.kubectl("patch", "perconapgcluster", "demo-postgres", "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": {"state": "ready", "observedGeneration": generation}}))

    def secret_wait() -> dict[str, Any] | None:
        db = condition(server(testbed, namespace), "DatabaseReady")
        return db if db and "is ready, but its Secret demo-postgres-pguser-dittofs lacks" in db["message"] else None

    assert eventually(secret_wait, what="DatabaseReady=False until the user Secret exists")["status"] == "False"
    assert absent(testbed, "statefulset", "demo", namespace)
    play_percona_ready(testbed, namespace)
    ready = wait_ready(testbed, namespace, timeout=120)
    assert condition(ready, "DatabaseReady")["status"] == "True"  # type: ignore[index]
    pod_spec = kubectl_json(testbed, "get", "statefulset", "demo", "-n", namespace)["spec"]["template"]["spec"]
    init = pod_spec["initContainers"][0]
    assert init["name"] == "wait-for-postgres" and init["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e for e in pod_spec["containers"][0]["env"]}
    assert env["DITTOFS_DATABASE_POSTGRES_HOST"]["valueFrom"]["secretKeyRef"]["name"] == "demo-postgres-pguser-dittofs"
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "uri"
    config = kubectl_json(testbed, "get", "configmap", "demo-config", "-n", namespace)["data"]["config.yaml"]
    assert "type: postgres" in config and "pw-from-percona" not in config
    reasons = [e["reason"] for e in events(testbed, namespace)]
    assert reasons.count("PerconaCreated") == 1 and reasons.count("PerconaReady") == 1


def test_user_edits_are_kept_and_spec_changes_propagate(testbed: Any, operator: OperatorProcess,
                                                       namespace: str) -> None:
    install_crd(testbed)
    apply_server(testbed, namespace, percona=percona_spec())
    eventually(lambda: cluster(testbed, namespace), what="cluster")
    testbed.kubectl("patch", "perconapgcluster", "demo-postgres", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"postgresVersion": 17}}))
    apply_server(testbed, namespace, percona=percona_spec(image="registry.local/pg:16-custom"))
    eventually(lambda: cluster(testbed, namespace)["spec"].get("image") == "registry.local/pg:16-custom",
               what="image change propagated")
    assert cluster(testbed, namespace)["spec"]["postgresVersion"] == 17
    drift = eventually(lambda: events(testbed, namespace, "PerconaDriftDetected"), what="drift event")
    assert "postgresVersion" in drift[0]["message"]
    play_percona_ready(testbed, namespace)
    wait_ready(testbed, namespace, timeout=120)

    # A rotated Percona password makes a new build at the same generation: the kept edit must cost neither a
    # write nor a second event, on that pass or on the drift passes after it.
    def config_hash() -> str:
        sts = kubectl_json(testbed, "get", "statefulset", "demo", "-n", namespace)
        return str(sts["spec"]["template"]["metadata"]["annotations"]["dittofs.io/config-hash"])

    before, mark, passes = config_hash(), testbed.audit_line_count(), operator.reconcile_passes()
    testbed.kubectl("patch", "secret", "demo-postgres-pguser-dittofs", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"stringData": {"password": "pw-from-percona-2"}}))
    eventually(lambda: config_hash() != before, what="the rotation rolled out (a new build)")
    time.sleep(12)  # more than two drift passes (interval 5 s)
    writes = [w for w in testbed.operator_writes(mark, namespace) if w["objectRef"]["resource"] == "perconapgclusters"]
    codes = [(w["verb"], (w.get("responseStatus") or {}).get("code")) for w in writes]
    assert writes == [], f"a kept edit was written again: {codes}"
    assert operator.reconcile_passes() >= passes + 3, "the rotation's pass and two drift passes"
    assert len(events(testbed, namespace, "PerconaDriftDetected")) == 1
    assert cluster(testbed, namespace)["spec"]["postgresVersion"] == 17


def test_a_kept_edit_is_reported_when_the_server_asks_another_value_and_can_be_reclaimed(
        testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    """A field edited on the PerconaPGCluster stays as edited (SSA without force): once the DittoServer asks
    another value of it, that change is not applied, and it was said only the first time (a grown volume the
    user thinks applied could fill up). Now every new value asked is reported with both values, DatabaseReady
    names the kept fields, and the annotation dittofs.dittofs.com/reclaim-percona applies the server's values
    (used once)."""
    install_crd(testbed)
    apply_server(testbed, namespace, percona=percona_spec(image="registry.local/pg:first"))
    eventually(lambda: cluster(testbed, namespace)["spec"].get("image") == "registry.local/pg:first", what="cluster")
    testbed.kubectl("patch", "perconapgcluster", "demo-postgres", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"image": "registry.local/pg:by-hand"}}))
    apply_server(testbed, namespace, percona=percona_spec(image="registry.local/pg:second"))

    def drift(asked: str) -> list[dict[str, Any]]:
        return [e for e in events(testbed, namespace, "PerconaDriftDetected") if asked in e["message"]]

    first = eventually(lambda: drift('this server asks "registry.local/pg:second"'), what="the first drift event")
    assert 'spec.image is "registry.local/pg:by-hand"' in first[0]["message"], first
    reclaim = f"kubectl -n {namespace} annotate dittoserver demo dittofs.dittofs.com/reclaim-percona=true"
    assert reclaim in first[0]["message"], first
    apply_server(testbed, namespace, percona=percona_spec(image="registry.local/pg:third"))
    eventually(lambda: drift('this server asks "registry.local/pg:third"'), what="a drift event for the new value")
    assert cluster(testbed, namespace)["spec"]["image"] == "registry.local/pg:by-hand"
    play_percona_ready(testbed, namespace)

    def database_ready() -> dict[str, Any] | None:
        return condition(server(testbed, namespace), "DatabaseReady")

    def kept() -> dict[str, Any] | None:
        cond = database_ready()
        return cond if cond and "fields edited on it are kept" in cond["message"] else None

    assert "spec.image" in eventually(kept, what="DatabaseReady names the kept field")["message"]

    testbed.kubectl(*reclaim.split()[1:])
    eventually(lambda: cluster(testbed, namespace)["spec"]["image"] == "registry.local/pg:third",
               what="the server's value applied over the edit")
    eventually(lambda: "dittofs.dittofs.com/reclaim-percona" not in (
        server(testbed, namespace)["metadata"].get("annotations") or {}), what="the consent removed (used once)")
    play_percona_ready(testbed, namespace)
    eventually(lambda: (c := database_ready()) and c["status"] == "True" and "kept" not in c["message"],
               what="DatabaseReady without kept fields")
    # From now on the server's changes apply again, with no new drift event.
    drifts = len(events(testbed, namespace, "PerconaDriftDetected"))
    apply_server(testbed, namespace, percona=percona_spec(image="registry.local/pg:fourth"))
    eventually(lambda: cluster(testbed, namespace)["spec"]["image"] == "registry.local/pg:fourth",
               what="a later change applied")
    assert len(events(testbed, namespace, "PerconaDriftDetected")) == drifts


@pytest.mark.parametrize(("delete_with_server", "cascade"),
                         [(False, "background"), (False, "foreground"), (True, "background"), (True, "orphan")])
def test_deletion_orphans_or_deletes_the_database(testbed: Any, operator: OperatorProcess, namespace: str,
                                                  delete_with_server: bool, cascade: str) -> None:
    """A foreground deletion (``--cascade=foreground``, Argo CD's default) has the garbage collector delete the
    owner's dependents at once, finalizers or not: a kept database must not be one of them. The operator is down
    while the deletion starts (an upgrade, a crash), so the garbage collector has all the time it wants."""
    install_crd(testbed)
    wait_gc_follows_clusters(testbed, namespace)
    apply_server(testbed, namespace, percona=percona_spec(deleteWithServer=delete_with_server))
    eventually(lambda: cluster(testbed, namespace), what="cluster")
    play_percona_ready(testbed, namespace)
    wait_ready(testbed, namespace, timeout=120)
    operator.kill()
    testbed.kubectl("delete", "dittoserver", "demo", "-n", namespace, "--wait=false", f"--cascade={cascade}")
    time.sleep(5)  # the garbage collector acts within a second once it follows the kind
    assert cluster(testbed, namespace), "no one but the operator may delete the database"
    operator.start()
    eventually(lambda: absent(testbed, "dittoserver", "demo", namespace),
               timeout=75, what="DittoServer gone")
    time.sleep(2)  # give garbage collection a chance to do damage
    exists = testbed.kubectl("get", "perconapgcluster", "demo-postgres", "-n", namespace, check=False).returncode == 0
    if delete_with_server and cascade != "orphan":
        eventually(lambda: testbed.kubectl("get", "perconapgcluster", "demo-postgres", "-n", namespace,
                                           check=False).returncode != 0, what="cluster deleted")
        assert events(testbed, namespace, "PerconaDeleted")
        return
    assert exists, "the database must survive when deleteWithServer is false or the deletion orphans"
    kept = cluster(testbed, namespace)["metadata"]
    assert kept.get("ownerReferences", []) == [] and "dittofs.io/owner-uid" not in kept["annotations"]
    assert kept["annotations"]["dittofs.io/released-from"] == "demo"
    why = "the DittoServer was deleted with --cascade=orphan" if delete_with_server else \
        "percona.deleteWithServer is false"
    assert [e["message"] for e in events(testbed, namespace, "PerconaOrphaned")] == [
        f"PerconaPGCluster demo-postgres kept ({why}), its data with it unless namespace {namespace} is deleted; a new "
        "DittoServer demo takes it back"]
    if cascade == "orphan":  # the StatefulSet is the user's now, still serving: not drained
        sts = kubectl_json(testbed, "get", "statefulset", "demo", "-n", namespace)
        assert sts["spec"]["replicas"] == 1 and not sts["metadata"].get("ownerReferences"), sts["metadata"]
        assert not events(testbed, namespace, "PerconaDeleted")
    # A new server of that name takes its database back, data included.
    apply_server(testbed, namespace, percona=percona_spec())
    uid = server(testbed, namespace)["metadata"]["uid"]
    eventually(lambda: cluster(testbed, namespace)["metadata"]["annotations"].get("dittofs.io/owner-uid") == uid,
               what="the kept cluster taken back")
    assert cluster(testbed, namespace)["metadata"]["uid"] == kept["uid"]


def test_a_cluster_that_is_not_the_server_s_is_never_applied_to(testbed: Any, operator: OperatorProcess,
                                                                namespace: str) -> None:
    """Made by hand (or kept from a server whose deletion was forced): taking it over would change someone's
    database, and with deleteWithServer delete it with this server."""
    install_crd(testbed)
    foreign = {"apiVersion": "pgv2.percona.com/v2", "kind": "PerconaPGCluster",
               "metadata": {"name": "demo-postgres", "namespace": namespace},
               "spec": {"backups": {"enabled": False}, "postgresVersion": 17,
                        "instances": [{"name": "main", "dataVolumeClaimSpec": {}}]}}
    testbed.kubectl("apply", "-f", "-", input=json.dumps(foreign))
    before = cluster(testbed, namespace)
    apply_server(testbed, namespace, percona=percona_spec(deleteWithServer=True))

    def refused() -> dict[str, Any] | None:
        cond = condition(server(testbed, namespace), "DatabaseReady")
        return cond if cond and cond["reason"] == "PerconaNotOwned" else None

    cond = eventually(refused, what="DatabaseReady=False/PerconaNotOwned")
    assert cond["status"] == "False" and "annotate --overwrite perconapgcluster demo-postgres " \
        "dittofs.io/released-from=demo" in cond["message"], cond
    passes = operator.reconcile_passes()
    time.sleep(6)
    assert operator.reconcile_passes() > passes, "no pass ran in the window: nothing was proven"
    assert cluster(testbed, namespace)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert absent(testbed, "statefulset", "demo", namespace)
    # Deleting the server leaves it alone too.
    testbed.kubectl("delete", "dittoserver", "demo", "-n", namespace, "--timeout=60s")
    assert cluster(testbed, namespace)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    # The owner's say-so lets a server use it.
    testbed.kubectl("annotate", "perconapgcluster", "demo-postgres", "-n", namespace,
                    "dittofs.io/released-from=demo")
    apply_server(testbed, namespace, percona=percona_spec())
    eventually(lambda: cluster(testbed, namespace)["metadata"]["annotations"].get("dittofs.io/owner-uid")
               == server(testbed, namespace)["metadata"]["uid"], what="the annotated cluster adopted")


@pytest.mark.parametrize("then", ["kept", "percona-off", "paused", "invalid"])
def test_a_database_kept_after_all_stops_being_a_dependent(testbed: Any, operator: OperatorProcess,
                                                           namespace: str, then: str) -> None:
    """deleteWithServer true, then false (or Percona turned off, which resets it): the ownerReference goes (as it
    goes from a cluster an older operator made with one), so a foreground deletion of the server keeps the
    database. So it does while the server is paused, or its spec refused (no webhook here): neither converges,
    but the database's safety does not wait for that."""
    install_crd(testbed)
    wait_gc_follows_clusters(testbed, namespace)
    apply_server(testbed, namespace, percona=percona_spec(deleteWithServer=True))
    eventually(lambda: cluster(testbed, namespace)["metadata"].get("ownerReferences"), what="an owned cluster")
    if then == "paused":
        testbed.kubectl("annotate", "dittoserver", "demo", "-n", namespace, "dittofs.dittofs.com/reconcile=disabled")
        eventually(lambda: condition(server(testbed, namespace), "ReconciliationPaused"), what="paused")
    extra: dict[str, Any] = {"identity": {"jwt": {"accessTokenDuration": "10s"}}} if then == "invalid" else {}
    apply_server(testbed, namespace, percona=percona_spec(deleteWithServer=False) if then != "percona-off"
                 else {"enabled": False}, **extra)
    if then == "invalid":
        eventually(lambda: (c := condition(server(testbed, namespace), "ConfigReady")) and c["reason"] == "InvalidSpec"
                   and "accessTokenDuration" in c["message"], what="ConfigReady=False/InvalidSpec")
    eventually(lambda: not cluster(testbed, namespace)["metadata"].get("ownerReferences"),
               what="the ownerReference removed")
    testbed.kubectl("delete", "dittoserver", "demo", "-n", namespace, "--wait=false", "--cascade=foreground")
    eventually(lambda: absent(testbed, "dittoserver", "demo", namespace),
               timeout=75, what="DittoServer gone")
    time.sleep(2)  # give garbage collection a chance to do damage
    assert cluster(testbed, namespace)["spec"]["users"] == [{"name": "dittofs", "databases": ["dittofs"]}]
    assert events(testbed, namespace, "PerconaOrphaned")


def test_percona_turned_off_then_server_deleted_keeps_the_database(testbed: Any, operator: OperatorProcess,
                                                                    namespace: str) -> None:
    install_crd(testbed)
    apply_server(testbed, namespace, percona=percona_spec())
    eventually(lambda: cluster(testbed, namespace), what="cluster")
    apply_server(testbed, namespace, percona={"enabled": False})
    eventually(lambda: (server(testbed, namespace).get("status") or {}).get("perconaClusterName") == "demo-postgres"
               and condition(server(testbed, namespace), "DatabaseReady") is None, what="percona off")
    testbed.kubectl("delete", "dittoserver", "demo", "-n", namespace, "--wait=false")
    eventually(lambda: absent(testbed, "dittoserver", "demo", namespace),
               timeout=75, what="DittoServer gone")
    time.sleep(3)
    assert cluster(testbed, namespace)["metadata"].get("ownerReferences", []) == []


def test_backup_settings_and_completed_backups_are_reported(testbed: Any, operator: OperatorProcess,
                                                            namespace: str) -> None:
    install_crd(testbed)
    testbed.kubectl("apply", "--server-side", "-f", str(PERCONA_BACKUP_CRD))
    testbed.wait_crd("perconapgbackups.pgv2.percona.com")
    testbed.kubectl("create", "secret", "generic", "pgbackrest-s3", "-n", namespace,
                    "--from-literal=s3.conf=[global]")
    backup = {"enabled": True, "bucket": "dittofs-backups", "endpoint": "https://s3.example.test",
              "credentialsSecretRef": {"name": "pgbackrest-s3"}, "retentionDays": 3}
    apply_server(testbed, namespace, percona=percona_spec(backup=backup))
    created = eventually(lambda: cluster(testbed, namespace), what="cluster")
    pgbackrest = created["spec"]["backups"]["pgbackrest"]
    assert created["spec"]["backups"]["enabled"] is True
    assert pgbackrest["repos"][0]["s3"]["bucket"] == "dittofs-backups"
    assert pgbackrest["global"]["repo1-retention-full"] == "3"
    assert pgbackrest["configuration"] == [{"secret": {"name": "pgbackrest-s3"}}]
    play_percona_ready(testbed, namespace)
    wait_ready(testbed, namespace, timeout=120)
    testbed.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "pgv2.percona.com/v2", "kind": "PerconaPGBackup",
        "metadata": {"name": "nightly-1", "namespace": namespace},
        "spec": {"pgCluster": "demo-postgres", "repoName": "repo1"}}))
    testbed.kubectl("patch", "perconapgbackup", "nightly-1", "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": {"state": "Succeeded"}}))
    done = eventually(lambda: events(testbed, namespace, "PerconaBackupCompleted"), timeout=30,
                      what="PerconaBackupCompleted (seen on a drift pass)")
    assert "nightly-1" in done[0]["message"]


def test_a_deleted_database_is_not_replaced_by_an_empty_one_without_consent(testbed: Any, operator: OperatorProcess,
                                                                             namespace: str) -> None:
    """A new cluster would be empty (and with backups on, would set up its repository where the old one's backups
    are): the server waits for a restore or for the user's say-so."""
    install_crd(testbed)
    apply_server(testbed, namespace, percona=percona_spec())
    first = eventually(lambda: cluster(testbed, namespace), what="cluster")
    play_percona_ready(testbed, namespace)
    wait_ready(testbed, namespace, timeout=120)
    testbed.kubectl("delete", "perconapgcluster", "demo-postgres", "-n", namespace, "--timeout=60s")

    def missing() -> dict[str, Any] | None:
        cond = condition(server(testbed, namespace), "DatabaseReady")
        return cond if cond and cond["reason"] == "PerconaMissing" else None

    cond = eventually(missing, what="DatabaseReady=False/PerconaMissing")
    assert f"kubectl -n {namespace} annotate dittoserver demo dittofs.dittofs.com/recreate-database=true" \
        in cond["message"], cond
    passes = operator.reconcile_passes()
    time.sleep(6)
    assert operator.reconcile_passes() > passes, "no pass ran in the window: nothing was proven"
    assert absent(testbed, "perconapgcluster", "demo-postgres", namespace)
    testbed.kubectl("annotate", "dittoserver", "demo", "-n", namespace, "dittofs.dittofs.com/recreate-database=true")
    again = eventually(lambda: testbed.kubectl("get", "perconapgcluster", "demo-postgres", "-n", namespace,
                                               check=False).returncode == 0 and cluster(testbed, namespace),
                       what="a new cluster once the user consents")
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    eventually(lambda: "dittofs.dittofs.com/recreate-database" not in (
        server(testbed, namespace)["metadata"].get("annotations") or {}), what="the consent used once")


def test_another_database_name_is_not_applied_to_a_cluster_holding_the_data(
        testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    """The webhook refuses the change, but not while it is off (as here), nor across Percona turned off and on."""
    install_crd(testbed)
    apply_server(testbed, namespace, percona=percona_spec(databaseName="files"))
    eventually(lambda: cluster(testbed, namespace), what="cluster")
    play_percona_ready(testbed, namespace)
    wait_ready(testbed, namespace, timeout=120)
    apply_server(testbed, namespace, percona=percona_spec(databaseName="other"))

    def refused() -> dict[str, Any] | None:
        cond = condition(server(testbed, namespace), "DatabaseReady")
        return cond if cond and cond["reason"] == "InvalidSpec" else None

    cond = eventually(refused, what="DatabaseReady=False/InvalidSpec")
    assert "holds this server's data in 'files'" in cond["message"] and "set databaseName back to 'files'" \
        in cond["message"], cond
    assert cluster(testbed, namespace)["spec"]["users"] == [{"name": "dittofs", "databases": ["files"]}]
    apply_server(testbed, namespace, percona=percona_spec(databaseName="files"))
    wait_ready(testbed, namespace, timeout=120)


def test_a_release_refused_by_the_api_says_why_and_is_retried_less_and_less_often(
        testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    """Percona's own webhook down, or a policy refusing the patch that marks the database released: the finalizer
    stays (the database must be safe first), the status quotes the API's answer, and the retries slow down
    (they came every second, forever, with a generic message)."""
    install_crd(testbed)
    apply_server(testbed, namespace, percona=percona_spec())
    uid = server(testbed, namespace)["metadata"]["uid"]
    eventually(lambda: cluster(testbed, namespace)["metadata"]["annotations"].get("dittofs.io/owner-uid") == uid,
               what="an owned cluster")
    name = f"freeze-{namespace}"
    testbed.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": name},
         "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [
             {"apiGroups": ["pgv2.percona.com"], "apiVersions": ["*"], "operations": ["UPDATE"],
              "resources": ["perconapgclusters"]}]},
             "validations": [{"expression": "false", "message": "frozen by the test"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": name},
         "spec": {"policyName": name, "validationActions": ["Deny"], "matchResources": {"namespaceSelector": {
             "matchLabels": {"kubernetes.io/metadata.name": namespace}}}}}]}))
    try:
        # The policy takes effect once the apiserver has loaded it: a label edit is refused then.
        eventually(lambda: testbed.kubectl("label", "perconapgcluster", "demo-postgres", "-n", namespace,
                                           "probe=1", "--dry-run=server", check=False).returncode != 0,
                   what="the policy in force")
        testbed.kubectl("delete", "dittoserver", "demo", "-n", namespace, "--wait=false")

        def waiting() -> str | None:
            cond = condition(server(testbed, namespace), "Ready")
            message = str((cond or {}).get("message") or "")
            return message if "waiting to release PerconaPGCluster demo-postgres: marking it released failed" \
                in message else None

        assert "frozen by the test" in eventually(waiting, what="the refusal in status")
        since, began = testbed.audit_line_count(), time.monotonic()
        time.sleep(15)
        # This namespace's only: the shared operator also applies the clusters of servers other tests left
        # running or deleting (their patches made this count 6 in CI, in no fixed rhythm).
        patches = [e for e in testbed.audit_events(user=testbed.operator_user, since_line=since)
                   if e.get("verb") == "patch" and e.get("objectRef", {}).get("resource") == "perconapgclusters"
                   and e.get("objectRef", {}).get("namespace") == namespace]
        # Waits of 2, 4, 8, 16 s after the first refusals: at most 4 attempts in the window (every second, 15).
        assert 1 <= len(patches) <= 5, ([e.get("stageTimestamp") for e in patches], time.monotonic() - began)
        assert cluster(testbed, namespace)["metadata"]["annotations"].get("dittofs.io/owner-uid") == uid
        assert testbed.kubectl("get", "dittoserver", "demo", "-n", namespace, check=False).returncode == 0
    finally:
        testbed.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name,
                        "--ignore-not-found")
    eventually(lambda: absent(testbed, "dittoserver", "demo", namespace),
               timeout=75, what="released once the policy is gone, then deleted")
    assert cluster(testbed, namespace)["metadata"]["annotations"]["dittofs.io/released-from"] == "demo"


def test_turning_percona_on_under_a_running_server_keeps_its_config_until_the_database_is_ready(
        testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    """The kubelet updates a mounted ConfigMap in a running pod: updated while the StatefulSet waits for the
    database, a pod restarting meanwhile would start DittoFS on Postgres without the variables that reach it
    (`postgres host is required`), and crash-loop."""
    install_crd(testbed)
    apply_server(testbed, namespace)
    wait_ready(testbed, namespace)

    def config() -> str:
        return str(kubectl_json(testbed, "get", "configmap", "demo-config", "-n", namespace)["data"]["config.yaml"])

    before = config()
    template = kubectl_json(testbed, "get", "statefulset", "demo", "-n", namespace)["spec"]["template"]
    assert "sqlite" in before
    apply_server(testbed, namespace, percona=percona_spec())
    eventually(lambda: (c := condition(server(testbed, namespace), "DatabaseReady")) and c["reason"] ==
               "PerconaNotReady", what="waiting for the database")
    time.sleep(6)  # a drift pass (every 5 s here) too
    assert config() == before
    assert kubectl_json(testbed, "get", "statefulset", "demo", "-n", namespace)["spec"]["template"] == template
    play_percona_ready(testbed, namespace)
    eventually(lambda: "postgres" in config() and "sqlite" not in config(), what="the config moved to Postgres")
    wait_ready(testbed, namespace)
    assert kubectl_json(testbed, "get", "statefulset", "demo", "-n", namespace)["spec"]["template"] != template


def test_a_lower_postgres_major_is_not_applied_when_the_webhook_was_off(
        testbed: Any, operator: OperatorProcess, namespace: str) -> None:
    """PostgreSQL's data files do not downgrade: the webhook refuses the change on update, and the operator does
    not apply it either when it was admitted without the webhook (the cluster would no longer start)."""
    install_crd(testbed)
    apply_server(testbed, namespace, percona=percona_spec(postgresVersion=17))
    eventually(lambda: cluster(testbed, namespace)["spec"]["postgresVersion"] == 17, what="a PostgreSQL 17 cluster")
    apply_server(testbed, namespace, percona=percona_spec(postgresVersion=16))

    def refused() -> dict[str, Any] | None:
        cond = condition(server(testbed, namespace), "DatabaseReady")
        return cond if cond and cond["reason"] == "InvalidSpec" else None

    assert eventually(refused, what="DatabaseReady=False/InvalidSpec")["message"] == (
        "spec.percona.postgresVersion is 16, but PerconaPGCluster demo-postgres runs PostgreSQL 17, whose data files "
        "do not downgrade: set 17")
    time.sleep(6)  # a drift pass (every 5 s here) too
    assert cluster(testbed, namespace)["spec"]["postgresVersion"] == 17
    apply_server(testbed, namespace, percona=percona_spec(postgresVersion=17))
    eventually(lambda: (c := condition(server(testbed, namespace), "DatabaseReady")) and c["reason"] != "InvalidSpec",
               what="the refusal gone once set back")
