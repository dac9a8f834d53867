# envrepro developer entry points. `make demo` runs the main job end to end; `make test` the tests.
SHELL := /bin/bash
PYTHON ?= python3

.PHONY: venv test unit integration e2e demo bench matrix standins dist clean

venv:
	@bash scripts/dev-venv.sh

# Unit tests (no Docker, no TensorFlow), integration (real TensorFlow on the host and in a
# Python 3.8 + TF 2.4.1 env), end-to-end (real Docker engine, driving the `envrepro` command of the
# built wheel installed in a clean venv: scripts/check-dist.sh). CI=true makes missing pieces fail.
# ENVREPRO_DEV_VENV: a dev venv made already (.ci/run makes it once, then runs test and matrix side
# by side: two dev-venv.sh at once would reinstall the editable package under each other).
DEV_VENV = $${ENVREPRO_DEV_VENV:-$$(PYTHON=$(PYTHON) bash scripts/dev-venv.sh)}

test:
	@set -e; v=$(DEV_VENV); \
	if docker info >/dev/null 2>&1 || [ "$$CI" = "true" ]; then bash scripts/ensure-docker.sh; \
	  $$v/bin/python tests/e2e/standins.py 3.8 3.11; fi; \
	$$v/bin/lint-imports; \
	exe=$$(PYTHON=$(PYTHON) bash scripts/check-dist.sh); \
	ENVREPRO_UNDER_TEST=$$exe $$v/bin/python -m pytest -ra $(PYTEST_ARGS)

unit:
	@v=$$(bash scripts/dev-venv.sh); $$v/bin/python -m pytest -q tests/unit

# The fidelity matrix: models from five real training environments (TF 2.4 to 2.21), captured by
# the hook, --python and --infer, loaded in Docker; prints the table (also matrix-out/matrix.txt).
matrix:
	@set -e; v=$(DEV_VENV); bash scripts/ensure-docker.sh; \
	ENVREPRO_MATRIX=1 $$v/bin/python -m pytest -p no:cacheprovider -q -rA tests/matrix $(PYTEST_ARGS)

demo:
	@bash scripts/demo.sh

bench:
	@v=$$(bash scripts/dev-venv.sh); $$v/bin/python benchmarks/run.py

# The sdist and the wheel built the PyPA way, checked (twine, check-wheel-contents, no build
# warning), installed from each and by pipx/uv; prints the wheel's installed envrepro command.
dist:
	@PYTHON=$(PYTHON) bash scripts/check-dist.sh

standins:
	@v=$$(bash scripts/dev-venv.sh); bash scripts/ensure-docker.sh; $$v/bin/python tests/e2e/standins.py 3.8 3.11

clean:
	rm -rf demo-out build dist *.egg-info .pytest_cache
