"""A real Kubernetes control plane on 127.0.0.1 for integration tests (see README.md)."""

from .api import ApiClient, ApiError
from .cluster import (
    COMPONENTS,
    NODE_NAME,
    OPERATOR_ADMIN_BINDING,
    OPERATOR_USER,
    STORAGE_CLASS,
    KubectlError,
    Testbed,
    TestbedError,
)
from .paths import Binaries, ensure_binaries

__all__ = [
    "COMPONENTS",
    "NODE_NAME",
    "OPERATOR_ADMIN_BINDING",
    "OPERATOR_USER",
    "STORAGE_CLASS",
    "ApiClient",
    "ApiError",
    "Binaries",
    "KubectlError",
    "Testbed",
    "TestbedError",
    "ensure_binaries",
]
