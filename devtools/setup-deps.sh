#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Install everything the project needs from Debian packages: the QEMU
# build dependencies, the test and guest tooling, and the firmware that
# the +ds source package lacks.  Idempotent: when every package is
# already installed it returns without touching apt.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/qemu-base.conf"

# Packages from the release itself.
pkgs=(
    build-essential dpkg-dev pkg-config ninja-build ccache git
    flex bison python3 python3-venv
    libglib2.0-dev zlib1g-dev libpixman-1-dev libseccomp-dev
    liburing-dev libaio-dev libfuse3-dev
    seabios ipxe-qemu qemu-system-data
    fio busybox-static cpio kmod zstd
    util-linux procps jq gnuplot-nox
)
# Packages that must come from bookworm-backports (meson >= 1.5).
bpo_pkgs=(meson python3-pycotap)

missing() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
            grep -q '^install ok installed$' || echo "$p"
    done
}

meson_ok() {
    local v
    v=$(dpkg-query -W -f='${Version}' meson 2>/dev/null) || return 1
    dpkg --compare-versions "$v" ge 1.5
}

need=$(missing "${pkgs[@]}")
need_bpo=$(missing "${bpo_pkgs[@]}")
meson_ok || need_bpo="$need_bpo meson"

src_list=/etc/apt/sources.list.d/qemu-uring.sources
want_src="Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $QEMU_DEB_SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"

if [ -z "$need" ] && [ -z "$need_bpo" ] && [ -f "$src_list" ]; then
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "setup-deps: missing packages: $need $need_bpo" >&2
    echo "setup-deps: run as root (or install them) to continue" >&2
    exit 1
fi

if [ ! -f "$src_list" ] || [ "$(cat "$src_list")" != "$want_src" ]; then
    echo "setup-deps: adding bookworm-backports and $QEMU_DEB_SUITE deb-src"
    printf '%s\n' "$want_src" >"$src_list"
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ -n "$need_bpo" ]; then
    echo "setup-deps: installing from bookworm-backports:" $need_bpo
    # shellcheck disable=SC2086
    apt-get install -y -qq -t bookworm-backports $need_bpo >/dev/null
fi
if [ -n "$need" ]; then
    echo "setup-deps: installing:" $need
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
meson_ok || { echo "setup-deps: meson >= 1.5 not available" >&2; exit 1; }
