#!/usr/bin/env bash
# Figures for the VM backend (an aarch64 guest; TCG on a machine without KVM):
#  1. boot to guest agent ready: median of 10 boots, and how many of 10 came up (goal 10/10, <= 2.5 s)
#  2. store clone of a 1 GiB image: reflink on a loop-mounted xfs against the sparse-copy fallback
#     (goal: reflink <= 5 ms, flat in the image's size)
#  3. `agentenv exec ENV -- true` through vsock against the same `true` timed inside the guest
#  4. memory (PSS) of the host-side processes per VM: QEMU, virtiofsd, vhost-device-vsock, agentenv
# AGENTENV_BIN=PATH measures that agentenv instead of a fresh release build.
# Needs root, the VM tools and assets (scripts/vm-assets.sh; built into target/vm-assets if missing).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh
install_packages hyperfine xfsprogs nix-bin bash-static busybox-static git dpkg
[ "$(id -u)" -eq 0 ] || { echo "error: the VM figures need root; run: sudo $0" >&2; exit 1; }
assets=${AGENTENV_VM_ASSETS:-$repo/target/vm-assets}
[ -f "$assets/VERSION" ] || scripts/vm-assets.sh --arch aarch64 "$assets"

work=$repo/target/bench-vm
rm -rf "$work"
# AGENTENV_BIN: measure that build instead of building one.
bin=${AGENTENV_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=$repo/target/release/agentenv
fi
mkdir -p "$work"
export AGENTENV_HOME=$work/state
unset NIX_CONFIG
"$bin" vm setup "$assets"

# The example flake with arm64 static tools (as the tests make it).
ex=$work/hello
mkdir -p "$ex/pkgs/bash/bin" "$ex/pkgs/busybox/bin" "$work/debs"
cp -r examples/hello/. "$ex/"
rm -f "$ex/.gitignore"   # the static tools must be tracked for nix to see them
for p in bash-static busybox-static; do dpkg-deb -x "$(ls "$assets"/debs/${p}_*_arm64.deb | head -1)" "$work/debs"; done
cp "$work/debs/bin/bash-static" "$ex/pkgs/bash/bin/bash"
cp "$work/debs/bin/busybox" "$ex/pkgs/busybox/bin/busybox"
git -C "$ex" init -q && git -C "$ex" add -A
cd "$ex"

# VM_BENCH_PARTS="3 4" measures only those figures.
parts=" ${VM_BENCH_PARTS:-1 2 3 4} "
part() { [[ $parts == *" $1 "* ]]; }
if part 1; then
echo "== 1: boot to agent ready (10 boots of agentenv --backend vm . -- true)"
"$bin" --backend vm --arch aarch64 . -- true 2>/dev/null || true   # evaluate once, in the guest
ok=0
: > "$work/boots"
for i in $(seq 10); do
  if "$bin" -v --backend vm --arch aarch64 . -- true 2> "$work/boot.log"; then
    ok=$((ok + 1))
    sed -n 's/.* is up: boot=\([0-9]*\) ms.*/\1/p' "$work/boot.log" >> "$work/boots"
  else
    echo "  boot $i failed:"; tail -5 "$work/boot.log" | sed 's/^/    /'
  fi
done
median=$(sort -n "$work/boots" | awk '{a[NR]=$1} END {if (NR) print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
echo "  came up: $ok of 10; boot to agent ready, median: ${median:-n/a} ms (all: $(sort -n "$work/boots" | tr '\n' ' '))"

fi
if part 2; then
echo "== 2: store clone of a 1 GiB image (256 MiB of data, the rest holes)"
img=$work/golden.img
truncate -s 1G "$img"
dd if=/dev/urandom of="$img" bs=1M count=256 conv=notrunc status=none
xfs=$work/xfs.img
mnt=$work/xfs
truncate -s 4G "$xfs"
mkfs.xfs -q -m reflink=1 "$xfs"
mkdir -p "$mnt"
mount -o loop "$xfs" "$mnt"
trap 'umount "$mnt" 2>/dev/null || true' EXIT
cp --sparse=always "$img" "$mnt/golden.img"
"$bin" vm clone "$mnt/golden.img" "$mnt/probe.img" && rm -f "$mnt/probe.img"
hyperfine -N --warmup 3 --runs 20 --export-csv "$work/clone.csv" \
  --prepare "rm -f $mnt/clone.img $work/clone.img" \
  -n reflink "$bin vm clone $mnt/golden.img $mnt/clone.img" \
  -n sparse "$bin vm clone $img $work/clone.img"
echo "  reflink: $(median "$work/clone.csv" reflink) s; sparse copy: $(median "$work/clone.csv" sparse) s"
umount "$mnt"
trap - EXIT

fi
if part 3; then
echo "== 3: exec -- true through vsock, against true timed inside the guest"
id=$("$bin" up --backend vm --arch aarch64 . | tail -1)
trap '"$bin" down "$id" >/dev/null 2>&1 || true' EXIT
hyperfine -N --warmup 3 --runs 30 --export-csv "$work/exec.csv" -n exec "$bin exec $id -- true"
# 100 runs of the guest's `true`, timed by the guest's bash (seconds for all 100).
inside=$("$bin" exec "$id" -- bash -c 'TIMEFORMAT=%3R; { time for i in $(seq 100); do /usr/bin/true; done; } 2>&1')
echo "  exec -- true: $(median "$work/exec.csv" exec) s; the same true inside the guest: ${inside} s for 100 runs"

fi
if part 4; then
echo "== 4: host-side memory per VM (PSS)"
sup=$(pgrep -f "agentenv vm supervise.*$(basename "$ex")" | head -1)
total=0
for pid in $sup $(pgrep -P "$sup"); do
  pss=$(awk '/^Pss:/ {print $2}' /proc/"$pid"/smaps_rollup)
  printf '  %-20s %8s KiB\n' "$(cat /proc/"$pid"/comm)" "$pss"
  total=$((total + pss))
done
echo "  total: $((total / 1024)) MiB"
"$bin" down "$id"
trap - EXIT

fi