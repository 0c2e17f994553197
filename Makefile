# Two commands for a new machine: `make demo` and `make test` (see README.md).
# Both create .venv when it is missing and bring it up to date with pyproject.toml.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.cascade-installed
PURE   := uncertainty replicas policies optim orchestrator experiments k8s

.PHONY: demo test venv lint typecheck unit clean

venv: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cascade demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy $(PURE)

# Tiers run as separate pytest processes: unit tests forbid Ray/vLLM imports,
# the Ray tiers import them for real.
test: $(STAMP) lint typecheck
	$(PY) -m pytest -q -p no:cacheprovider tests/unit
	$(PY) -m pytest -q -p no:cacheprovider tests/integration $(wildcard tests/e2e)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
