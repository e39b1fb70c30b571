# The two commands of the README's quick start: `make run` and `make test`.
# Both create .venv from requirements.lock when it is missing or out of date.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
export XDG_CACHE_HOME ?= $(CURDIR)/.cache
export PATH := $(CURDIR)/$(BIN):$(PATH)
# `make mlflow-server`: one MLflow server for several pipeline runs (docs/pipeline.md, "Shared MLflow server").
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
MLFLOW_WORKERS ?= 2
MLFLOW_BACKEND ?= sqlite:///$(CURDIR)/mlflow-server/mlflow.db
MLFLOW_ARTIFACTS ?= $(CURDIR)/mlflow-server/artifacts

.PHONY: install run plots plots-page plots-js test bench compare mlflow-ui mlflow-server lock clean-venv

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-input -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-input --no-deps --no-build-isolation -e .
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) plots-js
	@touch $(STAMP)

# `.venv/bin/dvc repro` (or snakemake) with the venv not active: the stages call `fca` from PATH, so
# every Python of the venv puts the venv's bin/ first on PATH for the commands it starts (a .pth line).
PATH_HOOK := $(VENV)/.path-hook
$(PATH_HOOK): $(STAMP)
	@$(BIN)/python -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "fca_venv_path.pth").write_text("import os, sys; b = os.path.dirname(sys.executable); p = os.environ.get(\"PATH\", \"\"); os.environ[\"PATH\"] = p if p.split(os.pathsep)[0] == b else b + os.pathsep + p\n")'
	@touch $@

install: $(PATH_HOOK)  ## only create .venv from requirements.lock (e.g. before `dvc pull`)

run: $(PATH_HOOK)  ## run the whole pipeline (dvc repro) on the params in params.yaml
	dvc repro
	@echo
	@echo "Report:    reports/README.md (figures in reports/figures/, numbers in reports/metrics.json, reports/fdc.json)"
	@echo "Metrics:   dvc metrics show      Plots: make plots (writes dvc_plots/index.html, drawn offline)"
	@echo "MLflow UI: make mlflow-ui   then open $$($(BIN)/python -m pipeline.tracking link 2>/dev/null || echo http://127.0.0.1:5000)"

# DVC's page loads Vega from a CDN; this one loads the copies that the django-js-lib-vega-embed
# wheel ships (vega 5.33, vega-lite 5.23, vega-embed 6.29, BSD-3-Clause; the wheel is MIT and needs
# no Django), copied beside it: no network.
# `plots-page` is the same without the install check, with the dvc and python on PATH:
# tests/test_browser.py runs it (make -f <this Makefile> -C <a temporary project> plots-page) and
# opens the page in headless Chromium.
PLOTS_DIR ?= dvc_plots
plots: $(PATH_HOOK)  ## draw dvc.yaml's plots into dvc_plots/index.html, viewable offline
	@$(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) plots-page

plots-page:
	dvc plots show --out $(PLOTS_DIR) --html-template .dvc/plots/offline.html
	@$(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) plots-js JS_DIR=$(PLOTS_DIR)
	@echo "Plots: $(PLOTS_DIR)/index.html (Vega's scripts beside it: open it with no network)"

# Vega's three scripts from the installed wheel into JS_DIR: beside a page (`make plots`), or
# .dvc/plots/js/ (`make install`), where plain `dvc plots show`'s page (.dvc/config's template) finds them.
JS_DIR ?= .dvc/plots/js
plots-js:
	@mkdir -p $(JS_DIR)
	@js="$$(python -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("js_lib_vega_embed").origin).parent / "static" / "js_lib_vega_embed")')" \
		&& cp "$$js/vega5.js" "$$js/vega-lite5.js" "$$js/vega-embed6.js" $(JS_DIR)/

# One pytest worker per CPU (-n auto), each test module on one worker (--dist loadscope: a module's
# shared fixtures, such as a trained model, are built once); the end-to-end runs start first (tests/conftest.py).
test: $(PATH_HOOK)  ## run the test suite
	$(BIN)/python -m pytest -q -n auto --dist loadscope

bench: $(PATH_HOOK)  ## speed and memory benchmarks (not part of the tests)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

compare: $(PATH_HOOK)  ## generator.loss = fdc, spectral, both as DVC experiments; table + plot in reports/compare/
	fca compare

mlflow-ui: $(STAMP)  ## open the local MLflow UI on 127.0.0.1:5000 (the link it prints opens the "Model training" view)
	@echo "Open $$($(BIN)/python -m pipeline.tracking link 2>/dev/null || echo http://127.0.0.1:5000)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# The backend URI may hold a database password: it reaches mlflow through the environment
# (MLFLOW_BACKEND_STORE_URI, not the command line that make echoes and `ps` shows) and is
# printed with the password masked (pipeline.tracking.mask_uri).
mlflow-server: export MLFLOW_BACKEND_STORE_URI = $(MLFLOW_BACKEND)
mlflow-server: $(STAMP)  ## shared MLflow server on $(MLFLOW_HOST):$(MLFLOW_PORT) (database store, proxied artifacts); then export MLFLOW_TRACKING_URI=http://$(MLFLOW_HOST):$(MLFLOW_PORT)
	@mkdir -p $(CURDIR)/mlflow-server $(MLFLOW_ARTIFACTS)
	@echo "MLflow server: backend $$($(BIN)/python -c 'import os; from pipeline.tracking import mask_uri; print(mask_uri(os.environ["MLFLOW_BACKEND_STORE_URI"]))'), artifacts $(MLFLOW_ARTIFACTS)"
	@echo "Runs go there with: export MLFLOW_TRACKING_URI=http://$(MLFLOW_HOST):$(MLFLOW_PORT)"
	$(BIN)/mlflow server --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) --workers $(MLFLOW_WORKERS) \
		--serve-artifacts --artifacts-destination $(MLFLOW_ARTIFACTS)

lock:  ## regenerate requirements.lock from pyproject.toml in a scratch venv
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet 'setuptools<82' wheel && .lockenv/bin/pip install --quiet '.[test]'
	.lockenv/bin/pip freeze --all --exclude fca-pipeline | sed 's/+cpu$$//' > requirements.lock
	rm -rf .lockenv

clean-venv:
	rm -rf $(VENV)
