# Two entry points for a fresh machine with only Python 3.11:
#   make demo   creates .venv, installs the package (its runtime dependencies only), runs the main job on the
#               embedded tiny Qwen3
#   make test   the same .venv plus the test extra (torch, pytest, the peer SAE libraries, notebook tooling,
#               datasets), runs the whole test suite (slow tests included)
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
HASH    = $(shell cat pyproject.toml | sha1sum | cut -c1-12)
RUNTIME = $(VENV)/.installed-$(HASH)
TESTING = $(VENV)/.installed-test-$(HASH)

.PHONY: demo test test-fast lint bench venv clean

# a changed pyproject.toml removes both stamps, so each is reinstalled when next needed
$(RUNTIME): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	@rm -f $(VENV)/.installed-*; touch $(RUNTIME)

$(TESTING): $(RUNTIME)
	$(PY) -m pip install -q -e '.[test]'
	@touch $(TESTING)

venv: $(TESTING)

demo: $(RUNTIME)
	$(VENV)/bin/qwen-sae demo

test: $(TESTING)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

lint: $(TESTING)
	$(VENV)/bin/ruff check qwen_sae_jax tests benchmarks launch
	$(VENV)/bin/mypy

test-fast: $(TESTING)
	$(PY) -m pytest -q -m "not slow"

bench: $(TESTING)
	for b in benchmarks/[!_]*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
