"""The shared API: pydantic models of DittoServer and the CRD generated from them."""

from dittoctl.api.models import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    DittoServer,
    DittoServerSpec,
    DittoServerStatus,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "DittoServer",
    "DittoServerSpec",
    "DittoServerStatus",
]
