#!/usr/bin/env bash
# A kernel git history for `lab bisect` to find a known culprit in (`make lab-bisect`).
#
#   scripts/make-bisect-fixture.sh [DEST]   (default: $LAB_CACHE or ~/.cache/sockmap-lab, fixtures/bisect-linux)
#
# Debian's linux-source-6.12 tarball as the first commit, then 17 commits: 16 harmless ones, each
# inserting a comment line near the top of a file our config compiles (so every bisect step really
# recompiles something, and the shifted line numbers defeat ccache for that file), and, 12th, the
# tx-ignores-ingress mutant, which makes every tx_to_rx case fail. Tags: bisect-good (the tarball),
# bisect-planted (the mutant), bisect-bad (the tip). A fixed author and dates make the hashes the
# same on every machine with the same linux-source-6.12 version. The repository stays outside the
# project and is made once: a finished one is left alone.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${LAB_CACHE:-$HOME/.cache/sockmap-lab}
dest=${1:-$cache/fixtures/bisect-linux}
tarball=/usr/src/linux-source-6.12.tar.xz
mutant=$(ls "$here"/kernels/mutants/tx-ignores-ingress/*.patch)

if git -C "$dest" rev-parse -q --verify refs/tags/bisect-bad >/dev/null 2>&1; then
    echo "bisect fixture: $dest ($(git -C "$dest" rev-list --count bisect-bad) commits; culprit $(git -C "$dest" rev-parse --short=12 bisect-planted))"
    exit 0
fi
if [ ! -f "$tarball" ]; then
    echo "bisect fixture: $tarball is missing (apt-get install linux-source-6.12, or run \`lab build debian-6.12\` once)" >&2
    exit 1
fi

# Built aside and renamed into place, so an interrupted run never looks finished.
work=$dest.partial
rm -rf "$work"
mkdir -p "$work"
echo "bisect fixture: unpacking $tarball into $work"
tar -xf "$tarball" --strip-components=1 -C "$work"

export GIT_AUTHOR_NAME="sockmap-lab fixture" GIT_AUTHOR_EMAIL="fixture@sockmap-lab.invalid"
export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
n=0
commit() {
    local date="2025-01-01T$(printf '%02d' "$n"):00:00Z"
    GIT_AUTHOR_DATE=$date GIT_COMMITTER_DATE=$date git -C "$work" commit -q --no-verify "$@"
    n=$((n + 1))
}

git -C "$work" init -q -b main
git -C "$work" config gc.auto 0
git -C "$work" config commit.gpgsign false
version=$(dpkg-query -W -f '${Version}' linux-source-6.12 2>/dev/null || echo unknown)
echo "bisect fixture: committing the whole tree (a minute or two)"
# Debian's top-level .gitignore ignores everything (its packaging repository holds only debian/).
git -C "$work" add -f -A .
commit -m "linux-source-6.12 $version (Debian)"
git -C "$work" tag bisect-good

harmless=(
    net/core/skmsg.c net/ipv4/tcp_bpf.c net/ipv4/udp_bpf.c net/unix/unix_bpf.c kernel/bpf/bpf_iter.c
    kernel/bpf/arraymap.c kernel/bpf/hashtab.c net/core/datagram.c net/core/scm.c net/unix/garbage.c
    kernel/bpf/map_iter.c net/core/bpf_sk_storage.c kernel/bpf/tnum.c net/core/request_sock.c
    kernel/bpf/local_storage.c net/core/stream.c
)
i=0
for file in "${harmless[@]}"; do
    i=$((i + 1))
    if [ "$i" -eq 12 ]; then
        git -C "$work" apply "$mutant"
        git -C "$work" add -f -u
        commit -m "$(sed -n 's/^Subject: //p' "$mutant")" -m "Planted by scripts/make-bisect-fixture.sh: $(basename "$mutant")"
        git -C "$work" tag bisect-planted
    fi
    sed -i "1a /* bisect fixture: harmless edit $i */" "$work/$file"
    git -C "$work" add -f "$file"
    commit -m "${file%.c}: harmless comment ($i)"
done
git -C "$work" tag bisect-bad

rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$work" "$dest"
echo "bisect fixture: $dest ($(git -C "$dest" rev-list --count bisect-bad) commits; culprit $(git -C "$dest" rev-parse --short=12 bisect-planted))"
