# RMA Mesh. `make test` is the test command CI runs (through .ci/run).
CARGO ?= cargo
JOBS ?= 2

.PHONY: all build deps test lint unit walkthrough testdata clean

all: build

build:
	$(CARGO) build --release -j$(JOBS) --workspace

deps:
	./scripts/install-deps.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy -j$(JOBS) --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test -j$(JOBS) --workspace

# Everything CI checks: formatting, lints, every test, and the walkthrough.
test: deps lint unit
	$(CARGO) build -j$(JOBS) -p rma-ca
	./scripts/walkthrough.sh >/dev/null

# A guided tour of rma-ca in a temporary directory.
walkthrough:
	$(CARGO) build -j$(JOBS) -p rma-ca
	./scripts/walkthrough.sh

# Remakes ca/testdata (deterministic: commit the result).
testdata:
	RMA_REGENERATE_TESTDATA=1 $(CARGO) test -j$(JOBS) -p rma-ca --lib fixtures_are_current

clean:
	$(CARGO) clean
