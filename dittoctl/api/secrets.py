"""The one answer to "which Secret keys does a DittoServer consume": the builders render it as
`secretKeyRef`s, the reconciler hashes and watches it, the webhook checks it exists.

Values never pass through here, only names and keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from dittoctl.api.models import DittoServerSpec, SecretKeyRef
from dittoctl.api.naming import Names

ADMIN_PASSWORD_KEY = "password"
ADMIN_USERNAME_KEY = "username"
OPERATOR_PASSWORD_KEY = "password"  # of the operator's own DittoFS account (<name>-operator-credentials)
JWT_KEY = "jwt-secret"
MIN_JWT_SECRET_LENGTH = 32  # v0.29.0 refuses a shorter controlplane secret and the pod crash-loops


def digest_of(value: str | bytes) -> str:
    """What the operator keeps of a Secret value, and records of one it applied: its SHA-256, never the value."""
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).hexdigest()


@dataclass(frozen=True)
class ValueBounds:
    """The lengths (bytes) of a Secret value DittoFS starts with; outside them it exits at start."""

    what: str
    least: int
    most: int | None
    fix: str
    first_boot_only: bool = False
    """DittoFS reads the value only when its database is new: a running server is unaffected."""
    effect: str = "else it exits at start"

    def refuses(self, length: int) -> bool:
        return length < self.least or (self.most is not None and length > self.most)

    @property
    def need(self) -> str:
        if self.most is not None:
            return f"{self.least} to {self.most} bytes"
        return "a value that is not empty" if self.least == 1 else f"at least {self.least} characters"

    def refusal(self, where: str) -> str:
        """The error for a refused value at ``where`` (never its length: a message must not measure a Secret)."""
        return f"{where}: DittoFS needs {self.need} for the {self.what}, {self.effect}; {self.fix}"


JWT_SECRET = ValueBounds("JWT secret", MIN_JWT_SECRET_LENGTH, None,
                         "store a longer random value (e.g. `openssl rand -hex 32`)")
# bcrypt's limits, checked by v0.29.0's ValidatePassword when it creates the admin account.
ADMIN_PASSWORD = ValueBounds("admin password", 8, 72, "store a password of 8 to 72 bytes", first_boot_only=True)
# v0.29.0's config check at every start: an empty environment variable counts as unset, so the value is "".
POSTGRES_HOST = ValueBounds("PostgreSQL host", 1, None, "store the database server's host name")
POSTGRES_DATABASE = ValueBounds("PostgreSQL database", 1, None, "store the database's name")
POSTGRES_USER = ValueBounds("PostgreSQL user", 1, None, "store the user DittoFS logs in as")
LDAP_BIND_PASSWORD = ValueBounds("LDAP bind password", 1, None,
                                 "store the bind DN's password (DittoFS refuses an anonymous bind)")
EMPTY_REFUSED = frozenset({POSTGRES_HOST, POSTGRES_DATABASE, POSTGRES_USER, LDAP_BIND_PASSWORD})
# The same bcrypt limits, when the operator creates a declared user or resets its password over REST.
USER_PASSWORD = ValueBounds("user's password", 8, 72, "store a password of 8 to 72 bytes",
                            effect="else it refuses the account (500 `Failed to hash password`)")


def value_length(data: str) -> int:
    """The length in bytes of a Secret's ``data`` value (base64; 0 if it does not decode): lengths only."""
    try:
        return len(base64.b64decode(data))
    except (ValueError, binascii.Error):
        return 0


