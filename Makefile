# SPDX-License-Identifier: GPL-2.0-or-later
#
# Entry points of the project; the work is done by devtools/*.

.PHONY: help build check check-sanitizers check-uring run check-guest bench \
	series series-check writeback assemble clean

help:
	@echo "make build          assemble build/qemu from the repository and build it"
	@echo "make check          build, then run all tests (devtools/run-tests.sh)"
	@echo "make check-sanitizers  the same with ASan and UBSan, in build/obj-san"
	@echo "make check-uring    build, then the quick qemu-iotests over uring (devtools/check-uring.sh)"
	@echo "make run            boot a guest (devtools/run_guest.py)"
	@echo "make check-guest    make run in each of its modes"
	@echo "make bench          run the benchmarks (devtools/bench.sh)"
	@echo "make series         export the series as mails to out/series"
	@echo "make series-check   check out/series: apply, checkpatch, build each commit"
	@echo "make writeback      write commits made in build/qemu back to the repository"
	@echo "make assemble       assemble build/qemu from the repository"
	@echo "make clean          remove build/ and out/"

build:
	devtools/build.sh

check:
	devtools/run-tests.sh

check-sanitizers:
	SANITIZE=1 devtools/run-tests.sh

check-uring:
	devtools/check-uring.sh

run:
	devtools/run_guest.py

check-guest:
	devtools/check_guest.py

bench:
	devtools/bench.sh

series:
	devtools/export-series.sh out/series

series-check: series
	devtools/check-series.sh --build out/series

writeback:
	devtools/writeback.sh

assemble:
	devtools/assemble.sh

clean:
	rm -rf build out
