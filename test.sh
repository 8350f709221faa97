#!/usr/bin/env bash
# Runs every memgate test on a Debian 12 machine: installs what the tests need (once), then
# format and lint checks, the whole test suite (unit, property, multi-process integration and
# adversarial tests, interop with the real minisign and pyseto), the `verbs` build, the
# systemd unit analysis, bounded fuzzing and both tiers of the kernel lab (QEMU + soft-RoCE):
# tier 1 on Debian's stock 6.1 kernel, tier 3 on a 6.1 kernel built with mlx5-patch/ and the
# rdma-core from libverbs-patch/ (the first run builds that kernel: ~15 min on two cores;
# later runs reuse it from $LAB_WORK while the series is unchanged).
#
#   ./test.sh                 everything
#   FUZZ_SECONDS=300 ./test.sh      fuzz each target longer (default 30 s each)
#   LAB=tier1 ./test.sh       only the stock-kernel tier of the lab
#   LAB=none ./test.sh        skip the kernel lab
#
# The last line is the total: "test.sh: N passed, N failed" (tests plus whole-step checks).
set -uo pipefail
cd "$(dirname "$0")"
root=$PWD
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
LAB=${LAB:-tier3}
case $LAB in
    none | tier1 | tier3) ;;
    *) echo "test.sh: LAB must be none, tier1 or tier3 (got '$LAB')"; echo "test.sh: 0 passed, 1 failed"; exit 1 ;;
esac
logdir=${TEST_LOG_DIR:-$root/target/test-logs}
mkdir -p "$logdir"

scripts/deps.sh test || { echo "test.sh: installing dependencies failed"; echo "test.sh: 0 passed, 1 failed"; exit 1; }
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-14/lib}
export CARGO_TERM_COLOR=never

passed=0; failed=0; failures=()
step() { # name, command...
    local name=$1; shift
    local t0=$SECONDS
    echo "==> $name"
    if "$@" >"$logdir/$name.log" 2>&1; then
        passed=$((passed + 1)); echo "    ok ($((SECONDS - t0)) s)"
    else
        failed=$((failed + 1)); failures+=("$name"); echo "    FAILED ($((SECONDS - t0)) s); last lines of $logdir/$name.log:"
        tail -n 40 "$logdir/$name.log" | sed 's/^/    | /'
    fi
}
# Adds the counts of an "N passed, N failed" line (or nextest's summary) found in a log.
add_counts() {
    local line p f
    line=$(grep -Eo '[0-9]+ passed(, [0-9]+ failed)?' "$1" | tail -n 1)
    [ -n "$line" ] || return 1
    p=$(echo "$line" | grep -Eo '^[0-9]+'); f=$(echo "$line" | grep -Eo '[0-9]+ failed' | grep -Eo '^[0-9]+' || echo 0)
    passed=$((passed + p)); failed=$((failed + ${f:-0}))
}

step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step build cargo build --workspace --bins --all-targets

echo "==> nextest (workspace)"
t0=$SECONDS
cargo nextest run --workspace --no-fail-fast --test-threads "${TEST_THREADS:-2}" 2>&1 | tee "$logdir/nextest.log" | grep -E '^\s+(FAIL|SIGSEGV|TIMEOUT|LEAK)|Summary' || true
if ! add_counts "$logdir/nextest.log"; then failed=$((failed + 1)); failures+=("nextest (no summary)"); fi
grep -q ' [1-9][0-9]* failed' "$logdir/nextest.log" && failures+=("nextest")
echo "    ($((SECONDS - t0)) s)"

step doctests cargo test --workspace --doc
# the verbs provider and the broker and client builds that use it
VERBS_PKGS=(-p memgate-fabric -p memgated -p memgate --features memgate-fabric/verbs,memgated/verbs,memgate/verbs)
step verbs-clippy cargo clippy "${VERBS_PKGS[@]}" --all-targets -- -D warnings
echo "==> verbs unit tests"
cargo nextest run "${VERBS_PKGS[@]}" --no-fail-fast 2>&1 | tee "$logdir/verbs.log" | grep -E '^\s+FAIL|Summary' || true
add_counts "$logdir/verbs.log" || { failed=$((failed + 1)); failures+=("verbs tests"); }
[ -x scripts/check-unit.sh ] && step systemd-unit scripts/check-unit.sh
[ -x scripts/fuzz.sh ] && step fuzz scripts/fuzz.sh "$FUZZ_SECONDS"

if [ "$LAB" != none ] && [ -x tests/lab/run.sh ]; then
    for tier in tier1 $([ "$LAB" = tier3 ] && echo tier3); do
        echo "==> kernel lab $tier"
        t0=$SECONDS
        # tier 3 may build a kernel first (~15 min on two idle cores)
        limit=1800; [ "$tier" = tier3 ] && limit=3000
        timeout "$limit" tests/lab/run.sh "$tier" >"$logdir/lab-$tier.log" 2>&1
        rc=$?
        grep -E 'PASS|FAIL|passed' "$logdir/lab-$tier.log" | tail -n 30 | sed 's/^/    | /'
        if ! add_counts "$logdir/lab-$tier.log"; then
            failed=$((failed + 1)); failures+=("lab $tier (no result)")
        elif [ $rc -ne 0 ] && grep -E '[0-9]+ passed, [0-9]+ failed' "$logdir/lab-$tier.log" | tail -n 1 | grep -q ' 0 failed'; then
            # the harness failed without a failed check (e.g. a timeout): the total says so
            failed=$((failed + 1))
        fi
        [ $rc -eq 0 ] || failures+=("lab $tier (exit $rc)")
        echo "    ($((SECONDS - t0)) s)"
    done
fi

echo
[ ${#failures[@]} -eq 0 ] || echo "failed: ${failures[*]}"
echo "test.sh: $passed passed, $failed failed"
[ ${#failures[@]} -eq 0 ] && [ "$failed" -eq 0 ]
