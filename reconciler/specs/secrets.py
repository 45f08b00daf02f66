"""Generated Secrets (SPEC §4.1). The random values are passed in, so builders stay pure."""

from __future__ import annotations

import secrets as _random
from typing import Any

from dittoctl.api.naming import Names
from dittoctl.api.secrets import ADMIN_PASSWORD_KEY, ADMIN_USERNAME_KEY, JWT_KEY


def new_jwt_value() -> str:
    return _random.token_hex(32)  # 64 hex chars from the OS CSPRNG


def new_password() -> str:
    return _random.token_urlsafe(24)  # 32 URL-safe chars


def jwt_secret(names: Names, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": names.metadata(names.jwt_secret, "jwt"),
        "stringData": {JWT_KEY: value},
    }


def admin_secret(names: Names, username: str, password: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": names.metadata(names.admin_secret, "admin-credentials"),
        "stringData": {ADMIN_USERNAME_KEY: username, ADMIN_PASSWORD_KEY: password},
    }
