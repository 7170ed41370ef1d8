# dfd_kit -- everything a fresh Debian/Ubuntu machine needs, then the main job or the tests.
#   make demo   set up, then turn the example sketches into faces with the bundled demo model
#   make test   set up, then run the whole test suite (unit, parity, notebooks, browser)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
OUT    ?= out/demo
# Wheels used for their files only (see pyproject.toml): MobileStyleGAN's IR files, FaceMesh.
NODEPS := random-face==2021.7.21.1 mediapipe==0.10.14

.PHONY: setup system venv node demo test bench clean check

setup: system venv node

system:
	@bash scripts/setup_system.sh

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml scripts/jupyterlab_settings.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(NODEPS)
	$(PY) scripts/jupyterlab_settings.py
	@touch $@

node: node_modules/.installed
node_modules/.installed: package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	@touch $@

# The main job: the bundled photo model (Params/photo, trained on faces of people who do not
# exist) turns the hand-drawn example sketches into faces. Nothing is downloaded.
demo: setup
	$(PY) -m dfd_kit generate examples/hand_drawn/*_male.png --sex male --out $(OUT) --shadows
	$(PY) -m dfd_kit generate examples/hand_drawn/*_female.png --sex female --out $(OUT) --shadows
	@echo "Faces written to $(OUT)/ (the photo model; see Params/photo/MODEL_CARD.md. Cartoon faces: --params cartoon)"

test: setup
	$(PY) scripts/warmup.py
	$(PY) -m pytest -q

# The fast tier: the stage maths as property tests (seconds; no weights, no notebooks).
# `make test` stays the whole suite, the command CI runs.
check: setup
	$(PY) -m pytest -q -m fast

bench: setup
	$(PY) bench/bench_generate.py

clean:
	rm -rf $(VENV) node_modules .cache out
