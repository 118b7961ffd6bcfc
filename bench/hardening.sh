#!/usr/bin/env bash
# What the sandbox's hardening costs (user namespace for root, no_new_privs, the syscall
# filter, nosuid/nodev binds, the /proc masks), measured in one hyperfine run against a
# binary built from BASE (default: where this branch left main):
#  1. warm `agentenv EX -- true`, BASE and this tree (goal: under 1 ms more)
#  2. warm `agentenv exec ID -- true` into a running environment, BASE and this tree
#  3. the syscall filter: what it denies, and its size in BPF instructions
# Usage: bench/hardening.sh [BASE]. Run as root (the case the hardening changed most).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh
install_packages hyperfine nix-bin bash-static busybox-static git

base=${1:-$(git merge-base HEAD main)}
bench_example "$repo/target/bench-hardening"
new=$bin

# The base's binary, built from its own tree into a target directory kept between runs.
old_src="$work/base-src"
mkdir -p "$old_src"
git archive "$base" | tar -x -C "$old_src"
CARGO_TARGET_DIR="$repo/target/bench-base" cargo build --release --quiet --manifest-path "$old_src/Cargo.toml"
old="$repo/target/bench-base/release/agentenv"

# Each binary keeps its own state: their store views differ (a user namespace's overlay
# keeps its metadata in user xattrs).
for b in old new; do
  AGENTENV_HOME="$work/state-$b" "${!b}" "$ex" -- true
done
echo "== 1, 2: warm start and exec, base $(git rev-parse --short "$base") against this tree"
hyperfine -N --warmup 10 --runs 200 --export-csv "$work/hardening.csv" \
  -n "run base" "env AGENTENV_HOME=$work/state-old $old $ex -- true" \
  -n "run now" "env AGENTENV_HOME=$work/state-new $new $ex -- true" >/dev/null
# One persistent environment at a time: both binaries' environments of the one project would
# contend for its /nix layer.
for v in base now; do
  case $v in base) b=$old s=old ;; now) b=$new s=new ;; esac
  id=$(AGENTENV_HOME="$work/state-$s" "$b" up "$ex" | tail -1)
  # Down even if the measurement fails: a running environment would outlive the script.
  trap 'AGENTENV_HOME="$work/state-$s" "$b" down "$id" >/dev/null 2>&1' EXIT
  if AGENTENV_HOME="$work/state-$s" "$b" exec "$id" -- true 2>"$work/exec-$v.err"; then
    hyperfine -N --warmup 10 --runs 200 --export-csv "$work/exec-$v.csv" \
      -n "exec $v" "env AGENTENV_HOME=$work/state-$s $b exec $id -- true" >/dev/null
    tail -n +2 "$work/exec-$v.csv" >> "$work/hardening.csv"
    AGENTENV_HOME="$work/state-$s" "$b" down "$id"
  else
    # Some bases cannot: say so rather than compare against nothing.
    echo "   exec $v: its environment did not answer after up ($(head -1 "$work/exec-$v.err")); no exec figure for it"
    pkill -f "$b up $ex" || true
  fi
  trap - EXIT
done
# hyperfine's CSV: command,mean,stddev,median,user,system,min,max. On a shared machine the
# median drifts with the load; the minimum and the CPU time (user + system) drift less.
col() { awk -F, -v n="$2" -v c="$3" 'NR>1 && $1==n {print $c}' "$1"; }
for row in "run" "exec"; do
  grep -q "^$row base," "$work/hardening.csv" && grep -q "^$row now," "$work/hardening.csv" || {
    [ "$row" = exec ] && grep "^exec now," "$work/hardening.csv" |
      awk -F, '{ printf "2. agentenv exec ID -- true  now: median %6.2f ms, cpu %5.2f ms (no base to compare)\n", $4*1000, ($5+$6)*1000 }'
    continue
  }
  for v in base now; do
    csv="$work/hardening.csv"; name="$row $v"
    printf '%s %s %s %s\n' "$(col "$csv" "$name" 4)" "$(col "$csv" "$name" 7)" \
      "$(col "$csv" "$name" 5)" "$(col "$csv" "$name" 6)"
  done | awk -v what="$row" 'NR==1 {bm=$1; bn=$2; bc=$3+$4} NR==2 {nm=$1; nn=$2; nc=$3+$4} END {
    label = (what == "run") ? "1. agentenv EX -- true     " : "2. agentenv exec ID -- true"
    printf "%s median base %6.2f ms now %6.2f ms (%+.2f); min %6.2f / %6.2f ms (%+.2f); cpu %5.2f / %5.2f ms (%+.2f)\n",
      label, bm*1000, nm*1000, (nm-bm)*1000, bn*1000, nn*1000, (nn-bn)*1000, bc*1000, nc*1000, (nc-bc)*1000
  }'
done
echo "   (goal: under 1 ms more)"

echo "== 3: the syscall filter"
cargo test --quiet --lib guest::seccomp::tests::print_default_filter -- --nocapture 2>/dev/null |
  grep -v -e '^running' -e '^test ' -e '^$' -e 'test result' -e '^\.*$' | sed 's/^/   /'
