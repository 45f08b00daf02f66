"""kubernetes_asyncio without its generated API and model classes.

`import kubernetes_asyncio` executes package initialisers that import ~850 modules (every API group and
model), about 45 MiB of RSS. The gateway needs four of them: ApiClient, Configuration, the REST layer and
the kubeconfig/in-cluster loaders; it exchanges plain JSON. So the two package initialisers are skipped
(their modules are registered without being executed) and only those submodules are loaded. kopf, which
imports kubernetes_asyncio when present, then finds these light modules. If the full package was already
imported (e.g. by a test), it is used as is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType


def _package_shell(name: str) -> ModuleType:
    """Register package `name` without running its __init__ (submodules still import normally)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ImportError(f"no module named {name!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def _load() -> None:
    client = _package_shell("kubernetes_asyncio").__dict__.get("client") or _package_shell(
        "kubernetes_asyncio.client")
    _package_shell("kubernetes_asyncio.client.models")  # api_client imports it; we never deserialise models
    api_client = importlib.import_module("kubernetes_asyncio.client.api_client")
    configuration = importlib.import_module("kubernetes_asyncio.client.configuration")
    exceptions = importlib.import_module("kubernetes_asyncio.client.exceptions")
    for attr, value in (("ApiClient", api_client.ApiClient), ("Configuration", configuration.Configuration),
                        ("ApiException", exceptions.ApiException)):
        if not hasattr(client, attr):
            setattr(client, attr, value)
    importlib.import_module("kubernetes_asyncio.config")  # its loaders need only the three names above


_load()
