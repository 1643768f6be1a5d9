# The verbs a newcomer looks for. `make test` is the one command that runs every test on a fresh
# machine (it installs what it needs first); CI runs exactly that, through `.ci/run`.
#
#   make build   install the package in place (pip install -e ., a maturin release build)
#   make test    install deps + servers, then cargo tests, the stub check, pytest, the wheel smoke test and the linters
#   make wheel   manylinux2014 wheel for this interpreter, stripped, in dist/ (maturin --zig)
#   make bench   every benchmark in benches/ (release build; BENCH_QUICK=1: smoke sizes)
#   make lint    clippy, rustfmt, mypy, ruff and the stub check
#   make demo    the `batchguard demo` walkthrough
#   make clean   remove build outputs and caches

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
# The steps share one interpreter, one target/ and one database port range: never run them at once.
.NOTPARALLEL:

PYTHON ?= python3
PIP := $(PYTHON) -m pip --no-input --disable-pip-version-check
export PIP_PROGRESS_BAR := off
export PIP_ROOT_USER_ACTION := ignore
export DEBIAN_FRONTEND := noninteractive

# The interpreter pip installs into is the one PyO3 builds against: maturin picks it itself, and
# `cargo` gets it through PYO3_PYTHON (one value for clippy and test, so neither rebuilds PyO3
# for the other). Without the extension-module feature the test binaries link libpython, so a
# Rust test that starts Python must load *this* interpreter's libpython: a pyenv or /usr/local
# build's lib dir is not on the loader's path, and the loader then finds none, or silently
# Debian's libpython3.11, whose sys.path lacks everything pip installed.
PY_EXE := $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null)
PY_LIBDIR := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")' 2>/dev/null)
PY_SCRIPTS := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)
export PYO3_PYTHON := $(PY_EXE)
CARGO_TEST_ENV := LD_LIBRARY_PATH="$(PY_LIBDIR)$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}"

STUBTEST := $(PYTHON) -m mypy.stubtest batchguard._native

step = @printf '\n==> [%s] %s\n' "$$(date +%T)" "$(1)"

