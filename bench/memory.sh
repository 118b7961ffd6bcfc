#!/usr/bin/env bash
# Figures for agents' memory, measured in one run:
#  1. landing a session as it ends, with 1, 100 and 1,000 changed files in a memory of 10,000
#     files (goal <= 20 ms, 50 ms, 300 ms): benches/memory_commit.rs, in-process, median of 10
#  2. warm start with `--agent` against the same without (goal <= 1.2x), hyperfine: an agent
#     without a profile against --no-profile, and one with the example profile against
#     --profile, each agent with a memory of 50 files
# Needs hyperfine (installed if missing). Run as root or where user namespaces are allowed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh
install_packages hyperfine nix-bin bash-static busybox-static git

bench_example "$repo/target/bench-memory"
"$bin" "$ex" -- true                      # cold: evaluate and cache

echo "== 1: landing a session"
cargo bench --quiet --bench memory_commit 2>/dev/null | sed 's/^/   /'

echo "== 2: warm start with --agent"
cp -r "$repo/examples/profile" "$work/profile"
# Its `tools` need nixpkgs, which an offline machine cannot fetch.
sed -i '/^tools = /d' "$work/profile/agentenv.toml"
"$bin" agent new bare 2>/dev/null
"$bin" agent new prof --profile "$work/profile" 2>/dev/null
notes='mkdir -p ~/.agent-memory/notes; for i in $(seq 1 48); do echo "note $i" > ~/.agent-memory/notes/$i.md; done; echo "use make" >> ~/.claude/CLAUDE.md; mkdir -p ~/.claude/skills/s; echo s > ~/.claude/skills/s/SKILL.md'
"$bin" --agent bare "$ex" -- sh -c "$notes"
"$bin" --agent prof "$ex" -- sh -c "$notes"
"$bin" --profile "$work/profile" "$ex" -- true
hyperfine -N --warmup 5 --runs 100 --export-csv "$work/agent.csv" \
  -n agent "$bin --agent bare $ex -- true" \
  -n "no agent" "$bin --no-profile $ex -- true" \
  -n "agent+profile" "$bin --agent prof $ex -- true" \
  -n profile "$bin --profile $work/profile $ex -- true" >/dev/null 2>&1
a=$(median "$work/agent.csv" agent); n=$(median "$work/agent.csv" "no agent")
ap=$(median "$work/agent.csv" "agent+profile"); p=$(median "$work/agent.csv" profile)
awk -v a="$a" -v n="$n" -v ap="$ap" -v p="$p" 'BEGIN {
  printf "--agent (no profile) %6.2f ms, --no-profile %6.2f ms: ratio %.2f  (goal <= 1.2)\n", a*1000, n*1000, a/n
  printf "--agent (profile)    %6.2f ms, --profile    %6.2f ms: ratio %.2f  (goal <= 1.2)\n", ap*1000, p*1000, ap/p
}'
