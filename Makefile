# Keel: one pattern per action. `make run` and `make test` work on a fresh
# clone: both install the pinned environment into .venv/ first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
CONSTRAINTS := images/constraints.txt
# Extras installed for development: the classical-ML stack, the KServe SDK
# (which also brings grpc, needed by the katib SDK), the torch and tensorflow
# stacks (deep-learning components and their tests; ~7 GB, mostly CUDA
# libraries torch pulls in even on CPU) and test tools.
EXTRAS ?= serving,docker,torch,tensorflow,dev
STAMP := $(VENV)/.installed
CONFIG ?= pipelines/configs/default.yaml
PYTEST_ARGS ?=
# pyflakes' checks and syntax errors; tests/test_lint.py runs the same in `make test`.
RUFF_ARGS := --select F,E9 --target-version py311

.PHONY: install run test test-fast compile golden serve tune bench lint clean help images push docs

help:
	@echo "make run | test | serve | tune | install | compile | golden | images | image-NAME | push | bench | bench-pipeline | bench-serve | bench-hpo | bench-images | bench-train | bench-compress | bench-ingest | bench-monitor | lint | docs | clean"

install: $(STAMP)

# The top level of this repository is fixed, so there is no setup.py or
# pyproject.toml: setuptools' PEP 517 backend reads setup.cfg on its own, so we
# ask it directly for a PEP 660 editable wheel and let pip install that.
$(STAMP): setup.cfg $(CONSTRAINTS) images/no-deps.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(CONSTRAINTS) pip setuptools wheel
	rm -rf build/editable && mkdir -p build/editable
	$(PY) -c "from setuptools import build_meta as b; b.build_editable('build/editable')" > build/editable.log 2>&1 \
		|| { cat build/editable.log; exit 1; }
	$(PIP) install -q -c $(CONSTRAINTS) "$$(ls build/editable/*.whl)[$(EXTRAS)]"
	@# pip keeps an installed keel-ml of the same version: replace it, or a new package in setup.cfg is never mapped.
	$(PIP) install -q --no-deps --force-reinstall "$$(ls build/editable/*.whl)"
	$(PIP) install -q --no-deps -c $(CONSTRAINTS) -r images/no-deps.txt
	rm -rf build/editable build/editable.log
	touch $(STAMP)

run: install
	$(VENV)/bin/keel run $(CONFIG)

# The Debian packages some tiers need (Chromium, podman, PostgreSQL, Fashion-MNIST): as root the
# script installs what is missing; otherwise it says which tiers will skip, and pytest ends with
# one line per skipped tier naming the package that enables it (tests/README.md).
SYSTEM_PACKAGES := $(PY) tests/testkit/system_packages.py install

test: install
	@$(SYSTEM_PACKAGES)
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

test-fast: install
	@$(SYSTEM_PACKAGES)
	$(PY) -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

compile: install
	$(VENV)/bin/keel compile --out dist

# Only the hyperparameter search of a config with a `tune` section, with a trial table.
TUNE_CONFIG ?= pipelines/configs/loans-tuned.yaml
tune: install
	$(VENV)/bin/keel tune $(TUNE_CONFIG)

# Serves the latest registered model (run `make run` first) on 127.0.0.1:$(PORT).
MODEL ?= latest
PORT ?= 8080
serve: install
	$(VENV)/bin/keel serve $(MODEL) --port $(PORT)

# Container images (images/README.md): podman builds every image, writes its
# SBOM to build/images/ and refuses one with a credential in any layer.
images: install
	$(PY) -m keel.images.build

image-%: install
	$(PY) -m keel.images.build $*

# Both must be given: `make push REGISTRY=registry.example.com/ml TAG=0.1.0`.
REGISTRY ?=
TAG ?=
push: install
	$(PY) -m keel.images.push --registry "$(REGISTRY)" --tag "$(TAG)"

# Rewrites the golden IR files that tests/test_compile.py compares against.
golden: install
	$(VENV)/bin/keel compile --out tests/golden

bench: bench-pipeline bench-serve bench-hpo bench-images bench-train bench-compress bench-ingest bench-monitor

# The throughput figures need Debian's wrk; without it (and without root to
# install it) the bench prints why and reports latency only.
bench-serve: install
	@command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null 2>&1 || echo "wrk not installed (apt-get install wrk): no throughput figures"
	PYTHONPATH=tests $(PY) tests/bench/serve.py

# 1M rows Postgres -> Parquet against pandas.read_sql (needs Debian's postgresql,
# installed here when missing), then a 500 MB bundle up and down S3 (nanio)
# against raw minio fput_object/fget_object.
bench-ingest: install
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || apt-get install -y -qq postgresql >/dev/null 2>&1 || echo "postgresql not installed (apt-get install postgresql)"
	PYTHONPATH=tests $(PY) tests/bench/ingest.py
	PYTHONPATH=tests $(PY) tests/bench/s3.py

bench-%: install
	PYTHONPATH=tests $(PY) tests/bench/$(subst -,_,$*).py

# Regenerates pipelines/config-reference.md from the pydantic config models
# (tests/test_docs.py fails when the committed file is stale).
docs: install
	$(PY) -m keel.pipelines.config_reference

# ruff, then the import contracts (setup.cfg [importlinter]); tests/test_import_layers.py runs the contracts in `make test`.
lint: install
	$(VENV)/bin/ruff check $(RUFF_ARGS) components pipelines tests
	$(VENV)/bin/lint-imports --config setup.cfg --no-cache

clean:
	rm -rf runs dist build .bench
