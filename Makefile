# Two entry points for a fresh machine:
#   make demo   set up .venv, train the `cpu` preset on the built-in toon faces, write figures
#   make test   set up .venv, run the test suite
PYTHON ?= python3
VENV   ?= .venv
# The CPU build is enough everywhere; on a CUDA machine set TORCH_SPEC to your CUDA wheel.
TORCH_SPEC ?= torch==2.13.0
DEMO_MINUTES ?= 10
BIN = $(VENV)/bin

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/fexgan train --data toon --preset cpu --minutes $(DEMO_MINUTES) --out runs/demo
	$(BIN)/fexgan figures runs/demo --out runs/demo/figures

test: setup
	$(BIN)/python -m pytest -q --timeout 600

bench: setup
	$(BIN)/fexgan bench

clean:
	rm -rf $(VENV) runs .pytest_cache
