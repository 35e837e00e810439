# SPDX-License-Identifier: GPL-2.0-or-later
#
# Shared settings for the devtools scripts.  Source it, do not run it.

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$top/qemu-base.conf"

# Everything generated lives under build/ (ignored by git).
B="$top/build"
SRC_DIR="$B/src"                 # downloaded Debian source package
TREE="$B/qemu"                   # assembled QEMU tree (a git repository)
# meson build directory and make check's logs; SANITIZE=1 (make
# check-sanitizers) builds with ASan and UBSan in a directory of its own
if [ -n "${SANITIZE:-}" ]; then
    OBJ="$B/obj-san"
    LOGS="$B/test-logs-san"
else
    OBJ="$B/obj"
    LOGS="$B/test-logs"
fi
BASE_TAG=uring-base              # the pinned base commit in $TREE
SERIES_BRANCH=uring              # the series on top of it
SERIES_FILE="$top/patches/series"
ASSEMBLED_MARK="$B/assembled-head"

# Keep ccache hits across worktrees (series-check builds each commit in
# its own tree).
export CCACHE_BASEDIR="$B"
export CCACHE_NOHASHDIR=1

# Debian's python, which carries meson from bookworm-backports; a
# python3 earlier on PATH (pyenv, venv) would not.
PYTHON=/usr/bin/python3

# Identity for the commits the scripts create in $TREE.
export GIT_COMMITTER_NAME="${GIT_COMMITTER_NAME:-uring series}"
export GIT_COMMITTER_EMAIL="${GIT_COMMITTER_EMAIL:-uring@localhost}"

die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

log() {
    echo "== $*"
}

tgit() {
    git -C "$TREE" "$@"
}

# Lines of $SERIES_FILE without comments: "<patch> [new file ...]"
series_entries() {
    sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$SERIES_FILE"
}

# devtools/vhost-user-bench.c, the benchmark's vhost-user-blk front-end,
# into $OBJ: plain gcc, as it needs only libc and the kernel's virtio
# headers.  Arguments: more compiler flags (make check adds -Werror).
build_vhost_user_bench() {
    gcc -Wall -Wextra -O2 -pthread "$@" -o "$OBJ/vhost-user-bench" \
        "$top/devtools/vhost-user-bench.c"
}

# Test results, one line each, counted in $passed, $failed and $skipped
# (make check, make check-uring): PASS NAME; SKIP NAME [WHY];
# FAIL NAME [LOG [WHY]], with the tail of LOG.
pass() { echo "PASS $1"; passed=$((passed + 1)); }
skip() { echo "SKIP $1${2:+ ($2)}"; skipped=$((skipped + 1)); }
fail() {
    echo "FAIL $1${3:+ ($3)}"
    [ -f "$2" ] && tail -n 25 "$2" | sed 's/^/    /'
    failed=$((failed + 1))
}
