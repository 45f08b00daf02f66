"""The README's first command, end to end: `python -m tests.testbed demo` reaches a Ready DittoServer."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.paths import ROOT

pytestmark = pytest.mark.integration


def test_demo_reaches_ready() -> None:
    result = subprocess.run([sys.executable, "-m", "tests.testbed", "demo"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "DEMO_EXIT": "1"}, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DittoServer demo Ready" in result.stderr
    assert "1/1" in result.stdout and "Running" in result.stdout
    assert "export KUBECONFIG=" in result.stdout
