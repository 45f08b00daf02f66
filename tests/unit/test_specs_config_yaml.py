"""config.yaml is written by libyaml where it writes PyYAML's exact text, and by PyYAML elsewhere.

The text is hashed into the pod template, so one byte of difference would restart every server on an upgrade of
the operator: what decides the emitter is proven here, not assumed.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.specs.config import dump_config


def _pyyaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def _libyaml(config: dict[str, Any]) -> str:
    return yaml.dump(config, Dumper=yaml.CSafeDumper, sort_keys=False, default_flow_style=False)


_ASCII = st.characters(min_codepoint=32, max_codepoint=126)
_SCALARS = st.one_of(st.text(_ASCII, max_size=40), st.text(_ASCII, min_size=60, max_size=300),  # long: folded
                     st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
_KEYS = st.text(_ASCII, min_size=1, max_size=30)
_CONFIGS = st.dictionaries(_KEYS, st.recursive(
    _SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=25), min_size=1, max_size=6)


def test_libyaml_is_there() -> None:
    assert yaml.__with_libyaml__, "PyYAML without libyaml: config.yaml would be emitted 4x slower"


@settings(max_examples=400, deadline=None)
@given(_CONFIGS)
def test_printable_ascii_gets_the_same_text_from_both_emitters(config: dict[str, Any]) -> None:
    assert _libyaml(config) == _pyyaml(config)
    assert dump_config(config) == _pyyaml(config)


def test_elsewhere_the_emitters_differ_and_pyyaml_writes_it() -> None:
    # Found by hypothesis: a long double-quoted scalar with escapes is folded at different columns.
    config = {"ldap": {"bind_dn": "cn=Zürich Ålesund Øresund Straße,ou=Benutzer,dc=example,dc=com " * 2,
                       "tab": "a\tb"}}
    assert _libyaml(config) != _pyyaml(config)
    assert dump_config(config) == _pyyaml(config)
    for odd in ("é", "a\tb", "line\nbreak", "\x7f"):
        assert dump_config({"k": [odd]}) == _pyyaml({"k": [odd]})
