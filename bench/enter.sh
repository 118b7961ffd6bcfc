#!/usr/bin/env bash
# Figures for `agentenv PATH -- CMD` on the bundled example, measured in one run:
#  1. warm `agentenv EX -- true` against `nix develop EX --command true` (ratio; goal <= 0.25)
#  2. the sandbox's own cost: warm `agentenv EX -- true` minus `true` run directly (goal <= 10 ms)
#  3. store view creation over host stores of 100 and 10,000 paths (flat; goal <= 2 ms each)
#  4. peak memory of agentenv's own processes during a run (goal <= 5 MiB over the command's)
#  5. warm start with the example profile against the same without one (goal <= 1.2x)
# Needs hyperfine (installed if missing). Run as root or where user namespaces are allowed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh
install_packages hyperfine nix-bin bash-static busybox-static git

bench_example "$repo/target/bench"
"$bin" "$ex" -- true                      # cold: evaluate and cache
nix develop "$ex" --command true 2>/dev/null  # and nix's own eval cache


echo "== 1, 2: warm start"
# Part of the sandbox's cost is nix's own script, which nix develop runs too: measured alone.
(cd "$work" && nix print-dev-env "$ex" 2>/dev/null && echo "exec true") > "$work/nix-script.sh"
hyperfine -N --warmup 5 --runs 100 --export-csv "$work/enter.csv" \
  -n agentenv "$bin $ex -- true" \
  -n "nix develop" "nix develop $ex --command true" \
  -n "nix script" "/bin/bash-static $work/nix-script.sh" \
  -n true "true" >/dev/null 2>&1
a=$(median "$work/enter.csv" agentenv)
n=$(median "$work/enter.csv" "nix develop")
t=$(median "$work/enter.csv" true)
sc=$(median "$work/enter.csv" "nix script")
awk -v a="$a" -v n="$n" -v t="$t" -v sc="$sc" 'BEGIN {
  printf "agentenv EX -- true          %8.2f ms (median)\n", a*1000
  printf "nix develop EX --command true %7.2f ms\n", n*1000
  printf "true                         %8.2f ms\n", t*1000
  printf "1. ratio agentenv / nix develop: %.3f  (goal <= 0.25)\n", a/n
  printf "2. sandbox cost, agentenv - true: %.2f ms  (goal <= 10 ms)\n", (a-t)*1000
  printf "   of which bash running nix'"'"'s script alone: %.2f ms\n", sc*1000
}'

echo "== 5: warm start with a profile"
cp -r "$repo/examples/profile" "$work/profile"
# Its `tools` need nixpkgs, which an offline machine cannot fetch.
sed -i '/^tools = /d' "$work/profile/agentenv.toml"
"$bin" --profile "$work/profile" "$ex" -- true
hyperfine -N --warmup 5 --runs 100 --export-csv "$work/profile.csv" \
  -n with "$bin --profile $work/profile $ex -- true" \
  -n without "$bin --no-profile $ex -- true" >/dev/null 2>&1
w=$(median "$work/profile.csv" with); wo=$(median "$work/profile.csv" without)
awk -v w="$w" -v wo="$wo" 'BEGIN {
  printf "with the example profile %6.2f ms, without %6.2f ms\n", w*1000, wo*1000
  printf "5. ratio with / without: %.2f  (goal <= 1.2)\n", w/wo
}'
"$bin" --no-profile "$ex" -- true

echo "== 3: store view creation"
cargo bench --quiet --bench store_view 2>/dev/null | sed 's/^/   /'

echo "== 4: peak memory"
"$bin" "$ex" -- sleep 1 &
top=$!
sleep 0.5
init=$(cat /proc/$top/task/$top/children | awk '{print $1}')
cmd=$(cat /proc/$init/task/$init/children | awk '{print $1}')
kb() { awk -v k="$2:" '$1==k {print $2}' "$1"; }
hwm_top=$(kb /proc/$top/status VmHWM); hwm_init=$(kb /proc/$init/status VmHWM)
pss_top=$(kb /proc/$top/smaps_rollup Pss); pss_init=$(kb /proc/$init/smaps_rollup Pss)
anon_top=$(kb /proc/$top/smaps_rollup Pss_Anon); anon_init=$(kb /proc/$init/smaps_rollup Pss_Anon)
hwm_cmd=$(kb /proc/$cmd/status VmHWM)
wait $top
# RSS counts the pages of libc and of the binary that these processes share with each other
# and with everything else; PSS divides shared pages among their users, so it is the memory
# agentenv really adds. Anonymous memory is what no one else could share.
awk -v a="$hwm_top" -v b="$hwm_init" -v pa="$pss_top" -v pb="$pss_init" -v c="$hwm_cmd" \
    -v aa="$anon_top" -v ab="$anon_init" 'BEGIN {
  printf "agentenv (host side): peak RSS %6.2f MiB, PSS %5.2f MiB\n", a/1024, pa/1024
  printf "agentenv init (PID 1): peak RSS %5.2f MiB, PSS %5.2f MiB\n", b/1024, pb/1024
  printf "the command (sleep):   peak RSS %5.2f MiB\n", c/1024
  printf "4. agentenv'"'"'s own processes: %.2f MiB PSS, %.2f MiB anonymous (goal <= 5 MiB); peak RSS summed %.2f MiB\n", (pa+pb)/1024, (aa+ab)/1024, (a+b)/1024
}'
