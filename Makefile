# spindle: the one entry point. `make` builds, `make test` runs every suite, `make demo` shows
# the pinning spindle removes, `make deps` installs the Debian packages all of them need.

BUILD      := build
CXX        ?= g++
CLANG      ?= clang
BPFTOOL    ?= bpftool

# Packages the build, the tests and the demo need (Debian 12).
DEPS_BUILD := make g++ pkg-config clang llvm bpftool libbpf-dev liburing-dev libfmt-dev \
              libyaml-cpp-dev libgtest-dev libnghttp2-dev libc-ares-dev libjemalloc-dev \
              libseccomp-dev nlohmann-json3-dev clang-format-14
DEPS_TEST  := iproute2 nftables python3 util-linux python3-grpcio python3-h2 curl openssl \
              dnsmasq-base prometheus libgrpc++-dev
# Node.js for the grpc-js client: the machine's own when it has one (it may not be Debian's).
DEPS_TEST  += $(if $(shell command -v node),,nodejs npm)
DEPS_BENCH := iperf3 nghttp2-client haproxy nginx nghttp2-proxy linux-perf
# make bench runs its own instances of these proxies: the system services that installing
# them starts (package:unit) are stopped and disabled right after the install.
BENCH_SERVICES := haproxy:haproxy nginx:nginx nghttp2-proxy:nghttpx
DEPS_FUZZ  := clang libclang-rt-14-dev
DEPS       := $(DEPS_BUILD) $(DEPS_TEST) $(DEPS_BENCH) $(DEPS_FUZZ)
# Only for `make image` (a daemonless image build), not part of DEPS. skopeo reads the OCI
# archive back as a registry client would (its labels) and is what pushes it.
DEPS_IMAGE := buildah debootstrap skopeo

WARNINGS   := -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion \
              -Wold-style-cast -Wnon-virtual-dtor -Woverloaded-virtual -Werror
CXXFLAGS   ?= -O2 -g
CXXFLAGS   += -std=c++20 $(WARNINGS) -Iinclude -Idaemon -isystem $(BUILD)/gen -MMD -MP
LDLIBS     := -lbpf -luring -lnghttp2 -lcares -lyaml-cpp -lfmt -lseccomp -lelf -lz -lpthread
# The daemon's allocator: glibc's malloc and free were 18% of its CPU per call (nghttp2
# allocates per frame and stream). jemalloc cuts CPU per unary call by about 10% and keeps
# 64 KiB messages and streams as fast as glibc; tcmalloc was as fast on unary calls but 40%
# slower on 64 KiB messages and 80% on streams. Only the daemon: the sanitizer builds bring
# their own allocator.
MALLOC_LIB := -ljemalloc

# clang -target bpf does not know the multiarch include dir (asm/types.h): ask clang for the
# host's system dirs and pass them with -idirafter.
BPF_SYS_INCLUDES := $(shell $(CLANG) -v -E - </dev/null 2>&1 \
	| sed -n '/<...> search starts here:/,/End of search list./{ s| \(/.*\)|-idirafter \1|p }')
BPF_CFLAGS := -g -O2 -target bpf -Wall -Werror -Iinclude $(BPF_SYS_INCLUDES)
# The architecture the daemon is built for, in the kernel's words (x86, arm64), taken from the
# C++ compiler's target so that a cross compiler brings its own. __TARGET_ARCH_* only selects
# the register layout of libbpf's bpf_tracing.h (PT_REGS_*, BPF_KPROBE); the cgroup, sockops and
# sk_reuseport programs read no registers and include no bpf_tracing.h, so their bytecode is
# the same on every architecture: `make bpf-arches` builds and compares it.
BPF_ARCH   ?= $(patsubst x86_64,x86,$(patsubst aarch64,arm64,$(firstword \
              $(subst -, ,$(shell $(CXX) -dumpmachine)))))
BPF_ARCH   := $(BPF_ARCH)
BPF_ARCHES := x86 arm64

