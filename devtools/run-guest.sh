#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# make run: build QEMU and a small Debian guest, boot it on a virtio-blk
# disk over the uring driver (or another backend), run fio with crc32c
# verification in the guest (random writes and reads at QD1 and QD32,
# fdatasync after every write, discard), read the node's statistics
# over QMP while the guest waits, and print a summary.
#
#   devtools/run-guest.sh [--vhost-user] [--no-build]
#
# --vhost-user (or VHOST_USER=1): qemu-storage-daemon serves the disk as
# a vhost-user-blk export and the guest, with memfd RAM, uses
# vhost-user-blk-pci; the statistics come from the daemon's monitor.
# --no-build (or SKIP_BUILD=1): do not run devtools/build.sh.
#
# Settings (environment):
#   BACKEND        uring (default) | io_uring | native | threads; the
#                  last three are driver=file,aio=BACKEND
#   SQPOLL         on | off (default off), uring only
#   SQPOLL_IDLE    SQ thread idle time in ms (default: the driver's)
#   FIXED_BUFFERS  on | off | auto (default: the driver's, auto)
#   QUEUE_DEPTH    ring entries (default: the driver's)
#   NUM_IOTHREADS  IOThreads for the disk (default 1; 0: main loop; >1:
#                  iothread-vq-mapping, round robin)
#   NUM_QUEUES     virtqueues (default: GUEST_CPUS)
#   ACCEL          tcg (default) | kvm
#   MACHINE        q35 (default) | pc
#   GUEST_MEM      guest RAM (default 1G)
#   GUEST_CPUS     vCPUs (default 2)
#   DISK           image (default build/guest/disk.img, recreated)
#   DISK_SIZE      image size (default 256M)
#   FIO_SIZE       bytes per fio region, 4 regions (default 16M)
#   FIO_ENGINE     ioengine in the guest: io_uring (default) | libaio
#   TIMEOUT        seconds for the guest to finish (default 900)
#   GUEST_BENCH    seconds of each timed fio job (4k random read and
#                  write, QD1 and QD32) after the tests, with the host
#                  CPU time per I/O of QEMU's threads (default 0: none)
#   GUEST_TESTS    0 skips the verified tests and the checks that need
#                  them (discard, flushes), for benchmark runs (default 1)
#
# Fails when a fio job or its verification failed, the guest did not
# finish, QEMU or the daemon did not exit cleanly, no discard reached
# the image, or, for the uring driver, a ring is missing or no request
# used a fixed buffer although guest RAM was registered.  Logs are in
# build/guest/logs/.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

G="$B/guest"
skip_build=${SKIP_BUILD:-}
vhost_user=${VHOST_USER:-}
for arg in "$@"; do
    case "$arg" in
    --vhost-user) vhost_user=1 ;;
    --no-build) skip_build=1 ;;
    -h|--help) sed -n '3,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
               exit 0 ;;
    *) die "unknown argument $arg (see --help)" ;;
    esac
done
[ "$vhost_user" = 0 ] && vhost_user=

BACKEND=${BACKEND:-uring}
SQPOLL=${SQPOLL:-off}
ACCEL=${ACCEL:-tcg}
MACHINE=${MACHINE:-q35}
GUEST_MEM=${GUEST_MEM:-1G}
GUEST_CPUS=${GUEST_CPUS:-2}
NUM_IOTHREADS=${NUM_IOTHREADS:-1}
NUM_QUEUES=${NUM_QUEUES:-$GUEST_CPUS}
DISK=${DISK:-$G/disk.img}
DISK_SIZE=${DISK_SIZE:-256M}
FIO_SIZE=${FIO_SIZE:-16M}
FIO_ENGINE=${FIO_ENGINE:-io_uring}
TIMEOUT=${TIMEOUT:-900}
GUEST_BENCH=${GUEST_BENCH:-0}
GUEST_TESTS=${GUEST_TESTS:-1}