def bounded_values(spec: DittoServerSpec) -> list[tuple[str, SecretKeyRef, ValueBounds]]:
    """(spec path, reference, bounds) of each user Secret value DittoFS checks the length of at start."""
    found = [("spec.identity.jwt.secretRef", spec.identity.jwt.secret_ref, JWT_SECRET),
             ("spec.identity.admin.passwordSecretRef", spec.identity.admin.password_secret_ref, ADMIN_PASSWORD)]
    postgres = spec.database.postgres_secret_ref
    if postgres is not None and not spec.percona.enabled:  # Percona's own Secret is never empty
        path = "spec.database.postgresSecretRef"
        found += [(path, SecretKeyRef(name=postgres.name, key=key), bounds) for key, bounds in (
            (postgres.host_key, POSTGRES_HOST), (postgres.database_key, POSTGRES_DATABASE),
            (postgres.user_key, POSTGRES_USER))]
    if spec.identity.ldap is not None:
        found.append(("spec.identity.ldap.bindPasswordSecretRef", spec.identity.ldap.bind_password_secret_ref,
                      LDAP_BIND_PASSWORD))
    return [(path, ref, bounds) for path, ref, bounds in found if ref is not None]


def user_passwords(spec: DittoServerSpec) -> list[tuple[str, SecretKeyRef, ValueBounds]]:
    """(spec path, reference, bounds) of each declared user's password: sent over REST, not read at start."""
    return [(f"spec.users[{i}].passwordSecretRef", u.password_secret_ref, USER_PASSWORD)
            for i, u in enumerate(spec.users)]


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
    hashed: bool = True
    """False for a value DittoFS reads only at its first boot and the operator rotates over REST (a bind
    password): a rotation must not restart the pod."""

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
        *_identity_uses(spec),
    ]


LDAP_PASSWORD_SLOT = "ldap"
MACHINE_SECRET_SLOT = "kerberos"


def _identity_passwords(spec: DittoServerSpec) -> list[tuple[str, str, str, SecretKeyRef]]:
    """(slot, field, env var, ref) per identity-provider password: seeded from the env at DittoFS's first boot
    (its config check refuses an LDAP section without one), rotated over REST later (DittoFS applies it live)."""
    found: list[tuple[str, str, str, SecretKeyRef]] = []
    ldap, kerberos = spec.identity.ldap, spec.identity.kerberos
    if ldap is not None:
        found.append((LDAP_PASSWORD_SLOT, "identity.ldap.bindPasswordSecretRef", "DITTOFS_LDAP_BIND_PASSWORD",
                      ldap.bind_password_secret_ref))
    if kerberos is not None and kerberos.machine_account is not None:
        found.append((MACHINE_SECRET_SLOT, "identity.kerberos.machineAccount.secretRef",
                      "DITTOFS_KERBEROS_MACHINE_ACCOUNT_SECRET", kerberos.machine_account.secret_ref))
    return found


def _identity_uses(spec: DittoServerSpec) -> list[SecretUse]:
    return [SecretUse(ref.name, ref.key, env, (path,), hashed=False) for _, path, env, ref in _identity_passwords(spec)]


def _secret_keys(spec: DittoServerSpec, names: Names, *, all_env: bool) -> list[tuple[str, str]]:
    keys = [(u.secret, u.key) for u in secret_uses(spec, names) if all_env or u.hashed]
    return keys + [(m.secret, key) for m in mounted_secrets(spec) if m.hashed for key in m.keys]


def hashed_secret_keys(spec: DittoServerSpec, names: Names) -> list[tuple[str, str]]:
    """(secret, key) pairs whose value joins the config hash: a change restarts the pod."""
    return _secret_keys(spec, names, all_env=False)


def consumed_keys(spec: DittoServerSpec, names: Names) -> list[tuple[str, str]]:
    """(secret, key) pairs the reconciler digests before building: the whole environment (unhashed values,
    such as the LDAP bind password, are compared by digest and sent over REST) and the hashed files."""
    return _secret_keys(spec, names, all_env=True)


TLS_CERT_KEY, TLS_KEY_KEY, TLS_CA_KEY = "tls.crt", "tls.key", "ca.crt"
API_TLS_DIR = "/tls/api"  # where the control-plane TLS Secret is mounted
CLIENT_CA_DIR = "/tls/client-ca"  # where the mutual-TLS client CA is mounted
LDAP_CA_FILE = "/identity/ldap-ca/ca.crt"
KEYTAB_FILE = "/identity/kerberos/krb5.keytab"
KRB5_CONF_FILE = "/identity/krb5/krb5.conf"


