#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Write the series as mails, ready for git send-email.  patches/series
# may cut it into several series (series_layout in lib.sh): each
# prerequisite series is written to OUTDIR/NAME/, the main series to
# OUTDIR itself, each with a cover letter whose subject and blurb come
# from patches/cover-letter-NAME.txt, or patches/cover-letter.txt for the
# main one (first line: subject; the rest: blurb).  The main cover letter
# names each prerequisite with a "Based-on: <message-id>" line, which
# patchew reads.  OUTDIR/order lists the patches, not the cover letters,
# in the order to git am them.
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
layout=$(series_layout)
mapfile -t names < <(cut -d' ' -f1 <<<"$layout" | uniq)
declare -A count=()
while read -r name _; do
    count[$name]=$((${count[$name]:-0} + 1))
done <<<"$layout"
for name in "${names[@]}"; do
    cover=$(cover_letter_file "$name")
    [ -f "$cover" ] || die "${cover#"$top"/} is missing (cover letter of series $name)"
    [ -n "$(head -n1 "$cover")" ] ||
        die "${cover#"$top"/}: its first line, the subject, is empty"
done

"$top/devtools/assemble.sh" >/dev/null
mapfile -t commits < <(tgit rev-list --reverse "$BASE_TAG..$SERIES_BRANCH")
[ "${#commits[@]}" -gt 0 ] || die "the series is empty"
[ "${#commits[@]}" = "$(wc -l <<<"$layout")" ] ||
    die "BUG: build/qemu has ${#commits[@]} commits, patches/series" \
        "$(wc -l <<<"$layout") lines"
for c in "${commits[@]}"; do
    [ -n "$(tgit diff-tree --no-commit-id -r "$c")" ] ||
        echo "warning: $(tgit log -1 --format='%h %s' "$c") changes nothing" >&2
done

# What an earlier export wrote: its mails, and its prerequisites'
# directories when nothing else is in them.
mkdir -p "$outdir"
if [ -f "$outdir/order" ]; then
    while read -r d; do
        [ "$d" = . ] && continue
        rm -f "$outdir/$d"/*.patch
        rmdir "$outdir/$d" 2>/dev/null || true
    done < <(xargs -r -n1 dirname <"$outdir/order" | sort -u)
fi
rm -f "$outdir"/*.patch "$outdir/order"

# The cover letter's From and the Message-Ids are the committer's.
export GIT_COMMITTER_NAME=$user_name GIT_COMMITTER_EMAIL=$user_email
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prereqs=()      # "Based-on:" lines of the main cover letter
mails=()        # every mail written, for the identity check
summary=
prev=$BASE_TAG
i=0
for name in "${names[@]}"; do
    n=${count[$name]}
    tip=${commits[$((i + n - 1))]}
    dir=$outdir
    [ "$name" = main ] || dir="$outdir/$name"
    mkdir -p "$dir"
    tgit format-patch -q --always --cover-letter --thread=shallow \
        --no-signoff --suffix=.patch -o "$dir" "$prev..$tip"
    letter="$dir/0000-cover-letter.patch"

    # The blurb: everything after the subject, without leading blank
    # lines; the main series' also names its prerequisites.
    cover=$(cover_letter_file "$name")
    tail -n +2 "$cover" | sed '/./,$!d' >"$tmp/blurb"
    if [ "$name" = main ] && [ "${#prereqs[@]}" -gt 0 ]; then
        printf '\n%s\n\n' "It applies on top of these series, posted separately:" >>"$tmp/blurb"
        printf '%s\n' "${prereqs[@]}" >>"$tmp/blurb"
    fi
    awk -v subject="$(head -n1 "$cover")" -v blurb="$tmp/blurb" '
        /^Subject: / && (i = index($0, "*** SUBJECT HERE ***")) {
            $0 = substr($0, 1, i - 1) subject
        }
        $0 == "*** BLURB HERE ***" {
            while ((getline line < blurb) > 0) print line
            next
        }
        { print }' "$letter" >"$tmp/letter"
    mv "$tmp/letter" "$letter"
    ! grep -q '\*\*\* .* HERE \*\*\*' "$letter" || die "$letter still has placeholders"

    # Deterministic Message-Ids, for Based-on (git send-email keeps the
    # mails' own): format-patch makes them of the commit (or "cover"),
    # the time (of each mail: a long run spans seconds) and the
    # committer's address; the time becomes a digest of the mails less
    # their Message-Ids and dates.  Unchanged series keep their ids, and
    # any change, the cover letter's included, gives new ones.  (Git
    # 2.43 and later spell the header "Message-ID".)
    these=("$dir"/[0-9]*.patch)
    grep -qi '^Message-Id: <cover\.[0-9]*\.git\.' "$letter" ||
        die "BUG: format-patch gave $letter no Message-Id of the form expected"
    digest=$(grep -hviE '^(Message-Id|In-Reply-To|References|Date): ' "${these[@]}" |
             sha1sum | cut -c1-16)
    sed -i -E "s/^(Message-Id|In-Reply-To|References): <([^.<>]+)\.[0-9]+\.git\./\1: <\2.$digest.git./I" \
        "${these[@]}"
    if [ "$name" != main ]; then
        prereqs+=("Based-on: $(sed -n 's/^Message-Id: //Ip' "$letter")"
                  "($(sed -n 's/^Subject: //p' "$letter"))")
    fi

    for m in "${these[@]:1}"; do
        echo "${m#"$outdir"/}" >>"$outdir/order"
    done
    mails+=("${these[@]}")
    summary+="${summary:+, }${dir#"$top"/} ($n)"
    prev=$tip
    i=$((i + n))
done

log "wrote ${#mails[@]} mails; the series, to apply in this order: $summary"
problems=$(identity_problems "$user_name" "$user_email" "${mails[@]}")
if [ -n "$problems" ]; then
    echo "${problems//"$top/"/}" >&2
    echo "$(basename "$0"): the mails above are not fit to send: each must be" \
         "from and signed off by $user_name <$user_email>, with no placeholder" \
         "identity; fix the commits in build/qemu and run make writeback" >&2
    exit 3
fi
