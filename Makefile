# Two commands on a fresh machine:
#   make demo   install, run the pipeline on the embedded default, launch the app
#   make test   install, run the whole test suite
# and, for CI: make test-interop  install the interop extra, run the tests against real SAELens / sparsify
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
CONFIG  ?= configs/demo.toml
CATALOG ?= runs/demo/catalog.duckdb
PORT    ?= 7860

.PHONY: demo test test-interop install pipeline app clean

$(VENV)/.installed: pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip >/dev/null
	@# CPU torch first where no CUDA GPU is present, so no multi-GB CUDA wheels are pulled.
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		echo "CUDA GPU found: installing the default torch build"; \
	else \
		$(VPY) -m pip install torch==2.13.0; \
	fi
	$(VPY) -m pip install -e ".[test]"
	@touch $@

install: $(VENV)/.installed

pipeline: install
	$(VPY) -m precompute run --config $(CONFIG)

app: install
	$(VPY) app.py --catalog $(CATALOG) --port $(PORT)

demo: pipeline app

test: install
	$(VPY) -m pytest -q

$(VENV)/.interop: $(VENV)/.installed
	$(VPY) -m pip install -e ".[test,interop]"
	@touch $@

test-interop: $(VENV)/.interop
	$(VPY) -m pytest -q -m interop

clean:
	rm -rf runs/demo