# The version the binary reports (--version, spindle_build_info, the status page, the image):
# VERSION=1.2.3 sets it; else `git describe` of this checkout; else, in a source tarball made
# by `git archive`, what git wrote into tools/archive-version (export-subst, .gitattributes);
# else "unknown". REVISION, the commit's hash, likewise. Computed once per make, never inside
# the build's container (it has no .git: tools/build-image.sh passes both in).
ARCHIVE_INFO := $(if $(findstring $$Format,$(file <tools/archive-version)),,$(file <tools/archive-version))
archive_field = $(patsubst $(1)=%,%,$(filter $(1)=%,$(ARCHIVE_INFO)))
IN_GIT     := $(if $(wildcard .git),$(shell git rev-parse --git-dir >/dev/null 2>&1 && echo yes))
SPINDLE_VERSION := $(or $(VERSION),$(if $(IN_GIT),$(shell git describe --tags --always --dirty 2>/dev/null)),\
                   $(call archive_field,describe),$(call archive_field,short),unknown)
SPINDLE_REVISION := $(or $(REVISION),$(if $(IN_GIT),$(shell git rev-parse HEAD 2>/dev/null)),\
                    $(call archive_field,revision),unknown)

BPF_SRCS   := $(wildcard bpf/*.bpf.c)
BPF_SKELS  := $(patsubst bpf/%.bpf.c,$(BUILD)/gen/%.skel.h,$(BPF_SRCS))

LIB_SRCS   := $(shell find daemon -name '*.cc' ! -name main.cc ! -name '*_test.cc')
LIB_OBJS   := $(patsubst %.cc,$(BUILD)/obj/%.o,$(LIB_SRCS))
MAIN_OBJ   := $(BUILD)/obj/daemon/main.o
UNIT_SRCS  := $(wildcard tests/unit/*_test.cc)
UNIT_OBJS  := $(patsubst %.cc,$(BUILD)/obj/%.o,$(UNIT_SRCS))
# Component tests: the proxy's real classes on a real loop, with test peers on loopback.
COMP_SRCS  := $(wildcard tests/component/*.cc)
COMP_OBJS  := $(patsubst %.cc,$(BUILD)/obj/%.o,$(COMP_SRCS))

SPINDLE    := $(BUILD)/bin/spindle
UNIT_TESTS := $(BUILD)/bin/unit_tests
COMPONENT_TESTS := $(BUILD)/bin/component_tests
E2E_CLIENT := $(BUILD)/bin/e2e_client

.PHONY: all deps test unit component integration demo bench clean format format-check
# Keep the intermediate BPF objects: the skeleton embeds them, and rebuilding is wasteful.
.SECONDARY:
.DEFAULT_GOAL := all

all: $(SPINDLE) $(UNIT_TESTS) $(COMPONENT_TESTS)

deps:
	@missing=$$(for p in $(DEPS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q --no-install-recommends $$missing || \
		{ apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; }; \
		for pu in $(BENCH_SERVICES); do \
			echo "$$missing" | grep -qx "$${pu%%:*}" || continue; \
			if [ -d /run/systemd/system ]; then systemctl disable --now -q "$${pu#*:}"; \
			else service "$${pu#*:}" stop >/dev/null 2>&1 || true; fi; \
		done; \
	fi
	@# npm ci again whenever a lockfile changed since the last one: a package added to it
	@# (kubectl in tests/k8s) reaches machines that already have a node_modules.
	@for d in tests/e2e/node tests/k8s; do \
		cmp -s $$d/package-lock.json $$d/node_modules/.installed-lock.json && continue; \
		echo "npm ci in $$d"; \
		(cd $$d && npm ci --no-audit --no-fund && \
			cp package-lock.json node_modules/.installed-lock.json) || exit 1; \
	done

# BPF: clang to a temporary object, bpftool gen object (the linker pass), then the skeleton.
$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c include/spindle/bpf_abi.h $(wildcard bpf/*.h)
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -D__TARGET_ARCH_$(BPF_ARCH) -c $< -o $(@:.o=.tmp.o)
	$(BPFTOOL) gen object $@ $(@:.o=.tmp.o)

# The same objects for each of BPF_ARCHES (build/bpf-ARCH/), compiled only: the daemon that
# embeds them is built for one architecture by its own compiler (docs/deploy-kubernetes.md).
# bpf-arches also says whether the architectures' programs are the same instructions.
define bpf_arch_rule
$(BUILD)/bpf-$(1)/%.bpf.o: bpf/%.bpf.c include/spindle/bpf_abi.h $(wildcard bpf/*.h)
	@mkdir -p $$(@D)
	$(CLANG) $(BPF_CFLAGS) -D__TARGET_ARCH_$(1) -c $$< -o $$(@:.o=.tmp.o)
	$(BPFTOOL) gen object $$@ $$(@:.o=.tmp.o)
endef
$(foreach arch,$(BPF_ARCHES),$(eval $(call bpf_arch_rule,$(arch))))

BPF_ARCH_OBJS := $(foreach arch,$(BPF_ARCHES),$(patsubst bpf/%.c,$(BUILD)/bpf-$(arch)/%.o,$(BPF_SRCS)))
.PHONY: bpf-arches
bpf-arches: $(BPF_ARCH_OBJS)
	@for obj in $(notdir $(BPF_SRCS:.c=.o)); do \
		for arch in $(BPF_ARCHES); do \
			llvm-objdump -d -r --no-show-raw-insn $(BUILD)/bpf-$$arch/$$obj | tail -n +3 \
				>$(BUILD)/bpf-$$arch/$$obj.dis || exit 1; \
		done; \
		same=yes; \
		for arch in $(BPF_ARCHES); do \
			cmp -s $(BUILD)/bpf-$(firstword $(BPF_ARCHES))/$$obj.dis $(BUILD)/bpf-$$arch/$$obj.dis || same=no; \
		done; \
		if [ $$same = yes ]; then echo "bpf-arches: $$obj builds for $(BPF_ARCHES): the same instructions for each"; \
		else echo "bpf-arches: $$obj builds for $(BPF_ARCHES), with different instructions (registers read through bpf_tracing.h?): diff $(BUILD)/bpf-*/$$obj.dis"; fi; \
	done

$(BUILD)/gen/%.skel.h: $(BUILD)/bpf/%.bpf.o
	@mkdir -p $(@D)
	$(BPFTOOL) gen skeleton $< name $*_bpf > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/%.o: %.cc $(BPF_SKELS)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) -c $< -o $@

