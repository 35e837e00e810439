#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# make check: build, then run the test groups.  One line per test,
# PASS/FAIL/SKIP, with the tail of its log on failure (all logs are in
# build/test-logs/), then "N passed, M failed[, K skipped]".
#
#   build     devtools/build.sh
#   qos-test  the virtio-blk paths of upstream's qos-test, one by one
#   unit      test-aio, test-block-iothread, the series' test-fdmon-io_uring
#             and test-uring*
#   qtest     the series' tests/qtest/*uring*-test
#   iotests   check -raw -file: devtools/iotests-upstream.list and the
#             series' tests/qemu-iotests/tests/uring-*
#   iotests-uring  the "quick" group over the uring protocol, raw and
#             qcow2 (devtools/check-uring.sh, devtools/iotests-uring.list)
#   series    devtools/check-series.sh without --build (apply, checkpatch)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

logs="$B/test-logs"
rm -rf "$logs"
mkdir -p "$logs"
passed=0 failed=0 skipped=0

logfile() { echo "$logs/$(tr -c 'A-Za-z0-9_.-' '_' <<<"$1").log"; }
pass() { echo "PASS $1"; passed=$((passed + 1)); }
skip() { echo "SKIP $1${2:+ ($2)}"; skipped=$((skipped + 1)); }
fail() {
    echo "FAIL $1${3:+ ($3)}"
    [ -f "$2" ] && tail -n 25 "$2" | sed 's/^/    /'
    failed=$((failed + 1))
}

# glib test programs, in TAP mode: pass, fail, or skip when every test
# case that ran was skipped.
run_gtest() {
    local name=$1 log
    log=$(logfile "$name")
    shift
    if ! timeout 600 "$@" --tap >"$log" 2>&1; then
        fail "$name" "$log"
    elif ! grep -q '^ok ' "$log"; then
        fail "$name" "$log" "no test case ran"
    elif ! grep '^ok ' "$log" | grep -qv '# SKIP'; then
        skip "$name" "$(grep -m1 -o '# SKIP.*' "$log")"
    else
        pass "$name"
    fi
}

group_start() { group=$1; group_t0=$SECONDS; echo "== $group"; }
group_end() { echo "== $group: $((SECONDS - group_t0))s"; }

qtest_env=(
    QTEST_QEMU_BINARY=./qemu-system-x86_64
    QTEST_QEMU_IMG=./qemu-img
    QTEST_QEMU_STORAGE_DAEMON_BINARY=./storage-daemon/qemu-storage-daemon
)

group_start build
if "$top/devtools/build.sh" >"$logs/build.log" 2>&1; then
    pass build
else
    fail build "$logs/build.log"
    echo "$passed passed, $failed failed"
    exit 1
fi
group_end
cd "$OBJ"

group_start qos-test
paths=$(env "${qtest_env[@]}" tests/qtest/qos-test -l | grep '^/.*/virtio-blk' || true)
[ -n "$paths" ] || fail "qos-test: no virtio-blk paths" /dev/null
for p in $paths; do
    run_gtest "qos$p" env "${qtest_env[@]}" tests/qtest/qos-test -p "$p"
done
group_end

group_start unit
for t in tests/unit/test-aio tests/unit/test-block-iothread \
         tests/unit/test-fdmon-io_uring tests/unit/test-uring*; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    run_gtest "unit/${t##*/}" "$t"
done
group_end

group_start qtest
for t in tests/qtest/*uring*-test; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    run_gtest "qtest/${t##*/}" env "${qtest_env[@]}" "$t"
done
group_end

group_start iotests
upstream=$(sed 's/#.*//' "$top/devtools/iotests-upstream.list")
ours=$(cd "$TREE/tests/qemu-iotests/tests" &&
       ls uring-* 2>/dev/null | grep -v '\.out$' || true)
log="$logs/iotests.log"
(cd tests/qemu-iotests &&
 PYTHON="$OBJ/pyvenv/bin/python3" timeout 900 "$OBJ/pyvenv/bin/python3" \
     check -raw -file -j "$(nproc)" --color off $upstream $ours) \
    >"$log" 2>&1 || true
# check prints "NAME  pass|fail|not run  [start] [end] ... reason" per
# test (after a progress line ended by \r), and at the end the diffs
# of the failures against their reference output, NAME.out.
tr '\r' '\n' <"$log" >"$log.lines"
if ! grep -qE '^[^ ]+ +(pass|fail|not run) +\[' "$log.lines"; then
    fail iotests "$log" "check ran no test"
    upstream='' ours=''
fi
for t in $upstream $ours; do
    line=$(grep -E "^$t +(pass|fail|not run) +\[" "$log.lines" | tail -n1 || true)
    case "$line" in
    "$t "*" pass "*) pass "iotests/$t" ;;
    "$t "*" not run "*) skip "iotests/$t" "$(sed -E 's/.* {2,}//' <<<"$line")" ;;
    "$t "*" fail "*)
        # Its result line, then its diff (check prints them at the end).
        tlog=$(logfile "iotests/$t")
        { echo "$line"
          awk -v out="/$t.out" '/^--- /{on = index($0, out) > 0}
                                /^(Not run|Failures|Failed|Passed|Some cases)/{on = 0}
                                on' "$log.lines"; } >"$tlog"
        fail "iotests/$t" "$tlog" ;;
    *) if grep -qE "^$t +started" "$log.lines"; then
           fail "iotests/$t" "$log" "started, no result: hung until check's timeout?"
       else
           fail "iotests/$t" "$log" "no result"
       fi ;;
    esac
done
group_end

group_start iotests-uring
# Its PASS and FAIL lines (with the diffs), prefixed with the group; its
# SKIP lines (tests listed in devtools/iotests-uring.list, mostly "not
# suitable for this image format") only in the log.  Its counts are
# added to ours.
out="$logs/iotests-uring.out"
"$top/devtools/check-uring.sh" --no-build >"$out" 2>&1 || true
awk '/^(PASS|FAIL|SKIP) / { keep = $1 != "SKIP" }
     /^(== |[0-9]+ passed)/ { keep = 0 }
     keep' "$out" | sed -E 's#^(PASS|FAIL) #\1 iotests-uring/#'
echo "$(grep -c '^SKIP ' "$out" || true) skipped, listed in $out"
summary=$(tail -n1 "$out")
if [[ $summary =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed(,\ ([0-9]+)\ skipped)?$ ]]; then
    passed=$((passed + BASH_REMATCH[1]))
    failed=$((failed + BASH_REMATCH[2]))
    skipped=$((skipped + ${BASH_REMATCH[4]:-0}))
else
    fail iotests-uring "$out" "no summary line"
fi
group_end

group_start series
if [ -z "$(tgit rev-list "$BASE_TAG..$SERIES_BRANCH")" ]; then
    skip series "the series is empty"
else
    log="$logs/series.log"
    "$top/devtools/check-series.sh" >"$log" 2>&1 || true
    # Each step's output ends with its "OK|FAIL STEP ..." line.
    awk -v dir="$logs" '{ buf = buf $0 "\n" }
        /^(OK|FAIL) / { printf "%s", buf > (dir "/series-" $2 ".log"); buf = "" }' "$log"
    for step in apply checkpatch; do
        slog="$logs/series-$step.log"
        case "$(tail -n1 "$slog" 2>/dev/null)" in
        OK*) pass "series/$step" ;;
        FAIL*) fail "series/$step" "$slog" ;;
        *) fail "series/$step" "$log" "no result" ;;
        esac
    done
fi
group_end

if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" = 0 ]
