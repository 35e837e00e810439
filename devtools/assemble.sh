#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Turn the repository into the series on top of the pinned base in
# build/qemu: one commit per line of patches/series, each made of the
# patch's changes to existing QEMU files plus the new files it names,
# copied from this repository.  The commits are built in a scratch
# index, so only files whose content changed are rewritten in the work
# tree and the next ninja run is incremental.
#
# The commits are authored and signed off by the user's git identity
# (user.name, user.email), whatever the patches say, so that build/qemu
# holds what make series mails and make writeback, run after, writes
# that identity into patches/.  Where git has no identity (a fresh CI
# machine) the patches' own authors and messages are kept.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

series_layout >/dev/null
user_identity
"$top/devtools/fetch-qemu.sh"

base=$(tgit rev-parse "$BASE_TAG^{commit}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export GIT_INDEX_FILE="$tmp/index"
tgit read-tree "$base"

parent=$base
n=0
while read -r patch files; do
    n=$((n + 1))
    pfile="$top/patches/$patch"
    [ -f "$pfile" ] || die "patches/series names missing $patch"
    git mailinfo "$tmp/msg" "$tmp/diff" <"$pfile" >"$tmp/info" ||
        die "$patch is not a mail-formatted patch"
    if grep -q "^diff --git " "$tmp/diff"; then
        tgit apply --cached --whitespace=nowarn "$tmp/diff" ||
            die "$patch does not apply"
    fi
    for f in $files; do
        [ -f "$top/$f" ] || die "$patch adds $f, which is not in the repository"
        blob=$(tgit hash-object -w "$top/$f")
        mode=100644
        [ -x "$top/$f" ] && mode=100755
        tgit update-index --add --cacheinfo "$mode,$blob,$f"
    done
    tree=$(tgit write-tree)
    subject=$(sed -n 's/^Subject: //p' "$tmp/info")
    [ -n "$subject" ] || die "$patch has no Subject"
    { printf '%s\n\n' "$subject"; cat "$tmp/msg"; } >"$tmp/message"
    if [ -n "$user_name" ] && [ -n "$user_email" ]; then
        GIT_AUTHOR_NAME=$user_name
        GIT_AUTHOR_EMAIL=$user_email
        sign_off "$user_name" "$user_email" <"$tmp/message" >"$tmp/signed"
        mv "$tmp/signed" "$tmp/message"
    else
        GIT_AUTHOR_NAME=$(sed -n 's/^Author: //p' "$tmp/info")
        GIT_AUTHOR_EMAIL=$(sed -n 's/^Email: //p' "$tmp/info")
    fi
    GIT_AUTHOR_DATE=$(sed -n 's/^Date: //p' "$tmp/info")
    GIT_COMMITTER_DATE=$GIT_AUTHOR_DATE
    export GIT_AUTHOR_NAME GIT_AUTHOR_EMAIL GIT_AUTHOR_DATE GIT_COMMITTER_DATE
    parent=$(tgit commit-tree "$tree" -p "$parent" <"$tmp/message")
done < <(series_entries)
unset GIT_INDEX_FILE

head=$(tgit rev-parse -q --verify HEAD || true)
if [ -f "$ASSEMBLED_MARK" ] && [ "$head" != "$(cat "$ASSEMBLED_MARK")" ]; then
    die "build/qemu has commits that are not in the repository yet;" \
        "run 'make writeback' first (or 'git -C build/qemu reset --hard" \
        "$(cat "$ASSEMBLED_MARK")' to drop them)"
fi
if [ "$head" != "$parent" ] ||
   [ "$(tgit symbolic-ref -q --short HEAD)" != "$SERIES_BRANCH" ]; then
    # Moves only the files that differ; refuses to overwrite edits.
    tgit checkout -q -B "$SERIES_BRANCH" "$parent" ||
        die "uncommitted edits in build/qemu conflict with the repository;" \
            "commit them there and run 'make writeback', or discard them"
fi
echo "$parent" >"$ASSEMBLED_MARK"
log "assembled $n commits on $BASE_TAG: $(tgit log --oneline -1 "$parent")"
