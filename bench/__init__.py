"""Benchmarks of SPEC §11 (`make bench`, `python -m bench --only FIGURE`): see `bench/cli.py`."""