@dataclass(frozen=True)
class MountedSecret:
    """A Secret the pod mounts as files: it must exist with every key for the pod to start. ``files`` maps
    each key to its file name under ``directory``."""

    path: str
    secret: str
    volume: str
    directory: str
    files: tuple[tuple[str, str], ...]
    hashed: bool = False
    """DittoFS reads the file only at start (krb5.conf, the mutual-TLS client CA): its digest joins the config
    hash. The serving pair, the LDAP CA and the keytab are re-read by DittoFS, so their rotation restarts
    nothing."""
    mode: int | None = None
    """0440 for private keys (with the pod's fsGroup: readable by the server's group only)."""

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.files)


def _file(secret_path: str, ref: SecretKeyRef, volume: str, file: str, *, hashed: bool = False,
          mode: int | None = None) -> MountedSecret:
    directory, _, name = file.rpartition("/")
    return MountedSecret(secret_path, ref.name, volume, directory, ((ref.key, name),), hashed, mode)


def mounted_secrets(spec: DittoServerSpec) -> list[MountedSecret]:
    found: list[MountedSecret] = []
    tls = spec.control_plane.tls
    if tls is not None:
        found.append(MountedSecret("spec.controlPlane.tls.secretName", tls.secret_name, "api-tls", API_TLS_DIR,
                                   ((TLS_CERT_KEY, TLS_CERT_KEY), (TLS_KEY_KEY, TLS_KEY_KEY)), mode=0o440))
        if tls.client_ca_secret_name is not None:
            found.append(MountedSecret("spec.controlPlane.tls.clientCaSecretName", tls.client_ca_secret_name,
                                       "client-ca", CLIENT_CA_DIR, ((TLS_CA_KEY, TLS_CA_KEY),), hashed=True))
    ldap, kerberos = spec.identity.ldap, spec.identity.kerberos
    if ldap is not None and ldap.ca_secret_ref is not None:
        found.append(_file("spec.identity.ldap.caSecretRef", ldap.ca_secret_ref, "ldap-ca", LDAP_CA_FILE))
    if kerberos is not None:
        found.append(_file("spec.identity.kerberos.keytabSecretRef", kerberos.keytab_secret_ref, "keytab",
                           KEYTAB_FILE, mode=0o440))
        found.append(_file("spec.identity.kerberos.krb5ConfSecretRef", kerberos.krb5_conf_secret_ref, "krb5-conf",
                           KRB5_CONF_FILE, hashed=True))
    return found


@dataclass(frozen=True)
class ApiTrust:
    """What the operator (and `dittoctl report`) trusts and presents on the API's TLS: the serving Secret's
    ca.crt (else the system roots), and with mutual TLS its own client pair."""

    ca_secret: str
    client_secret: str | None


def api_trust(spec: DittoServerSpec) -> ApiTrust | None:
    tls = spec.control_plane.tls
    return None if tls is None else ApiTrust(tls.secret_name, operator_client_secret(spec))


def operator_client_secret(spec: DittoServerSpec) -> str | None:
    """The client certificate the operator presents to a mutual-TLS API (read by the operator, not mounted)."""
    tls = spec.control_plane.tls
    return tls.operator_client_secret_name if tls is not None and tls.client_ca_secret_name else None


def backup_credentials(spec: DittoServerSpec) -> str | None:
    """The pgBackRest credentials Secret: read by Percona, not by the server, but a change re-reconciles."""
    backup = spec.percona.backup
    return backup.credentials_secret_ref.name if backup.enabled and backup.credentials_secret_ref else None


@dataclass(frozen=True, order=True)
class ProvisionedSecret:
    """A Secret key the operator sends to DittoFS over REST (a user's password, a store's credentials): not
    in the pod's environment; a password change is applied live, a store's at the next start (the pod
    rolls through status.storeRevision)."""

    path: str
    """Spec path of the reference (for messages)."""
    secret: str
    key: str
    optional: bool = False