# The version, as a header that only daemon/util/version.cc includes. Its recipe runs on every
# make but rewrites the file only when the text changes, so a new commit (or a tree turning
# dirty) recompiles that one object and relinks.
VERSION_H := $(BUILD)/gen/spindle_version.h
# In the environment, not in the recipe's text: a quote in VERSION cannot break the shell.
$(VERSION_H): export BUILD_VERSION := $(SPINDLE_VERSION)
$(VERSION_H): export BUILD_REVISION := $(SPINDLE_REVISION)
$(VERSION_H): FORCE
	@mkdir -p $(@D)
	@case "$$BUILD_VERSION$$BUILD_REVISION" in *[!A-Za-z0-9._+~-]*) \
		echo "VERSION '$$BUILD_VERSION', REVISION '$$BUILD_REVISION': only letters, digits and ._+~-"; \
		exit 1;; esac
	@printf '%s\n#define SPINDLE_VERSION "%s"\n#define SPINDLE_REVISION "%s"\n' \
		'// Generated by the Makefile: the version and commit spindle was built from.' \
		"$$BUILD_VERSION" "$$BUILD_REVISION" >$@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; \
		echo "version $$BUILD_VERSION, revision $$BUILD_REVISION"; fi
	@[ "$$BUILD_VERSION" != unknown ] || \
		echo "note: no git checkout and no VERSION: spindle --version says 'unknown' (VERSION=1.2.3 make sets it)"
$(BUILD)/obj/daemon/util/version.o $(BUILD)/asan/obj/daemon/util/version.o: $(VERSION_H)

# What `make` would embed, for tools/build-image.sh: "VERSION REVISION".
.PHONY: print-version FORCE
print-version: export BUILD_VERSION := $(SPINDLE_VERSION)
print-version: export BUILD_REVISION := $(SPINDLE_REVISION)
print-version:
	@echo "$$BUILD_VERSION $$BUILD_REVISION"
FORCE:

$(BUILD)/lib/libspindle.a: $(LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(SPINDLE): $(MAIN_OBJ) $(BUILD)/lib/libspindle.a
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS) $(MALLOC_LIB)

$(UNIT_TESTS): $(UNIT_OBJS) $(BUILD)/lib/libspindle.a
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $^ -o $@ -lgtest -lgtest_main $(LDLIBS)

$(COMPONENT_TESTS): $(COMP_OBJS) $(BUILD)/lib/libspindle.a
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $^ -o $@ -lgtest -lgtest_main $(LDLIBS)

