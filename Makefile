# hdmf-zarr-parallel: `make test` creates .venv (Python >= 3.12) on first use and runs the test suite.
#
#   make venv    create .venv and install the package with its test extra (again only when pyproject.toml changes)
#   make test    run the full test suite
#   make demo    write, verify and time a ~1 GB synthetic NWB Zarr recording
#   make lint    ruff check src tests
#   make clean   remove caches and build outputs (keeps .venv); `make distclean` removes .venv too
#
# Set PYTHON=/path/to/python3.x to choose the interpreter that creates .venv.

SHELL := /bin/bash
.DEFAULT_GOAL := test

VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.hdmf-zarr-parallel-installed

# Candidates for the interpreter that creates .venv, in order; the first one that
# runs and is >= 3.12 wins. pyenv's shims fail when the version is not active, so
# each candidate is run, not just looked up.
PYTHON_CANDIDATES := python3.13 python3.12 python3 \
	$(sort $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12)) \
	$(sort $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13))
IS_PY312 := import sys; sys.exit(sys.version_info < (3, 12))

.PHONY: venv demo test lint clean distclean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@set -e; \
	if [ -x "$(VENV_PYTHON)" ] && "$(VENV_PYTHON)" -c "$(IS_PY312)" 2>/dev/null; then \
		echo "using existing $(VENV) ($$("$(VENV_PYTHON)" --version))"; \
	else \
		py="$(PYTHON)"; \
		if [ -z "$$py" ]; then \
			for cand in $(PYTHON_CANDIDATES) \
				"$$(PYENV_VERSION=$$(pyenv versions --bare 2>/dev/null | grep -E '^3\.1[2-9](\.|$$)' | tail -n 1) \
					pyenv which python3 2>/dev/null)"; do \
				if [ -n "$$cand" ] && "$$cand" -c "$(IS_PY312)" >/dev/null 2>&1; then py="$$cand"; break; fi; \
			done; \
		fi; \
		if [ -z "$$py" ] || ! "$$py" -c "$(IS_PY312)" >/dev/null 2>&1; then \
			echo "error: no Python >= 3.12 found (tried PYTHON, python3.13, python3.12, python3, pyenv);" \
				"install one or run: make PYTHON=/path/to/python3.12 venv" >&2; \
			exit 1; \
		fi; \
		echo "creating $(VENV) with $$py ($$("$$py" --version))"; \
		rm -rf "$(VENV)"; \
		"$$py" -m venv "$(VENV)"; \
	fi
	$(VENV_PYTHON) -m pip install -e ".[test]"
	@touch $@

demo: venv
	$(VENV)/bin/hdmf-zarr-parallel demo

test: venv
	$(VENV_PYTHON) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf build dist .pytest_cache .ruff_cache .hypothesis src/*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
