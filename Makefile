# idstream developer commands. `make help` lists them.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CHECKED := src tests bench scripts

.PHONY: help demo test lint fmt bench kafka clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' Makefile | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP) ## the main job: broker, worker, sample traffic, summary; KEEP=1 keeps the explorer up
	$(BIN)/idstream demo $(if $(filter-out 0,$(KEEP)),--keep)

test: $(STAMP) lint ## lint, type-check, then the whole test suite on a real Kafka broker
	$(BIN)/pytest

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict on src/
	$(BIN)/ruff check $(CHECKED)
	$(BIN)/ruff format --check $(CHECKED)
	$(BIN)/mypy

fmt: $(STAMP) ## format and autofix
	$(BIN)/ruff format $(CHECKED)
	$(BIN)/ruff check --fix $(CHECKED)

bench: $(STAMP) ## run the benchmarks (see bench/README.md)
	$(BIN)/python -m bench

NODES ?= 1
kafka: ## run a local Kafka broker in the foreground (Ctrl-C stops it; NODES=3: a cluster)
	$(BIN)/python -m idstream.devbroker run --nodes $(NODES)

clean: ## remove the virtualenv and caches (not the jar cache in ~/.cache/idstream)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