# Every suite; the last line is "N passed, N failed, N skipped". The build uses every core
# even when `make test` was called without -j (with -j, the caller's jobserver is kept).
NPROC ?= $(shell nproc 2>/dev/null || echo 1)
test: deps
	@$(MAKE) --no-print-directory $(if $(findstring -j,$(MAKEFLAGS)),,-j$(NPROC)) \
		all $(E2E_CLIENT)
	@tests/run_all.sh

unit: $(UNIT_TESTS)
	@$(UNIT_TESTS)

# No root, no BPF: io_uring, loopback sockets and the proxy's own classes.
component: $(COMPONENT_TESTS)
	@$(COMPONENT_TESTS)

integration: deps $(SPINDLE) $(E2E_CLIENT)
	@/usr/bin/python3 tests/integration/run.py

# DEMO_ARGS="--record run.txt" also writes the run to a file.
demo: deps $(SPINDLE)
	@/usr/bin/python3 demo/demo.py $(DEMO_ARGS)

# A minimal gRPC server on nghttp2 for the benchmarks: fast enough not to be the bottleneck.
$(BUILD)/bin/grpc_backend: bench/grpc_backend.cc
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $< -o $@ -lnghttp2

# The end-to-end suite's C++ gRPC client (libgrpc++'s generic stub: no codegen), with its
# own flags: the project's warnings; grpc's headers are system headers, found by pkg-config.
$(E2E_CLIENT): tests/e2e/cpp/e2e_client.cc
	@mkdir -p $(@D)
	$(CXX) -std=c++20 -O2 -g $(WARNINGS) $$(pkg-config --cflags grpc++) $< -o $@ \
		$$(pkg-config --libs grpc++) -lcrypto

# CPU per call end of the data path's metrics, and of a worker's expiry pass (no root).
$(BUILD)/bin/metrics_bench: bench/metrics_bench.cc $(BUILD)/lib/libspindle.a
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $< $(BUILD)/lib/libspindle.a -o $@ $(LDLIBS)

.PHONY: metrics-bench
metrics-bench: $(BUILD)/bin/metrics_bench
	@$(BUILD)/bin/metrics_bench

bench: deps $(SPINDLE) $(BUILD)/bin/grpc_backend
	@/usr/bin/python3 bench/redirect_bench.py
	@/usr/bin/python3 bench/grpc_bench.py --perf

# Sanitizer builds, with clang 14: the unit and component tests under ASan+UBSan, and
# libFuzzer targets (fuzz/*_fuzz.cc). The strict warnings are the g++ build's job; these look
# for what only shows at run time. A UBSan finding aborts, so that it fails the run. One
# sanitized library serves all (its coverage hooks cost the tests little): CI builds it once.
SAN_CXX      ?= clang++
SAN_FLAGS    := -std=c++20 -O1 -g1 -fno-omit-frame-pointer -fno-sanitize-recover=undefined \
                -fsanitize=address,undefined -Iinclude -Idaemon -isystem $(BUILD)/gen -MMD -MP
