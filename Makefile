# The README's two commands. Each sets up what it needs first (scripts/setup.sh, idempotent).
VENV ?= .venv
export VENV

.PHONY: demo test lint
demo:  ## bundled SmolLM2-135M on local BBH, offline: accuracy + efficiency
	bash scripts/setup.sh
	$(VENV)/bin/lm-eval-perf demo

test:  ## the whole test suite (what CI runs)
	bash scripts/setup.sh --test
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder
	$(VENV)/bin/ruff check .

lint:
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
