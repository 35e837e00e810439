#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# make bench: the uring driver side by side with file aio=threads,
# native and io_uring, and with bare-metal fio, in one run on the same
# image.  Prints ratios against aio=io_uring, writes raw results (CSV and
# JSON with the machine description) and a PNG chart to bench/results/.
#
#   BENCH_IMAGE=/dev/shm/uring-bench.img  image to use (O_DIRECT capable)
#   BENCH_REPS=3                          repetitions of each run
#   devtools/bench.sh [--quick]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

"$top/devtools/build.sh"
"$PYTHON" "$top/devtools/bench.py" "$OBJ" "$top/bench/results" "$@"
