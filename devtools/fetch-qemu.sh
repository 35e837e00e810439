#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Create build/qemu: a git repository whose tag uring-base is the pinned
# QEMU source.  By default that is Debian's source package (qemu-base.conf)
# with Debian's patches applied by dpkg-source; QEMU_SRC=/path/to/qemu
# uses a local QEMU checkout instead (its HEAD, or its files when it is
# not a git repository).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if tgit rev-parse -q --verify "refs/tags/$BASE_TAG" >/dev/null 2>&1; then
    exit 0
fi

rm -rf "$TREE"
mkdir -p "$SRC_DIR"

if [ -n "${QEMU_SRC:-}" ]; then
    [ -d "$QEMU_SRC" ] || die "QEMU_SRC=$QEMU_SRC is not a directory"
    if git -C "$QEMU_SRC" rev-parse HEAD >/dev/null 2>&1; then
        log "cloning $QEMU_SRC"
        git clone -q --no-checkout --shared "$QEMU_SRC" "$TREE"
        tgit checkout -q --detach "$(git -C "$QEMU_SRC" rev-parse HEAD)"
        tgit tag "$BASE_TAG"
        exit 0
    fi
    log "copying $QEMU_SRC"
    cp -a "$QEMU_SRC" "$TREE"
    base_desc="QEMU from $QEMU_SRC"
else
    up=$QEMU_UPSTREAM_VERSION
    dsc="$SRC_DIR/${QEMU_DEB_PACKAGE}_${QEMU_DEB_VERSION#*:}.dsc"
    if [ ! -f "$dsc" ]; then
        log "downloading $QEMU_DEB_PACKAGE $QEMU_DEB_VERSION source"
        (cd "$SRC_DIR" && apt-get source -qq --download-only \
            "$QEMU_DEB_PACKAGE=$QEMU_DEB_VERSION" 2>&1 | grep -v '^W: ' || true)
        [ -f "$dsc" ] || die "apt-get source did not fetch $dsc (deb-src lines missing? run devtools/setup-deps.sh)"
    fi
    log "unpacking $(basename "$dsc") with Debian patches"
    rm -rf "$SRC_DIR/unpack"
    dpkg-source -q -x "$dsc" "$SRC_DIR/unpack" >/dev/null
    mv "$SRC_DIR/unpack" "$TREE"
    [ "$(cat "$TREE/VERSION")" = "$up" ] ||
        die "unpacked VERSION $(cat "$TREE/VERSION") is not $up"
    # Debian's packaging is not part of QEMU.
    rm -rf "$TREE/debian" "$TREE/.pc"
    base_desc="QEMU $up (Debian source package $QEMU_DEB_VERSION)"
fi

log "recording the base in git"
tgit init -q -b base-import
tgit add -A -f .
GIT_AUTHOR_NAME="$GIT_COMMITTER_NAME" GIT_AUTHOR_EMAIL="$GIT_COMMITTER_EMAIL" \
GIT_AUTHOR_DATE="2000-01-01T00:00:00Z" GIT_COMMITTER_DATE="2000-01-01T00:00:00Z" \
    tgit commit -q -m "$base_desc"
tgit tag "$BASE_TAG"
