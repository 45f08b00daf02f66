"""Shared test support: helpers used by more than one test suite, by the test bed and by the benchmarks.

The rule it exists for: no module imports a helper out of a test module (``test_*.py``) or out of the
``make demo`` script. Anything two places need lives here (or, for control-plane tooling, in
``tests/testbed``). Nothing in this package starts a control plane or collects tests.
"""
