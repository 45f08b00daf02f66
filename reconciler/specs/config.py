"""The server's `config.yaml` (DittoFS v0.29.0 keys only) and the ConfigMap that carries it."""

from __future__ import annotations

from typing import Any

import yaml

from dittoctl.api.models import SHUTDOWN_TIMEOUT_SECONDS, DittoServerSpec
from dittoctl.api.naming import CONFIG_FILE, Names
from dittoctl.api.secrets import API_TLS_DIR, CLIENT_CA_DIR, TLS_CA_KEY, TLS_CERT_KEY, TLS_KEY_KEY
from reconciler.specs.identity import identity_config

# libyaml's emitter is ~4x faster than PyYAML's (the config was 4 % of the operator's CPU in the 300 burst) and
# writes the same text where every string is printable ASCII (tests/unit/test_specs_config_yaml.py). Elsewhere
# (a non-ASCII LDAP DN, say) the two fold long quoted lines differently, and this text is hashed into the pod
# template: another emitter would restart the server, so such a config keeps PyYAML's.
_LIBYAML_DUMPER: type[yaml.SafeDumper] | None = getattr(yaml, "CSafeDumper", None)


def _printable_ascii(value: Any) -> bool:
    if isinstance(value, str):
        return value.isascii() and value.isprintable()
    if isinstance(value, dict):
        return all(_printable_ascii(k) and _printable_ascii(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_printable_ascii(v) for v in value)
    return True


def dump_config(config: dict[str, Any]) -> str:
    """PyYAML's ``safe_dump`` text (block style, keys in order), written by libyaml where that is the same."""
    fast = _LIBYAML_DUMPER is not None and _printable_ascii(config)
    return yaml.dump(config, Dumper=_LIBYAML_DUMPER if fast else yaml.SafeDumper, sort_keys=False,
                     default_flow_style=False)


def render_config(spec: DittoServerSpec, *, seeds: bool = True) -> str:
    """Deterministic YAML: no secrets (those arrive as environment variables, see `env.py`). ``seeds=False``
    leaves out the sections DittoFS reads only at its first boot (the identity providers): the config hash
    is taken over that, so editing them restarts nothing (the planner applies them over REST)."""
    config: dict[str, Any] = {
        "logging": {"level": spec.logging.level, "format": spec.logging.format, "output": "stdout"},
        "shutdown_timeout": f"{SHUTDOWN_TIMEOUT_SECONDS}s",
    }
    if spec.uses_postgres:
        # v0.29.0 binds DITTOFS_DATABASE_POSTGRES_* from the environment even when the keys are absent.
        config["database"] = {"type": "postgres"}
    else:
        config["database"] = {"type": "sqlite", "sqlite": {"path": spec.database.sqlite.path}}
    config["controlplane"] = {
        "host": "0.0.0.0",  # noqa: S104 - the pod must accept Service traffic
        "port": spec.control_plane.port,
        "jwt": {
            "access_token_duration": spec.identity.jwt.access_token_duration,
            "refresh_token_duration": spec.identity.jwt.refresh_token_duration,
        },
    }
    tls = spec.control_plane.tls
    if tls is not None:
        config["controlplane"]["tls"] = {"cert_file": f"{API_TLS_DIR}/{TLS_CERT_KEY}",
                                         "key_file": f"{API_TLS_DIR}/{TLS_KEY_KEY}"}
        if tls.min_version:
            config["controlplane"]["tls"]["min_version"] = tls.min_version
        if tls.client_ca_secret_name:
            config["controlplane"]["tls"]["client_ca"] = f"{CLIENT_CA_DIR}/{TLS_CA_KEY}"
    if spec.metrics.enabled:
        # v0.29.0 defaults metrics.host to 127.0.0.1, unreachable for Prometheus in a pod.
        config["metrics"] = {"enabled": True, "host": "0.0.0.0", "port": spec.metrics.port,  # noqa: S104
                             "path": spec.metrics.path}
    if seeds:
        config.update(identity_config(spec))
    # No `admin` block: v0.29.0 reads admin.username only in `dfs init`; the bootstrap user is always
    # `admin`, its password comes from DITTOFS_ADMIN_INITIAL_PASSWORD (docs/DITTOFS_FACTS.md).
    return dump_config(config)


def config_map(names: Names, config_text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": names.metadata(names.config_map, "config"),
        "data": {CONFIG_FILE: config_text},
    }


def rendered_sqlite_path(config_yaml: str) -> str | None:
    """The SQLite path a rendered config.yaml runs with (the inverse of the database section above); None for
    PostgreSQL or an unreadable file."""
    try:
        config = yaml.safe_load(config_yaml or "") or {}
    except yaml.YAMLError:
        return None
    database = config.get("database") if isinstance(config, dict) else None
    sqlite = database.get("sqlite") if isinstance(database, dict) and database.get("type") == "sqlite" else None
    path = sqlite.get("path") if isinstance(sqlite, dict) else None
    return path if isinstance(path, str) else None
