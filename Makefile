# godvm: build, test kernel, tests.
#
#   make deps     install the Debian packages the builds need (as root)
#   make kernel   build (or find in ~/.cache/godvm) the guest test kernel
#   make initrd   build (or find) the busybox test initrd
#   make build    go build -o bin/godvm ./cmd/godvm
#   make run      boot the test kernel with the agent's boot and dsa scenarios
#                 (VFIO_USER=1: the DSA served by `godvm dsa-server` over vfio-user)
#   make bench    `godvm bench $(BENCH_ARGS)` (default --runs 3) on the test
#                 kernel `make kernel` built (bench finds it: internal/kernelcache)
#   make check    quick iterations: gofmt check, go vet, go test -short ./...
#                 (no kernel or initrd build, no root, no guest boots)
#   make test     gofmt check, go vet, go test with GODVM_TEST_KERNEL/INITRD
#   make fuzz     run every fuzz target for FUZZTIME (default 30s)
#   make test-stock-kernel
#                 boot Debian's stock kernel (linux-image-amd64, fetched once
#                 into ~/.cache/godvm) to its "VFS: Unable to mount root fs"
#                 panic (e2e TestStockKernel; slow, not part of make test)
#
# Works as root on a fresh Debian 12 with Go in /usr/local/go.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

# Go from /usr/local/go when it is not on PATH.
ifeq ($(shell command -v go 2>/dev/null),)
export PATH := /usr/local/go/bin:$(PATH)
endif
GO ?= go

DEB_PACKAGES := linux-source-6.12 flex bison bc libelf-dev libssl-dev cpio \
	busybox-static qemu-system-x86 build-essential lz4 xz-utils patch perl \
	kmod file accel-config acpica-tools

GODVM := bin/godvm
# The kernel and initrd paths come from the build scripts (cached by input hash).
KERNEL_PATH = $(shell images/build-kernel.sh --print-path)
INITRD_PATH = $(shell images/build-initrd.sh --print-path)
KERNEL ?= $(KERNEL_PATH)
# quiet: the boot log stays in the guest (the agent turns the console back on
# for its report); every console byte is a port exit and ring-0 work.
CMDLINE ?= quiet godvm_agent.run=boot,dsa
# The DSA device: in-process model, or (VFIO_USER=1) `godvm dsa-server`.
# Both ways the guest gets setcpuid=movdir64b from godvm when KVM cannot
# advertise it (host defaults chosen by the KVM probe).
DSA_ARGS ?= --dsa default
# 128 MiB: on kvm_pvm struct-page init for 512 MiB costs ~4 s of the boot.
RUN_ARGS ?= --cpus 2 --memory 128M --timeout 300s
RUN_LOG ?= bin/run.log
VFIO_USER ?=
DSA_SOCKET ?= /tmp/godvm-dsa.sock
DSA_SERVER_ARGS ?= --socket $(DSA_SOCKET)
BENCH_ARGS ?= --runs 3
GO_TEST_FLAGS ?=
FUZZTIME ?= 30s
# The fuzzer minimises each new interesting input for up to this long, and
# counts none of it as executions (a 10 KiB bzImage seed took a whole 50 s
# FUZZTIME); 10s keeps most of FUZZTIME for fuzzing.
FUZZMINIMIZETIME ?= 10s

.PHONY: deps kernel initrd build run bench check test test-nested nested-go-test vet fmt-check fuzz clean test-stock-kernel

# apt-get runs only when a package is missing, so `make test` stays quick.
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing" $$missing; \
		if [ "$$(id -u)" -ne 0 ]; then echo "make deps: run as root to install:" $$missing; exit 1; fi; \
		DEBIAN_FRONTEND=noninteractive apt-get update -q; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@command -v $(GO) >/dev/null || { echo "make deps: Go not found (expected /usr/local/go/bin/go)"; exit 1; }
	@$(GO) version

kernel:
	images/build-kernel.sh

initrd:
	images/build-initrd.sh

build:
	mkdir -p bin
	$(GO) build -o $(GODVM) ./cmd/godvm

# The whole run is logged to RUN_LOG; images/run-summary.sh then prints a
# short summary (each result and dsa step, dmatest, boot time, exits).
RUN_SYSMAP = $(dir $(KERNEL))System.map
run: deps kernel build
ifeq ($(VFIO_USER),1)
	rm -f $(DSA_SOCKET)
	$(GODVM) dsa-server $(DSA_SERVER_ARGS) & \
	server=$$!; trap 'kill $$server 2>/dev/null' EXIT; \
	for i in $$(seq 50); do [ -S $(DSA_SOCKET) ] && break; sleep 0.1; done; \
	set +e; $(GODVM) run --kernel "$(KERNEL)" --system-map "$(RUN_SYSMAP)" --cmdline "$(CMDLINE)" --boot-trace \
		--vfio-user $(DSA_SOCKET) $(RUN_ARGS) 2>&1 | tee $(RUN_LOG); status=$${PIPESTATUS[0]}; \
	images/run-summary.sh $(RUN_LOG) $$status; exit $$status
