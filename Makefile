# Granary. One cargo profile (dev, optimised) for tests, binaries and benches so RocksDB's C++
# compiles once; the target dir lives outside the clone so repeated builds stay warm.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/granary-target
CARGO ?= cargo
BIN := $(CARGO_TARGET_DIR)/debug

.PHONY: setup build test lint fmt fuzz bench demo devnet devnet-down

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --workspace --bins

## The README's test command: lint, every test, the proof engine's tests on aarch64 under qemu
## (NEON kernels), then 30 s of fuzzing the frame decoder.
test: setup lint
	$(CARGO) nextest run --workspace --no-fail-fast
	@bash scripts/test-aarch64.sh
	@bash scripts/fuzz-smoke.sh 30

## libFuzzer on the frame decoder (nightly + cargo-fuzz; skipped where unavailable).
fuzz:
	@bash scripts/fuzz-smoke.sh $(or $(SECS),300)

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Criterion benchmarks, each printing its ratio to a limit measured in the same run.
bench: setup
	$(CARGO) bench -p granary-benches --profile dev

## The README's main job: a 6-node devnet, put, kill 2 nodes, get, verify.
demo: build
	$(BIN)/granary demo

## A 6-node devnet in .devnet/ (stop it with `make devnet-down`).
devnet: build
	$(BIN)/granary devnet up --nodes 6 --dir .devnet

devnet-down:
	$(BIN)/granary devnet down --dir .devnet