SAN_CXXFLAGS := $(SAN_FLAGS) -fsanitize=fuzzer-no-link
SAN_LIB      := $(BUILD)/asan/lib/libspindle.a
ASAN_UNIT    := $(BUILD)/asan/bin/unit_tests
ASAN_COMPONENT := $(BUILD)/asan/bin/component_tests
FUZZ_NAMES   := $(patsubst fuzz/%_fuzz.cc,%,$(wildcard fuzz/*_fuzz.cc))
FUZZ_BINS    := $(patsubst %,$(BUILD)/fuzz/bin/%_fuzz,$(FUZZ_NAMES))
FUZZ_SECONDS ?= 60

.PHONY: test-asan fuzz fuzz-smoke fuzz-build

$(BUILD)/asan/obj/%.o: %.cc $(BPF_SKELS)
	@mkdir -p $(@D)
	$(SAN_CXX) $(SAN_CXXFLAGS) -c $< -o $@

$(BUILD)/fuzz/obj/%.o: %.cc $(BPF_SKELS)
	@mkdir -p $(@D)
	$(SAN_CXX) $(SAN_CXXFLAGS) -c $< -o $@

$(SAN_LIB): $(patsubst %.cc,$(BUILD)/asan/obj/%.o,$(LIB_SRCS))
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(ASAN_UNIT): $(patsubst %.cc,$(BUILD)/asan/obj/%.o,$(UNIT_SRCS)) $(SAN_LIB)
	@mkdir -p $(@D)
	$(SAN_CXX) $(SAN_FLAGS) $^ -o $@ -lgtest -lgtest_main $(LDLIBS)

$(ASAN_COMPONENT): $(patsubst %.cc,$(BUILD)/asan/obj/%.o,$(COMP_SRCS)) $(SAN_LIB)
	@mkdir -p $(@D)
	$(SAN_CXX) $(SAN_FLAGS) $^ -o $@ -lgtest -lgtest_main $(LDLIBS)

test-asan: $(ASAN_UNIT) $(ASAN_COMPONENT)
	@UBSAN_OPTIONS=print_stacktrace=1 $(ASAN_UNIT) --gtest_brief=1
	@UBSAN_OPTIONS=print_stacktrace=1 $(ASAN_COMPONENT) --gtest_brief=1

$(BUILD)/fuzz/bin/%: $(BUILD)/fuzz/obj/fuzz/%.o $(SAN_LIB)
	@mkdir -p $(@D)
	$(SAN_CXX) $(SAN_FLAGS) -fsanitize=fuzzer $^ -o $@ $(LDLIBS)

fuzz-build: $(FUZZ_BINS)

# Each target for FUZZ_SECONDS from its seed corpus (fuzz/corpus/NAME; what it finds new
# goes to build/fuzz/corpus/NAME), then executions per second and coverage per target.
fuzz: deps $(FUZZ_BINS)
	@fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_NAMES)

# The short run CI does (tests/run_all.sh runs the same).
fuzz-smoke: deps $(FUZZ_BINS)
	@fuzz/run.sh 20 $(FUZZ_NAMES)

# The container image (Dockerfile) built without a Docker daemon, then checked: buildah with
# chroot isolation on a Debian 12 base made by debootstrap (tools/build-image.sh), with the
# version and OCI labels, written to build/spindle-oci.tar for skopeo to push. Not part of
# `make test`: it takes minutes. IMAGE=name:tag to tag it otherwise.
.PHONY: image
image: export VERSION := $(SPINDLE_VERSION)
image: export REVISION := $(SPINDLE_REVISION)
image:
	@$(MAKE) --no-print-directory deps DEPS="$(DEPS_IMAGE)"
	@tools/build-image.sh

# The house format (.clang-format) over the C++: the daemon, the unit tests, the fuzz targets,
# the benchmark backend and the end-to-end client, the headers. Not the kernel side's C (bpf/,
# include/spindle/): it keeps the kernel's style, and a .clang-format there turns formatting
# off. Generated code (build/gen/) is not listed.
CLANG_FORMAT ?= clang-format-14
FORMAT_SRCS   = $(shell find daemon tests/unit tests/component fuzz include -name '*.cc' -o -name '*.h') \
                $(wildcard bench/*.cc tests/e2e/cpp/*.cc)

format:
	@$(CLANG_FORMAT) -i $(FORMAT_SRCS)

# Exit 1 and name each file that `make format` would change. One clang-format for all files:
# it goes on past a file with findings. A failure that names no file (a bad .clang-format, a
# crash) shows clang-format's own words.
format-check:
	@command -v $(CLANG_FORMAT) >/dev/null || { echo "$(CLANG_FORMAT) is missing: make deps"; exit 1; }
	@out=$$($(CLANG_FORMAT) --dry-run -Werror $(FORMAT_SRCS) 2>&1); rc=$$?; \
	if [ "$$rc" -ne 0 ]; then \
		bad=$$(printf '%s\n' "$$out" | sed -n 's/^\([^ :]*\):[0-9]*:[0-9]*: error: .*clang-format-violations.*/\1/p' | uniq); \
		if [ -z "$$bad" ]; then printf '%s\n' "$$out" | tail -n 20; echo "$(CLANG_FORMAT) failed (exit code $$rc)"; exit 1; fi; \
		echo "not in the house format (make format rewrites them; $(CLANG_FORMAT) --dry-run FILE shows where):"; \
		printf '  %s\n' $$bad; \
		exit 1; \
	fi; \
	echo "format-check: $(words $(FORMAT_SRCS)) files in the house format"

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
-include $(shell find $(BUILD)/asan $(BUILD)/fuzz -name '*.d' 2>/dev/null)
