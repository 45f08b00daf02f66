"""kubernetes_asyncio without its generated API and model classes.

`import kubernetes_asyncio` executes package initialisers that import ~850 modules (every API group and
model), about 45 MiB of RSS. The gateway needs four of them: ApiClient, Configuration, the REST layer and
the kubeconfig/in-cluster loaders; it exchanges plain JSON. So the two package initialisers are skipped
(their modules are registered without being executed) and only those submodules are loaded. kopf, which
imports kubernetes_asyncio when present, then finds these light modules. If the full package was already
imported (e.g. by a test), it is used as is.

aiohttp is imported first, without the system's CA bundle: see ``_without_system_trust``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import ssl
import sys
from collections.abc import Iterator
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


@contextlib.contextmanager
def _without_system_trust() -> Iterator[None]:
    """While it lasts, a new SSLContext does not load the system's CA bundle.

    aiohttp makes two client contexts at import, each loading the bundle: ~30 ms apiece with OpenSSL 3, 0.06 s of a
    0.48 s start (ISSUE15-round14). The operator never uses them: each of its TLS clients brings its own context
    (the API server's CA from the kubeconfig or service account, for the gateway and for kopf; a DittoServer's CA,
    else the system's, for DittoFS), made after this import with the bundle loaded as usual. A request that fell
    back on aiohttp's two would fail verification, never pass it: they trust nothing."""
    name, own = "set_default_verify_paths", ssl.SSLContext.__dict__
    before = own.get(name)  # None: inherited from _ssl._SSLContext, as in CPython 3.11-3.13
    setattr(ssl.SSLContext, name, lambda _: None)
    try:
        yield
    finally:
        if before is None:
            delattr(ssl.SSLContext, name)
        else:
            setattr(ssl.SSLContext, name, before)


def _load() -> None:
    if "aiohttp.connector" not in sys.modules:
        with _without_system_trust():
            importlib.import_module("aiohttp.connector")
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