# Run every step named in $(1), even after one fails, so one run shows every failure; then fail
# if any did. (Installing is not such a step: nothing is worth running after a failed install.)
define run_all
	@failed=(); \
	for step in $(1); do $(MAKE) --no-print-directory $$step || failed+=("$$step"); done; \
	if (( $${#failed[@]} )); then printf '\n==> make $@: FAILED: %s\n' "$${failed[*]}" >&2; exit 1; fi; \
	printf '\n==> make $@: all steps passed (%s)\n' "$(1)"
endef

.PHONY: help build deps services toolchain test cargo-test stubtest pytest wheel wheel-smoke bench lint clippy fmt mypy ruff demo clean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

# ---------------------------------------------------------------------------------- build

toolchain:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found on PATH (batchguard needs CPython >= 3.11)" >&2; exit 2; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: batchguard needs Python >= 3.11, $(PYTHON) is $$($(PYTHON) -V 2>&1)" >&2; exit 2; }
	@for tool in cargo rustc; do \
	    command -v $$tool >/dev/null || { echo "error: '$$tool' not found on PATH: the Rust engine needs the Rust toolchain (cargo + rustc >= 1.83, see Cargo.toml rust-version); install it with rustup or add ~/.cargo/bin to PATH" >&2; exit 2; }; \
	done

build: toolchain
	$(call step,build: pip install -e . - a maturin release build)
	$(PIP) install -e .

# Installing the test extras is also the build: the package is installed in place (editable).
deps: toolchain
	$(call step,deps: pip install -e .[test] - the release build and the test dependencies)
	$(PIP) install -e ".[test]"

services:
	$(call step,services: redis-server and postgresql)
	bash .ci/services.sh

# ---------------------------------------------------------------------------------- test

# The checks `make lint` runs besides the stub check (which `make test` runs anyway).
LINT_STEPS := clippy fmt mypy ruff
# What `make test` (and so CI) runs besides the tests: every lint step, so a change that passes
# the tests but not clippy, rustfmt, mypy or ruff fails CI as well (`make test TEST_LINT_STEPS=`
# skips them while you iterate).
TEST_LINT_STEPS ?= $(LINT_STEPS)

test: deps services
	$(call run_all,cargo-test stubtest pytest wheel-smoke $(TEST_LINT_STEPS))

# The build is not timed; the run is: libtest has no per-test timeout, and a test stuck in a
# loop would otherwise hold CI until its own limit.
CARGO_TEST_TIMEOUT ?= 600
cargo_timed = $(CARGO_TEST_ENV) timeout --kill-after=10 $(CARGO_TEST_TIMEOUT) $(1) || { rc=$$?; \
	if [ $$rc -eq 124 ] || [ $$rc -eq 137 ]; then echo "error: '$(1)' was still running after $(CARGO_TEST_TIMEOUT)s (CARGO_TEST_TIMEOUT): a test hangs" >&2; fi; \
	exit $$rc; }

cargo-test: toolchain
	$(call step,cargo test - Rust unit tests and doc tests)
	cargo test --lib --no-run
	$(call cargo_timed,cargo test --lib)
	$(call cargo_timed,cargo test --doc)

stubtest:
	$(call step,stubtest: python/batchguard/_native.pyi against the built module)
	$(STUBTEST)

# pytest's exit code 5 means it collected no test: that is a failure here, never a pass.
pytest:
	$(call step,pytest)
	$(PYTHON) -m pytest $(PYTEST_ARGS) || { rc=$$?; \
	    if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests (exit 5): a run that tests nothing fails" >&2; fi; \
	    exit $$rc; }

# ---------------------------------------------------------------------------------- wheels

# A wheel pip accepts on any x86_64 Linux with glibc >= 2.17 (manylinux2014), so a user elsewhere
# needs no Rust toolchain: zig (ziglang from PyPI, pinned: maturin drives it as a linker) links
# against glibc 2.17's symbols whatever this machine's glibc is, maturin checks the result
# against the policy, and --strip drops the symbol table. It builds in target/wheel: the zig
# linker and --strip would otherwise invalidate the `pip install -e .` build in target/.
# WHEEL_POLICY=manylinux_2_28 (say) picks another policy.
WHEEL_POLICY ?= manylinux2014
# One wheel per CPython (`make wheel PYTHON=python3.12` adds 3.12's beside 3.11's): see README,
# "Wheels", for why not one abi3 wheel.
PY_TAG := $(shell $(PYTHON) -c 'import sys; print("cp%d%d" % sys.version_info[:2])' 2>/dev/null)
WHEEL_TOOLS := "maturin>=1.7,<2" "ziglang==0.17.1"

wheel: toolchain
	$(call step,wheel: maturin build --release --strip --zig --compatibility $(WHEEL_POLICY) for $(PY_EXE))
	$(PIP) install --quiet $(WHEEL_TOOLS)
	rm -f dist/batchguard-*-$(PY_TAG)-*.whl
	CARGO_TARGET_DIR=target/wheel $(PYTHON) -m maturin build --release --strip --zig \
	    --compatibility $(WHEEL_POLICY) --interpreter "$(PY_EXE)" --out dist
	@ls -l dist/batchguard-*-$(PY_TAG)-*.whl

# CI's check of the wheel: auditwheel agrees with its tag, it is stripped, and tests/smoke passes
# against it in a fresh virtualenv, run from outside the checkout (.ci/wheel-smoke.sh).
wheel-smoke: wheel
	$(call step,wheel-smoke: auditwheel + strip check + tests/smoke in a fresh venv)
	bash .ci/wheel-smoke.sh "$(PY_EXE)"

# ---------------------------------------------------------------------------------- the rest

# Every script in benches/, so a new one cannot be left out. Each runs even after one fails (a
# failed output check exits 1), and the figures of all of them are printed. BENCH_QUICK=1 passes
# --quick (small sizes, one process): a check that they run, not figures to quote.
BENCHES := $(sort $(wildcard benches/bench_*.py))
BENCH_FLAGS := $(if $(BENCH_QUICK),--quick)

bench: build
	@failed=(); \
	for bench in $(BENCHES); do \
	    printf '\n==> [%s] %s\n' "$$(date +%T)" "bench: $(PYTHON) $$bench $(BENCH_FLAGS)"; \
	    $(PYTHON) $$bench $(BENCH_FLAGS) || failed+=("$$bench"); \
	done; \
	if (( $${#failed[@]} )); then printf '\n==> make bench: FAILED: %s\n' "$${failed[*]}" >&2; exit 1; fi

lint: deps
	$(call run_all,$(LINT_STEPS) stubtest)

clippy: toolchain
	$(call step,cargo clippy)
	cargo clippy --all-targets -- -D warnings

fmt: toolchain
	$(call step,cargo fmt --check)
	cargo fmt --check

# pyproject.toml's [tool.mypy] makes it strict.
mypy:
	$(call step,mypy python/batchguard)
	$(PYTHON) -m mypy python/batchguard

# pyproject.toml's [tool.ruff] says which rules.
ruff:
	$(call step,ruff check python tests benches)
	$(PYTHON) -m ruff check python tests benches

demo: build
	$(call step,batchguard demo)
	"$(PY_SCRIPTS)/batchguard" demo

clean:
	cargo clean 2>/dev/null || rm -rf target
	rm -f python/batchguard/_native*.so python/batchguard/_native*.pyd
	rm -rf dist build .pytest_cache .mypy_cache .hypothesis .benchmarks
	find python tests benches -name __pycache__ -type d -prune -exec rm -rf {} +
