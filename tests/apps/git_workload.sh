#!/bin/bash
# git workload for the libdedup real-programs suite: init, a few hundred
# files (many of them identical) over several commits, gc, log, fsck.
# Everything printed to stdout must be the same with and without the shim
# (identity and dates are fixed by the caller).
set -eu
repo=$1
git init -q -b main "$repo"
cd "$repo"
git config gc.auto 0
git config core.compression 6

# Deterministic content: 300 files; every third is one shared 96 KiB text,
# the others distinct; then edits in later commits.
gen() {   # gen SEED LINES
    awk -v seed="$1" -v n="$2" 'BEGIN { x = seed; for (i = 0; i < n; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "%08d line %d of %d %x\n", i, seed, x, x } }'
}
shared=$(gen 7 2000)
for d in 0 1 2; do
    mkdir -p "dir$d"
    for i in $(seq 0 99); do
        if [ $((i % 3)) -eq 0 ]; then printf '%s\n' "$shared" > "dir$d/f$i.txt"
        else gen $((d * 1000 + i)) $((50 + i)) > "dir$d/f$i.txt"; fi
    done
done
git add -A
git commit -q -m "initial: 300 files"
for c in 1 2 3 4 5; do
    for i in $(seq $c 7 99); do gen $((c * 7919 + i)) 40 >> "dir$((c % 3))/f$i.txt"; done
    git mv "dir$((c % 3))/f$((c + 90)).txt" "dir$((c % 3))/moved$c.txt"
    git add -A
    git commit -q -m "change $c"
done
git tag -a v1 -m "tag v1"
git gc -q --aggressive --prune=now
git fsck --full --strict --no-progress 2>&1
echo "fsck exit=$?"
git count-objects -v | grep -E '^(count|in-pack|packs|prune-packable|garbage):'
git rev-parse HEAD HEAD^{tree} v1
git log --stat --format='%H %an %ad %s' | head -120
git log --format=%H | wc -l
git ls-tree -r HEAD | sha256sum
git archive --format=tar HEAD | sha256sum
git verify-pack -v .git/objects/pack/*.idx | grep -cE '^[0-9a-f]{40} (blob|tree|commit|tag)'
git diff --stat HEAD~5 HEAD | tail -1
git cat-file --batch-all-objects --batch-check | sort | sha256sum
git grep -c 'line 7 of' HEAD -- dir1 | head -5
