#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Write the series as mails, ready for git send-email: a cover letter
# whose subject and blurb come from patches/cover-letter.txt (first
# line: subject; the rest: blurb), then one patch per commit.
#
# Every mail is from the user's git identity (user.name, user.email) and
# every patch carries exactly one Signed-off-by of it: assemble.sh makes
# the commits so, format-patch takes the cover letter's From from the
# committer set here, and the mails are checked.  A placeholder identity
# anywhere in them (say a MAINTAINERS entry for uring@localhost) fails
# the export with status 3 after the mails are written, so that they can
# be read; check-series.sh reports it as its "identity" check.
#
#   devtools/export-series.sh [OUTDIR]   (default: out/series)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

outdir=$(realpath -m "${1:-$top/out/series}")
require_user_identity
cover="$top/patches/cover-letter.txt"
[ -f "$cover" ] || die "patches/cover-letter.txt is missing"
subject=$(head -n1 "$cover")
[ -n "$subject" ] || die "patches/cover-letter.txt: its first line, the subject, is empty"

"$top/devtools/assemble.sh" >/dev/null
[ -n "$(tgit rev-list "$BASE_TAG..$SERIES_BRANCH")" ] || die "the series is empty"

mkdir -p "$outdir"
rm -f "$outdir"/*.patch
# The cover letter's From and the Message-Ids are the committer's.
GIT_COMMITTER_NAME=$user_name GIT_COMMITTER_EMAIL=$user_email \
    tgit format-patch -q --always --cover-letter --no-signoff \
        --suffix=.patch -o "$outdir" "$BASE_TAG..$SERIES_BRANCH"
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

mails=("$outdir"/*.patch)
log "wrote ${#mails[@]} mails to $outdir"
problems=$(identity_problems "$user_name" "$user_email" "${mails[@]}")
if [ -n "$problems" ]; then
    echo "${problems//"$top/"/}" >&2
    echo "$(basename "$0"): the mails above are not fit to send: each must be" \
         "from and signed off by $user_name <$user_email>, with no placeholder" \
         "identity; fix the commits in build/qemu and run make writeback" >&2
    exit 3
fi
