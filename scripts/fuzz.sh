#!/usr/bin/env bash
# Runs every cargo-fuzz target of the workspace (each `*/fuzz/` directory) for a bounded time.
#
#   scripts/fuzz.sh [SECONDS]     default 30 s per target; run longer by hand, e.g. 3600
#   FUZZ_ONLY=policy scripts/fuzz.sh 60     only fuzz directories whose path contains "policy"
#
# The fuzzers need nightly-only compiler flags (sanitizer coverage); RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them, so no second toolchain is needed. Corpora live under
# target/fuzz-corpus/ (not in the repository); a crash leaves its input in the fuzz
# directory's artifacts/ and fails the run. Prints one line per target with its execution
# count, then "fuzz: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target/fuzz}
passed=0; failed=0
for dir in */fuzz; do
    [ -f "$dir/Cargo.toml" ] || continue
    [ -n "${FUZZ_ONLY:-}" ] && [[ "$dir" != *"$FUZZ_ONLY"* ]] && continue
    for target in $(cargo fuzz list --fuzz-dir "$dir"); do
        corpus=target/fuzz-corpus/${dir%/fuzz}-$target
        mkdir -p "$corpus"
        log=$(mktemp)
        if cargo fuzz run --fuzz-dir "$dir" "$target" "$corpus" -- \
            -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
            runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -n 1)
            echo "fuzz ${dir%/fuzz}/$target: ok, ${runs:-?} executions in ${secs} s"
            passed=$((passed + 1))
        else
            echo "fuzz ${dir%/fuzz}/$target: FAILED; last lines:"
            tail -n 30 "$log" | sed 's/^/  | /'
            failed=$((failed + 1))
        fi
        rm -f "$log"
    done
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
