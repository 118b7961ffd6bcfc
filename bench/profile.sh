#!/usr/bin/env bash
# Activating and deactivating a generated profile of 1,000 files (issue 3 goal: <= 50 ms each),
# measured with hyperfine on the temporary directory's file system and on tmpfs, beside
# `cp -rs` making the same 1,000 symlinks (the floor any activation has on that file system).
# A third run uses a fresh ext4 (with a journal, as most homes have) on a loop device, when
# run as root: the machine's own disk may be shared and noisy, or (as on the project's VMs) an
# ext4 without a journal, whose inode allocator slows down after many recent deletions.
# Usage: bench/profile.sh [FILES]   (TMPDIR picks the disk file system; default /tmp)
set -euo pipefail

files=${1:-1000}
repo=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
export AGENTENV_BIN=$repo/target/release/agentenv

scratch=()
trap 'rm -rf "${scratch[@]}"' EXIT

# bench_on DIR LABEL: the whole suite with the profile, home and state below DIR.
bench_on() {
  local work label=$2
  work=$(mktemp -d -p "$1" agentenv-bench.XXXXXX)
  scratch+=("$work")
  export HOME=$work/home AGENTENV_HOME=$work/agentenv WORK=$work
  mkdir -p "$HOME" "$AGENTENV_HOME" "$work/old"
  local profile=$work/profile
  for ((i = 0; i < files; i++)); do
    local dir=$profile/home/.config/app$((i / 20))
    ((i % 40 < 20)) || dir=$dir/sub
    mkdir -p "$dir"
    echo "setting $i" >"$dir/file$i.conf"
  done
  # A fresh, empty home and state for each run; the old ones are moved away, not deleted
  # (deleting thousands of inodes just before slows the next creations on some file systems).
  cat >"$work/fresh" <<'SH'
#!/usr/bin/env bash
set -e
old=$WORK/old/$(date +%s%N)
mkdir "$old" && mv "$HOME" "$AGENTENV_HOME" "$old/" && mkdir -p "$HOME" "$AGENTENV_HOME"
[ -z "${1:-}" ] || "$AGENTENV_BIN" profile activate "$1"
SH
  chmod +x "$work/fresh"
  local bin=$AGENTENV_BIN fresh=$work/fresh
  echo "== $label ($(df --output=fstype "$work" | tail -1)): $(find "$profile/home" -type f | wc -l) files"
  hyperfine --shell=none --warmup 3 --runs 30 ${HYPERFINE_EXTRA:---style basic} --export-json "$work/r.json" \
    --prepare "$fresh" -n "activate into an empty home" "$bin profile activate $profile" \
    --prepare "$fresh" -n "cp -rs, the same symlinks (floor)" "cp -rs $profile/home/. $HOME/" \
    --prepare "$fresh $profile" -n "deactivate" "$bin profile deactivate" \
    --prepare "$bin profile deactivate" -n "activate right after a deactivate" "$bin profile activate $profile" \
    >"$work/hyperfine.log" 2>&1 || { cat "$work/hyperfine.log"; return 1; }
  python3 - "$work/r.json" "$label" >>"$results" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"{sys.argv[2]:<8} {r['command']:<36} {r['mean']*1000:7.1f} ms ± {r['stddev']*1000:5.1f}  median {r['median']*1000:6.1f}")
PY
}

results=$(mktemp)
scratch+=("$results")
bench_on "${TMPDIR:-/tmp}" disk
[ -d /dev/shm ] && bench_on /dev/shm tmpfs
if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null; then
  img=$(mktemp) mnt=$(mktemp -d)
  truncate -s 4G "$img" && mkfs.ext4 -q -F -N 1000000 "$img"
  if mount -o loop "$img" "$mnt"; then
    bench_on "$mnt" ext4-loop
    rm -rf "$mnt"/agentenv-bench.*
    umount "$mnt"
  fi
  rm -rf "$img" "$mnt"
fi
echo
echo "goal: activate <= 50 ms, deactivate <= 50 ms ($files files)"
cat "$results"
