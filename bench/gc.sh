#!/usr/bin/env bash
# Figures for `agentenv gc` and `ls`, measured in one run:
#  1. `agentenv gc` over 100 cached environments whose projects were deleted (each: an evaluated
#     dev shell with its GC root, and an environment's home and store layer): time, bytes freed,
#     and that nothing of theirs is left (entries, environments, nix GC roots)
#  2. `agentenv ls` over the same 100 before, and `gc` with nothing to take (the no-op cost)
#  3. warm `agentenv EX -- true` of this tree against the old main's binary (built in a temp
#     dir from BASE, default: the merge base with main), same run: the ratio should be ~1
# Needs hyperfine (installed if missing). Run as root (nix's GC-root directory is root's).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh
install_packages hyperfine nix-bin bash-static busybox-static git

bench_example "$repo/target/bench-gc"
n=100
echo "== making $n cached environments"
mkdir -p "$work/projects"
for i in $(seq "$n"); do
  p="$work/projects/p$i"
  mkdir -p "$p"
  cp -r "$ex/." "$p/"
  rm -rf "$p/.git"
  git -C "$p" init -q && git -C "$p" add -A
  "$bin" -q "$p" -- sh -c "echo $i > \$HOME/note" >/dev/null
done
# Live roots only: a dangling one left by an earlier run of this script (its state removed)
# is nix's to clear at its next collection.
roots() { find /nix/var/nix/gcroots/auto -lname "$AGENTENV_HOME/*" -exec test -e {} \; -print 2>/dev/null | wc -l; }
echo "entries $(ls "$AGENTENV_HOME/cache/devenv/entries" | wc -l), environments $(ls "$AGENTENV_HOME/data/envs" | wc -l), GC roots $(roots)"

echo "== 2: ls over $n"
hyperfine -N --warmup 2 --runs 10 --export-csv "$work/ls.csv" -n ls "$bin ls --json" >/dev/null 2>&1
awk -v l="$(median "$work/ls.csv" ls)" 'BEGIN { printf "agentenv ls --json: %.1f ms (median)\n", l*1000 }'

rm -rf "$work/projects"
echo "== 1: gc over $n whose projects are gone"
TIMEFORMAT='agentenv gc: %R s wall (%U s user, %S s system)'
time "$bin" gc --json > "$work/gc.json"
python3 - "$work/gc.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"removed {len(r['removed'])} items, freed {r['bytes_freed'] / 2**20:.1f} MiB, busy {len(r['busy'])}")
PY
echo "left: entries $(ls "$AGENTENV_HOME/cache/devenv/entries" | wc -l), environments $(ls "$AGENTENV_HOME/data/envs" | wc -l), GC roots $(roots)"
hyperfine -N --warmup 2 --runs 10 --export-csv "$work/gc-noop.csv" -n noop "$bin gc" >/dev/null 2>&1
awk -v g="$(median "$work/gc-noop.csv" noop)" 'BEGIN { printf "2. agentenv gc with nothing to take: %.1f ms\n", g*1000 }'

echo "== 3: warm start against the old main"
base=$(git rev-parse --short "${BASE:-$(git merge-base HEAD main)}")
old="$work/old"
mkdir -p "$old/src"
git archive "$base" | tar -x -C "$old/src"
CARGO_TARGET_DIR="$old/target" cargo build --release --quiet --manifest-path "$old/src/Cargo.toml"
old_bin="$old/target/release/agentenv"
"$bin" "$ex" -- true && "$old_bin" "$ex" -- true
hyperfine -N --warmup 10 --runs 200 --export-csv "$work/warm.csv" \
  -n new "$bin $ex -- true" -n old "$old_bin $ex -- true" >/dev/null 2>&1
nw=$(median "$work/warm.csv" new); od=$(median "$work/warm.csv" old)
awk -v n="$nw" -v o="$od" -v b="$base" 'BEGIN {
  printf "warm agentenv EX -- true: this tree %.2f ms, old main (%s) %.2f ms (medians)\n", n*1000, substr(b,1,7), o*1000
  printf "3. ratio this / old main: %.3f\n", n/o
}'
