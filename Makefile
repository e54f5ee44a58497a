# Build, run and test the emulated CloudHSM cluster from the outside.
# `make help` lists the targets. GNU make; bash for recipes.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The Swift toolchain lives in /opt/swift/usr/bin on the build machines; CI may not
# have it on PATH.
SWIFT_TOOLCHAIN ?= /opt/swift/usr/bin
ifeq ($(shell command -v swift 2>/dev/null),)
export PATH := $(SWIFT_TOOLCHAIN):$(PATH)
endif

SWIFT ?= swift
# Extra flags for every `swift build`/`swift test`, e.g. SWIFT_FLAGS="--scratch-path .build-x".
SWIFT_FLAGS ?=
PYTHON ?= python3
PYTEST_FLAGS ?= -v
# What pytest runs, e.g. PYTEST_ARGS="tests/test_users.py -k create".
PYTEST_ARGS ?= tests/

# The build's bin directory, computed once and only when a recipe needs it.
BIN = $(eval BIN := $$(shell $(SWIFT) build $(SWIFT_FLAGS) --show-bin-path))$(BIN)
# Stable place the scripts look at first: build/bin -> the build's bin directory.
BIN_LINK := build/bin
# Where the OpenSSL provider is linked as cloudhsm.so (tests and cluster.sh look here).
MODULE_DIR := build/ossl-modules
TOOLS := hsmd key_mgmt_util cloudhsm_mgmt_util cloudhsm_check
PREFIX ?= /usr/local

CLUSTER_DIR ?= .cluster
CLUSTER_PORTS ?= 2223 2224 2225
# One address per node (or one for all); empty: 127.0.0.1 (scripts/cluster.sh).
CLUSTER_HOSTS ?=
DEMO_DIR ?= .demo
export CLUSTER_DIR CLUSTER_PORTS CLUSTER_HOSTS

APT_PACKAGES := pkg-config gcc libc6-dev libssl-dev libsqlite3-dev openssl curl nginx wrk haproxy apache2 sqlite3
# promtool (`promtool check metrics` in the metrics tests) ships only inside Debian's
# prometheus package (19 MB, with a server that its install would start): deps takes the
# one binary out of the package into .tools/bin instead of installing it.
PROMTOOL_DIR := .tools/bin

# The provider as installed and as the tests load it: release, with the Swift runtime
# linked in statically (no Swift libraries needed at run time, and about 1.5 ms instead
# of 5 ms added to each openssl run), in its own scratch folder so its flags do not
# rebuild the rest. nodelete: unloading must never pull code from under live objects.
PROVIDER_SCRATCH := .build-provider
PROVIDER_FLAGS := -c release --scratch-path $(PROVIDER_SCRATCH) -Xswiftc -static-stdlib -Xlinker -z -Xlinker nodelete
# Release builds of the nodes and tools, for the benchmarks.
RELEASE_SCRATCH := .build-release

# Fuzzing (Fuzz/fuzz.sh): seconds per target, and which targets (all when empty).
FUZZ_SECONDS ?= 60
FUZZ_TARGET ?=

.PHONY: help deps build install cluster stop-cluster status demo stop-demo test swift-test pytest bench fuzz fuzz-seeds clean

help: ## Show this list
	@echo "Targets:"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: CLUSTER_DIR=$(CLUSTER_DIR) CLUSTER_PORTS=\"$(CLUSTER_PORTS)\" CLUSTER_HOSTS=\"$(CLUSTER_HOSTS)\" SWIFT_FLAGS=\"$(SWIFT_FLAGS)\""
	@echo "           FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_TARGET=\"$(FUZZ_TARGET)\" (targets: $$(Fuzz/fuzz.sh list))"

