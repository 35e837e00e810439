#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The reverse of assemble.sh: regenerate patches/, patches/series and
# the new files of this repository from the commits uring-base..HEAD of
# build/qemu.  Edit and commit there (git commit --fixup=X, then
# git rebase -i --autosquash uring-base; or add commits), then run this.
#
# "New files" are files that uring-base lacks.  Each commit becomes a
# series line: a patch with its changes to existing files (maybe no diff,
# only the message) and the new files it adds, copied whole from HEAD.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for d in rebase-merge rebase-apply; do
    [ ! -e "$(tgit rev-parse --git-path "$d")" ] ||
        die "a rebase is in progress in build/qemu; finish or abort it first"
done
[ -z "$(tgit status --porcelain)" ] ||
    die "build/qemu has uncommitted changes; commit them (or stash or" \
        "remove them) first:$(printf '\n'; tgit status --short | head -20)"
tgit merge-base --is-ancestor "$BASE_TAG" HEAD ||
    die "HEAD of build/qemu does not descend from $BASE_TAG"
[ -z "$(tgit rev-list --merges "$BASE_TAG..HEAD")" ] ||
    die "$BASE_TAG..HEAD has merge commits; make the history linear"
head=$(tgit rev-parse HEAD)
mapfile -t commits < <(tgit rev-list --reverse "$BASE_TAG..HEAD")

# format-patch without the user's configuration, so the output is stable.
format_patch() {
    GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 \
        tgit -c core.abbrev=12 format-patch --always --zero-commit \
            --no-signature --no-stat -N "$@"
}

# The old series: patch names, their new files, and the series (see
# series_layout in lib.sh) that each line is in, also by subject.
layout=$(series_layout)
old_patch=() old_files=() old_series=()
declare -A series_of_subject=()
while read -r name p files; do
    old_patch+=("$p")
    old_files+=("$files")
    old_series+=("$name")
    if [ -f "$top/patches/$p" ]; then
        s=$(git mailinfo "$tmp/m" "$tmp/d" <"$top/patches/$p" | sed -n 's/^Subject: //p')
        series_of_subject[$s]=${series_of_subject[$s]:-$name}
    fi
done <<<"$layout"
grouped=
grep -qE "$SERIES_DIRECTIVE_RE" "$SERIES_FILE" && grouped=1

# The new files of each commit, and of the whole series.
declare -A is_new=() added_by=()
commit_files=()
for c in "${commits[@]}"; do
    files=""
    while IFS= read -r f; do
        tgit cat-file -e "$BASE_TAG:$f" 2>/dev/null && continue
        case "$f" in
        *[[:space:]]*) die "new file '$f' has white space in its name" ;;
        */*) ;;
        *) die "new file $f is at the top level, among this repository's own" ;;
        esac
        case "${f%%/*}" in
        devtools|patches|build|out|.ci|.git)
            die "new file $f would land in this repository's ${f%%/*}/" ;;
        esac
        [ -z "${added_by[$f]:-}" ] ||
            die "$f is added twice (${added_by[$f]:0:12} and ${c:0:12})"
        mode=$(tgit ls-tree HEAD -- "$f" | cut -d' ' -f1)
        case "$mode" in
        "") die "new file $f (added by $(tgit log -1 --format='%h %s' "$c"))" \
                "is deleted by a later commit; squash the deletion into it" ;;
        100644|100755) ;;
        *) die "new file $f is not a regular file (mode $mode)" ;;
        esac
        is_new[$f]=1
        added_by[$f]=$c
        files+="${files:+ }$f"
    done < <(tgit diff-tree -r --no-commit-id --diff-filter=A --name-only "$c^" "$c")
    commit_files+=("$files")
done

# The repository holds only the final version of a new file, so the
# commit that adds it gets that version; later changes to it vanish
# from the commits that made them.
for c in "${commits[@]}"; do
    while IFS= read -r f; do
        if [ -n "${is_new[$f]:-}" ] && [ "${added_by[$f]}" != "$c" ]; then
            echo "warning: $(tgit log -1 --format='%h %s' "$c") modifies $f," \
                 "added by $(tgit log -1 --format='%h %s' "${added_by[$f]}");" \
                 "the series will have its final version in the latter" >&2
        fi
    done < <(tgit diff-tree -r --no-commit-id --diff-filter=M --name-only "$c^" "$c")
done

# Write $2 to $1 only when it differs, so unchanged files stay untouched.
update() {
    cmp -s "$2" "$1" || cp "$2" "$1"
}

# Whether patch $1 makes the same commit as patch $2 does on top of $3:
# same author, date and message, and applied on $3, the tree $4.  Such
# a patch is kept as it is, even when edited by hand (index lines, hunk
# offsets) or made by another format-patch.
same_commit() {
    git mailinfo "$tmp/m1" "$tmp/d1" <"$1" >"$tmp/i1" 2>/dev/null &&
        git mailinfo "$tmp/m2" "$tmp/d2" <"$2" >"$tmp/i2" &&
        cmp -s "$tmp/i1" "$tmp/i2" && cmp -s "$tmp/m1" "$tmp/m2" || return 1
    GIT_INDEX_FILE="$tmp/index2" tgit read-tree "$3"
    if grep -q '^diff --git ' "$tmp/d1"; then
        GIT_INDEX_FILE="$tmp/index2" tgit apply --cached --whitespace=nowarn \
            "$tmp/d1" 2>/dev/null || return 1
    fi
    [ "$(GIT_INDEX_FILE="$tmp/index2" tgit write-tree)" = "$4" ]
}

# One patch per commit: the commit with its new files kept as in its
# parent, so the diff is only that of existing files.
export GIT_INDEX_FILE="$tmp/index"
new_patch=()
declare -A used=()
for i in "${!commits[@]}"; do
    c=${commits[$i]}
    tgit read-tree "$c"
    for f in "${!is_new[@]}"; do
        if entry=$(tgit ls-tree "$c^" -- "$f") && [ -n "$entry" ]; then
            tgit update-index --cacheinfo "$(awk '{print $1 "," $3}' <<<"$entry"),$f"
        else
            tgit update-index --force-remove -- "$f"
        fi
    done
    tree=$(tgit write-tree)
    stripped=$(tgit cat-file commit "$c" | sed "1s/^tree .*/tree $tree/" |
               tgit hash-object -t commit -w --stdin)
    format_patch --stdout -1 "$stripped" >"$tmp/patch"

    # Named after its position and subject, so patches/ sorts in order
    name=$(basename "$(format_patch -1 --start-number=$((i + 1)) \
                       -o "$tmp/names" "$stripped")")
    [ -z "${used[$name]:-}" ] || die "two commits would both be patches/$name"
    used[$name]=1
    if [ ! -f "$top/patches/$name" ] ||
       ! same_commit "$top/patches/$name" "$tmp/patch" "$c^" "$tree"; then
        cp "$tmp/patch" "$top/patches/$name"
    fi
    new_patch+=("$name")
