#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# make check: build, then run the test groups.  One line per test,
# PASS/FAIL/SKIP, with the tail of its log on failure (all logs are in
# build/test-logs/), then "N passed, M failed[, K skipped]".
#
#   build     devtools/build.sh
#   qos-test  the virtio-blk, vhost-user-blk, virtio-scsi and nvme paths
#             of upstream's qos-test (with the series' uring variants),
#             one by one
#   uring-blk the x-uring-blk-pci device's qtest, a hostile guest
#   unit      test-aio, test-block-iothread, the series' test-fdmon-io_uring
#             and test-uring*
#   vhost-user-bench  make bench's vhost-user-blk front-end against
#             qemu-storage-daemon (devtools/vhost_user_bench_test.py)
#   iotests   check -raw -file: devtools/iotests-upstream.list and the
#             series' tests/qemu-iotests/tests/uring-*
#   iotests-uring  the "quick" group over the uring protocol, raw and
#             qcow2 (devtools/check-uring.sh, devtools/iotests-uring.list)
#   guest     make run in each of its modes (devtools/check_guest.py):
#             a TCG guest runs fio with verification on uring through
#             virtio-blk, AHCI, NVMe and vhost-user-blk, across a live
#             migration, through ENOSPC and EIO below the node, and
#             without the right to pin guest RAM
#   series    devtools/check-series.sh without --build (identity, apply,
#             checkpatch)
#
# SANITIZE=1 (make check-sanitizers): the same on the ASan+UBSan build in
# build/obj-san, logs in build/test-logs-san, and a group "sanitizers"
# that fails for every sanitizer report; without the guest group (its
# TCG guests would take too long on that build).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

logs="$LOGS"
rm -rf "$logs"
mkdir -p "$logs"
passed=0 failed=0 skipped=0

logfile() { echo "$logs/$(tr -c 'A-Za-z0-9_.-' '_' <<<"$1").log"; }

# Sanitizer reports go to files, $logs/sanitizer/NAME.EXE.PID (NAME says
# which test); the last group fails for each.  A process stops at its
# first report (halt_on_error: ASan always does) and aborts rather than
# exits 1 (abort_on_error), which neither libqtest nor the iotests' VM
# class take for a clean exit.  LeakSanitizer is on, with the upstream
# leaks that the tests hit suppressed in devtools/lsan.supp; allocation
# stacks need the slow unwinder (glib has no frame pointers).  The
# directory is writable by all: uring-errors runs QEMU as another user.
# The iotests' testrunner.py replaces ASAN_OPTIONS with its own
# (detect_leaks=0, log_path in the test's scratch directory, deleted when
# the test passes).  LSAN_OPTIONS is parsed after it and sets the same
# common flags, and UBSAN_OPTIONS' log_path is the one that counts when
# GCC links libasan and libubsan: so all three carry the common flags.
san_log_to() {
    [ -n "${SANITIZE:-}" ] || return 0
    local common="abort_on_error=1:detect_leaks=1:fast_unwind_on_malloc=0"
    common+=":log_exe_name=1"
    common+=":log_path=$logs/sanitizer/$(printf %s "$1" | tr -c 'A-Za-z0-9_.-' _)"
    export ASAN_OPTIONS="$common:halt_on_error=1"
    export LSAN_OPTIONS="$common:suppressions=$top/devtools/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="$common:halt_on_error=1:print_stacktrace=1"
}
if [ -n "${SANITIZE:-}" ]; then
    mkdir -p "$logs/sanitizer"
    chmod 1777 "$logs/sanitizer"
fi

# glib test programs, in TAP mode: pass, fail, or skip when every test
# case that ran was skipped.
run_gtest() {
    local name=$1 log
    log=$(logfile "$name")
    shift
    san_log_to "$name"
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
san_log_to qos-test-list
paths=$(env "${qtest_env[@]}" tests/qtest/qos-test -l |
        grep -E '^/.*/(virtio-blk|vhost-user-blk|virtio-scsi|nvme)' || true)
[ -n "$paths" ] || fail "qos-test: no block device paths" /dev/null
for p in $paths; do
    run_gtest "qos$p" env "${qtest_env[@]}" tests/qtest/qos-test -p "$p"
done
group_end

group_start uring-blk
# The guest-owned ring device: a qtest that plays a hostile guest, one
# line per test path (three topologies each)
t=tests/qtest/uring-blk-test
if [ -x "$t" ]; then
    for p in $(env "${qtest_env[@]}" "$t" -l | grep '^/'); do
        run_gtest "uring-blk$p" env "${qtest_env[@]}" \
            URING_BLK_HELPER="$OBJ/contrib/uring-blk-helper/qemu-uring-blk-helper" \
            "$t" -p "$p"
    done
else
    fail uring-blk "$logs/build.log" "$t was not built"
fi
group_end

group_start unit
for t in tests/unit/test-aio tests/unit/test-block-iothread \
         tests/unit/test-fdmon-io_uring tests/unit/test-uring*; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    run_gtest "unit/${t##*/}" "$t"
done
group_end

group_start vhost-user-bench
# Built with -Werror here, so that make bench never meets a warning; then
# one line per TAP test of devtools/vhost_user_bench_test.py
log=$(logfile vhost-user-bench)
if ! build_vhost_user_bench -Werror >"$log" 2>&1; then
    fail vhost-user-bench/build "$log"
else
    pass vhost-user-bench/build
    san_log_to vhost-user-bench
    timeout 300 "$OBJ/pyvenv/bin/python3" \
        "$top/devtools/vhost_user_bench_test.py" "$OBJ" >>"$log" 2>&1 || true
    while read -r line; do
        case "$line" in
        "ok "*) pass "vhost-user-bench/${line#ok * - }" ;;
        "not ok "*) fail "vhost-user-bench/${line#not ok * - }" "$log" ;;
        esac
    done <"$log"
    grep -q '^1\.\.[0-9]' "$log" || fail vhost-user-bench "$log" "no TAP plan: the test did not finish"