S3_KEYS = ("access_key_id", "secret_access_key")
POSTGRES_STORE_KEYS = ("host", "port", "database", "user", "password", "sslmode")
INTEGER_STORE_KEYS = frozenset({"port"})  # sent as numbers: a postgres store ignores a string port (dials 5432)


def remote_store_credentials(spec: DittoServerSpec, index: int) -> dict[str, ProvisionedSecret]:
    """DittoFS config key -> Secret key of remote store ``index``'s credentials (its own, else spec.s3's, whose
    optional endpoint key serves a store that declares no endpoint: keys are only valid at their endpoint);
    empty when neither is set."""
    store = spec.stores.remote[index]
    path = f"spec.stores.remote[{index}].credentialsSecretRef"
    endpoint = None
    if store.credentials_secret_ref is not None:
        ref = store.credentials_secret_ref
        secret, keys = ref.name, (ref.access_key_id_key, ref.secret_access_key_key)
    elif spec.s3 is not None and spec.s3.credentials_secret_ref is not None:
        s3 = spec.s3.credentials_secret_ref
        secret, keys = s3.secret_name, (s3.access_key_id_key, s3.secret_access_key_key)
        path = "spec.s3.credentialsSecretRef"
        endpoint = s3.endpoint_key if store.endpoint is None else None
    else:
        return {}
    found = {config: ProvisionedSecret(path, secret, key) for config, key in zip(S3_KEYS, keys, strict=True)}
    if endpoint is not None:
        found["endpoint"] = ProvisionedSecret(path, secret, endpoint, optional=True)
    return found


def postgres_store_secrets(spec: DittoServerSpec, index: int) -> dict[str, ProvisionedSecret]:
    """DittoFS config key -> Secret key of postgres metadata store ``index`` (sslmode optional)."""
    ref = spec.stores.metadata[index].postgres_secret_ref if spec.stores.metadata else None
    if ref is None:
        return {}
    path = f"spec.stores.metadata[{index}].postgresSecretRef"
    keys = (ref.host_key, ref.port_key, ref.database_key, ref.user_key, ref.password_key, ref.ssl_mode_key)
    pairs = zip(POSTGRES_STORE_KEYS, keys, strict=True)
    return {config: ProvisionedSecret(path, ref.name, key, optional=config == "sslmode") for config, key in pairs}


def provisioned_secrets(spec: DittoServerSpec) -> list[ProvisionedSecret]:
    """Every Secret key the operator reads to provision DittoFS over REST (passwords, store credentials)."""
    found = [ProvisionedSecret(f"spec.users[{i}].passwordSecretRef", u.password_secret_ref.name,
                               u.password_secret_ref.key) for i, u in enumerate(spec.users)]
    for i in range(len(spec.stores.remote)):
        found.extend(remote_store_credentials(spec, i).values())
    for i in range(len(spec.stores.metadata or [])):
        found.extend(postgres_store_secrets(spec, i).values())
    return found + list(identity_secrets(spec).values())


def identity_secrets(spec: DittoServerSpec) -> dict[str, ProvisionedSecret]:
    """The identity providers' passwords, sent over REST when they rotate (DittoFS applies them live)."""
    return {slot: ProvisionedSecret(f"spec.{path}", ref.name, ref.key)
            for slot, path, _, ref in _identity_passwords(spec)}


def watched_secrets(spec: DittoServerSpec, names: Names) -> set[str]:
    """Secret names whose changes must re-trigger a reconcile."""
    found = {use.secret for use in secret_uses(spec, names)} | {p.secret for p in provisioned_secrets(spec)}
    found |= {m.secret for m in mounted_secrets(spec)}  # a rotated CA changes what the operator trusts
    client = operator_client_secret(spec)
    if client is not None:
        found.add(client)
    if spec.s3 is not None and spec.s3.credentials_secret_ref is not None:
        found.add(spec.s3.credentials_secret_ref.secret_name)  # status.s3 reports on it
    backup = backup_credentials(spec)
    return found | {backup} if backup else found