done
unset GIT_INDEX_FILE

# Patches the old series used and the new one does not.
for p in "${old_patch[@]}"; do
    [ -n "${used[$p]:-}" ] || rm -f "$top/patches/$p"
done

# New files: final versions from HEAD; drop those no longer new.
for f in "${!is_new[@]}"; do
    mkdir -p "$top/$(dirname "$f")"
    tgit cat-file blob "HEAD:$f" >"$tmp/file"
    update "$top/$f" "$tmp/file"
    if [ "$(tgit ls-tree HEAD -- "$f" | cut -d' ' -f1)" = 100755 ]; then
        chmod +x "$top/$f"
    else
        chmod -x "$top/$f"
    fi
done
for files in "${old_files[@]}"; do
    for f in $files; do
        if [ -z "${is_new[$f]:-}" ] && [ -e "$top/$f" ]; then
            rm -f "$top/$f"
            rmdir -p --ignore-fail-on-non-empty "$(dirname "$top/$f")"
        fi
    done
done

# The series each commit is in, where patches/series has "# series:"
# lines: that of the old line with its subject; else, when there are as
# many commits as old lines, that of the line in its place; else that of
# the commit before it (after it, for the first).  A guess is reported.
new_series=()
if [ -n "$grouped" ]; then
    for i in "${!commits[@]}"; do
        name=${series_of_subject[$(tgit log -1 --format=%s "${commits[$i]}")]:-}
        if [ -z "$name" ] && [ "${#commits[@]}" = "${#old_patch[@]}" ]; then
            name=${old_series[$i]}
        fi
        new_series+=("$name")
    done
    guessed=()
    for i in "${!commits[@]}"; do
        [ -n "${new_series[$i]}" ] || guessed+=("$i")
        if [ -z "${new_series[$i]}" ] && [ "$i" -gt 0 ]; then
            new_series[i]=${new_series[$((i - 1))]}
        fi
    done
    for ((i = ${#commits[@]} - 1; i >= 0; i--)); do
        [ -n "${new_series[$i]}" ] || new_series[i]=${new_series[$((i + 1))]:-main}
    done
    for i in "${guessed[@]}"; do
        echo "note: patches/series puts ${new_patch[$i]} in series" \
             "${new_series[$i]}, with its neighbours; move it if it" \
             "belongs to another" >&2
    done
fi

# The series: its header comment, then a line per commit, with a
# "# series:" line where the series changes.  A line keeps the order of
# its new files when it lists the same ones as before.
sorted() { tr ' ' '\n' <<<"$1" | sort | tr '\n' ' '; }
{
    awk -v re="$SERIES_DIRECTIVE_RE" '!/^#/ || $0 ~ re { exit } { print }' \
        "$SERIES_FILE"
    for i in "${!commits[@]}"; do
        files=${commit_files[$i]}
        if [ "$i" -lt "${#old_files[@]}" ] &&
           [ "$(sorted "${old_files[$i]}")" = "$(sorted "$files")" ]; then
            files=${old_files[$i]}
        fi
        if [ -n "$grouped" ] &&
           { [ "$i" = 0 ] || [ "${new_series[$i]}" != "${new_series[$((i - 1))]}" ]; }; then
            printf '\n# series: %s\n' "${new_series[$i]}"
        fi
        echo "${new_patch[$i]}${files:+ $files}"
    done
} >"$tmp/series"
update "$SERIES_FILE" "$tmp/series"

echo "$head" >"$ASSEMBLED_MARK"
log "wrote ${#commits[@]} commits of build/qemu back to patches/ and the new files"

# Check the round trip: assembling the repository must give HEAD's tree.
# Commits it makes may differ from the originals (committer), not trees.
"$top/devtools/assemble.sh"
[ "$(tgit rev-parse "HEAD^{tree}")" = "$(tgit rev-parse "$head^{tree}")" ] ||
    die "BUG: the repository does not assemble to the tree of $head;" \
        "your commits are still there: git -C build/qemu reset --hard $head"
