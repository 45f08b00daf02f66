"""Generated Secrets (SPEC §4.1). The random values are passed in, so builders stay pure.

They carry no ownerReference: DittoFS stores the admin password and signs tokens at first boot, into
the control-plane database on a retained PVC, so the Secrets must live exactly as long as that data. A
DittoServer deleted and re-created with the same name finds them and still logs in; removing
everything is `kubectl delete secret,pvc -l app.kubernetes.io/instance=<name>` (docs/TROUBLESHOOTING.md).
"""

from __future__ import annotations

import secrets as _random
from typing import Any

from dittoctl.api.naming import Names
from dittoctl.api.secrets import ADMIN_PASSWORD_KEY, ADMIN_USERNAME_KEY, JWT_KEY, OPERATOR_PASSWORD_KEY


def new_jwt_value() -> str:
    return _random.token_hex(32)  # 64 hex chars from the OS CSPRNG


def new_password() -> str:
    return _random.token_urlsafe(24)  # 32 URL-safe chars


def jwt_secret(names: Names, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": _unowned(names, names.jwt_secret, "jwt"),
        "stringData": {JWT_KEY: value},
    }


def admin_secret(names: Names, username: str, password: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": _unowned(names, names.admin_secret, "admin-credentials"),
        "stringData": {ADMIN_USERNAME_KEY: username, ADMIN_PASSWORD_KEY: password},
    }


def _unowned(names: Names, name: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": names.namespace, "labels": names.labels(component)}



def operator_secret(names: Names, username: str, password: str) -> dict[str, Any]:
    """The operator's own DittoFS account (SPEC §13.2). What the account created is recorded on the
    control-plane PVC instead (``ownership_record``): the record must live exactly as long as the data."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": _unowned(names, names.operator_secret, "operator-credentials"),
        "stringData": {ADMIN_USERNAME_KEY: username, OPERATOR_PASSWORD_KEY: password},
    }
