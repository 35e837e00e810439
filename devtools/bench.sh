#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# make bench: the uring driver side by side with file aio=threads,
# native and io_uring, and with bare-metal fio, in one run on the same
# image.  Prints ratios against aio=io_uring, writes raw results (CSV and
# JSON with the machine description), the report (latest.txt) and PNG
# charts to bench/results/.
#
#   BENCH_IMAGE=/dev/shm/uring-bench.img  image to use (O_DIRECT capable)
#   BENCH_REPS=3                          repetitions of each run
#   BENCH_BLOCKDEV=loop                   also a loop device; none: skip
#   BENCH_GUEST=1                         guest level; 0: skip
#   BENCH_GUEST_REPS=2 BENCH_GUEST_SECS=2 its rounds and seconds per job
#   devtools/bench.sh [--quick]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BUILD_TARGETS="qemu-system-x86_64 qemu-img" "$top/devtools/build.sh"
# The report goes to the terminal and to bench/results/latest.txt
mkdir -p "$top/bench/results"
# The build's python: the guest level imports the QEMU tree's library
"$OBJ/pyvenv/bin/python3" -u "$top/devtools/bench.py" "$OBJ" \
    "$top/bench/results" "$@" |
    tee "$top/bench/results/latest.txt.new"
mv "$top/bench/results/latest.txt.new" "$top/bench/results/latest.txt"
