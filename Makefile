# Two commands matter: `make demo` (the main job) and `make test` (every test).
SHELL := /bin/bash
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PY := .venv/bin/python

.PHONY: images k8s-bin cluster-up cluster-down demo demo-stop test lint unit e2e venv postgres bench clean

venv: .venv/.synced
.venv/.synced: pyproject.toml uv.lock
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet --user "uv==$(UV_VERSION)"
	$(UV) sync --frozen --all-extras
	@touch $@

postgres:
	@scripts/ensure-postgres.sh

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: venv postgres lint
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest -m "not e2e and not postgres and not realnode"

e2e: venv postgres
	$(PY) -m pytest -m e2e

demo: venv postgres
	$(PY) -m scripts.demo

demo-stop: venv
	$(PY) -m scripts.demo stop

images: venv
	$(PY) -m localcluster images

k8s-bin:
	hack/build-binaries.sh

cluster-up: venv
	$(PY) -m localcluster up

cluster-down: venv
	$(PY) -m localcluster down

bench: venv postgres
	$(PY) -m bench

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
