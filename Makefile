# Everything a newcomer needs, from a fresh clone: `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint audit

$(BIN)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $@

setup: $(BIN)/.installed

# The dependency audit runs from a virtualenv of its own (see pyproject.toml, extra "audit").
AUDIT_VENV ?= .venv-audit
$(AUDIT_VENV)/bin/.installed: pyproject.toml constraints.txt
	python3 -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AUDIT_VENV)/bin/python -m pip install --quiet -c constraints.txt pip-audit
	touch $@

audit: $(AUDIT_VENV)/bin/.installed
	$(AUDIT_VENV)/bin/python .ci/audit.py $(AUDIT_VENV)/bin/pip-audit -r constraints.txt --no-deps \
	    --disable-pip --progress-spinner off

demo: setup
	$(BIN)/zoho-job-watcher demo

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check watcher tests bench
	$(BIN)/ruff format --check watcher tests bench
	$(BIN)/mypy --strict watcher
	$(BIN)/hadolint Dockerfile
