# dfd_kit -- everything a fresh Debian/Ubuntu machine needs, then the main job or the tests.
#   make demo   set up, then run the generator on the example sketches (see README: until the
#               demo model is trained, this uses the official-layout STAND-IN weights)
#   make test   set up, then run the whole test suite (unit, parity, notebooks, browser)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
OUT    ?= out/demo

.PHONY: setup system venv node demo test bench clean

setup: system venv node

system:
	@bash scripts/setup_system.sh

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

node: node_modules/.installed
node_modules/.installed: package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	@touch $@

STANDIN := .cache/standin_params

demo: setup
	@echo "NOTE: the bundled demo model is not trained yet; this runs the full official pipeline on the"
	@echo "      parity fixture's sketches with deterministic STAND-IN weights (random, official layout),"
	@echo "      so the 'faces' are noise patterns. With real weights in Params/: --params official."
	$(PY) -m dfd_kit standin-params $(STANDIN)
	$(PY) -m dfd_kit generate tests/fixtures/official_parity/inputs --params $(STANDIN) --out $(OUT) --shadows
	@echo "Images written to $(OUT)/"

test: setup
	$(PY) scripts/warmup.py
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_generate.py

clean:
	rm -rf $(VENV) node_modules .cache out
