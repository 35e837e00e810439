#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# make check-uring: build, then run upstream's "quick" group of
# qemu-iotests over the uring protocol ("check -raw -uring" and
# "check -qcow2 -uring"), every image opened through driver=uring.
# One line per test and format, PASS/FAIL/SKIP, with the tail of its
# diff on failure (all logs are in build/test-logs/uring/,
# build/test-logs-san/uring/ with SANITIZE=1), then
# "N passed, M failed[, K skipped]".
#
# devtools/iotests-uring.list accounts for every test that does not
# pass over uring:
#   notrun   check reports it "not run" (its reason is printed): SKIP;
#            not run without such a line: FAIL
#   exclude  not run at all (it cannot run over uring as written): SKIP
#   xfail    run, and expected to fail (a known bug, see the reason):
#            SKIP when it fails; PASS with a note to update the list when
#            it passes (a fixed bug, or a timing-dependent one)
#   noring   passes without opening any image through uring (the list
#            says why): PASS, FAIL as any other test
#
#   devtools/check-uring.sh [--no-build] [FORMAT...]   (default: raw qcow2)
#   JOBS=N   tests run in parallel by check (default: nproc, at most 2)
#   URING_TIMEOUT=S  seconds for check per format (default: 600, 2400
#                    with SANITIZE=1)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

build=1
if [ "${1:-}" = "--no-build" ]; then
    build=''
    shift
fi
formats=("$@")
[ "${#formats[@]}" -gt 0 ] || formats=(raw qcow2)
jobs=${JOBS:-$(nproc)}
[ -n "${JOBS:-}" ] || [ "$jobs" -le 2 ] || jobs=2
list="$top/devtools/iotests-uring.list"
uring_timeout=${URING_TIMEOUT:-600}
[ -z "${SANITIZE:-}" ] || uring_timeout=${URING_TIMEOUT:-2400}

logs="$LOGS/uring"
rm -rf "$logs"
mkdir -p "$logs"
passed=0 failed=0 skipped=0
t_start=$SECONDS

# The list's entry for test $1 and format $2: "KIND REASON", or nothing.
# Lines are "TEST FORMATS KIND REASON", FORMATS a comma-separated list.
entry() {
    awk -v t="$1" -v f="$2" '
        { sub(/#.*/, "") }
        $1 == t && index("," $2 ",", "," f ",") {
            $1 = ""; $2 = ""; sub(/^ +/, ""); print; exit
        }' "$list"
}

if [ -n "$build" ]; then
    echo "== build"
    if ! "$top/devtools/build.sh" >"$logs/build.log" 2>&1; then
        fail build "$logs/build.log"
        echo "$passed passed, $failed failed"
        exit 1
    fi
    echo "== build: $((SECONDS - t_start))s"
fi

cd "$OBJ/tests/qemu-iotests"
quick=$("${IOTESTS_CHECK[@]}" -n -g quick)
[ -n "$quick" ] || { fail "check -n -g quick" /dev/null "no test"; exit 1; }

for fmt in "${formats[@]}"; do
    t0=$SECONDS
    echo "== $fmt over uring"
    run=()
    for t in $quick; do
        e=$(entry "$t" "$fmt")
        if sanitize_skips "$t"; then
            skip "$fmt/$t" "$SANITIZE_SKIP_WHY"
        elif [ "${e%% *}" = exclude ]; then
            skip "$fmt/$t" "excluded: ${e#exclude }"
        else
            run+=("$t")
        fi
    done
    log="$logs/$fmt.log"
    # A format takes 1 to 2 minutes; a hung test must not stop CI for
    # longer than 10.  timeout runs check in a process group of its own
    # (its pid); whatever is left in it afterwards (QEMUs of a failed or
    # timed-out test, which may not react to SIGTERM) is killed.
    # check -tap: TAP on stdout, the failures' diffs on stderr.
    timeout -k 10 "$uring_timeout" "${IOTESTS_CHECK[@]}" "-$fmt" -uring \
        -j "$jobs" -tap "${run[@]}" >"$log" 2>"$log.err" &
    tpid=$!
    wait "$tpid" || true
    kill -KILL -- "-$tpid" 2>/dev/null || true
    for t in "${run[@]}"; do
        iotest_result "$log" "$t"
        e=$(entry "$t" "$fmt")
        kind=${e%% *} reason=${e#* }
        case $verdict in
        pass)
            if [ "$kind" = xfail ]; then
                pass "$fmt/$t (XPASS: listed as xfail, update the list)"
            else
                pass "$fmt/$t"
            fi ;;
        notrun)
            if [ "$kind" = notrun ]; then
                skip "$fmt/$t" "$why"
            else
                fail "$fmt/$t" /dev/null "not run ($why), not listed as notrun"
            fi ;;
        fail)
            tlog="$logs/$fmt-$t.log"
            iotest_diff "$log.err" "$t" >"$tlog"
            if [ "$kind" = xfail ]; then
                skip "$fmt/$t" "expected failure: $reason"
            else
                fail "$fmt/$t" "$tlog"
            fi ;;
        garbled) fail "$fmt/$t" "$log" "result line interleaved with another" ;;
        *) fail "$fmt/$t" "$log" "no result: hung until the timeout?" ;;
        esac
    done
    echo "== $fmt over uring: $((SECONDS - t0))s"
done

echo "== total: $((SECONDS - t_start))s"
if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" = 0 ]
