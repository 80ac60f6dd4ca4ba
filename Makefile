# Two entry points for a fresh machine (both idempotent):
#   make repro   - create .venv, install everything, run the whole study (`dvc repro`)
#   make test    - create .venv, install everything, run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1

.PHONY: repro test install

$(BIN)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

install: $(BIN)/.installed

repro: install
	# DVC and dvclive need a git repo with a commit; a plain copy of the project gets one here (a clone has one).
	test -d .git || { git init -q && git add -A && \
		git -c user.name=edgestylegan -c user.email=edgestylegan@localhost commit -qm "initial import"; }
	test -d .dvc || $(BIN)/dvc init -q
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q --durations=15