case "$BACKEND" in
uring|io_uring|native|threads) ;;
*) die "BACKEND must be uring, io_uring, native or threads" ;;
esac
case "$SQPOLL" in on|off) ;; *) die "SQPOLL must be on or off" ;; esac
case "$ACCEL" in tcg|kvm) ;; *) die "ACCEL must be tcg or kvm" ;; esac
case "$FIO_ENGINE" in
io_uring|libaio) ;;
*) die "FIO_ENGINE must be io_uring or libaio" ;;
esac
for v in NUM_IOTHREADS NUM_QUEUES GUEST_CPUS TIMEOUT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a number"
done
[ "$NUM_QUEUES" -ge 1 ] || die "NUM_QUEUES must be at least 1"
if [ "$BACKEND" != uring ]; then
    for v in SQPOLL_IDLE FIXED_BUFFERS QUEUE_DEPTH; do
        [ -z "${!v:-}" ] || die "$v applies to BACKEND=uring only"
    done
    [ "$SQPOLL" = off ] || die "SQPOLL applies to BACKEND=uring only"
fi
if [ -n "$vhost_user" ] && [ "$NUM_IOTHREADS" -gt 1 ]; then
    die "a vhost-user-blk export runs in one IOThread: NUM_IOTHREADS <= 1"
fi

QEMU="$OBJ/qemu-system-x86_64"
QSD="$OBJ/storage-daemon/qemu-storage-daemon"
QMP_PY="$top/devtools/guest/qmp.py"
THREADS_PY="$top/devtools/guest/threads.py"

t_start=$SECONDS
if [ -z "$skip_build" ]; then
    BUILD_TARGETS="qemu-system-x86_64 storage-daemon/qemu-storage-daemon" \
        "$top/devtools/build.sh"
fi
t_built=$SECONDS
[ -x "$QEMU" ] || die "$QEMU is missing: run devtools/build.sh"
[ -z "$vhost_user" ] || [ -x "$QSD" ] || die "$QSD is missing"
"$top/devtools/make-initramfs.sh"
t_guest=$SECONDS

# One run at a time on the default image
mkdir -p "$G/logs"
exec 8>"$DISK.lock"
flock 8

mode=qemu
[ -n "$vhost_user" ] && mode=vhost-user
run="$(date +%Y%m%d-%H%M%S)-$mode-$BACKEND"
[ "$SQPOLL" = on ] && run="$run-sqpoll"
log_con="$G/logs/$run.log"
log_qemu="$G/logs/$run.qemu.log"
log_qsd="$G/logs/$run.qsd.log"
stats_json="$G/logs/$run.stats.json"
# Unix socket paths must stay short (108 bytes)
sock=$(mktemp -d /tmp/run-guest.XXXXXX)
qemu_pid='' qsd_pid='' qsd_rc=0

cleanup() {
    # Only what this script started, by pid
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
    fi
    if [ -n "$qsd_pid" ] && kill -0 "$qsd_pid" 2>/dev/null; then
        kill "$qsd_pid" 2>/dev/null || true
    fi
    rm -rf "$sock"
}
trap cleanup EXIT

rm -f "$DISK"
truncate -s "$DISK_SIZE" "$DISK"

# The protocol node, then a raw node on top
file_node="node-name=disk0-file,filename=$DISK,cache.direct=on,discard=unmap"
if [ "$BACKEND" = uring ]; then
    file_node="driver=uring,$file_node,sqpoll=$SQPOLL"
    [ -z "${SQPOLL_IDLE:-}" ] || file_node="$file_node,sqpoll-idle=$SQPOLL_IDLE"
    [ -z "${FIXED_BUFFERS:-}" ] ||
        file_node="$file_node,fixed-buffers=$FIXED_BUFFERS"
    [ -z "${QUEUE_DEPTH:-}" ] || file_node="$file_node,queue-depth=$QUEUE_DEPTH"
else
    file_node="driver=file,$file_node,aio=$BACKEND"
fi
raw_node="driver=raw,node-name=disk0,file=disk0-file,discard=unmap"

