"""Kubernetes timestamps (RFC 3339, second precision, UTC), as metav1.Time writes them."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
