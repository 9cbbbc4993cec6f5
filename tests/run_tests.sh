#!/usr/bin/env bash
# Runs every test suite (unit binaries, fuzz-corpus replay, Python/end-to-end suites) and prints
# the total as the last line: "N passed, N failed". Exit status is non-zero if anything failed.
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
cd "$(dirname "$0")/.."
total_pass=0
total_fail=0
log=$(mktemp)

EOL="" # on a terminal, clears the rest of the "running" line
if [ -t 1 ]; then EOL=$'\033[K'; fi

run_suite() { # name, command...
    local name=$1
    shift
    # some suites take a minute: say which one is running (on a terminal, on the same line)
    if [ -t 1 ]; then printf 'running %s ...\r' "$name"; else echo "running $name"; fi
    "$@" >"$log" 2>&1 &
    local pid=$! ticks=0
    # a long suite says every 15 s which case it is in (Python suites print "case NAME")
    while kill -0 "$pid" 2>/dev/null; do
        sleep 0.2
        ticks=$((ticks + 1))
        if [ $((ticks % 75)) -eq 0 ]; then
            local case
            case=$(grep -oE '^case [^ ]+' "$log" | tail -1 | cut -c6-)
            printf '  ... %s: %s (%d s)%s\n' "$name" "${case:-starting}" $((ticks / 5)) "$EOL"
        fi
    done
    wait "$pid"
    local rc=$?
    local line
    line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
    local p f
    p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+')
    f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+')
    p=${p:-0}
    f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    if [ "$f" -ne 0 ]; then
        printf 'FAILED  %s (%s passed, %s failed, exit %s):%s\n' "$name" "$p" "$f" "$rc" "$EOL"
        tail -40 "$log" | sed 's/^/    /'
    else
        printf 'ok      %s (%s passed)%s\n' "$name" "$p" "$EOL"
    fi
}

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    run_suite "$(basename "$t")" "$t"
done
for r in "$BUILD"/tests/replay_*; do
    [ -x "$r" ] || continue
    name=${r##*/replay_}
    run_suite "fuzz corpus $name" "$r" "tests/fuzz/corpus/$name" "tests/fuzz/regressions/$name"
done
for s in tests/e2e/test_*.py; do
    [ -f "$s" ] || continue
    run_suite "$(basename "$s")" env BUILD="$BUILD" "$PYTHON" "$s"
done
# Where the Vulkan backend is built: engine suites that use contexts again with their layers on
# the Vulkan device (lavapipe in CI; docs/VULKAN.md). lavapipe's cost per dispatch makes it slow,
# so the long ones (test_prefix, test_generate_batch and test_server.py: many minutes each there)
# run only with CLARA_TEST_VULKAN_ALL=1.
if [ "$(cat "$BUILD/gen/vulkan.stamp" 2>/dev/null)" = on ]; then
    vk_units="test_batch test_sampling"
    if [ "${CLARA_TEST_VULKAN_ALL:-0}" = 1 ]; then
        vk_units="$vk_units test_prefix test_generate_batch"
    fi
    for t in $vk_units; do
        [ -x "$BUILD/tests/$t" ] || continue
        run_suite "$t (vulkan)" env CLARA_TEST_BACKEND=vulkan "$BUILD/tests/$t"
    done
    if [ "${CLARA_TEST_VULKAN_ALL:-0}" = 1 ]; then
        run_suite "test_server.py (vulkan)" env BUILD="$BUILD" CLARA_TEST_BACKEND=vulkan \
            "$PYTHON" tests/e2e/test_server.py
    fi
fi
rm -f "$log"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
