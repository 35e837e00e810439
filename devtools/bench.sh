#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# make bench: the uring driver side by side with file aio=threads,
# native and io_uring.  Primary: qemu-storage-daemon's vhost-user-blk
# export driven by devtools/vhost-user-bench (no guest), on a tmpfs
# image, on a loop device with direct I/O over it (where host_device
# stands in for file) and on an image on the root file system.
# Secondary: the driver level (qemu-img bench, with bare-metal fio) and
# the TCG guest of make run.
# Prints ratios against aio=io_uring, writes raw results (CSV and JSON
# with the machine description), the report (latest.txt) and PNG charts
# to bench/results/.
#
#   BENCH_IMAGE=/dev/shm/uring-bench.img  image to use (O_DIRECT capable)
#   BENCH_DISK_IMAGE=/var/tmp/uring-bench.img  vhost-user's target on
#                                         a disk; none: skip
#   BENCH_VU=1                            vhost-user tables; 0: skip
#   BENCH_VU_SECS=0.6 BENCH_VU_WARMUP=0.15  seconds per point, warm-up
#   BENCH_VU_REPS=2                       their rounds
#   BENCH_VU_DEPTHS="1 8 32 128"          queue depths (per queue)
#   BENCH_VU_LOOP_DEPTHS="1 32"           the same on the loop device
#   BENCH_VU_DISK_DEPTHS="1 32"           the same on the disk image
#   BENCH_VU_QUEUES="1 2"                 virtqueues (the export has 2)
#   BENCH_VU_CONFIGS="file-threads ..."   a subset of the configurations
#   BENCH_VU_FIO="fio-fixed fio-fixed-sqpoll"  bare fio rows (ceilings)
#   BENCH_DRIVER=1                        driver level; 0: skip
#   BENCH_REPS=2                          driver level: repetitions
#   BENCH_BLOCKDEV=loop                   a loop device over the tmpfs
#                                         image, a target of the vhost-user
#                                         and driver levels; none: skip
#   BENCH_GUEST=1                         guest level; 0: skip
#   BENCH_GUEST_REPS=1 BENCH_GUEST_SECS=2 its rounds and seconds per job
#   devtools/bench.sh [--quick]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BUILD_TARGETS="qemu-system-x86_64 qemu-img storage-daemon/qemu-storage-daemon" \
    "$top/devtools/build.sh"
build_vhost_user_bench
# The report goes to the terminal and to bench/results/latest.txt
mkdir -p "$top/bench/results"
# The build's python: the guest level imports the QEMU tree's library
"$OBJ/pyvenv/bin/python3" -u "$top/devtools/bench.py" "$OBJ" \
    "$top/bench/results" "$@" |
    tee "$top/bench/results/latest.txt.new"
mv "$top/bench/results/latest.txt.new" "$top/bench/results/latest.txt"
