#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Assemble build/qemu and build what the project runs and tests:
# qemu-system-x86_64, the tools, qemu-storage-daemon, qos-test and the
# unit tests.  Configure runs again only when its options change.
#
#   devtools/build.sh [TREE OBJ]   (defaults: build/qemu build/obj)
#   BUILD_TARGETS="ninja targets"  build only these
#   SANITIZE=1                     with ASan and UBSan, in build/obj-san
#   JOBS=N                         ninja -j N
set -euo pipefail
. "$(dirname "$0")/lib.sh"

tree=${1:-}
obj=${2:-$OBJ}

# One build at a time per machine: ninja and assemble.sh share state.
mkdir -p "$B"
exec 9>"$B/.build.lock"
flock 9
if [ -z "$tree" ]; then
    "$top/devtools/setup-deps.sh"
    "$top/devtools/assemble.sh"
    tree=$TREE
fi

# Firmware from Debian's seabios, qemu-system-data and ipxe-qemu: the +ds
# source ships none.
firmware=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu

configure_opts=(
    --target-list=x86_64-softmmu
    --enable-kvm --enable-tcg
    --enable-tools
    --enable-linux-io-uring --enable-linux-aio
    --enable-seccomp
    --enable-vhost-user --enable-vhost-user-blk-server
    # FUSE exports: make run's EIO mode serves the image through one
    --enable-fuse
    --disable-docs --disable-download --disable-werror --disable-install-blobs
    --disable-rust --disable-gtk --disable-sdl --disable-opengl
    --python="$PYTHON"
    --firmwarepath="$firmware"
)
if [ -n "${SANITIZE:-}" ]; then
    # Frame pointers: ASan's fast unwinder gives full allocation stacks
    configure_opts+=(--enable-asan --enable-ubsan
                     --extra-cflags=-fno-omit-frame-pointer)
fi
# meson wraps the compiler in ccache only when it picks the compiler
# itself, and configure always names it.
if command -v ccache >/dev/null; then
    configure_opts+=(--cc="ccache cc" --cxx="ccache c++")
fi

stamp="$obj/.configure-opts"
want="${configure_opts[*]} $tree"
if [ ! -f "$obj/build.ninja" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "configuring $obj"
    rm -rf "$obj"
    mkdir -p "$obj"
    (cd "$obj" && "$tree/configure" "${configure_opts[@]}" >configure.log 2>&1) ||
        { tail -40 "$obj/configure.log"; die "configure failed (see $obj/configure.log)"; }
    echo "$want" >"$stamp"
fi

# Run from the build directory, QEMU looks for the firmware path inside
# qemu-bundle/ (-L help lists where): point it at the system's files.
for d in ${firmware//:/ }; do
    mkdir -p "$obj/qemu-bundle$(dirname "$d")"
    ln -sfn "$d" "$obj/qemu-bundle$d"
done

if [ -n "${BUILD_TARGETS:-}" ]; then
    # Only what the caller runs (make bench, make run): less to compile
    # on a fresh machine
    read -r -a targets <<<"$BUILD_TARGETS"
else
    targets=(
        qemu-system-x86_64 qemu-img qemu-io qemu-nbd
        storage-daemon/qemu-storage-daemon
        tests/qtest/qos-test
        tests/unit/test-aio tests/unit/test-block-iothread
    )
    # Unit tests and qtests the series adds (when the tree has them).
    for t in $(cd "$tree" &&
               ls tests/unit/test-uring*.c tests/unit/test-fdmon-io_uring.c \
                  tests/qtest/*uring*-test.c \
                  2>/dev/null); do
        targets+=("${t%.c}")
    done
    # The guest-owned ring device's helper, which its qtest spawns
    if [ -f "$tree/contrib/uring-blk-helper/uring-blk-helper.c" ]; then
        targets+=(contrib/uring-blk-helper/qemu-uring-blk-helper)
    fi
fi

log "building in $obj"
ninja -C "$obj" ${JOBS:+-j "$JOBS"} "${targets[@]}"
