# RMA Mesh. `make test` is the test command CI runs (through .ci/run).
SHELL := /bin/bash
CARGO ?= cargo
JOBS ?= 2

.PHONY: all build deps test lint unit walkthrough walkthrough-check testdata clean

all: build

build:
	$(CARGO) build --release -j$(JOBS) --workspace

deps:
	./scripts/install-deps.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy -j$(JOBS) --workspace --all-targets -- -D warnings

# Every test; ends with one line that totals all test binaries. meshd's core tests run a
# second time with boringtun's clock under test control (rekey); `--lib` builds no binary, so
# the daemon in target/ never carries that feature.
unit:
	@mkdir -p target
	set -o pipefail; $(CARGO) test -j$(JOBS) --workspace 2>&1 | tee target/test.log
	set -o pipefail; $(CARGO) test -j$(JOBS) -p meshd --lib --features fake-clock 2>&1 | tee -a target/test.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f }' target/test.log

# Everything CI checks: formatting, lints, every test, and the walkthrough.
test: deps lint walkthrough-check unit

# The walkthrough must keep working; its output is shown only when it fails.
walkthrough-check:
	$(CARGO) build -j$(JOBS) -p rma-ca
	@./scripts/walkthrough.sh > target/walkthrough.log 2>&1 || { cat target/walkthrough.log; exit 1; }

# A guided tour of rma-ca in a temporary directory.
walkthrough:
	$(CARGO) build -j$(JOBS) -p rma-ca
	./scripts/walkthrough.sh

# Remakes ca/testdata (deterministic: commit the result).
testdata:
	RMA_REGENERATE_TESTDATA=1 $(CARGO) test -j$(JOBS) -p rma-ca --lib fixtures_are_current

clean:
	$(CARGO) clean
