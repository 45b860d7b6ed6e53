# The two set-up commands of the README: `make run` and `make test`.
# Both install what is missing (with apt when run as root; otherwise they print the command).

SHELL := /bin/bash
CARGO ?= cargo
APT_PACKAGES := gcc libc6-dev protobuf-compiler libprotobuf-dev etcd-server etcd-client mmdebstrap systemd-container
RUN_DIR ?=
EXAMPLE ?= examples/hello.yaml

.PHONY: run test deps build bench fmt clippy

deps:
	@./scripts/deps.sh $(APT_PACKAGES)

build: deps
	$(CARGO) build --release --bin tend

# Builds and runs the example on this host, in the foreground, writing only under a temporary
# directory, until Ctrl-C.
# Set RUN_DIR to choose the directory (default: a new one under $TMPDIR).
run: build
	@dir="$(RUN_DIR)"; [ -n "$$dir" ] || dir=$$(mktemp -d -t tend-run.XXXXXX); \
	echo "tend: running $(EXAMPLE) with its files under $$dir (Ctrl-C to stop)"; \
	TEND_ROOT="$$dir" exec ./target/release/tend run --state-dir "$$dir/state" $(EXAMPLE)

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The whole suite: formatting, lints, then every test of every crate (real etcd, real files,
# the real binary).
test: deps fmt clippy
	$(CARGO) test --workspace --all-targets