qemu_args=(
    -accel "$ACCEL"
    -m "$GUEST_MEM" -smp "$GUEST_CPUS"
    -nodefaults -display none -no-reboot
    # Thread names (CPU 0/TCG, IO iot0) for the CPU split by thread
    -name uring-guest,debug-threads=on
    -kernel "$G/vmlinuz" -initrd "$G/initramfs.cpio"
    -append "console=ttyS0 loglevel=4 panic=-1 guest.size=$FIO_SIZE $(
             )guest.engine=$FIO_ENGINE guest.seed=$RANDOM guest.wait=120 $(
             )guest.bench=$GUEST_BENCH guest.tests=$GUEST_TESTS"
    # ttyS0: the console, logged; ttyS1: "go" from this script
    -chardev "file,id=con,path=$log_con" -serial chardev:con
    -chardev "socket,id=ctl,path=$sock/ctl,server=on,wait=off"
    -serial chardev:ctl
    -qmp "unix:$sock/qmp,server=on,wait=off"
)
[ "$ACCEL" = kvm ] && qemu_args+=(-cpu host)

iothreads=()
for ((i = 0; i < NUM_IOTHREADS; i++)); do
    iothreads+=("iot$i")
done

if [ -n "$vhost_user" ]; then
    qsd_args=(
        --chardev "socket,id=mon0,path=$sock/qsd-qmp,server=on,wait=off"
        --monitor chardev=mon0
        --blockdev "$file_node" --blockdev "$raw_node"
    )
    export_opts="type=vhost-user-blk,id=exp0,node-name=disk0,writable=on"
    export_opts="$export_opts,addr.type=unix,addr.path=$sock/vhost-user"
    export_opts="$export_opts,num-queues=$NUM_QUEUES"
    if [ "$NUM_IOTHREADS" -eq 1 ]; then
        qsd_args+=(--object "iothread,id=iot0")
        export_opts="$export_opts,iothread=iot0"
    fi
    qsd_args+=(--export "$export_opts")
    log "starting qemu-storage-daemon"
    "$QSD" "${qsd_args[@]}" >"$log_qsd" 2>&1 &
    qsd_pid=$!
    for ((i = 0; i < 300; i++)); do
        [ -S "$sock/vhost-user" ] && break
        kill -0 "$qsd_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ ! -S "$sock/vhost-user" ]; then
        cat "$log_qsd" >&2
        die "qemu-storage-daemon did not create its vhost-user socket"
    fi
    qemu_args+=(
        -object "memory-backend-memfd,id=mem,size=$GUEST_MEM,share=on"
        -machine "$MACHINE,memory-backend=mem"
        -chardev "socket,id=vu0,path=$sock/vhost-user"
        -device "vhost-user-blk-pci,id=vblk0,chardev=vu0,$(
                 )num-queues=$NUM_QUEUES"
    )
    stats_sock=$sock/qsd-qmp
else
    qemu_args+=(-machine "$MACHINE")
    for t in "${iothreads[@]}"; do
        qemu_args+=(-object "iothread,id=$t")
    done
    qemu_args+=(-blockdev "$file_node" -blockdev "$raw_node")
    dev="virtio-blk-pci,id=vblk0,drive=disk0,num-queues=$NUM_QUEUES"
    if [ "$NUM_IOTHREADS" -eq 1 ]; then
        qemu_args+=(-device "$dev,iothread=iot0")
    elif [ "$NUM_IOTHREADS" -gt 1 ]; then
        map=$(printf '{"iothread":"%s"},' "${iothreads[@]}")
        qemu_args+=(-device "{\"driver\":\"virtio-blk-pci\",\"id\":\"vblk0\",
            \"drive\":\"disk0\",\"num-queues\":$NUM_QUEUES,
            \"iothread-vq-mapping\":[${map%,}]}")
    else
        qemu_args+=(-device "$dev")
    fi
    stats_sock=$sock/qmp
fi

log "booting the guest ($mode, BACKEND=$BACKEND SQPOLL=$SQPOLL" \
    "iothreads=$NUM_IOTHREADS queues=$NUM_QUEUES, $ACCEL); console: $log_con"
: >"$log_con"
t_boot=$SECONDS
"$QEMU" "${qemu_args[@]}" >"$log_qemu" 2>&1 &
qemu_pid=$!

# Lines of the console log that start with a marker, without the CRs
markers() {
    tr -d '\r' <"$log_con" |
        grep -a -E '^(GUEST-|FIO-|VERIFY-|BENCH-|READY-FOR-STATS)' || true
}

failures=()
fail() {
    failures+=("$*")
    echo "FAIL: $*"
}

