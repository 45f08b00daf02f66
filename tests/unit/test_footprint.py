"""What the serving process loads. Its RSS and start time (issue 15) depend on these staying out."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.paths import ROOT

SERVING = "dittoctl.main, webhook.server, webhook.wiring, certs.source"  # what `dittoctl run` imports


def test_the_serving_process_leaves_heavy_libraries_out() -> None:
    code = (f"import json, sys, {SERVING}; "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert "webhook.server" in loaded and "kopf" in loaded  # the probe did import the process
    # cryptography: ~11 MiB of RSS and 30 ms of start; only the self-signed mode and `dittoctl certs` need it.
    assert [m for m in loaded if m.split(".")[0] == "cryptography"] == []
    # kubernetes_asyncio's generated API and model classes (~45 MiB): dittoctl/kube/client.py keeps them out.
    generated = ("kubernetes_asyncio.client.models.", "kubernetes_asyncio.client.api.")
    assert [m for m in loaded if m.startswith(generated)] == []


def test_aiohttp_is_imported_without_the_system_trust_store_and_every_later_context_has_it() -> None:
    # aiohttp's two import-time client contexts (unused by the operator) would load the CA bundle: 0.06 s of a start.
    code = ("import json, ssl, dittoctl.main, aiohttp.connector as c; print(json.dumps(["
            "c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca'], "
            "c._SSL_CONTEXT_UNVERIFIED.cert_store_stats()['x509_ca'], "
            "ssl.create_default_context().cert_store_stats()['x509_ca'], "
            "'set_default_verify_paths' in vars(ssl.SSLContext)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    verified, unverified, later, patched = json.loads(out.stdout)
    assert (verified, unverified) == (0, 0)  # they trust nothing: a request falling back on them fails, closed
    assert later > 0, "a context made after the import must load the system's CAs"
    assert patched is False  # ssl.SSLContext is left as CPython made it


def test_no_model_of_ours_is_built_at_import() -> None:
    # Every model defers its schema (defer_build): the operator is ready long before it parses a DittoServer or
    # reads a DittoFS, and one model built at import (ApiStore, by a module-level default) was ~5 ms of a start.
    code = (f"import json, pydantic, {SERVING}\n"
            "def subclasses(c):\n"
            "    for s in c.__subclasses__():\n"
            "        yield s\n"
            "        yield from subclasses(s)\n"
            "ours = {c for c in subclasses(pydantic.BaseModel)\n"
            "        if c.__module__.split('.')[0] in ('dittoctl', 'reconciler', 'webhook', 'certs')}\n"
            "print(json.dumps([len(ours), sorted(c.__qualname__ for c in ours if c.__pydantic_complete__)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    found, built = json.loads(out.stdout)
    assert found > 50  # the probe saw the models (DittoServer's and DittoFS's records)
    assert built == []
