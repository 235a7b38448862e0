# RMA Mesh. `make test` is the test command CI runs (through .ci/run).
SHELL := /bin/bash
CARGO ?= cargo
JOBS ?= 2
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all build install deb package-check package-tools image image-check image-tools deps test lint unit e2e demo demo-stop demo-build demo-check bench-dataplane bench-routerd walkthrough walkthrough-check testdata clean fuzz fuzz-build

all: build

build:
	$(CARGO) build --release -j$(JOBS) --workspace

# Binaries, systemd units and example configs (scripts/install.sh); never overwrites a config.
install: build
	PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) ./scripts/install.sh

deps:
	./scripts/install-deps.sh

# The Debian package, from the release build: target/debian/rma-mesh_VERSION-1_ARCH.deb
# (packaging/deb/README.md), checked by lintian (errors fail; the README lists the warnings).
deb: build package-tools
	rm -rf target/debian
	$(CARGO) deb -p meshd --no-build --output target/debian/
	lintian --fail-on error target/debian/rma-mesh_*.deb

# The same package from a quick build (profile package-check), for integration/tests/deb.rs.
package-check: package-tools
	$(CARGO) build --profile package-check -j$(JOBS) -p rma-ca -p meshd -p lighthouse -p routerd
	rm -rf target/debian-check.new
	$(CARGO) deb -p meshd --no-build --profile package-check --output target/debian-check.new/
	@# The same bytes (cargo-deb is reproducible) keep the old file and its time, so that
	@# image-check need not build the image again.
	@if cmp -s target/debian-check.new/*.deb target/debian-check/*.deb; then \
		rm -rf target/debian-check.new; \
	else \
		rm -rf target/debian-check && mv target/debian-check.new target/debian-check; \
	fi

# The worker image (podman or docker): a Debian root from the package mirror with the package,
# imported with podman and saved to target/image, then loaded into podman's local storage.
image: deb image-tools
	./scripts/build-image.sh target/debian/rma-mesh_*.deb target/image/rma-mesh-worker.tar
	podman load --input target/image/rma-mesh-worker.tar

# The same image from the quick package, for integration/tests/image.rs (not loaded); built
# again only when the package or the image's scripts changed.
image-check: package-check image-tools
	@deb=$$(ls target/debian-check/*.deb) && out=target/image-check/rma-mesh-worker.tar && \
	if [ -n "$$(find $$out -newer $$deb -newer scripts/build-image.sh \
			-newer packaging/image/rma-worker 2>/dev/null)" ]; then \
		echo "image-check: $$out is newer than the package and the image's scripts"; \
	else \
		./scripts/build-image.sh $$deb $$out; \
	fi

image-tools:
	@command -v mmdebstrap >/dev/null && command -v podman >/dev/null && command -v runc >/dev/null \
		|| ./scripts/install-deps.sh

package-tools:
	@$(CARGO) deb --version >/dev/null 2>&1 || $(CARGO) install cargo-deb --locked -j$(JOBS)
	@command -v lintian >/dev/null || ./scripts/install-deps.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy -j$(JOBS) --workspace --all-targets -- -D warnings

# Every in-process test. meshd's core tests run a second time with boringtun's clock under
# test control (rekey); `--lib` builds no binary, so the daemon in target/ never carries that
# feature.
unit:
	@mkdir -p target
	set -o pipefail; $(CARGO) test -j$(JOBS) --workspace --exclude integration 2>&1 | tee target/unit.log
	set -o pipefail; $(CARGO) test -j$(JOBS) -p meshd --lib --features fake-clock 2>&1 | tee -a target/unit.log

# End-to-end tests: real daemons in network namespaces. Needs root and /dev/net/tun; fails
# (never skips) without them. One test at a time, so throughput figures are not shared.
e2e: demo-build package-check image-check
	@mkdir -p target
	set -o pipefail; $(CARGO) test -j$(JOBS) -p integration -- --test-threads=1 --nocapture 2>&1 | tee target/e2e.log

# The whole system in namespaces: a CA, a lighthouse, routerd and three workers behind NAT,
# and service calls through routerd (needs root). KEEP=1 leaves it running; `make demo-stop`
# ends it.
demo: deps demo-build
	./target/debug/demo $(if $(filter 1,$(KEEP)),--keep)

demo-stop:
	@test -x ./target/debug/demo || $(CARGO) build -j$(JOBS) -p integration --bin demo
	./target/debug/demo --stop

demo-build:
	$(CARGO) build -j$(JOBS) -p rma-ca -p meshd -p lighthouse -p routerd -p integration --bins

# CI runs the demo; its output is shown only when it fails.
demo-check: demo-build
	@./target/debug/demo > target/demo.log 2>&1 || { cat target/demo.log; exit 1; }
	@tail -n 1 target/demo.log

# meshd against raw veth, Nebula and wireguard-go on one veth link, in one run (needs root;
# installs the anchors). Not part of `make test`. BENCH_SECONDS and BENCH_REPS shorten it.
bench-dataplane:
	$(CARGO) build --release -j$(JOBS) -p meshd -p integration --bins
	./target/release/bench-dataplane

# One worker called directly, through routerd and through nginx (keepalive upstream), with wrk,
# in one run (needs root; installs wrk and nginx). Not part of `make test`. BENCH_SECONDS,
# BENCH_REPS and BENCH_CONNECTIONS change it.
bench-routerd:
	$(CARGO) build --release -j$(JOBS) -p routerd -p integration --bins
	./target/release/bench-routerd

# The fuzz targets (fuzz/, cargo fuzz on the nightly toolchain), one per parser of network
# input; their bodies are in integration/src/fuzz. `make fuzz` runs each for FUZZ_SECONDS from
# its committed corpus (new inputs go to target/fuzz-corpus, crashes to fuzz/artifacts), and
# installs cargo-fuzz first if it is missing. `make test` runs each body over its corpus with
# the ordinary build (integration/tests/fuzz_corpus.rs).
FUZZ_TARGETS := $(basename $(notdir $(wildcard fuzz/fuzz_targets/*.rs)))
FUZZ_SECONDS ?= 60
# Extra `cargo fuzz` build flags: `-s none -a` (no sanitizer, debug assertions on) runs the
# crypto-heavy targets several times faster than the default AddressSanitizer build.
FUZZ_FLAGS ?=
# Executions per target (with FUZZ_SECONDS=0, no time limit): the closing runs used 10000000.
FUZZ_RUNS ?=

fuzz-build:
	@rustup run nightly rustc --version >/dev/null || { echo "make fuzz needs the nightly toolchain"; exit 1; }
	@cargo fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && CARGO_BUILD_JOBS=$(JOBS) cargo +nightly fuzz build $(FUZZ_FLAGS)

fuzz: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p target/fuzz-corpus/$$t; \
		(cd fuzz && cargo +nightly fuzz run $(FUZZ_FLAGS) $$t ../target/fuzz-corpus/$$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) $(if $(FUZZ_RUNS),-runs=$(FUZZ_RUNS)) -print_final_stats=1); \
	done

# Everything CI checks: formatting, lints, every test (the fuzz targets over their corpora
# among them), the walkthrough and the demo.
test: deps lint walkthrough-check unit e2e demo-check
	@cat target/unit.log target/e2e.log | awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f }'

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
