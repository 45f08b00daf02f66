"""The one answer to "which Secret keys does a DittoServer consume": the builders render it as
`secretKeyRef`s, the reconciler hashes and watches it, the webhook checks it exists.

Values never pass through here, only names and keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dittoctl.api.models import DittoServerSpec
from dittoctl.api.naming import Names

ADMIN_PASSWORD_KEY = "password"
ADMIN_USERNAME_KEY = "username"
JWT_KEY = "jwt-secret"


@dataclass(frozen=True, order=True)
class SecretUse:
    """One Secret key the server container reads as an environment variable."""

    secret: str
    key: str
    env: str
    fields: tuple[str, ...] = ()
    """Spec paths (camelCase, dotted) that decide this use; a broken one makes the use unknown."""
    optional: bool = False
    generated: bool = False
    """Made by the operator (<name>-jwt, ...) or by Percona, never by the user."""

    def env_var(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": self.secret, "key": self.key}
        if self.optional:
            ref["optional"] = True
        return {"name": self.env, "valueFrom": {"secretKeyRef": ref}}


def _postgres_uses(spec: DittoServerSpec, names: Names) -> list[SecretUse]:
    prefix = "DITTOFS_DATABASE_POSTGRES_"
    if spec.percona.enabled:
        secret = names.percona_user_secret
        keys = {"HOST": "host", "PORT": "port", "DATABASE": "dbname", "USER": "user", "PASSWORD": "password"}
        uses = [SecretUse(secret, key, prefix + var, ("percona.enabled",), generated=True)
                for var, key in keys.items()]
        return [*uses, SecretUse(secret, "uri", "DATABASE_URL", ("percona.enabled",), generated=True)]
    ref = spec.database.postgres_secret_ref
    if ref is None:
        return []
    where = ("database.postgresSecretRef", "percona.enabled")
    keys = {
        "HOST": ref.host_key, "PORT": ref.port_key, "DATABASE": ref.database_key,
        "USER": ref.user_key, "PASSWORD": ref.password_key,
    }
    uses = [SecretUse(ref.name, key, prefix + var, where) for var, key in keys.items()]
    return [*uses, SecretUse(ref.name, ref.ssl_mode_key, prefix + "SSLMODE", where, optional=True)]


def _s3_uses(spec: DittoServerSpec) -> list[SecretUse]:
    if spec.s3 is None or spec.s3.credentials_secret_ref is None:
        return []
    ref, where = spec.s3.credentials_secret_ref, ("s3.credentialsSecretRef",)
    return [
        SecretUse(ref.secret_name, ref.access_key_id_key, "AWS_ACCESS_KEY_ID", where),
        SecretUse(ref.secret_name, ref.secret_access_key_key, "AWS_SECRET_ACCESS_KEY", where),
        SecretUse(ref.secret_name, ref.endpoint_key, "AWS_ENDPOINT_URL", where, optional=True),
    ]


def secret_uses(spec: DittoServerSpec, names: Names) -> list[SecretUse]:
    """Every Secret key the server container reads, in a stable order."""
    jwt, admin = spec.identity.jwt.secret_ref, spec.identity.admin.password_secret_ref
    return [
        SecretUse(jwt.name, jwt.key, "DITTOFS_CONTROLPLANE_SECRET", ("identity.jwt.secretRef",)) if jwt
        else SecretUse(names.jwt_secret, JWT_KEY, "DITTOFS_CONTROLPLANE_SECRET", generated=True),
        SecretUse(admin.name, admin.key, "DITTOFS_ADMIN_INITIAL_PASSWORD", ("identity.admin.passwordSecretRef",))
        if admin else SecretUse(names.admin_secret, ADMIN_PASSWORD_KEY, "DITTOFS_ADMIN_INITIAL_PASSWORD",
                                generated=True),
        *_postgres_uses(spec, names),
        *_s3_uses(spec),
    ]


def backup_credentials(spec: DittoServerSpec) -> str | None:
    """The pgBackRest credentials Secret: read by Percona, not by the server, but a change re-reconciles."""
    backup = spec.percona.backup
    return backup.credentials_secret_ref.name if backup.enabled and backup.credentials_secret_ref else None


@dataclass(frozen=True, order=True)
class ProvisionedSecret:
    """A Secret key the operator sends to DittoFS over REST (a user's password): not in the pod's
    environment and not in the config hash; a change resets the password live."""

    path: str
    """Spec path of the reference (for messages)."""
    secret: str
    key: str


def provisioned_secrets(spec: DittoServerSpec) -> list[ProvisionedSecret]:
    return [ProvisionedSecret(f"spec.users[{i}].passwordSecretRef", u.password_secret_ref.name,
                              u.password_secret_ref.key) for i, u in enumerate(spec.users)]


def watched_secrets(spec: DittoServerSpec, names: Names) -> set[str]:
    """Secret names whose changes must re-trigger a reconcile."""
    found = {use.secret for use in secret_uses(spec, names)} | {p.secret for p in provisioned_secrets(spec)}
    backup = backup_credentials(spec)
    return found | {backup} if backup else found
