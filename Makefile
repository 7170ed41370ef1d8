# dfd_kit -- everything a fresh Debian/Ubuntu machine needs, then the main job or the tests.
#   make demo   set up, then generate faces from the example sketches with the demo model
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

demo: setup
	$(PY) -m dfd_kit generate examples/sketches --out $(OUT) --shadows
	@echo "Faces written to $(OUT)/"

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_generate.py

clean:
	rm -rf $(VENV) node_modules .cache out
