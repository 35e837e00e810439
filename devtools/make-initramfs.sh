#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Build the test guest of devtools/run_guest.py under build/guest/, from
# Debian packages only:
#   vmlinuz          Debian's 6.1 kernel: the linux-image-6.1.*-amd64
#                    package that linux-image-amd64 depends on, fetched
#                    with apt-get download and unpacked (not installed)
#   initramfs.cpio   busybox-static, the modules of the disk controllers
#                    (virtio-blk, AHCI, NVMe) with their dependencies,
#                    fio with the libraries it links, and
#                    devtools/guest/init
# Both are cached; the initramfs is rebuilt when one of its inputs
# changes.  Nothing is downloaded at guest boot.
#
#   devtools/make-initramfs.sh            build what is missing
#   REFRESH_KERNEL=1 devtools/make-initramfs.sh
#                                         resolve and fetch the kernel
#                                         again (after a Debian update)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

G="$B/guest"
KDIR="$G/kernel"                 # the kernel packages (.deb)
mkdir -p "$G"
exec 7>"$G/.build.lock"
flock 7

# The modules of each disk controller that make run offers; the guest
# loads one set, /lib/modules/load-CONTROLLER lists it in load order.
declare -A modules=(
    [virtio]="virtio_pci virtio_blk"
    [virtio-scsi]="virtio_pci virtio_scsi sd_mod"
    [ahci]="ahci sd_mod"
    [nvme]="nvme"
)

# The linux-image-6.1.* package that a version of linux-image-amd64
# depends on: bookworm's, not a backports kernel.
kernel_package() {
    local v dep
    for v in $(apt-cache madison linux-image-amd64 | awk '{ print $3 }'); do
        dep=$(apt-cache depends "linux-image-amd64=$v" 2>/dev/null |
              awk '$1 == "Depends:" &&
                   $2 ~ /^linux-image-6\.1\.[0-9.-]+-amd64$/ { print $2; exit }')
        if [ -n "$dep" ]; then
            echo "$dep"
            return
        fi
    done
    return 1
}

fetch_kernel() {
    local pkg dl
    pkg=$(kernel_package) ||
        die "no linux-image-amd64 depends on a 6.1 kernel (apt-get update?)"
    mkdir -p "$KDIR"
    if ! ls "$KDIR/${pkg}_"*.deb >/dev/null 2>&1; then
        log "fetching $pkg"
        dl=$(mktemp -d "$G/dl.XXXXXX")
        # apt-get download writes to the current directory; as root it
        # warns that it runs unsandboxed, which is harmless here.
        if ! (cd "$dl" && apt-get download -q "$pkg" 2>/dev/null); then
            apt-get update -qq
            (cd "$dl" && apt-get download -q "$pkg") ||
                die "apt-get download $pkg failed"
        fi
        mv "$dl"/*.deb "$KDIR/"
        rmdir "$dl"
    fi
    ln -sfn "$(basename "$(ls "$KDIR/${pkg}_"*.deb | tail -1)")" \
        "$KDIR/current.deb"
}

if [ -n "${REFRESH_KERNEL:-}" ] || [ ! -e "$KDIR/current.deb" ]; then
    fetch_kernel
fi
kdeb=$(readlink -f "$KDIR/current.deb")

busybox=/bin/busybox
fio=$(command -v fio) || die "fio is not installed (devtools/setup-deps.sh)"
dpkg-query -W busybox-static >/dev/null 2>&1 ||
    die "busybox-static is not installed (devtools/setup-deps.sh)"

# Rebuild the initramfs only when an input changed
key=$( {
    basename "$kdeb"
    dpkg-query -W -f='${Package} ${Version}\n' fio busybox-static
    cat "$top/devtools/guest/init" "$top/devtools/make-initramfs.sh" \
        "$fio" "$busybox"
} | sha256sum | cut -d' ' -f1)
if [ -f "$G/initramfs.cpio" ] && [ -f "$G/vmlinuz" ] &&
   [ "$(cat "$G/initramfs.key" 2>/dev/null)" = "$key" ]; then
    exit 0
fi

work=$(mktemp -d "$G/initramfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
kroot=$work/kernel

# Unpack the kernel package (kept as .deb: unpacked it is 400 MB).  It
# ships no modules.dep: depmod writes it at install time.
dpkg -x "$kdeb" "$kroot"
kver=$(ls "$kroot/lib/modules")
depmod -b "$kroot" "$kver"
cp "$kroot/boot/vmlinuz-$kver" "$G/vmlinuz.tmp"
mv "$G/vmlinuz.tmp" "$G/vmlinuz"

log "building $G/initramfs.cpio (kernel $kver)"
mkdir -p "$root"/{bin,sbin,lib,lib64,dev,proc,sys,tmp,lib/modules}

# busybox-static and all its applets
cp "$busybox" "$root/bin/busybox"
for a in $("$busybox" --list); do
    [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"
done
# The console must exist before /init runs, or it has no stdout
mknod "$root/dev/console" c 5 1 2>/dev/null || true

# fio, its libraries (found through LD_LIBRARY_PATH=/lib) and the ELF
# interpreter at the path the binary names
cp "$fio" "$root/bin/fio"
interp=$(readelf -l "$fio" | sed -n 's/.*interpreter: \(.*\)]/\1/p')
[ -n "$interp" ] || die "cannot find the ELF interpreter of $fio"
mkdir -p "$root$(dirname "$interp")"
cp -L "$interp" "$root$interp"
ldd "$fio" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' |
while read -r soname path; do
    cp -L "$path" "$root/lib/$soname"
done
if ldd "$fio" | grep -q 'not found'; then
    die "fio has unresolved libraries: $(ldd "$fio" | grep 'not found')"
fi

# The modules in load order, uncompressed (busybox insmod cannot
# decompress); modprobe --show-depends prints the insmod sequence
for set in "${!modules[@]}"; do
    list="$root/lib/modules/load-$set"
    : >"$list"
    # shellcheck disable=SC2086 # a list of module names
    for m in ${modules[$set]}; do
        modprobe -d "$kroot" -S "$kver" --show-depends "$m" ||
            die "module $m not found in $kver"
    done | awk '$1 == "insmod" { print $2 }' | while read -r ko; do
        name=$(basename "$ko")
        case "$name" in
        *.ko.xz) name=${name%.xz}; unpack="xz -dc" ;;
        *.ko.zst) name=${name%.zst}; unpack="zstd -qdc" ;;
        *.ko.gz) name=${name%.gz}; unpack="gzip -dc" ;;
        *) unpack=cat ;;
        esac
        [ -f "$root/lib/modules/$name" ] ||
            $unpack "$ko" >"$root/lib/modules/$name"
        grep -qx "$name" "$list" || echo "$name" >>"$list"
    done
    [ -s "$list" ] || die "no modules to load for $set"
done

install -m 755 "$top/devtools/guest/init" "$root/init"

# Uncompressed: unpacking is a copy, while decompressing ~90 MB under
# TCG would take longer than the copy.
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
     cpio -o -H newc -R 0:0 --quiet) >"$G/initramfs.cpio.tmp"
mv "$G/initramfs.cpio.tmp" "$G/initramfs.cpio"
echo "$key" >"$G/initramfs.key"
log "initramfs: $(du -h "$G/initramfs.cpio" | cut -f1), modules:" \
    "$(cd "$root/lib/modules" && ls load-* | tr '\n' ' ')"
