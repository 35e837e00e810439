#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Check the series as mailed, prerequisite series and main series:
#   identity    every mail is from the user's git identity, every patch
#               signed off by it once, and none has a placeholder
#               identity (see export-series.sh);
#   apply       each prerequisite series applies on uring-base by
#               itself; then git am of all, prerequisites first, onto
#               uring-base in a worktree gives the commits of the uring
#               branch: the same tree at the end of each series;
#   checkpatch  scripts/checkpatch.pl --branch over the commits that the
#               patches gave, failing on ERRORs;
#   build       (with --build) build every commit in turn in that
#               worktree, in its own build directory.
# Without OUTDIR it checks a fresh export of the repository; with it,
# the mails there (make series writes them to out/series): those that
# OUTDIR/order lists, or else OUTDIR/[0-9]*.patch.  Where git has no
# user.name or user.email (a fresh CI machine), the fresh export is
# signed with a stand-in identity, so that the other checks still run.
#
#   devtools/check-series.sh [--build] [OUTDIR]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

build=
if [ "${1:-}" = --build ]; then
    build=1
    shift
fi
dir="$B/series-check"
# Named like build/qemu and build/obj, so that relative to the build
# directory the sources have the same path and ccache hits.
wt="$dir/qemu"
obj="$dir/obj"
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

user_identity
standin=()
if [ -z "${1:-}" ] && { [ -z "$user_name" ] || [ -z "$user_email" ]; }; then
    user_name="series check" user_email="series-check@invalid"
    echo "note: git user.name or user.email is not configured; checking" \
         "an export from $user_name <$user_email>"
    i=${GIT_CONFIG_COUNT:-0}
    standin=("GIT_CONFIG_KEY_$i=user.name" "GIT_CONFIG_VALUE_$i=$user_name"
             "GIT_CONFIG_KEY_$((i + 1))=user.email"
             "GIT_CONFIG_VALUE_$((i + 1))=$user_email"
             "GIT_CONFIG_COUNT=$((i + 2))")
fi

if [ -n "${1:-}" ]; then
    mails=$(realpath "$1")
    "$top/devtools/assemble.sh" >/dev/null
else
    mails="$dir/mails"
    rc=0
    env "${standin[@]}" "$top/devtools/export-series.sh" "$mails" \
        >/dev/null 2>"$dir/export.log" || rc=$?
    # 3: the mails are written, but not fit to send; "identity" says why.
    if [ "$rc" != 0 ] && [ "$rc" != 3 ]; then
        cat "$dir/export.log" >&2
        die "the export failed"
    fi
    grep '^warning: ' "$dir/export.log" >&2 || true
    # The export assembled build/qemu with the stand-in as author; the
    # commits go back to the patches' authors.
    [ "${#standin[@]}" = 0 ] || "$top/devtools/assemble.sh" >/dev/null
fi
patches=()
if [ -f "$mails/order" ]; then
    while read -r m; do
        patches+=("$mails/$m")
    done <"$mails/order"
else
    for m in "$mails"/[0-9]*.patch; do
        [ -f "$m" ] && [ "${m##*/}" != 0000-cover-letter.patch ] && patches+=("$m")
    done
fi
[ "${#patches[@]}" -gt 0 ] || die "no patches in $mails"
# The series of each patch (its directory; "main" for OUTDIR itself),
# the index of each series' last patch, and the cover letters.
series=() last=() covers=()
for i in "${!patches[@]}"; do
    d=${patches[$i]%/*}
    name=main
    [ "$d" = "$mails" ] || name=${d##*/}
    if [ "$i" = 0 ] || [ "$name" != "${series[$((i - 1))]}" ]; then
        [ "$i" = 0 ] || last+=($((i - 1)))
        [ ! -f "$d/0000-cover-letter.patch" ] || covers+=("$d/0000-cover-letter.patch")
    fi
    series+=("$name")
