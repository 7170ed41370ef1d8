# dfd_kit -- everything a fresh Debian/Ubuntu machine needs, then the main job or the tests.
#   make demo   set up, then turn the example sketches into faces with the bundled demo model
#   make test   set up, then run the whole test suite (unit, parity, notebooks, browser)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
OUT    ?= out/demo

.PHONY: setup system venv node fixtures demo test bench clean

setup: system venv node

system:
	@bash scripts/setup_system.sh

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml scripts/jupyterlab_settings.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) scripts/jupyterlab_settings.py
	@touch $@

node: node_modules/.installed
node_modules/.installed: package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	@touch $@

# The main job: the bundled demo model (Params/demo, trained on facesjs cartoon faces) turns
# the example sketches into faces. Nothing is downloaded.
demo: setup
	$(PY) -m dfd_kit generate examples/sketches/*_male.png --sex male --out $(OUT) --shadows
	$(PY) -m dfd_kit generate examples/sketches/*_female.png --sex female --out $(OUT) --shadows
	@echo "Faces written to $(OUT)/ (the demo model draws cartoon faces; see Params/demo/MODEL_CARD.md)"

# The parity tests' recorded official outputs come from the shared parity fixture (not in git).
fixtures:
	@bash scripts/parity_fixtures.sh

test: setup fixtures
	$(PY) scripts/warmup.py
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_generate.py

clean:
	rm -rf $(VENV) node_modules .cache out
