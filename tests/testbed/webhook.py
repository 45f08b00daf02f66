"""The operator's ValidatingWebhookConfiguration on the test bed (TESTBED §5).

What the chart renders, with the Service reference replaced by a loopback URL: the apiserver cannot reach
a Service here, but it can reach the operator process on 127.0.0.1. One home for `make demo`, the
benchmarks and the integration tests.
"""

from __future__ import annotations

import json
import time
from typing import Any

from webhook.server import MATCH_CONDITIONS, WEBHOOK_PATH

from .cluster import Testbed

CONFIG_NAME = "dittofs-operator"
# Passes the CRD schema but breaks rule 2 (port clash), so only our webhook can deny it, naming this field.
PROBE_FIELD = "spec.controlPlane.port"
PROBE = {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
         "metadata": {"name": "probe", "namespace": "default"},
         "spec": {"storage": {"metadataSize": "1Gi"}, "controlPlane": {"port": 12049}}}


def webhook_configuration(port: int, ca_b64: str, name: str = CONFIG_NAME) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "vdittoserver.dittofs.dittofs.com",
            "clientConfig": {"url": f"https://127.0.0.1:{port}{WEBHOOK_PATH}", "caBundle": ca_b64},
            "rules": [{"apiGroups": ["dittofs.dittofs.com"], "apiVersions": ["v1alpha1"],
                       "operations": ["CREATE", "UPDATE"], "resources": ["dittoservers"], "scope": "Namespaced"}],
            "matchConditions": MATCH_CONDITIONS,
            "failurePolicy": "Fail", "sideEffects": "NoneOnDryRun", "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10, "matchPolicy": "Equivalent",
            "namespaceSelector": {"matchExpressions": [{"key": "dittofs.dittofs.com/validation",
                                                        "operator": "NotIn", "values": ["disabled"]}]},
        }],
    }


def install_webhook(tb: Testbed, port: int, name: str = CONFIG_NAME, timeout: float = 30.0) -> None:
    """Register the webhook and return once the apiserver calls it (it loads configurations asynchronously).

    Blocking: a caller whose webhook server runs on its own event loop must call this from a thread.
    """
    tb.kubectl("apply", "-f", "-", input=json.dumps(webhook_configuration(port, tb.ca_b64, name)))
    deadline = time.monotonic() + timeout
    while True:
        result = tb.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(PROBE), check=False)
        if PROBE_FIELD in result.stderr:  # our message, so our webhook answered
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the apiserver did not call the webhook within {timeout:.0f} s: "
                               f"{result.stderr.strip()}")
        time.sleep(0.3)
