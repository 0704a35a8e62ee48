# make demo: install everything, then run the main job on the embedded default.
# make demo OFFSITE=DIR (or s3://BUCKET/PREFIX): also copy the points there and restore one from the copy.
# make test: install everything, then run all tests.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all deps venv test demo bench clean
all: test

deps:
	@scripts/install-deps

$(VENV)/bin/python:
	/usr/bin/python3 -m venv --system-site-packages $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Bytecode compiled once: with PYTHONDONTWRITEBYTECODE set (as on these machines) every cutpoint process would
# compile each module it imports again (~0.2 s per command, and the tests start hundreds).
venv: deps $(STAMP)
	$(PY) -m compileall -q src

test: venv
	$(PY) -m mypy
	$(PY) -m pytest -q tests

demo: venv
	$(VENV)/bin/cutpoint demo $(if $(OFFSITE),--offsite $(OFFSITE))

bench: venv
	@scripts/install-deps --bench
	$(PY) -m pip install -q matplotlib
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build src/*.egg-info
