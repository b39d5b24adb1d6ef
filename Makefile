# Two commands do all set-up on a fresh machine (see README "Quickstart"):
#   make demo   creates .venv, installs synthray, runs the main job on the built-in benchmark
#   make test   creates .venv, installs synthray with its test extras, runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synthray-installed
DEMO_OUT ?= runs/demo

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/synthray demo --out $(DEMO_OUT)

# pytest first, so its summary line is always printed; then the lint, the format check and
# the type check ([tool.mypy] in pyproject.toml); any failing fails.
test: $(STAMP)
	status=0; $(PY) -m pytest || status=$$?; \
	$(VENV)/bin/ruff check synthray serve jobs benchmarks cluster tests || status=1; \
	$(VENV)/bin/ruff format --check synthray serve jobs benchmarks cluster tests || status=1; \
	$(VENV)/bin/mypy || status=1; \
	exit $$status

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
