"""Update mode of the tests that compare generated files (goldens, the chart's copies, the generated docs).

``UPDATE_GOLDEN=1`` (`make golden`), ``UPDATE_CHART=1`` (`make chart`) and ``UPDATE_DOCS=1`` make those tests
rewrite the files instead of comparing them. Only the exact value ``1`` turns it on (``0`` or ``false`` compare),
and never on CI: a CI run that rewrote the files it checks could not fail, so there it is refused.
"""

from __future__ import annotations

import os

import pytest

from tests.support.prereqs import on_ci


def updating(var: str) -> bool:
    """Whether ``var`` asks this test to rewrite its generated files rather than compare them (call it from
    the test, not at import: on CI the refusal is this test's failure)."""
    if os.environ.get(var) != "1":
        return False
    if on_ci():
        pytest.fail(f"{var}=1 on CI: a CI run compares the generated files and never rewrites them; "
                    f"unset {var}", pytrace=False)
    return True
