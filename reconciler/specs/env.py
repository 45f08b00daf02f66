"""Environment of the server container.

Secret values only ever travel as `secretKeyRef`s; the operator itself sees their digests (for the
config hash), never renders them.
"""

from __future__ import annotations

from typing import Any

from dittoctl.api.models import DittoServerSpec
from dittoctl.api.naming import Names
from dittoctl.api.secrets import secret_uses


def container_env(spec: DittoServerSpec, names: Names) -> list[dict[str, Any]]:
    env = [use.env_var() for use in secret_uses(spec, names)]
    if spec.percona.enabled:
        env.append({"name": "DITTOFS_DATABASE_POSTGRES_SSLMODE", "value": "require"})
    return env
