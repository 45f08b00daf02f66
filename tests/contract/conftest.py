"""Fixtures for the contract tests against the real ``dfs`` v0.29.0 binary (no Kubernetes)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.support.prereqs import require
from tests.testbed.dfs import DfsError, dfs_binary

ADMIN_PASSWORD = "it-admin-password-1"


@pytest.fixture(scope="session")
def dfs_path() -> Path:
    """The cached dfs binary (`make bootstrap` builds it); missing, it fails every contract test."""
    return require("dfs", dfs_binary, DfsError)


@pytest.fixture
def dfs_env(dfs_path: Path) -> dict[str, str]:
    """SPEC §4.3's two secrets: a 64-hex-char JWT secret and the bootstrap admin password."""
    return {
        "DITTOFS_CONTROLPLANE_SECRET": secrets.token_hex(32),
        "DITTOFS_ADMIN_INITIAL_PASSWORD": ADMIN_PASSWORD,
    }
