#!/usr/bin/env bash
# Every test suite, then one closing line that sums them: "N passed, N failed, N skipped".
# Exit 1 if anything failed. A suite that crashes, or prints no count, counts as a failure,
# never as zero tests. Run from anywhere; `make test` runs it after building.
set -u
cd "$(dirname "$0")/.."

PY=/usr/bin/python3  # Debian's interpreter, whatever python3 is first on PATH
work=$(mktemp -d /tmp/spindle-run-all.XXXXXX)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
skipped=0
add() {  # add PASSED FAILED SKIPPED
	passed=$((passed + $1))
	failed=$((failed + $2))
	skipped=$((skipped + $3))
}

# GoogleTest's JSON report as "PASSED FAILED SKIPPED". A missing report (the binary crashed or
# never ran) or a nonzero exit code with no failed test counts as one failure.
gtest_counts() {  # SUITE JSON EXIT_CODE
	"$PY" - "$@" <<'EOF'
import json, sys
suite, path, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    with open(path) as f:
        report = json.load(f)
except (OSError, ValueError) as e:
    # GoogleTest writes the report at the end: none means it crashed or never ran.
    print(f"{suite}: no report ({e}); exit code {rc}: counted as 1 failure", file=sys.stderr)
    print("0 1 0")
    sys.exit(0)
p = f = s = 0
for testsuite in report.get("testsuites", []):
    for t in testsuite.get("testsuite", []):
        if t.get("failures"):
            f += 1
        elif t.get("result") in ("SKIPPED", "SUPPRESSED") or t.get("status") == "NOTRUN":
            s += 1
        else:
            p += 1
if rc != 0 and f == 0:
    print(f"{suite}: exit code {rc} with no failed test: counted as 1 failure", file=sys.stderr)
    f = 1
print(p, f, s)
EOF
}

# A GoogleTest binary as one suite, counted from its JSON report. Under a sanitizer (any
# third argument), a sanitizer's report fails the suite even if every test passed.
gtest_suite() {  # SUITE BINARY [sanitized]
	local suite=$1 binary=$2 rc p f s
	if [ ! -x "$binary" ]; then
		echo "$suite: $binary is missing (make $binary): counted as 1 failure"
		add 0 1 0
		return
	fi
	UBSAN_OPTIONS=print_stacktrace=1 "$binary" --gtest_brief=1 \
		--gtest_output="json:$work/$suite.json" 2>&1 | tee "$work/$suite.log"
	rc=${PIPESTATUS[0]}
	read -r p f s <<<"$(gtest_counts "$suite" "$work/$suite.json" "$rc")"
	if [ -n "${3:-}" ] && [ "$f" -eq 0 ] && grep -qE "$sanitizer_report" "$work/$suite.log"; then
		echo "$suite: sanitizer report above: counted as 1 failure"
		f=1
	fi
	echo "$suite: $p passed, $f failed, $s skipped"
	add "$p" "$f" "$s"
}

