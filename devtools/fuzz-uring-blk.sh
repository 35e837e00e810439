#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Fuzz x-uring-blk-pci's guest-owned ring with libFuzzer under ASan
# (tests/qtest/fuzz/uring_blk_fuzz.c), from a seed corpus of valid
# requests (devtools/fuzz_uring_blk_seeds.py), and print libFuzzer's
# figures: executions, coverage, findings.
#
#   devtools/fuzz-uring-blk.sh [SECONDS]    (default 600)
#
# qemu-fuzz-x86_64 is built with clang in build/obj-fuzz; the helper comes
# from build/obj.  The corpus grows in build/fuzz-uring-blk/corpus, and a
# crash leaves its input in build/fuzz-uring-blk/ (crash-*).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

secs=${1:-600}
fobj="$B/obj-fuzz"
out="$B/fuzz-uring-blk"
helper="$OBJ/contrib/uring-blk-helper/qemu-uring-blk-helper"

BUILD_TARGETS=contrib/uring-blk-helper/qemu-uring-blk-helper \
    "$top/devtools/build.sh"
mkdir -p "$fobj" "$out/corpus"
if [ ! -f "$fobj/build.ninja" ]; then
    log "configuring the fuzzing build in $fobj"
    (cd "$fobj" &&
     "$TREE/configure" --cc=clang --cxx=clang++ \
         --target-list=x86_64-softmmu --enable-fuzzing --enable-asan \
         --enable-linux-io-uring --disable-tools --disable-docs \
         --disable-download --disable-werror --disable-install-blobs \
         --disable-rust --disable-gtk --disable-sdl --disable-opengl \
         --python="$PYTHON" \
         --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu) \
        >"$out/configure.log" 2>&1 ||
        die "configure failed: $out/configure.log"
fi
log "building qemu-fuzz-x86_64"
ninja -C "$fobj" qemu-fuzz-x86_64 >"$out/build.log" 2>&1 ||
    die "the build failed: $out/build.log"
rm -rf "$out/seeds"
"$PYTHON" "$top/devtools/fuzz_uring_blk_seeds.py" "$out/seeds"

log "fuzzing for $secs s"
rc=0
(cd "$out" &&
 URING_BLK_HELPER="$helper" "$fobj/qemu-fuzz-x86_64" \
     --fuzz-target=x-uring-blk-pci-ring -max_total_time="$secs" \
     -print_final_stats=1 -timeout=30 corpus seeds) >"$out/fuzz.log" 2>&1 ||
    rc=$?
grep -E '^#[0-9]+ +(INITED|DONE)' "$out/fuzz.log" || true
grep -E '^stat::' "$out/fuzz.log" || true
grep -E '^(==[0-9]+==ERROR|SUMMARY)|crash-' "$out/fuzz.log" || true
echo "corpus: $(ls "$out/corpus" | wc -l) inputs; log: $out/fuzz.log"
exit $rc
