#!/usr/bin/env bash
# Figures for persistent environments on the bundled example, measured in one run:
#  1. `agentenv exec ENV -- true` against `podman exec CTR true` on a busybox container
#     (ratio; goal <= 0.1)
#  2. stdout throughput through exec against `cat` through a plain pipe (ratio; goal >= 0.5)
#  3. the guest agent's resident memory (goal <= 4 MiB)
# Installs hyperfine, podman and runc if missing. Run as root.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh
install_packages hyperfine podman runc nix-bin bash-static busybox-static git

bench_example "$repo/target/bench-exec"

# A container with a comparable root: busybox and nothing else.
podman="${PODMAN[*]}"
busybox_image "$work" localhost/agentenv-bench-exec
$podman rm -f agentenv-bench-exec >/dev/null 2>&1 || true
$podman run -d --name agentenv-bench-exec --ulimit nofile=1024:20000 --ulimit nproc=1024:1024 \
  localhost/agentenv-bench-exec /bin/sleep 3600 >/dev/null
cleanup() {
  "$bin" down "$ex" >/dev/null 2>&1 || true
  $podman rm -f agentenv-bench-exec >/dev/null 2>&1 || true
}
trap cleanup EXIT

id=$("$bin" up "$ex" | tail -n 1)

echo "== 1: exec latency"
hyperfine -N --warmup 5 --runs 50 --export-csv "$work/exec.csv" \
  -n agentenv "$bin exec $id -- true" \
  -n podman "$podman exec agentenv-bench-exec true" >/dev/null 2>&1
a=$(median "$work/exec.csv" agentenv); p=$(median "$work/exec.csv" podman)
awk -v a="$a" -v p="$p" 'BEGIN {
  printf "agentenv exec ENV -- true   %8.2f ms (median)\n", a*1000
  printf "podman exec CTR true        %8.2f ms\n", p*1000
  printf "1. ratio agentenv / podman: %.3f  (goal <= 0.1)\n", a/p
}'

echo "== 2: stdout throughput (1 GiB; the same busybox dd writes it in both)"
gib="dd if=/dev/zero bs=1M count=1024 2>/dev/null"
hyperfine --warmup 1 --runs 5 --export-csv "$work/tp.csv" \
  -n exec "$bin exec $id -- $gib | cat > /dev/null" \
  -n framed "AGENTENV_EXEC_STREAM=framed $bin exec $id -- $gib | cat > /dev/null" \
  -n pipe "/bin/busybox $gib | cat > /dev/null" >/dev/null 2>&1
e=$(median "$work/tp.csv" exec); fr=$(median "$work/tp.csv" framed); q=$(median "$work/tp.csv" pipe)
awk -v e="$e" -v f="$fr" -v q="$q" 'BEGIN {
  printf "through exec (local fast path): %6.0f MiB/s\n", 1024/e
  printf "through exec (framed stream):   %6.0f MiB/s\n", 1024/f
  printf "plain pipe:                     %6.0f MiB/s\n", 1024/q
  printf "2. ratio exec / pipe: %.2f (framed: %.2f)  (goal >= 0.5)\n", q/e, q/f
}'

echo "== 3: guest agent memory"
pid=$(awk -F': ' '/"pid"/ {gsub(/,/, "", $2); print $2}' "$AGENTENV_HOME/run/$id/state.json")
for _ in $(seq 20); do "$bin" exec "$id" -- true; done
rss=$(awk '/^VmRSS:/ {print $2}' /proc/$pid/status)
hwm=$(awk '/^VmHWM:/ {print $2}' /proc/$pid/status)
pss=$(awk '/^Pss:/ {print $2}' /proc/$pid/smaps_rollup)
awk -v r="$rss" -v h="$hwm" -v p="$pss" 'BEGIN {
  printf "3. guest agent: RSS %.2f MiB (peak %.2f MiB), PSS %.2f MiB  (goal <= 4 MiB)\n", r/1024, h/1024, p/1024
}'