fi
group_end

group_start iotests
upstream=$(sed 's/#.*//' "$top/devtools/iotests-upstream.list")
ours=$(cd "$TREE/tests/qemu-iotests/tests" &&
       ls uring-* 2>/dev/null | grep -v '\.out$' || true)
for t in $upstream; do
    if sanitize_skips "$t"; then
        skip "iotests/$t" "$SANITIZE_SKIP_WHY"
        upstream=$(tr ' ' '\n' <<<"$upstream" | grep -vx "$t")
    fi
done
log="$logs/iotests.log"
san_log_to iotests
# About 2 minutes, 10 with the sanitizers, on 2 busy cores.  check -tap:
# TAP on stdout, the failures' diffs on stderr.
timeout=900
[ -z "${SANITIZE:-}" ] || timeout=1800
(cd tests/qemu-iotests &&
 timeout $timeout "${IOTESTS_CHECK[@]}" -raw -file -j "$(nproc)" -tap \
     $upstream $ours) >"$log" 2>"$log.err" || true
if ! grep -qE '^1\.\.[0-9]+$' "$log"; then
    fail iotests "$log.err" "check ran no test"
    upstream='' ours=''
fi
for t in $upstream $ours; do
    iotest_result "$log" "$t"
    case $verdict in
    pass) pass "iotests/$t" ;;
    notrun) skip "iotests/$t" "$why" ;;
    fail)
        tlog=$(logfile "iotests/$t")
        iotest_diff "$log.err" "$t" >"$tlog"
        fail "iotests/$t" "$tlog" ;;
    started) fail "iotests/$t" "$log" "started, no result: hung until check's timeout?" ;;
    garbled) fail "iotests/$t" "$log" "result line interleaved with another" ;;
    *) fail "iotests/$t" "$log" "no result" ;;
    esac
done
group_end

group_start iotests-uring
# Its PASS and FAIL lines (with the diffs), prefixed with the group; its
# SKIP lines (tests listed in devtools/iotests-uring.list, mostly "not
# suitable for this image format") only in the log.  Its counts are
# added to ours.
out="$logs/iotests-uring.out"
san_log_to iotests-uring
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

if [ -z "${SANITIZE:-}" ]; then
    group_start guest
    out="$logs/guest.out"
    SKIP_BUILD=1 "$top/devtools/check_guest.py" >"$out" 2>&1 || true
    # "PASS|FAIL MODE (N s, log PATH)", with the key numbers under it
    while read -r verdict mode rest; do
        if [ "$verdict" = PASS ]; then
            pass "guest/$mode"
        else
            fail "guest/$mode" "$(sed -E 's/.*log (.*)\)$/\1/' <<<"$rest")"
        fi
    done < <(grep -E '^(PASS|FAIL) ' "$out")
    grep -qE '^(PASS|FAIL) ' "$out" || fail guest "$out" "no result"
    group_end
fi

if [ -n "${SANITIZE:-}" ]; then
    group_start sanitizers
    # Each report in a file of its own; then, in case a process lost the
    # options above, reports in the logs
    reports=0
    for f in "$logs"/sanitizer/*; do
        [ -f "$f" ] || continue
        # Warnings that every process with coroutines or threads may
        # print are no report; anything else is
        if ! grep -qvE -e "WARNING: ASan (doesn't fully support makecontext/swapcontext|is ignoring requested __asan_handle_no_return)" \
                -e '^False positive error reports may follow$' \
                -e '^For details see https://github.com/google/sanitizers/issues/189$' \
                -e 'Running thread [0-9]+ was not suspended. False leaks are possible.$' \
                -e '^$' "$f"; then
            rm "$f"
            continue
        fi
        # Its first lines: what and where, not the shadow bytes' legend
        fail "sanitizer/${f##*/}" /dev/null \
             "$(grep -m1 -E 'runtime error:|ERROR: [A-Za-z]+Sanitizer' "$f" || true)"
        head -n 30 "$f" | sed 's/^/    /'
        reports=$((reports + 1))
    done
    for f in $(grep -lE 'runtime error:|ERROR: [A-Za-z]+Sanitizer' \
                   "$logs"/*.log "$logs"/*.lines 2>/dev/null || true); do
        fail "sanitizer/${f##*/}" "$f" "a report in this log"
        reports=$((reports + 1))
    done
    [ "$reports" -gt 0 ] || pass "sanitizers: no report"
    group_end
fi

group_start series
if [ -z "$(tgit rev-list "$BASE_TAG..$SERIES_BRANCH")" ]; then
    skip series "the series is empty"
else
    log="$logs/series.log"
    "$top/devtools/check-series.sh" >"$log" 2>&1 || true
    # Each step's output ends with its "OK|FAIL STEP ..." line.
    awk -v dir="$logs" '{ buf = buf $0 "\n" }
        /^(OK|FAIL) / { printf "%s", buf > (dir "/series-" $2 ".log"); buf = "" }' "$log"
    for step in identity apply checkpatch; do
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