# Wait for READY-FOR-STATS, echoing the markers as they come
shown=0 ready='' t_ready=''
while :; do
    lines=$(markers)
    n=$(printf '%s' "$lines" | grep -c '' || true)
    if [ "$n" -gt "$shown" ]; then
        printf '%s\n' "$lines" | tail -n +$((shown + 1)) |
            sed -e '/^FIO-ERROR/d' -e 's/^/   /'
        shown=$n
    fi
    # CPU time of the threads of QEMU (and the daemon) around the
    # guest's benchmark jobs
    for mark in BENCH-BEGIN BENCH-END; do
        f="$G/logs/$run.$mark.json"
        if [ ! -f "$f" ] && printf '%s\n' "$lines" | grep -q "^$mark"; then
            "$PYTHON" "$THREADS_PY" sample "$f" $qemu_pid $qsd_pid
        fi
    done
    if printf '%s\n' "$lines" | grep -q '^READY-FOR-STATS'; then
        ready=1
        t_ready=$SECONDS
        break
    fi
    if ! kill -0 "$qemu_pid" 2>/dev/null; then
        fail "QEMU exited before the guest finished"
        break
    fi
    if [ -n "$qsd_pid" ] && ! kill -0 "$qsd_pid" 2>/dev/null; then
        fail "qemu-storage-daemon exited while the guest ran"
        break
    fi
    if [ $((SECONDS - t_boot)) -ge "$TIMEOUT" ]; then
        fail "the guest did not finish within $TIMEOUT s (TIMEOUT)"
        break
    fi
    sleep 0.5
done

# The statistics of the protocol node while the guest is idle
declare -A st=()
if [ -n "$ready" ]; then
    if out=$("$PYTHON" "$QMP_PY" "$stats_sock" stats disk0-file \
             "$stats_json" 2>&1); then
        while IFS='=' read -r k v; do
            st[$k]=$v
        done <<<"$out"
    else
        fail "query-blockstats: $out"
    fi
    # Let the guest power off
    "$PYTHON" "$QMP_PY" "$sock/ctl" send-line go ||
        fail "could not tell the guest to power off"
fi

