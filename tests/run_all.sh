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

# --- unit: GoogleTest, counted from its JSON report -------------------------------------
echo "== unit tests (build/bin/unit_tests)"
if [ -x build/bin/unit_tests ]; then
	build/bin/unit_tests --gtest_brief=1 --gtest_output="json:$work/unit.json"
	rc=$?
	counts=$("$PY" - "$work/unit.json" "$rc" <<'EOF'
import json, sys
path, rc = sys.argv[1], int(sys.argv[2])
try:
    with open(path) as f:
        report = json.load(f)
except (OSError, ValueError) as e:
    # GoogleTest writes the report at the end: none means it crashed or never ran.
    print(f"unit: no report ({e}); exit code {rc}: counted as 1 failure", file=sys.stderr)
    print("0 1 0")
    sys.exit(0)
p = f = s = 0
for suite in report.get("testsuites", []):
    for t in suite.get("testsuite", []):
        if t.get("failures"):
            f += 1
        elif t.get("result") in ("SKIPPED", "SUPPRESSED") or t.get("status") == "NOTRUN":
            s += 1
        else:
            p += 1
if rc != 0 and f == 0:
    print(f"unit: exit code {rc} with no failed test: counted as 1 failure", file=sys.stderr)
    f = 1
print(p, f, s)
EOF
)
	read -r p f s <<<"$counts"
	echo "unit: $p passed, $f failed, $s skipped"
	add "$p" "$f" "$s"
else
	echo "unit: build/bin/unit_tests is missing (make build/bin/unit_tests): counted as 1 failure"
	add 0 1 0
fi

# --- integration: real processes in network namespaces ----------------------------------
echo
echo "== integration tests (tests/integration/run.py)"
SPINDLE_REQUIRED=1 "$PY" tests/integration/run.py 2>&1 | tee "$work/integration.log"
rc=${PIPESTATUS[0]}
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$work/integration.log" | tail -n 1)
if [ -n "$line" ]; then
	read -r p _ f _ s _ <<<"${line//,/}"
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "integration: exit code $rc with no failed test: counted as 1 failure"
		f=1
	fi
	add "$p" "$f" "$s"
else
	echo "integration: no summary line (exit code $rc): counted as 1 failure"
	add 0 1 0
fi

echo
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
