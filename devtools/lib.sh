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

# Patches that do not need the rest (fixes of upstream code) are posted
# as series of their own, which the main series names as prerequisites.
# In $SERIES_FILE a line "# series: NAME" starts series NAME; the lines
# before any such line, or after "# series: main", are the main series.
# The main series comes last: build/qemu has the commits in the order of
# the file, and the mails must apply in that order, prerequisites first.
# A series' cover letter is patches/cover-letter-NAME.txt (main:
# patches/cover-letter.txt).
SERIES_DIRECTIVE_RE='^#[[:space:]]*series:'

# series_layout: "<series> <patch> [new file ...]" for each line of
# $SERIES_FILE; fails, saying why, when the layout breaks the rules above.
series_layout() {
    awk -v file="${SERIES_FILE#"$top"/}" '
        function err(m) {
            print file ":" NR ": " m > "/dev/stderr"
            bad = 1
            exit 1
        }
        /^#[ \t]*series:/ {
            name = $0
            sub(/^#[ \t]*series:[ \t]*/, "", name)
            sub(/[ \t]+$/, "", name)
            if (name !~ /^[a-z0-9][a-z0-9-]*$/)
                err("series name \"" name "\" is not lower-case letters," \
                    " digits and dashes")
            if (g == "main")
                err("series " name " comes after the main series;" \
                    " prerequisites come first")
            if (name in seen)
                err("series " name " appears twice; keep its lines together")
            if (g != "" && !n)
                err("series " g " has no patches")
            seen[name] = 1
            g = name
            n = 0
            next
        }
        { sub(/#.*/, "") }
        /^[ \t]*$/ { next }
        {
            if (g == "") {
                g = "main"
                seen[g] = 1
            }
            n++
            $1 = $1
            print g, $0
        }
        END {
            if (bad)
                exit 1
            if (g != "" && !n)
                err("series " g " has no patches")
            if (g != "" && !("main" in seen))
                err("no main series: the last series must be \"main\"")
        }' "$SERIES_FILE"
}

# The cover letter of series $1: first line the subject, then the blurb.
cover_letter_file() {
    if [ "$1" = main ]; then
        echo "$top/patches/cover-letter.txt"
    else
        echo "$top/patches/cover-letter-$1.txt"
    fi
}

# Identities that stand for nobody and must not be mailed: the series'
# old author ("uring series <uring@localhost>", also lib.sh's committer
# of build/qemu, which format-patch does not show) and any address at
# localhost.  An extended regular expression, for grep -E and awk.
PLACEHOLDER_ID_RE='uring series <|[[:alnum:]._%+-]+@localhost([.]localdomain)?([^[:alnum:].-]|$)'

# Every commit of the series is authored and signed off by the user's
# git identity in this repository: user_identity sets $user_name and
# $user_email, empty where git has none configured.
user_identity() {
    user_name=$(git -C "$top" config user.name || true)
    user_email=$(git -C "$top" config user.email || true)
}

# The same, for what is mailed: dies when there is none, or a placeholder.
require_user_identity() {
    user_identity
    [ -n "$user_name" ] && [ -n "$user_email" ] ||
        die "git user.name and user.email are not configured; the series" \
            "is mailed from and signed off by them.  Set them with:" \
            "git config --global user.name 'Your Name';" \
            "git config --global user.email you@example.org"
    ! grep -qE "$PLACEHOLDER_ID_RE" <<<"$user_name <$user_email>" ||
        die "git identity '$user_name <$user_email>' is a placeholder;" \
            "set user.name and user.email to yours"
}

# sign_off NAME EMAIL: the commit message on stdin with exactly one
# Signed-off-by of NAME <EMAIL>, the last trailer.  Drops placeholder
# sign-offs and other ones of EMAIL; keeps the rest (a chain of real
# sign-offs, as in a patch picked from someone else).
sign_off() {
    local sob="Signed-off-by: $1 <$2>"
    awk -v re="$PLACEHOLDER_ID_RE" -v email="<$2>" '
        /^Signed-off-by: / && ($0 ~ re || index($0, email)) { next }
        { print }' |
        sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' |
        git interpret-trailers --no-divider --where end --if-exists add \
            --if-missing add --trailer "$sob"
}

# identity_problems NAME EMAIL MAIL...: a line per problem in the mails,
# "MAIL:LINE: what": a From: other than NAME <EMAIL>, a patch (not a
# cover letter) without exactly one Signed-off-by of NAME <EMAIL>, and
# each line with a placeholder identity (in a header, the message or
# the diff, such as a MAINTAINERS entry).
identity_problems() {
    local name=$1 email=$2 m t from n
    shift 2
    t=$(mktemp -d)
    for m in "$@"; do
        if ! git mailinfo "$t/msg" "$t/diff" <"$m" >"$t/info" 2>/dev/null; then
            echo "$m:1: not a mail"
            continue
        fi
        from="$(sed -n 's/^Author: //p' "$t/info") <$(sed -n 's/^Email: //p' "$t/info")>"
        [ "$from" = "$name <$email>" ] ||
            echo "$m:$(grep -n -m1 '^From: ' "$m" | cut -d: -f1): From: $from," \
                 "not $name <$email>"
        case "$m" in
        */0000-cover-letter.patch) ;;
        *)
            n=$(grep -cFx "Signed-off-by: $name <$email>" "$t/msg" || true)
            [ "$n" = 1 ] ||
                echo "$m:1: $n Signed-off-by: lines of $name <$email>, not 1" ;;
        esac
        grep -nE "$PLACEHOLDER_ID_RE" "$m" | sed "s|^|$m:|; s|\$|  (placeholder)|" || true
    done
    rm -rf "$t"
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

# qemu-iotests that make check-sanitizers does not run: their qemu-nbd
# --fork child can deadlock in gcc 12's libasan, which has no fork
# handler for its allocator: a child forked while another thread holds
# the allocator's lock waits for it forever (both threads of the child
# in SizeClassAllocator64::GetFromAllocator).  Seen in 209 and
# block-status-cache, with -file and -uring alike.
SANITIZE_SKIP_IOTESTS="209 block-status-cache"
SANITIZE_SKIP_WHY="qemu-nbd --fork deadlocks in gcc 12's libasan"

# sanitize_skips TEST: whether this run leaves TEST out (see above)
sanitize_skips() {
    [ -n "${SANITIZE:-}" ] && [[ " $SANITIZE_SKIP_IOTESTS " == *" $1 "* ]]
}

# qemu-iotests' check, run from $OBJ/tests/qemu-iotests:
# "${IOTESTS_CHECK[@]}" ARGS.  check -j N runs the tests in a pool of
# processes that print their own TAP lines.  With PYTHONUNBUFFERED set
# (it is on these machines) print() writes a line and its newline in two
# write()s, and two workers' lines can interleave into one
# ("ok raw 258 # SKIPok raw 228 # SKIP"), which hides a result.
# Buffered, a worker writes all of a test's lines in the one write() of
# its flush at the end of the test.
IOTESTS_CHECK=(env -u PYTHONUNBUFFERED PYTHON="$OBJ/pyvenv/bin/python3"
               "$OBJ/pyvenv/bin/python3" check)

# Results of qemu-iotests' "check -tap" (make check, make check-uring).
# iotest_result OUT TEST, OUT the TAP output (check's stdout), sets
# $verdict to pass, fail, notrun, started (no result: it hung until a
# timeout), garbled (its result line is glued to another: see
# IOTESTS_CHECK) or none, and $why to a test's reason for not running: TAP
# drops it, but check leaves it in TEST_DIR/FMT-PROTO-TEST/TEST.notrun,
# and the TAP header names TEST_DIR.
iotest_result() {
    local out=$1 t=$2 line fmt dir
    line=$(grep -E "^(not )?ok [^ ]+ $t( |\$)" "$out" | tail -n1 || true)
    why=''
    case "$line" in
    "not ok "*) verdict=fail ;;
    *" # SKIP"*)
        verdict=notrun
        fmt=$(cut -d' ' -f2 <<<"$line")
        dir=$(sed -n 's/^# TEST_DIR *-- //p' "$out")
        why=$(cat "$dir/$fmt"-*-"$t/$t.notrun" 2>/dev/null | head -n1 || true)
        ;;
    "ok "*) verdict=pass ;;
    *)
        if grep -qE "[^ ](not )?ok [^ ]+ $t( |\$)" "$out"; then
            verdict=garbled
        elif grep -qE "^# running [^ ]+ $t\$" "$out"; then
            verdict=started
        else
            verdict=none
        fi ;;
    esac
}

# iotest_diff ERR TEST: a failed test's diff against its reference
# output, from check's stderr ERR
iotest_diff() {
    awk -v out="/$2.out" '/^--- /{on = index($0, out) > 0} on' "$1"
}
