# Everything a newcomer needs, from a fresh clone: `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint

$(BIN)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/zoho-job-watcher demo

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check watcher tests bench
	$(BIN)/ruff format --check watcher tests bench
	$(BIN)/mypy --strict watcher
	$(BIN)/hadolint Dockerfile
