"""The release's anchor: what the operator makes for itself in its own namespace (the leader Lease, the
selfSigned certificate Secret) is owned by the chart's ValidatingWebhookConfiguration, so `helm uninstall`,
which deletes that configuration, lets the garbage collector take them too. Without a webhook (or run by hand,
before the configuration exists) they have no owner and stay, as before."""

from __future__ import annotations

import logging
from typing import Any

from dittoctl.api.kinds import WEBHOOKCONFIGS
from dittoctl.kube.gateway import ApiError, Gateway

log = logging.getLogger("dittofs.anchor")


def owner_reference(obj: dict[str, Any]) -> dict[str, Any]:
    """An ownerReference to ``obj`` that never blocks its deletion (not a controller: nothing to adopt)."""
    meta = obj["metadata"]
    return {"apiVersion": obj.get("apiVersion") or WEBHOOKCONFIGS.api_version,
            "kind": obj.get("kind") or WEBHOOKCONFIGS.kind,
            "name": meta["name"], "uid": meta["uid"], "blockOwnerDeletion": False}


async def anchor_owners(gateway: Gateway, webhook_config_name: str | None) -> list[dict[str, Any]]:
    """``[ownerReference]`` to the webhook configuration if it exists and can be read, else ``[]``."""
    if not webhook_config_name:
        return []
    try:
        config = await gateway.get_or_none(WEBHOOKCONFIGS, webhook_config_name)
    except ApiError as exc:  # e.g. 403 from an older chart's RBAC: the object is still made, just unowned
        log.info("cannot read the webhook configuration to own the operator's objects: %s", exc)
        return []
    # A uid is what the garbage collector follows; an object without one (never from a real API) owns nothing.
    return [owner_reference(config)] if config is not None and config["metadata"].get("uid") else []
