"""Counting the spec parses a piece of code makes (the webhook and the rules parse each spec once)."""

from __future__ import annotations

from typing import Any

import pytest

from dittoctl.api.models import DittoServerSpec


def count_spec_parses(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The raw specs ``DittoServerSpec.model_validate`` is called with from now on, in order; the test's
    monkeypatch restores the method."""
    parses: list[object] = []
    original = DittoServerSpec.model_validate.__func__  # type: ignore[attr-defined]

    def counted(cls: type[DittoServerSpec], raw: object, *args: Any, **kwargs: Any) -> DittoServerSpec:
        parses.append(raw)
        result: DittoServerSpec = original(cls, raw, *args, **kwargs)
        return result

    monkeypatch.setattr(DittoServerSpec, "model_validate", classmethod(counted))
    return parses
