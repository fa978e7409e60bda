# Two entry points for a fresh machine:
#   make demo   set up .venv, train the `cpu` preset on the built-in toon faces, write the
#               paper's figures and Table 1 (runs/demo-<time>/; DEMO_MINUTES, DEMO_UNTIL, DEMO_RUN to change)
#   make test   set up .venv, run the test suite
#   make pretrained  retrain the shipped toon-128 and toon-any-64 models and rewrite their cards (src/fexgan/pretrained/)
#   make check-tests  check the tests themselves: every planted bug must be caught, and a short mutation run
#                     (CHECK_MUTANTS mutants of the losses, training step, pair sampler and metrics)
PYTHON ?= python3
VENV   ?= .venv
# The CPU build is enough everywhere; on a CUDA machine set TORCH_SPEC to your CUDA wheel.
TORCH_SPEC ?= torch==2.13.0
DEMO_MINUTES ?= 10
# the demo stops at the first checkpoint this good (PSNR over the copy, judge's reading), or after DEMO_MINUTES
DEMO_UNTIL ?= gain=3,judge=0.95
ifndef DEMO_RUN
DEMO_RUN := runs/demo-$(shell date +%Y%m%d-%H%M%S)
endif
BIN = $(VENV)/bin
PRETRAINED_STEPS ?= 20000
PRETRAINED_RUN ?= runs/toon-128
PRETRAINED_TRAIN = fexgan train --data toon --preset cpu --set model.image_size=128 --steps $(PRETRAINED_STEPS) --out $(PRETRAINED_RUN)
PRETRAINED_ANY_RUN ?= runs/any
PRETRAINED_ANY_TRAIN = fexgan train --preset any --out $(PRETRAINED_ANY_RUN)
CHECK_MUTANTS ?= 60

.PHONY: setup demo test bench pretrained check-tests clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/fexgan train --data toon --preset cpu --minutes $(DEMO_MINUTES) --until $(DEMO_UNTIL) --out $(DEMO_RUN)
	$(BIN)/fexgan figures $(DEMO_RUN) --out $(DEMO_RUN)/figures
	$(BIN)/fexgan evaluate $(DEMO_RUN) --out $(DEMO_RUN)/evaluation

test: setup
	$(BIN)/python -m pytest -q --timeout 600

bench: setup
	$(BIN)/fexgan bench

pretrained: setup
	$(BIN)/$(PRETRAINED_TRAIN)
	$(BIN)/python scripts/ship_model.py $(PRETRAINED_RUN) --name toon-128 --command "$(PRETRAINED_TRAIN)"
	$(BIN)/$(PRETRAINED_ANY_TRAIN)
	$(BIN)/python scripts/ship_model.py $(PRETRAINED_ANY_RUN) --name toon-any-64 --preset any --command "$(PRETRAINED_ANY_TRAIN)"

# Both parts run; the target fails when a planted bug is not caught (the mutation score is reported, not gated).
check-tests: setup
	$(BIN)/pip install -q "mutmut==3.8.1"
	planted=0; $(BIN)/python benchmarks/planted_bugs.py || planted=$$?; \
	$(BIN)/python benchmarks/mutation.py --sample $(CHECK_MUTANTS) --parts losses step sampler metrics && exit $$planted

clean:
	rm -rf $(VENV) runs .pytest_cache
