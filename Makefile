# isolane: set-up, build, test, demo and benchmarks.
#
# `make demo` and `make test` do all set-up on a fresh Debian 12 host (run as
# root). Set-up steps are stamped or checked so a second run is a fast no-op.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

# System python: bcc's bindings come from Debian (python3-bpfcc), so the venv
# must be made from /usr/bin/python3 with --system-site-packages.
SYS_PYTHON := /usr/bin/python3
SYS_PYHOME := /usr/bin
VENV       := .venv
PY         := $(VENV)/bin/python
STAMPS     := build/stamps
RESULTS    := build/results

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

APT_PACKAGES := build-essential python3-venv python3-dev python3-bpfcc \
	libbpfcc-dev bpfcc-tools libxdp-dev libbpf-dev clang llvm \
	linux-headers-amd64 bpftool iproute2 iputils-ping pkg-config libelf-dev zlib1g-dev ruby

KREL := $(shell uname -r)
KMOD := /lib/modules/$(KREL)

# The cffi extension that datapath/build.py compiles in place.
DP_MODULE  := _dp
EXT_SUFFIX := $(shell $(SYS_PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))' 2>/dev/null)
DP_EXT     := datapath/$(DP_MODULE)$(EXT_SUFFIX)
DP_SOURCES := datapath/build.py $(wildcard datapath/include/*.h datapath/src/*.c datapath/src/*.h)

# The load generator's C loops (bench/loadgen/build.py), built beside them;
# they share the datapath's probe header and TSC calibration.
LG_EXT     := bench/loadgen/_loadgen$(EXT_SUFFIX)
LG_SOURCES := bench/loadgen/build.py datapath/include/isolane_dp.h datapath/src/tsc.c datapath/src/arrivals.h \
	$(filter-out bench/loadgen/_loadgen.c,$(wildcard bench/loadgen/*.c bench/loadgen/*.h))

PYTEST_ARGS ?=

.PHONY: help setup apt kernel-headers bpffs venv build dp-ext lg-ext test test-asan demo bench clean distclean

help:
	@echo "isolane make targets:"
	@echo "  demo       set-up + build, then isolaned on a veth testbed with two tenants, fifo vs cycles"
	@echo "  test       set-up + build, then the test suite (PYTEST_ARGS=... passed to pytest)"
	@echo "  test-asan  the test suite against an AddressSanitizer build"
	@echo "  setup      apt packages, kernel-header links for bcc, bpffs, $(VENV)"
	@echo "  build      rebuild the cffi extensions (datapath/$(DP_MODULE)*.so, bench/loadgen/_loadgen*.so) after C changes"
	@echo "  bench      contagion + throughput benchmarks, JSON into $(RESULTS)/"
	@echo "  clean      remove build products (keeps $(VENV) and $(RESULTS))"
	@echo "  distclean  clean, and remove $(VENV) and $(RESULTS)"

# ---------------------------------------------------------------- set-up

setup: apt kernel-headers bpffs venv

apt: $(STAMPS)/apt

# Re-checked when the package list (this Makefile) changes; apt-get runs only
# if dpkg says something is missing.
$(STAMPS)/apt: Makefile
	@mkdir -p $(@D)
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "apt: all packages installed"; \
	else \
		echo "apt: installing $(APT_PACKAGES)"; \
		$(SUDO) apt-get update; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y $(APT_PACKAGES); \
	fi
	@touch $@

# No headers ship for the running kernel; bcc works with Debian's 6.1 headers
# once build/ and source/ under /lib/modules/$(uname -r) point at them. An
# existing build or source dir (or a link that resolves) is left alone.
# Checked on every run: cheap, and it depends on the running kernel.
kernel-headers: apt
	@build_dir=$$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1); \
	common_dir=$$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1); \
	if [ -z "$$build_dir" ] || [ -z "$$common_dir" ]; then \
		echo "kernel-headers: no /usr/src/linux-headers-*-{amd64,common}; is linux-headers-amd64 installed?" >&2; \
		exit 1; \
	fi; \
	$(SUDO) mkdir -p $(KMOD); \
	for pair in "build:$$build_dir" "source:$$common_dir"; do \
		link=$(KMOD)/$${pair%%:*}; target=$${pair#*:}; \
		if [ -e "$$link" ]; then continue; fi; \
		echo "kernel-headers: $$link -> $$target"; \
		$(SUDO) ln -sfn "$$target" "$$link"; \
	done

# libxdp wants bpffs; a mount does not survive a reboot, so check every run.
bpffs:
	@if ! mountpoint -q /sys/fs/bpf; then \
		echo "bpffs: mounting /sys/fs/bpf"; \
		$(SUDO) mkdir -p /sys/fs/bpf; \
		$(SUDO) mount -t bpf bpf /sys/fs/bpf || \
			echo "bpffs: WARNING: could not mount /sys/fs/bpf (integration tests will fail)" >&2; \
	fi

venv: $(VENV)/.stamp-install

# (Re)made when the venv is missing or not made from $(SYS_PYTHON) with
# system site packages; reinstalled when the packaging files change.
$(VENV)/.stamp-install: pyproject.toml setup.py | $(STAMPS)/apt
	@if ! grep -qx 'home = $(SYS_PYHOME)' $(VENV)/pyvenv.cfg 2>/dev/null || \
	    ! grep -qx 'include-system-site-packages = true' $(VENV)/pyvenv.cfg; then \
		echo "venv: creating $(VENV) from $(SYS_PYTHON)"; \
		rm -rf $(VENV); \
		$(SYS_PYTHON) -m venv --system-site-packages $(VENV); \
	fi
	$(PY) -m pip install --disable-pip-version-check -e '.[test]'
	@touch $@

# ---------------------------------------------------------------- build

# A sub-make, so EXT_SUFFIX is read from a python3 that set-up may only just
# have installed (a minimal Debian image has none when this file is parsed).
build: venv
	@$(MAKE) --no-print-directory dp-ext lg-ext

dp-ext: $(DP_EXT)
	@:

# Remove the old module first: distutils only relinks when the generated C is
# newer, so a header-only change would otherwise not be picked up.
$(DP_EXT): $(DP_SOURCES) | $(VENV)/.stamp-install
	rm -f datapath/$(DP_MODULE).*.so
	$(PY) datapath/build.py
	@test -f $@ || { echo "build: datapath/build.py did not produce $@ (check DP_MODULE)" >&2; exit 1; }

lg-ext: $(LG_EXT)
	@:

$(LG_EXT): $(LG_SOURCES) | $(VENV)/.stamp-install
	rm -f bench/loadgen/_loadgen.*.so
	$(PY) bench/loadgen/build.py
	@test -f $@ || { echo "build: bench/loadgen/build.py did not produce $@" >&2; exit 1; }

# ---------------------------------------------------------------- run

test: setup build
	$(PY) -m pytest tests $(PYTEST_ARGS)

# The suite against an AddressSanitizer build of the fast path; `make build`
# afterwards returns to the optimised one. The demo's test is left out: its
# plot goes through matplotlib's ft2font, whose C++ exceptions trip an ASan
# CHECK in __cxa_throw's interceptor when the runtime is preloaded (not our
# code; the demo's datapath paths are all run by other tests).
test-asan: setup
	rm -f datapath/$(DP_MODULE).*.so
	ISOLANE_SANITIZE=1 $(PY) datapath/build.py
	@# the sanitized module is removed even when a test fails: left behind, it
	@# would look up to date to `make build` and fail every import without ASan
	status=0; LD_PRELOAD=$$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
		$(PY) -m pytest tests --deselect tests/test_demo.py $(PYTEST_ARGS) || status=$$?; \
	rm -f datapath/$(DP_MODULE).*.so; exit $$status

# The product end to end: testbed, isolaned, two tenants registered by two
# unix users through the CLI, the load generator without and with time
# protection, a table and build/results/demo.png; everything removed after.
demo: setup build
	$(PY) bench/demo.py

bench: setup build
	@mkdir -p $(RESULTS)
	$(PY) bench/contagion.py --json $(RESULTS)/contagion.json
	$(PY) bench/throughput.py --json $(RESULTS)/throughput.json
	$(PY) bench/progtax.py --json $(RESULTS)/progtax.json
	$(PY) bench/afxdp_rate.py --json $(RESULTS)/afxdp_rate.json
	$(PY) bench/contagion.py --backend afxdp --policy fifo --policy pkt_rate --policy cycles \
		--json $(RESULTS)/contagion_wire.json --csv $(RESULTS)/contagion_wire.csv \
		--plot $(RESULTS)/contagion_wire.png
	$(PY) bench/control_ops.py

# ---------------------------------------------------------------- clean

clean:
	rm -f datapath/$(DP_MODULE).*.so datapath/$(DP_MODULE).c datapath/$(DP_MODULE).o
	find datapath -name '*.o' -delete
	rm -f bench/loadgen/_loadgen.*.so bench/loadgen/_loadgen.c
	find bench/loadgen -name '*.o' -delete
	if [ -d build ]; then find build -mindepth 1 -maxdepth 1 ! -name results ! -name stamps -exec rm -rf {} +; fi
	rm -rf *.egg-info .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) build
