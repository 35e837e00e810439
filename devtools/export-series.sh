#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Write the series as mails, ready for git send-email: a cover letter
# whose subject and blurb come from patches/cover-letter.txt (first
# line: subject; the rest: blurb), then one patch per commit.
#
#   devtools/export-series.sh [OUTDIR]   (default: out/series)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

outdir=$(realpath -m "${1:-$top/out/series}")
cover="$top/patches/cover-letter.txt"
[ -f "$cover" ] || die "patches/cover-letter.txt is missing"
subject=$(head -n1 "$cover")
[ -n "$subject" ] || die "patches/cover-letter.txt: its first line, the subject, is empty"

"$top/devtools/assemble.sh" >/dev/null
[ -n "$(tgit rev-list "$BASE_TAG..$SERIES_BRANCH")" ] || die "the series is empty"

mkdir -p "$outdir"
rm -f "$outdir"/*.patch
# The cover letter is from the series' author, not from lib.sh's committer.
GIT_COMMITTER_NAME=$(tgit log -1 --format=%an "$SERIES_BRANCH") \
GIT_COMMITTER_EMAIL=$(tgit log -1 --format=%ae "$SERIES_BRANCH") \
    tgit format-patch -q --always --cover-letter -o "$outdir" \
        "$BASE_TAG..$SERIES_BRANCH"
for c in $(tgit rev-list "$BASE_TAG..$SERIES_BRANCH"); do
    [ -n "$(tgit diff-tree --no-commit-id -r "$c")" ] ||
        echo "warning: $(tgit log -1 --format='%h %s' "$c") changes nothing" >&2
done

# The blurb: everything after the subject, without leading blank lines.
tail -n +2 "$cover" | sed '/./,$!d' >"$outdir/.blurb"
letter="$outdir/0000-cover-letter.patch"
awk -v subject="$subject" -v blurb="$outdir/.blurb" '
    /^Subject: / && (i = index($0, "*** SUBJECT HERE ***")) {
        $0 = substr($0, 1, i - 1) subject
    }
    $0 == "*** BLURB HERE ***" {
        while ((getline line < blurb) > 0) print line
        next
    }
    { print }' "$letter" >"$letter.new"
mv "$letter.new" "$letter"
rm -f "$outdir/.blurb"
! grep -q '\*\*\* .* HERE \*\*\*' "$letter" || die "$letter still has placeholders"

log "wrote $(ls "$outdir"/*.patch | wc -l) mails to $outdir"
