"""Pure manifest builders: models (+ digests of consumed Secrets) in, Kubernetes manifests out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dittoctl.api.models import DittoServer, DittoServerSpec
from dittoctl.api.naming import DEFAULT_OPERATOR_NAMESPACE, Names
from dittoctl.api.secrets import consumed_keys, digest_of, hashed_secret_keys, secret_uses
from reconciler.specs.certificates import certificates
from reconciler.specs.config import config_map, render_config
from reconciler.specs.hashing import config_hash
from reconciler.specs.monitoring import service_monitor
from reconciler.specs.network import network_policy
from reconciler.specs.percona import percona_cluster
from reconciler.specs.services import services
from reconciler.specs.statefulset import statefulset

# (secret name, key) -> digest of the value, or None when the Secret or key is missing.
SecretDigests = Mapping[tuple[str, str], str | None]


@dataclass(frozen=True)
class Desired:
    """Everything the operator applies for one DittoServer (generated Secrets aside)."""

    config_text: str
    config_hash: str
    config_map: dict[str, Any]
    services: list[dict[str, Any]]
    statefulset: dict[str, Any]
    percona_cluster: dict[str, Any] | None = None
    """The control-plane database, when `percona.enabled`."""
    certificates: list[dict[str, Any]] = field(default_factory=list)
    """cert-manager Certificates, when asked for; applied only while cert-manager's CRD is served."""
    network_policy: dict[str, Any] | None = None
    service_monitor: dict[str, Any] | None = None
    """Wanted by the spec; applied only while the Prometheus Operator's CRD is served."""
    missing_secret_keys: list[tuple[str, str]] = field(default_factory=list)

    def children(self) -> list[dict[str, Any]]:
        """Every child, as `dittoctl render` prints them: ConfigMap, Services, Certificates, NetworkPolicy,
        ServiceMonitor, PerconaPGCluster, StatefulSet (a pass applies them in its own order)."""
        optional = [c for c in (self.network_policy, self.service_monitor, self.percona_cluster) if c is not None]
        return [self.config_map, *self.services, *self.certificates, *optional, self.statefulset]


@dataclass(frozen=True)
class RenderedConfig:
    """config.yaml, and the text its hash is taken over (without the first-boot seeds)."""

    text: str
    hashed: str


def render(spec: DittoServerSpec) -> RenderedConfig:
    """YAML emitting is the dearest step of a build (pure-Python PyYAML): callers may keep this per generation."""
    text = render_config(spec)
    seeded = spec.identity.ldap is not None or spec.identity.kerberos is not None
    return RenderedConfig(text, render_config(spec, seeds=False) if seeded else text)


def build(spec: DittoServerSpec, names: Names, digests: SecretDigests, store_revision: int = 0,
          operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE, rendered: RenderedConfig | None = None) -> Desired:
    """``store_revision``: status.storeRevision, bumped when DittoFS took a store config it applies only at
    start; hashed with the config so the pod rolls once per bump. ``operator_namespace``: always let in by
    the NetworkPolicy. ``rendered``: ``render(spec)``, when the caller kept it."""
    rendered = rendered or render(spec)
    text = rendered.text
    uses = secret_uses(spec, names)
    triples = [(secret, key, digests.get((secret, key))) for secret, key in hashed_secret_keys(spec, names)]
    if store_revision:
        triples.append(("<store-revision>", "", str(store_revision)))
    missing = sorted({(u.secret, u.key) for u in uses if not u.optional and digests.get((u.secret, u.key)) is None})
    digest = config_hash(rendered.hashed, triples)
    return Desired(
        config_text=text,
        config_hash=digest,
        config_map=config_map(names, text),
        services=services(spec, names),
        statefulset=statefulset(spec, names, digest),
        percona_cluster=percona_cluster(spec, names) if spec.percona.enabled else None,
        certificates=certificates(spec, names),
        network_policy=network_policy(spec, names, operator_namespace),
        service_monitor=service_monitor(spec, names),
        missing_secret_keys=missing,
    )


def render_offline(server: DittoServer) -> Desired:
    """What the operator would apply, without a cluster: Secret values are unknown, so each consumed key's
    digest is taken over its reference (stable output for reviews and GitOps diffs)."""
    names = Names.of(server)
    digests = {(secret, key): digest_of(f"{secret}/{key}")
               for secret, key in consumed_keys(server.spec, names)}
    return build(server.spec, names, digests)
