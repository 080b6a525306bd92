# Soma — the two commands a newcomer needs are `make run` and `make test` (see README.md).
# Every target is idempotent: a second `make run` skips what is already installed and provisioned.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.soma-installed
SOMA   := $(BIN)/soma
# System packages: espeak-ng (phonemes for TTS, test speech), sox (audio conversion in tests/benches),
# chromium (the real browser the call page is tested in; Playwright drives it, its own browser download is not used),
# sip-tester (sipp, the SIP peer the phone-line tests use).
APT_PACKAGES := espeak-ng sox chromium sip-tester
# Packages whose binary is named differently (package:binary): `system` checks for the binary.
APT_BINARIES := sip-tester:sipp
BENCH ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test lint fmt install system provision-ci provision-full bench clean help

help:
	@echo "make run    install, provision the full models, start https://localhost:8443"
	@echo "make test   install, provision the ci models, lint, run the test suite"
	@echo "make bench  run the benchmarks (BENCH=name for one) and write bench/results/*.json"

run: install provision-full
	$(SOMA) serve

test: install provision-ci lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff check --fix .

install: system $(STAMP)

system:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  bin=$$p; for m in $(APT_BINARIES); do [ "$${m%%:*}" = "$$p" ] && bin=$${m#*:}; done; \
	  command -v $$bin >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
	    || { echo "error: could not install$$missing with apt-get; install them and re-run"; exit 1; }; \
	fi

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "Soma needs Python 3.11")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,convert]'
	@touch $@

provision-ci: install
	$(SOMA) models provision --profile ci

provision-full: install
	$(SOMA) models provision --profile full

bench: install provision-full
	@set -e; for f in bench/*.py; do \
	  name=$$(basename $$f .py); case $$name in _*) continue;; esac; \
	  if [ -z "$(BENCH)" ] || [ "$(BENCH)" = "$$name" ]; then echo "== bench $$name"; $(BIN)/python -m bench.$$name; fi; \
	done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