done
last+=($((${#patches[@]} - 1)))

failed=0
ok()   { printf 'OK   %-10s %s\n' "$1" "${*:2}"; }
fail() { printf 'FAIL %-10s %s\n' "$1" "${*:2}"; failed=1; }

# identity
if [ -z "$user_name" ] || [ -z "$user_email" ]; then
    fail identity "git user.name or user.email is not configured"
else
    problems=$(identity_problems "$user_name" "$user_email" \
                   "${covers[@]}" "${patches[@]}")
    if [ -n "$problems" ]; then
        echo "${problems//"$mails/"/}" | sed 's/^/    /'
        fail identity "$(wc -l <<<"$problems") wrong or placeholder identities" \
                      "in the mails in $mails"
    else
        ok identity "${#patches[@]} patches and ${#covers[@]} cover letters" \
                    "from $user_name <$user_email>, signed off once"
    fi
fi

# apply: each prerequisite series alone, on the base in a scratch index
alone_ok=1
for i in "${!patches[@]}"; do
    [ "${series[$i]}" != main ] || continue
    m=${patches[$i]}
    if [ "$i" = 0 ] || [ "${series[$i]}" != "${series[$((i - 1))]}" ]; then
        GIT_INDEX_FILE="$tmp/index" tgit read-tree "$BASE_TAG"
    fi
    grep -q '^diff --git ' "$m" || continue
    if ! GIT_INDEX_FILE="$tmp/index" tgit apply --cached "$m" 2>"$tmp/apply.log"; then
        sed 's/^/    /' "$tmp/apply.log"
        alone_ok=
        fail apply "${m#"$mails"/} does not apply on $BASE_TAG without the" \
                   "series before it, but series ${series[$i]} is posted alone"
        break
    fi
done

# then all of them in a worktree, reused so that builds stay incremental
if [ -d "$wt" ]; then
    git -C "$wt" am --abort >/dev/null 2>&1 || true
    git -C "$wt" checkout -q -f --detach "$BASE_TAG"
    git -C "$wt" clean -q -fdx
else
    tgit worktree prune
    tgit worktree add -q --detach "$wt" "$BASE_TAG"
fi
mapfile -t want < <(tgit rev-list --reverse "$BASE_TAG..$SERIES_BRANCH")
if ! git -C "$wt" am -q "${patches[@]}" >"$dir/am.log" 2>&1; then
    cat "$dir/am.log"
    n=$(git -C "$wt" rev-list --count "$BASE_TAG..HEAD")
    fail apply "${patches[$n]#"$mails"/} does not apply on $BASE_TAG and the" \
               "$n patches before it"
elif [ -n "$alone_ok" ]; then
    mapfile -t got < <(git -C "$wt" rev-list --reverse "$BASE_TAG..HEAD")
    differ=
    [ "${#got[@]}" = "${#want[@]}" ] ||
        differ="give ${#got[@]} commits where $SERIES_BRANCH has ${#want[@]}"
    for k in "${last[@]}"; do
        [ -z "$differ" ] || break
        [ "$(tgit rev-parse "${got[$k]}^{tree}")" = \
          "$(tgit rev-parse "${want[$k]}^{tree}")" ] && continue
        git -C "$wt" diff --stat "${got[$k]}" "${want[$k]}"
        differ="the tree after series ${series[$k]} differs from that of"
        differ+=" $(tgit log -1 --format='%h %s' "${want[$k]}")"
    done
    if [ -n "$differ" ]; then
        fail apply "the patches apply, but $differ (is $mails stale?)"
    else
        prereqs=
        [ "${#last[@]}" = 1 ] ||
            prereqs=" (after $((${#last[@]} - 1)) prerequisite series, each of which applies alone)"
        ok apply "${#patches[@]} patches apply on $BASE_TAG$prereqs and give" \
                 "the $SERIES_BRANCH branch"
    fi
fi

# checkpatch: each ERROR: line with its context (up to a blank line or
# the next report), less one known false positive: checkpatch does not
# know GRAPH_RDLOCK_PTR, so it reads "GRAPH_RDLOCK_PTR (*fn)(" (the
# style of block_int-common.h) as a call with a space before the "(".
checkpatch_errors() {
    awk 'function flush() {
             if (r != "" && !(r ~ /space prohibited between function name/ &&
                              r ~ /GRAPH_(RD|WR)LOCK_PTR \(\*/))
                 printf "%s", r
             r = ""
         }
         /^(ERROR|WARNING): / { flush(); on = ($1 == "ERROR:") }
         /^$/ { flush(); on = 0 }
         on { r = r $0 "\n" }
         END { flush() }'
}
# Over the commits that the mails gave, as a maintainer would run it:
# checkpatch --branch, which names each commit before its reports.
out=$(cd "$wt" && scripts/checkpatch.pl --color=never \
          --branch "$BASE_TAG..HEAD" 2>&1) || true
real=$(checkpatch_errors <<<"$out")
errors=$(grep -c '^ERROR: ' <<<"$real" || true)
ignored=$(($(grep -c '^ERROR: ' <<<"$out" || true) - errors))
if [ "$errors" -gt 0 ]; then
    # Which commit each error is in: checkpatch's "N/M Checking commit"
    awk '/^[0-9]+\/[0-9]+ Checking commit/ { c = $0 }
         /^ERROR: / && c != "" { print c; c = "" }' <<<"$out" |
        sed 's/^/    /'
    sed 's/^/    /' <<<"$real"
fi
note=
[ "$ignored" = 0 ] || note=" ($ignored GRAPH_*LOCK_PTR false positives ignored)"
if [ "$errors" -gt 0 ]; then
    fail checkpatch "$errors errors in ${#patches[@]} patches$note"
else
    ok checkpatch "no errors in ${#patches[@]} patches$note"
fi

# build: each commit in turn, incrementally.
if [ -n "$build" ] && [ "$failed" = 0 ]; then
    mapfile -t commits < <(git -C "$wt" rev-list --reverse "$BASE_TAG..HEAD")
    n=0
    for c in "${commits[@]}"; do
        n=$((n + 1))
        title="$n/${#commits[@]} $(git -C "$wt" log -1 --format=%s "$c")"
        git -C "$wt" checkout -q --detach "$c"
        if "$top/devtools/build.sh" "$wt" "$obj" >"$dir/build-$n.log" 2>&1; then
            ok build "$title"
        else
            tail -30 "$dir/build-$n.log"
            fail build "$title (log: $dir/build-$n.log)"
        fi
    done
elif [ -n "$build" ]; then
    fail build "not run: the checks above failed"
fi

exit "$failed"