# wait_exit PID TENTHS: wait up to TENTHS/10 s for PID to exit
wait_exit() {
    local i
    for ((i = 0; i < $2; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    ! kill -0 "$1" 2>/dev/null
}

# QEMU exits by itself when the guest powers off; otherwise quit it
if ! wait_exit "$qemu_pid" "$([ -n "$ready" ] && echo 600 || echo 0)"; then
    [ -z "$ready" ] || fail "QEMU did not exit after the guest's poweroff"
    "$PYTHON" "$QMP_PY" "$sock/qmp" quit >/dev/null 2>&1 || true
    wait_exit "$qemu_pid" 100 || kill "$qemu_pid" 2>/dev/null || true
fi
qemu_rc=0
wait "$qemu_pid" || qemu_rc=$?
qemu_pid=''
t_end=$SECONDS
if [ "$qemu_rc" != 0 ] && [ -n "$ready" ]; then
    fail "QEMU exited with status $qemu_rc"
fi
if grep -qiE 'error|assert|abort|warning' "$log_qemu"; then
    fail "QEMU printed errors or warnings: $(head -c 300 "$log_qemu")"
fi

if [ -n "$qsd_pid" ]; then
    "$PYTHON" "$QMP_PY" "$sock/qsd-qmp" quit >/dev/null 2>&1 ||
        kill "$qsd_pid" 2>/dev/null || true
    wait "$qsd_pid" || qsd_rc=$?
    qsd_pid=''
    [ "$qsd_rc" = 0 ] || fail "qemu-storage-daemon exited with status $qsd_rc"
    if grep -qiE 'error|assert|abort|warning' "$log_qsd"; then
        fail "qemu-storage-daemon printed: $(head -c 300 "$log_qsd")"
    fi
fi

# Verdict from the guest
lines=$(markers)
if ! printf '%s\n' "$lines" | grep -q '^GUEST-DONE'; then
    [ -z "$ready" ] || fail "the guest did not complete its tests"
elif ! printf '%s\n' "$lines" | grep -q '^VERIFY-OK' &&
     ! { [ "$GUEST_TESTS" = 0 ] &&
         printf '%s\n' "$lines" | grep -q '^VERIFY-SKIPPED'; }; then
    fail "fio or its verification failed in the guest:" \
         "$(printf '%s\n' "$lines" | grep '^VERIFY-FAIL')"
fi
printf '%s\n' "$lines" | grep '^GUEST-ERROR' | sed 's/^/   /' || true

# Checks on the statistics, when the guest ran all its tests
sv() { echo "${st[$1]:-?}"; }
if [ ${#st[@]} -gt 0 ] &&
   printf '%s\n' "$lines" | grep -q '^GUEST-DONE failed=0'; then
    if [ "$GUEST_TESTS" = 0 ]; then
        :   # no discard or flush pass ran
    elif [ "$(sv discard-nb-ok)" = 0 ] || [ "$(sv discard-nb-ok)" = '?' ]; then
        fail "no discard reached the image" \
             "(discard-nb-ok=$(sv discard-nb-ok))"
    fi
    if [ "$BACKEND" = uring ]; then
        [ "$(sv driver)" = uring ] ||
            fail "driver-specific statistics are not uring's: $(sv driver)"
        want_rings=1
        if [ -z "$vhost_user" ] && [ "$NUM_IOTHREADS" -gt 1 ]; then
            want_rings=$NUM_IOTHREADS
        fi
        if [ "$(sv rings)" = '?' ] ||
           [ "$(sv rings)" -lt "$want_rings" ]; then
            fail "rings=$(sv rings), expected at least $want_rings"
        fi
        want_sqpoll=false
        [ "$SQPOLL" = off ] || want_sqpoll=true
        [ "$(sv sqpoll)" = "$want_sqpoll" ] ||
            fail "sqpoll=$(sv sqpoll) but SQPOLL=$SQPOLL"
        [ "$(sv flushes)" != 0 ] || [ "$GUEST_TESTS" = 0 ] ||
            fail "flushes=0: the flush pass did not reach the driver"
        if [ -n "$vhost_user" ]; then
            # The vhost-user-blk export does not register the guest's
            # memory (no BlockRAMRegistrar): only plain requests.
            :
        elif [ "${FIXED_BUFFERS:-auto}" != off ]; then
            if [ "$(sv fixed-buffers)" != true ] ||
               [ "$(sv buffer-slots)" = 0 ]; then
                fail "guest RAM is not registered as fixed buffers" \
                     "(fixed-buffers=$(sv fixed-buffers)," \
                     "buffer-slots=$(sv buffer-slots))"
            elif [ "$(sv fixed-requests)" = 0 ]; then
                fail "fixed-requests=0: every request fell back to the" \
                     "non-fixed path (plain-requests=$(sv plain-requests))"
            fi
        fi
    fi
fi

# Host CPU per I/O by thread over the guest's benchmark jobs
if [ "$GUEST_BENCH" -gt 0 ]; then
    if [ -f "$G/logs/$run.BENCH-BEGIN.json" ] &&
       [ -f "$G/logs/$run.BENCH-END.json" ]; then
        echo
        tr -d '\r' <"$log_con" >"$G/logs/$run.console.txt"
        "$PYTHON" "$THREADS_PY" report "$G/logs/$run.BENCH-BEGIN.json" \
            "$G/logs/$run.BENCH-END.json" "$G/logs/$run.console.txt" \
            "$GUEST_BENCH" "$G/logs/$run.bench.json"
        cp "$G/logs/$run.bench.json" "$G/logs/last-bench.json"
    else
        fail "the guest's benchmark jobs did not run (GUEST_BENCH)"
    fi
fi

if [ ${#failures[@]} -gt 0 ]; then
    echo
    echo "== console log (tail), $log_con:"
    tr -d '\r' <"$log_con" | tail -n 40 | sed 's/^/   /'
    for f in "$log_qemu" "$log_qsd"; do
        if [ -s "$f" ]; then
            echo "== $f:"
            tail -n 20 "$f" | sed 's/^/   /'
        fi
    done
fi

# Summary
echo
echo "== summary: $run"
if [ -n "$vhost_user" ]; then
    printf '%-12s %s\n' mode "vhost-user-blk-pci, qemu-storage-daemon export"
else
    printf '%-12s %s\n' mode "virtio-blk-pci in QEMU"
fi
conf="BACKEND=$BACKEND"
if [ "$BACKEND" = uring ]; then
    conf="$conf SQPOLL=$SQPOLL${SQPOLL_IDLE:+ SQPOLL_IDLE=$SQPOLL_IDLE}"
    conf="$conf${FIXED_BUFFERS:+ FIXED_BUFFERS=$FIXED_BUFFERS}"
    conf="$conf${QUEUE_DEPTH:+ QUEUE_DEPTH=$QUEUE_DEPTH}"
fi
printf '%-12s %s\n' backend "$conf"
printf '%-12s %s\n' guest "$ACCEL $MACHINE, $GUEST_CPUS vCPUs, $GUEST_MEM, $(
    )$NUM_IOTHREADS IOThread(s), $NUM_QUEUES queue(s), fio $FIO_ENGINE $(
    )${FIO_SIZE} x 4"
printf '%s\n' "$lines" | grep '^GUEST-INFO' |
    sed 's/^GUEST-INFO /guest-info   /' || true
echo
printf '%-11s %3s %5s %10s %10s %10s %10s\n' job rc secs rd-IOPS rd-lat-us \
    wr-IOPS wr-lat-us
printf '%s\n' "$lines" | grep '^FIO-RESULT' | awk '{
    delete f
    for (i = 2; i <= NF; i++) {
        split($i, kv, "="); f[kv[1]] = kv[2]
    }
    printf "%-11s %3s %5s %10s %10s %10s %10s\n", f["job"], f["rc"],
           f["secs"], v(f["read_iops"]), v(f["read_lat_us"]),
           v(f["write_iops"]), v(f["write_lat_us"])
}
function v(x) { return x + 0 == 0 ? "-" : x }' || true
echo
if [ ${#st[@]} -gt 0 ]; then
    src=QEMU
    [ -z "$vhost_user" ] || src=qemu-storage-daemon
    echo "stats of disk0-file ($src query-blockstats, all in $stats_json):"
    if [ "$(sv driver)" = uring ]; then
        printf '  rings=%s sqpoll=%s fixed-buffers=%s vectored-fixed=%s' \
            "$(sv rings)" "$(sv sqpoll)" "$(sv fixed-buffers)" \
            "$(sv vectored-fixed)"
        printf ' buffer-slots=%s buffer-bytes=%s\n' "$(sv buffer-slots)" \
            "$(sv buffer-bytes)"
        printf '  fixed-requests=%s plain-requests=%s flushes=%s' \
            "$(sv fixed-requests)" "$(sv plain-requests)" "$(sv flushes)"
        printf ' sq-wakeups=%s submit-calls=%s queued-requests=%s\n' \
            "$(sv sq-wakeups)" "$(sv submit-calls)" \
            "$(sv queued-requests)"
        if [ -n "$vhost_user" ]; then
            echo "  (the vhost-user-blk export registers no guest memory," \
                 "so requests cannot use fixed buffers)"
        fi
    else
        printf '  driver=%s\n' "$(sv driver)"
    fi
    printf '  '
    if [ "$(sv stats.source)" = backend ]; then
        printf 'device: rd=%s wr=%s flush=%s; ' "$(sv stats.rd_operations)" \
            "$(sv stats.wr_operations)" "$(sv stats.flush_operations)"
    fi
    printf 'discards: ok=%s failed=%s bytes=%s\n' "$(sv discard-nb-ok)" \
        "$(sv discard-nb-failed)" "$(sv discard-bytes-ok)"
fi
printf '%-12s qemu=%s%s\n' exit "$qemu_rc" \
    "${vhost_user:+ qemu-storage-daemon=$qsd_rc}"
printf '%-12s build %ss, guest image %ss, boot to stats %ss, total %ss\n' \
    time $((t_built - t_start)) $((t_guest - t_built)) \
    $(( ${t_ready:-$t_end} - t_boot)) $((t_end - t_start))
if [ ${#failures[@]} -eq 0 ]; then
    printf '%-12s %s\n' result PASS
    exit 0
fi
printf '%-12s FAIL (%d)\n' result ${#failures[@]}
printf '  - %s\n' "${failures[@]}"
exit 1