deps: ## Install missing system packages (apt) and Python test modules (pip); quiet when all present
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if ! $(PYTHON) -m pip --version >/dev/null 2>&1; then missing="$$missing python3-pip"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@if ! $(PYTHON) -c 'import pytest, cryptography' >/dev/null 2>&1; then \
	  echo "deps: installing Python test modules (requirements-test.txt)"; \
	  PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip install -q -r requirements-test.txt 2>/dev/null || \
	  PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip install -q --break-system-packages -r requirements-test.txt; \
	fi
	@if ! command -v promtool >/dev/null && [ ! -x $(PROMTOOL_DIR)/promtool ]; then \
	  echo "deps: extracting promtool from Debian's prometheus package into $(PROMTOOL_DIR)"; \
	  tmp="$$(mktemp -d)"; \
	  download() { (cd "$$tmp" && apt-get download -qq -o APT::Sandbox::User=root prometheus >/dev/null 2>&1); }; \
	  if ! download; then \
	    if [ "$$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	    download || { echo "deps: apt-get download prometheus failed" >&2; rm -rf "$$tmp"; exit 1; }; \
	  fi; \
	  dpkg-deb --fsys-tarfile "$$tmp"/prometheus_*.deb | tar -x -C "$$tmp" ./usr/bin/promtool; \
	  install -D -m 0755 "$$tmp/usr/bin/promtool" $(PROMTOOL_DIR)/promtool; \
	  rm -rf "$$tmp"; \
	fi
	@command -v $(SWIFT) >/dev/null || { echo "deps: no swift on PATH (looked in $(SWIFT_TOOLCHAIN) too)" >&2; exit 1; }

build: ## swift build (debug) and the provider (release, static Swift runtime); links build/bin and build/ossl-modules/cloudhsm.so
	$(SWIFT) build $(SWIFT_FLAGS)
	@mkdir -p $(dir $(BIN_LINK)) $(MODULE_DIR)
	@ln -sfn "$(BIN)" $(BIN_LINK)
	@echo "executables: $(BIN_LINK) -> $(BIN)"
	$(SWIFT) build $(PROVIDER_FLAGS) --product cloudhsm
	@ln -sfn "$(CURDIR)/$(PROVIDER_SCRATCH)/release/libcloudhsm.so" $(MODULE_DIR)/cloudhsm.so
	@echo "provider:    $(MODULE_DIR)/cloudhsm.so -> $(PROVIDER_SCRATCH)/release/libcloudhsm.so"

install: build ## Install the tools in PREFIX/bin (/usr/local) and cloudhsm.so in OpenSSL's modules directory
	install -d "$(DESTDIR)$(PREFIX)/bin"
	@for t in $(TOOLS); do \
	  if [ -x $(BIN_LINK)/$$t ]; then install -m 0755 $(BIN_LINK)/$$t "$(DESTDIR)$(PREFIX)/bin/" && echo "installed $(DESTDIR)$(PREFIX)/bin/$$t"; fi; \
	done
	@moddir="$$(openssl version -m | sed -n 's/^MODULESDIR: "\(.*\)"$$/\1/p')"; \
	if [ -f $(MODULE_DIR)/cloudhsm.so ]; then \
	  install -d "$(DESTDIR)$$moddir" && install -m 0644 $(MODULE_DIR)/cloudhsm.so "$(DESTDIR)$$moddir/cloudhsm.so" && \
	  echo "installed $(DESTDIR)$$moddir/cloudhsm.so"; \
	fi

cluster: build ## Start the 3-node dev cluster (CLUSTER_DIR, CLUSTER_PORTS, CLUSTER_HOSTS; metrics URLs in .cluster/metrics); then `. .cluster/env`
	BIN_DIR="$(BIN)" scripts/cluster.sh start

stop-cluster: ## Stop the dev cluster's nodes
	scripts/cluster.sh stop

status: ## Show whether each dev cluster node runs, and each running node's counts from its metrics
	@scripts/cluster.sh status || true

demo: deps cluster ## Build, start the 3-node cluster, run the walkthrough and serve TLS from nginx through the HSMs (re-runnable)
	BIN_DIR="$(BIN)" DEMO_DIR="$(DEMO_DIR)" scripts/demo.sh

stop-demo: ## Stop the demo's nginx and the dev cluster
	-DEMO_DIR="$(DEMO_DIR)" scripts/demo.sh stop
	scripts/cluster.sh stop

test: deps build swift-test pytest ## deps + build + swift test + the pytest integration suite

bench: deps build ## Benchmarks on release builds: the channel's cost next to in-process signing; nginx handshakes/s HSM vs plain key (RSA and ECDSA P-256); pkpspeed on 1, 2, 3 nodes at 200 ops/s each
	$(SWIFT) build -c release --scratch-path $(RELEASE_SCRATCH)
	BIN_DIR="$(CURDIR)/$(RELEASE_SCRATCH)/release" MODULE="$(CURDIR)/$(MODULE_DIR)/cloudhsm.so" \
	  $(PYTHON) scripts/bench_channel.py $(BENCH_CHANNEL_ARGS)
	BIN_DIR="$(CURDIR)/$(RELEASE_SCRATCH)/release" MODULE="$(CURDIR)/$(MODULE_DIR)/cloudhsm.so" \
	  $(PYTHON) scripts/bench_tls.py $(BENCH_TLS_ARGS)
	BIN_DIR="$(CURDIR)/$(RELEASE_SCRATCH)/release" $(PYTHON) scripts/bench_pool.py $(BENCH_POOL_ARGS)

# Not part of `test`: a useful run takes minutes. Needs only the Swift toolchain, whose
# clang runtime carries libFuzzer and ASan.
fuzz: ## libFuzzer + ASan on every decoder of outside bytes, FUZZ_SECONDS (60) per target; FUZZ_TARGET=frame runs one
	@command -v swiftc >/dev/null || { echo "fuzz: no swiftc on PATH (looked in $(SWIFT_TOOLCHAIN) too)" >&2; exit 1; }
	FUZZ_SECONDS="$(FUZZ_SECONDS)" FUZZ_TARGET="$(FUZZ_TARGET)" Fuzz/fuzz.sh run

fuzz-seeds: ## Rewrite the fuzz seed corpora in Fuzz/corpus from the unit tests' vectors
	FUZZ_SEED_DIR="$(CURDIR)/Fuzz/corpus" $(SWIFT) test $(SWIFT_FLAGS) --filter 'FuzzSeedTests'

swift-test: ## Only the Swift unit tests
	$(SWIFT) test $(SWIFT_FLAGS)

pytest: ## Only the pytest integration suite (needs `make build` first)
	BIN_DIR="$(BIN)" $(PYTHON) -m pytest $(PYTEST_FLAGS) $(PYTEST_ARGS)

clean: ## Stop the dev cluster and remove build output, cluster and demo state
	-DEMO_DIR="$(DEMO_DIR)" scripts/demo.sh stop
	-scripts/cluster.sh stop
	rm -rf "$(CLUSTER_DIR)" "$(DEMO_DIR)" build .pytest_cache tests/__pycache__
	$(SWIFT) package clean $(SWIFT_FLAGS)