else
	set +e; $(GODVM) run --kernel "$(KERNEL)" --system-map "$(RUN_SYSMAP)" --cmdline "$(CMDLINE)" --boot-trace \
		$(DSA_ARGS) $(RUN_ARGS) 2>&1 | tee $(RUN_LOG); status=$${PIPESTATUS[0]}; \
	images/run-summary.sh $(RUN_LOG) $$status; exit $$status
endif

# No kernel path is passed: `godvm bench` boots the kernel images/build-kernel.sh
# built or found last ($GODVM_CACHE/kernel-current), as the e2e tests do.
bench: deps kernel build
	$(GODVM) bench $(BENCH_ARGS)

# The light loop for a change in progress: nothing is built or installed
# but Go packages, nothing needs root, and -short skips every test that
# boots the test kernel (e2e, cmd/godvm's bench). The live tests of kvm/ and
# vmm/... (tiny hand-made guests) still run where /dev/kvm is usable.
check: fmt-check vet
	$(GO) test -short $(GO_TEST_FLAGS) ./...

fmt-check:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Where /dev/kvm is absent (this project's development and CI machines),
# the packages that drive KVM run a second time inside a QEMU/TCG VM whose
# kernel loads kvm_amd (images/nested): a real /dev/kvm for their live tests.
# `make test` does that for kvm/ and vmm/... (small hand-made guests, about
# 2 minutes); `make test-nested` also boots the test kernel for the e2e
# suite (about 15 minutes; see README for why it is not part of `make test`).
NESTED := $(CURDIR)/images/nested/run-in-nested-kvm.sh
NESTED_PKGS ?= ./kvm/ ./vmm/...
E2E_PKGS ?= ./e2e/
# The e2e tests `make test` runs in nested kvm_amd where /dev/kvm is absent:
# the full DSA scenario (dmatest included) in process and over vfio-user, on
# the path the probe picks there (pv). 6 boots, 3 min on a 2-core kvm_pvm
# machine's QEMU/TCG (2026-11-27).
NESTED_DSA_RUN ?= ^(TestDSA|TestVfioUserDSA)$$
TEST_ENV = GODVM_TEST_KERNEL="$(KERNEL_PATH)" GODVM_TEST_INITRD="$(INITRD_PATH)" GODVM_BINARY="$(CURDIR)/$(GODVM)"

# The packages that boot the test kernel (cmd/godvm's bench test, e2e) run
# one after the other, after the rest: on a 2-core machine a 2-vCPU guest
# beside another guest or a compile has its vCPUs preempted, and its boot
# took 38 s instead of 14 (kvm_pvm, 2026-11-27).
GUEST_PKGS := ./cmd/godvm ./e2e
test: deps kernel initrd build fmt-check vet
	$(TEST_ENV) $(GO) test -timeout 60m $(GO_TEST_FLAGS) $$($(GO) list ./... | grep -v -e '/e2e$$' -e '/cmd/godvm$$')
	$(TEST_ENV) $(GO) test -p 1 -timeout 60m -v $(GO_TEST_FLAGS) $(GUEST_PKGS)
	@if [ -e /dev/kvm ]; then \
		echo "make test: /dev/kvm present: the KVM tests above ran on it"; \
	else \
		echo "make test: no /dev/kvm on this host: running $(NESTED_PKGS) inside a QEMU/TCG VM with nested kvm_amd"; \
		rc=0; \
		$(MAKE) --no-print-directory nested-go-test PKGS="$(NESTED_PKGS)" NESTED_T=300 || rc=$$?; \
		echo "make test: and the DSA data-path scenarios there ($(NESTED_DSA_RUN); the pv path, as kvm_amd guests cannot execute MOVDIR64B)"; \
		$(MAKE) --no-print-directory nested-go-test PKGS="$(E2E_PKGS)" NESTED_T=900 NESTED_ARGS="-c 2" \
			GO_TEST_FLAGS="-v -run $(NESTED_DSA_RUN) $(GO_TEST_FLAGS)" || rc=$$?; \
		exit $$rc; \
	fi

test-nested: deps kernel initrd build
	$(MAKE) --no-print-directory nested-go-test PKGS="$(NESTED_PKGS) $(E2E_PKGS)" NESTED_T=2400 NESTED_ARGS="-c 2" GO_TEST_FLAGS="-v $(GO_TEST_FLAGS)"

# Each package in its own nested VM; retried once only when the VM itself
# failed (images/nested/go-test-nested.sh).
nested-go-test:
	$(TEST_ENV) GO="$(GO)" GO_TEST_FLAGS="$(GO_TEST_FLAGS)" NESTED_ARGS="$(NESTED_ARGS)" images/nested/go-test-nested.sh $(NESTED_T) $(PKGS)

# Every `func FuzzXxx` in a _test.go file (under FUZZ_DIRS, default the whole
# tree), run one at a time for FUZZTIME; then the executions of each target
# (the last "fuzz: elapsed: ..., execs: N" line go test prints), the total and
# the failed targets. A failing target does not stop the others; it fails the
# run at the end (its crasher is in the package's testdata/fuzz).
fuzz:
	@summary=$$(mktemp); log=$$(mktemp); failed=0; \
	trap 'rm -f $$summary $$log' EXIT; \
	for f in $$(grep -rl --include='*_test.go' '^func Fuzz' $(or $(FUZZ_DIRS),.) | sort); do \
		pkg=./$$(dirname $${f#./}); \
		for t in $$(grep -oE '^func Fuzz[A-Za-z0-9_]+' $$f | cut -d' ' -f2); do \
			echo "== $$pkg $$t"; \
			if $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg 2>&1 | tee $$log; then st=ok; \
			else st=FAILED; failed=$$((failed+1)); fi; \
			n=$$(grep -oE 'execs: [0-9]+' $$log | tail -n 1 | grep -oE '[0-9]+' || echo 0); \
			printf '%-24s %-22s %14s  %s\n' "$$pkg" "$$t" "$$n" "$$st" >>$$summary; \
		done; \
	done; \
	echo; echo "== make fuzz: executions per target (FUZZTIME=$(FUZZTIME))"; \
	printf '%-24s %-22s %14s  %s\n' package target execs result; \
	cat $$summary; \
	awk '{n++; s+=$$3} END {printf "total: %d executions in %d targets\n", s, n}' $$summary; \
	echo "failed targets: $$failed"; \
	[ $$failed -eq 0 ]

# Debian's stock kernel as a user has it: the image package linux-image-amd64
# depends on (e.g. linux-image-6.1.0-56-amd64), downloaded with apt-get and
# unpacked with dpkg-deb into $GODVM_CACHE/stock-kernel-<package>_<version>
# (once per version), booted as the bzImage it is by e2e TestStockKernel,
# which takes its path from GODVM_STOCK_KERNEL. STOCK_KERNEL_ARGS and
# STOCK_KERNEL_CMDLINE pass extra godvm flags and guest parameters (e.g.
# STOCK_KERNEL_ARGS=--no-host-defaults STOCK_KERNEL_CMDLINE=noxsave).
# About 6-10 minutes on a kvm_pvm host (README, "bzImage kernels").
STOCK_KERNEL_META ?= linux-image-amd64
STOCK_KERNEL_ARGS ?=
STOCK_KERNEL_CMDLINE ?=
GODVM_CACHE ?= $(HOME)/.cache/godvm
test-stock-kernel: build
	@pkg=$$(apt-cache depends $(STOCK_KERNEL_META) 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$$/\1/p' | head -n 1); \
	ver=$$(apt-cache policy "$$pkg" 2>/dev/null | sed -n 's/^ *Candidate: //p'); \
	if [ -z "$$pkg" ] || [ -z "$$ver" ] || [ "$$ver" = "(none)" ]; then \
		echo "make test-stock-kernel: apt knows no kernel package behind $(STOCK_KERNEL_META) (run apt-get update?)"; exit 1; \
	fi; \
	dir="$(GODVM_CACHE)/stock-kernel-$${pkg}_$${ver}"; \
	if [ ! -e "$$dir/.complete" ]; then \
		echo "make test-stock-kernel: downloading $$pkg $$ver"; \
		tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; chmod 755 "$$tmp"; \
		(cd "$$tmp" && apt-get download -q "$$pkg=$$ver"); \
		rm -rf "$$dir"; mkdir -p "$$dir"; \
		dpkg-deb -x "$$tmp"/*.deb "$$dir"; \
		touch "$$dir/.complete"; \
	fi; \
	kernel=$$(ls "$$dir"/boot/vmlinuz-* | head -n 1); \
	echo "make test-stock-kernel: $$pkg $$ver: $$kernel"; \
	GODVM_STOCK_KERNEL="$$kernel" GODVM_BINARY="$(CURDIR)/$(GODVM)" \
		GODVM_STOCK_ARGS="$(STOCK_KERNEL_ARGS)" GODVM_STOCK_CMDLINE="$(STOCK_KERNEL_CMDLINE)" \
		$(GO) test -count=1 -timeout 40m -v -run '^TestStockKernel$$' $(GO_TEST_FLAGS) ./e2e/

clean:
	rm -rf bin
