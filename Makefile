# The two commands of the README: `make demo` and `make test`.
VENV := .venv/bin
.PHONY: bootstrap demo test lint unit integration bench cluster crd golden

bootstrap:
	bash scripts/bootstrap.sh

# What the targets below need: on a fresh clone they bootstrap first (once; later runs find the venv).
$(VENV)/python:
	bash scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/python -m tests.testbed demo

cluster: bootstrap
	$(VENV)/python -m tests.testbed up

lint: $(VENV)/python
	$(VENV)/ruff check .
	$(VENV)/mypy
	$(VENV)/lint-imports

test: bootstrap lint
	$(VENV)/python -m pytest -p no:cacheprovider -q -ra --durations=15

unit: $(VENV)/python
	$(VENV)/python -m pytest -q tests/unit

bench: bootstrap
	$(VENV)/python -m bench

crd: $(VENV)/python
	$(VENV)/dittoctl crd > config/crd/dittoservers.yaml

golden: $(VENV)/python
	UPDATE_GOLDEN=1 $(VENV)/python -m pytest -q tests/unit/test_builders.py

chart manifests: $(VENV)/python ; UPDATE_CHART=1 $(VENV)/python -m pytest -q -p no:cacheprovider tests/unit/test_chart.py  # sync the chart CRD copy, render config/install
