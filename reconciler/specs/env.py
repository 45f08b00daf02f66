"""Environment of the server container, and the Secret keys it consumes.

Secret values only ever travel as `secretKeyRef`s; the operator itself sees their digests (for the
config hash), never renders them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dittoctl.api.models import DittoServerSpec
from reconciler.naming import Names

ADMIN_PASSWORD_KEY = "password"
ADMIN_USERNAME_KEY = "username"
JWT_KEY = "jwt-secret"


@dataclass(frozen=True, order=True)
class SecretUse:
    """One Secret key consumed by the server as an environment variable."""

    secret: str
    key: str
    env: str
    optional: bool = False

    def env_var(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": self.secret, "key": self.key}
        if self.optional:
            ref["optional"] = True
        return {"name": self.env, "valueFrom": {"secretKeyRef": ref}}


def jwt_secret_ref(spec: DittoServerSpec, names: Names) -> tuple[str, str]:
    ref = spec.identity.jwt.secret_ref
    return (ref.name, ref.key) if ref else (names.jwt_secret, JWT_KEY)


def admin_secret_ref(spec: DittoServerSpec, names: Names) -> tuple[str, str]:
    ref = spec.identity.admin.password_secret_ref
    return (ref.name, ref.key) if ref else (names.admin_secret, ADMIN_PASSWORD_KEY)


def postgres_uses(spec: DittoServerSpec, names: Names) -> list[SecretUse]:
    prefix = "DITTOFS_DATABASE_POSTGRES_"
    if spec.percona.enabled:
        secret = names.percona_user_secret
        keys = {"HOST": "host", "PORT": "port", "DATABASE": "dbname", "USER": "user", "PASSWORD": "password"}
        uses = [SecretUse(secret, key, prefix + var) for var, key in keys.items()]
        return [*uses, SecretUse(secret, "uri", "DATABASE_URL")]
    ref = spec.database.postgres_secret_ref
    if ref is None:
        return []
    keys = {
        "HOST": ref.host_key, "PORT": ref.port_key, "DATABASE": ref.database_key,
        "USER": ref.user_key, "PASSWORD": ref.password_key,
    }
    uses = [SecretUse(ref.name, key, prefix + var) for var, key in keys.items()]
    return [*uses, SecretUse(ref.name, ref.ssl_mode_key, prefix + "SSLMODE", optional=True)]


def s3_uses(spec: DittoServerSpec) -> list[SecretUse]:
    if spec.s3 is None or spec.s3.credentials_secret_ref is None:
        return []
    ref = spec.s3.credentials_secret_ref
    return [
        SecretUse(ref.secret_name, ref.access_key_id_key, "AWS_ACCESS_KEY_ID"),
        SecretUse(ref.secret_name, ref.secret_access_key_key, "AWS_SECRET_ACCESS_KEY"),
        SecretUse(ref.secret_name, ref.endpoint_key, "AWS_ENDPOINT_URL", optional=True),
    ]


def secret_uses(spec: DittoServerSpec, names: Names) -> list[SecretUse]:
    """Every Secret key the server container reads, in a stable order."""
    jwt_name, jwt_key = jwt_secret_ref(spec, names)
    admin_name, admin_key = admin_secret_ref(spec, names)
    return [
        SecretUse(jwt_name, jwt_key, "DITTOFS_CONTROLPLANE_SECRET"),
        SecretUse(admin_name, admin_key, "DITTOFS_ADMIN_INITIAL_PASSWORD"),
        *postgres_uses(spec, names),
        *s3_uses(spec),
    ]


def referenced_secrets(spec: DittoServerSpec, names: Names) -> set[str]:
    """Secret names whose changes must re-trigger a reconcile (including pgBackRest credentials)."""
    refs = {use.secret for use in secret_uses(spec, names)}
    backup = spec.percona.backup
    if spec.percona.enabled and backup.enabled and backup.credentials_secret_ref:
        refs.add(backup.credentials_secret_ref.name)
    return refs


def container_env(spec: DittoServerSpec, names: Names) -> list[dict[str, Any]]:
    env = [use.env_var() for use in secret_uses(spec, names)]
    if spec.percona.enabled:
        env.append({"name": "DITTOFS_DATABASE_POSTGRES_SSLMODE", "value": "require"})
    if spec.s3 is not None:
        env.append({"name": "AWS_REGION", "value": spec.s3.region})
    return env
