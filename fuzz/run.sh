#!/usr/bin/env bash
# Runs fuzz targets for a set time each and reports, per target, executions per second and the
# coverage reached (libFuzzer's cov: edges and ft: features), then one line
# "fuzz: N passed, N failed, 0 skipped". A target passes if it ran its time without a finding;
# a crash, leak, timeout or sanitizer report fails it, and the reproducer's path is printed.
#
#   fuzz/run.sh SECONDS NAME...    (build/fuzz/bin/NAME_fuzz, seeds in fuzz/corpus/NAME)
#   FUZZ_JOBS=2 runs two targets at a time (each is one process on one core).
#
# New inputs a run finds go to build/fuzz/corpus/NAME, so later runs start from them; the
# committed seeds are never written to. Findings go to build/fuzz/findings/NAME/.
set -u
cd "$(dirname "$0")/.."

seconds=${1:?usage: fuzz/run.sh SECONDS NAME...}
shift
jobs=${FUZZ_JOBS:-1}
logs=build/fuzz/logs
mkdir -p "$logs"

run_one() {  # NAME: runs it, leaves its exit code in $logs/NAME.rc
	local name=$1 bin=build/fuzz/bin/$1_fuzz
	local corpus=build/fuzz/corpus/$name findings=build/fuzz/findings/$name
	mkdir -p "$corpus" "$findings"
	local args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
		-artifact_prefix="$findings/")
	[ -f "fuzz/dict/$name.dict" ] && args+=(-dict="fuzz/dict/$name.dict")
	if [ ! -x "$bin" ]; then
		echo "$bin is missing (make fuzz-build)" >"$logs/$name.log"
		echo 127 >"$logs/$name.rc"
		return
	fi
	# The outer timeout only guards against a target that ignores its own time limit.
	UBSAN_OPTIONS=print_stacktrace=1 timeout -k 10 $((seconds + 120)) \
		"$bin" "${args[@]}" "$corpus" $([ -d "fuzz/corpus/$name" ] && echo "fuzz/corpus/$name") \
		>"$logs/$name.log" 2>&1
	echo $? >"$logs/$name.rc"
}

start=$(date +%s)
touch "$logs/.start"
for name in "$@"; do
	while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
	run_one "$name" &
done
wait

passed=0
failed=0
printf '%-12s %10s %10s %8s %8s %8s  %s\n' target executions "exec/s" cov ft corpus result
for name in "$@"; do
	log=$logs/$name.log
	rc=$(cat "$logs/$name.rc" 2>/dev/null || echo 1)
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
	# The last status line, e.g. "#123456 DONE cov: 812 ft: 3021 corp: 210/40Kb ...".
	status=$(grep -E '^#[0-9]+.* cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)
	cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
	ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
	corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$status")
	report=$(grep -E 'ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:|broken promise|ERROR: libFuzzer' "$log" | head -n 3)
	if [ "$rc" -eq 0 ] && [ -z "$report" ] && [ -n "$status" ]; then
		result=ok
		passed=$((passed + 1))
	else
		result="FAILED (exit code $rc)"
		failed=$((failed + 1))
	fi
	printf '%-12s %10s %10s %8s %8s %8s  %s\n' "$name" "${execs:--}" "${rate:--}" "${cov:--}" \
		"${ft:--}" "${corp:--}" "$result"
	if [ "$result" != ok ]; then
		[ -n "$report" ] && sed 's/^/    /' <<<"$report"
		# libFuzzer names the input that did it: "Test unit written to PATH".
		sed -n 's/.*Test unit written to \(.*\)/    reproducer: \1/p' "$log"
		echo "    log: $log (rerun: build/fuzz/bin/${name}_fuzz REPRODUCER)"
	fi
done
echo "fuzz: $((passed + failed)) targets, $seconds s each, $(($(date +%s) - start)) s in all"
echo "fuzz: $passed passed, $failed failed, 0 skipped"
[ "$failed" -eq 0 ]