# A suite's closing "N passed, N failed, N skipped" line (after PREFIX) into the totals. No
# such line, or a nonzero exit code with no failed test, counts as one failure.
add_summary() {  # SUITE LOG EXIT_CODE [PREFIX]
	local suite=$1 log=$2 rc=$3 prefix=${4:-} line p f s
	line=$(grep -E "^${prefix}[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$" "$log" | tail -n 1)
	if [ -z "$line" ]; then
		echo "$suite: no summary line (exit code $rc): counted as 1 failure"
		add 0 1 0
		return
	fi
	line=${line#"$prefix"}
	read -r p _ f _ s _ <<<"${line//,/}"
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "$suite: exit code $rc with no failed test: counted as 1 failure"
		f=1
	fi
	add "$p" "$f" "$s"
}

# The sanitizer builds are made here, two jobs at a time (they are most of this script's
# time), so that a broken one fails its suite rather than the whole run. A make of our own,
# not the caller's jobserver.
sanitizer_make() {  # TARGET...: output in $work/build.log
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -j2 --no-print-directory "$@" >"$work/build.log" 2>&1
	local rc=$?
	[ "$rc" -eq 0 ] || tail -n 40 "$work/build.log"
	return "$rc"
}

# What a sanitizer prints when it finds something.
sanitizer_report='ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:'

# --- format: the C++ in the house format (.clang-format), one test ------------------------
echo "== format (make format-check)"
if env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory format-check; then
	echo "format: 1 passed, 0 failed, 0 skipped"
	add 1 0 0
else
	echo "format: 0 passed, 1 failed, 0 skipped"
	add 0 1 0
fi

# --- monitoring: the alerts (promtool test rules, one test per alert) and the dashboard ----
# --- (its queries parsed by promtool); seconds, no build ------------------------------------
echo
echo "== monitoring (tests/monitoring/run.py)"
"$PY" tests/monitoring/run.py 2>&1 | tee "$work/monitoring.log"
add_summary monitoring "$work/monitoring.log" "${PIPESTATUS[0]}" "monitoring: "

# --- bpf-arches: the BPF programs compile for each architecture an image is built for, one --
# --- test ----------------------------------------------------------------------------------
echo
echo "== BPF objects for x86 and arm64 (make bpf-arches)"
if env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory bpf-arches \
	>"$work/bpf-arches.log" 2>&1; then
	grep '^bpf-arches:' "$work/bpf-arches.log"
	echo "bpf-arches: 1 passed, 0 failed, 0 skipped"
	add 1 0 0
else
	tail -n 20 "$work/bpf-arches.log"
	echo "bpf-arches: 0 passed, 1 failed, 0 skipped"
	add 0 1 0
fi

# --- unit: GoogleTest, counted from its JSON report -------------------------------------
echo
echo "== unit tests (build/bin/unit_tests)"
gtest_suite unit build/bin/unit_tests

# --- component: the proxy's classes on a real loop, peers on loopback, no root; once on ----
# --- each engine ---------------------------------------------------------------------------
echo
echo "== component tests (build/bin/component_tests)"
gtest_suite component build/bin/component_tests
SPINDLE_TEST_IO_ENGINE=epoll gtest_suite component-epoll build/bin/component_tests

# --- unit and component under ASan+UBSan: the same tests, built by clang ------------------
echo
echo "== unit and component tests under ASan+UBSan (build/asan/bin/)"
started=$(date +%s)
if sanitizer_make build/asan/bin/unit_tests build/asan/bin/component_tests; then
	echo "asan: built in $(($(date +%s) - started)) s"
	gtest_suite asan build/asan/bin/unit_tests sanitized
	gtest_suite asan-component build/asan/bin/component_tests sanitized
	SPINDLE_TEST_IO_ENGINE=epoll gtest_suite asan-component-epoll build/asan/bin/component_tests sanitized
	echo "asan: $(($(date +%s) - started)) s with the build"
else
	echo "asan: build failed: counted as 2 failures (unit and component)"
	add 0 2 0
fi

# --- fuzz smoke: each fuzz target for 20 s from its seeds, one test each ------------------
echo
echo "== fuzz smoke (fuzz/run.sh, 20 s per target, two at a time)"
fuzz_names=$(for f in fuzz/*_fuzz.cc; do basename "$f" _fuzz.cc; done)
if sanitizer_make fuzz-build; then
	# shellcheck disable=SC2086  # one word per target
	FUZZ_JOBS=2 fuzz/run.sh 20 $fuzz_names 2>&1 | tee "$work/fuzz.log"
	add_summary fuzz "$work/fuzz.log" "${PIPESTATUS[0]}" "fuzz: "
else
	echo "fuzz: build failed: counted as 1 failure"
	add 0 1 0
fi

# --- integration: real processes in network namespaces ----------------------------------
echo
echo "== integration tests (tests/integration/run.py)"
SPINDLE_REQUIRED=1 "$PY" tests/integration/run.py 2>&1 | tee "$work/integration.log"
add_summary integration "$work/integration.log" "${PIPESTATUS[0]}"

# --- the data path's suites once more, on the epoll engine ----------------------------------
# gRPC calls of every kind through spindle, policies and retries, timeouts and limits,
# fail-open, rollout. Left out, to keep the run inside its time budget: what does not depend on
# the engine beyond what these run (DNS, admin, redirect, records, k8s, e2e clients, sidecars,
# direct calls without spindle) and the frame attacks (HTTP/2 parsing; the component suite
# runs its limits on epoll).
echo
echo "== integration tests on the epoll engine (SPINDLE_IO_ENGINE=epoll)"
SPINDLE_IO_ENGINE=epoll SPINDLE_REQUIRED=1 "$PY" tests/integration/run.py \
	test_grpc.GrpcBalanceTest test_grpc.GrpcCallsThroughSpindleTest \
	test_grpc.GrpcEndpointFailureTest test_policies test_h2_retry test_attacks.AttacksTest.test_0 \
	test_attacks.AttacksTest.test_2 test_attacks.AttacksTest.test_3 \
	test_attacks.AttacksTest.test_4 test_attacks.AttacksTest.test_5 test_failopen test_rollout 2>&1 |
	tee "$work/integration-epoll.log"
add_summary integration-epoll "$work/integration-epoll.log" "${PIPESTATUS[0]}"

echo
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
