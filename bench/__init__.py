"""Benchmarks of SPEC §11 (`make bench`)."""
