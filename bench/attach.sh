#!/usr/bin/env bash
# Figures for `agentenv attach`, measured in one run against one podman container:
#  1. warm `agentenv attach ID -- true` against `podman exec ID true` (ratio; goal <= 0.2)
#     and against `nsenter -t PID -a true`, which joins the namespaces but brings no tools
#  2. 100 attach/detach cycles: the target's mounts, files and its processes' fds, the host's
#     mounts, processes in the target and agentenv's state, counted before and after (goal: equal)
# With BASELINE=/path/to/agentenv (another build, e.g. of main), figure 1 also times it in the
# same run and prints the ratio attach / baseline.
# Needs root, podman and runc, hyperfine (all installed if missing).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh
install_packages hyperfine podman runc nix-bin bash-static busybox-static git tar util-linux
[ "$(id -u)" -eq 0 ] || { echo "error: attaching needs root; run: sudo $0" >&2; exit 1; }

bench_example "$repo/target/bench-attach"

# A read-only busybox container, from an image built here (no registry is reachable).
podman=("${PODMAN[@]}")
busybox_image "$work" localhost/agentenv-bench-attach sh sleep true ls
name="agentenv-bench-attach-$$"
id=$("${podman[@]}" run -d --name "$name" --read-only --ulimit nofile=1024:20000 \
  --ulimit nproc=1024:1024 localhost/agentenv-bench-attach /bin/sleep 100000)
trap '"${podman[@]}" rm -f -t 0 "$id" >/dev/null 2>&1; "${podman[@]}" rmi localhost/agentenv-bench-attach >/dev/null 2>&1 || true' EXIT
pid=$("${podman[@]}" inspect -f '{{.State.Pid}}' "$id")
"$bin" attach --flake "$ex" "$id" -- true   # cold: evaluate the toolbox and cache it
baseline=()
if [ -n "${BASELINE:-}" ]; then
  "$BASELINE" attach --flake "$ex" "$id" -- true
  baseline=(-n baseline "$BASELINE attach --flake $ex $id -- true")
fi


echo "== 1: attach against podman exec and nsenter (container $name, PID $pid)"
hyperfine -N --warmup 5 --runs 60 --export-csv "$work/attach.csv" \
  -n attach "$bin attach --flake $ex $id -- true" \
  -n "podman exec" "${podman[*]} exec $id true" \
  -n nsenter "nsenter -t $pid -a true" "${baseline[@]}" >/dev/null 2>&1
a=$(median "$work/attach.csv" attach)
p=$(median "$work/attach.csv" "podman exec")
n=$(median "$work/attach.csv" nsenter)
if [ -n "${BASELINE:-}" ]; then
  awk -v a="$a" -v b="$(median "$work/attach.csv" baseline)" 'BEGIN {
    printf "baseline attach ID -- true   %8.2f ms (median)\n", b*1000
    printf "   ratio attach / baseline:    %.3f  (difference %+.2f ms)\n", a/b, (a-b)*1000
  }'
fi
awk -v a="$a" -v p="$p" -v n="$n" 'BEGIN {
  printf "agentenv attach ID -- true   %8.2f ms (median)\n", a*1000
  printf "podman exec ID true          %8.2f ms\n", p*1000
  printf "nsenter -t PID -a true       %8.2f ms\n", n*1000
  printf "1. ratio attach / podman exec: %.3f  (goal <= 0.2)\n", a/p
  printf "   ratio attach / nsenter:     %.2f  (nsenter brings no tools)\n", a/n
}'

echo "== 2: 100 attach/detach cycles"
target_pids() {  # the processes in the container's PID namespace
  local ns; ns=$(readlink "/proc/$pid/ns/pid")
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$ns" ] && echo "${p#/proc/}"
  done
}
count() {
  local fds=0 procs=0
  for p in $(target_pids); do
    procs=$((procs + 1)); fds=$((fds + $(ls "/proc/$p/fd" 2>/dev/null | wc -l)))
  done
  echo "target mounts:      $(wc -l < "/proc/$pid/mountinfo")"
  echo "target files:       $(find "/proc/$pid/root/" -xdev 2>/dev/null | wc -l)"
  echo "podman diff lines:  $("${podman[@]}" diff "$id" | wc -l)"
  echo "target processes:   $procs"
  echo "their open fds:     $fds"
  echo "host mounts:        $(wc -l < /proc/self/mountinfo)"
  echo "agentenv state:     $(find "$AGENTENV_HOME" | wc -l) paths"
}
count > "$work/before.txt"
start=$(date +%s.%N)
for i in $(seq 100); do
  if [ $((i % 2)) -eq 0 ]; then
    "$bin" attach --flake "$ex" "$id" -- true
  else
    "$bin" attach --flake "$ex" "$id" -- sh -c 'ls / /nix/store >/dev/null; echo x > /tmp/cycle; rm /tmp/cycle'
  fi
done
end=$(date +%s.%N)
count > "$work/after.txt"
paste -d'|' "$work/before.txt" "$work/after.txt" | awk -F'|' '{
  split($2, after, ":"); gsub(/^ +/, "", after[2])
  printf "   %s  ->  %s%s\n", $1, after[2], ($1 == $2 ? "" : "   CHANGED")
}'
awk -v s="$start" -v e="$end" 'BEGIN { printf "   100 cycles in %.2f s\n", e - s }'
if cmp -s "$work/before.txt" "$work/after.txt" && "${podman[@]}" container exists "$id" &&
   [ "$("${podman[@]}" inspect -f '{{.State.Running}}' "$id")" = true ]; then
  echo "2. nothing left: every count is the same, and the container still runs"
else
  echo "2. SOMETHING WAS LEFT (see CHANGED above)"; exit 1
fi
