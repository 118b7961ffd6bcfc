#!/usr/bin/env bash
# Figures for `agentenv dispatch`, against one sshd host (a Docker container on a private
# network, scripts/test-hosts.sh), measured in one run:
#  1. first dispatch of a ~100 MB workstation (the toolbox's store closure): wall time against
#     `tar -cf - PATHS | ssh host tar -xf -` of the same paths (throughput ratio; goal >= 0.8)
#  2. second dispatch, unchanged: bytes sent (goal <= 1% of the workstation) and wall time
#     against a cold `ssh host true` (goal <= 1.5x)
#  3. `dispatch host -- true` with everything cached there, against `ssh host true` over a
#     fresh connection each time, as dispatch makes one (goal <= 1.5x)
# Needs root, docker, hyperfine (installed if missing). Uses the release static build.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh
install_packages hyperfine openssh-client nix-bin bash-static busybox-static git bc
scripts/test-hosts.sh image
AGENTENV_DISPATCH_BINARY=$(scripts/build-static.sh --print)
export AGENTENV_DISPATCH_BINARY

bench_example "$repo/target/bench-dispatch"
# ~100 MB of incompressible files in the toolbox: a directory the dev shell names.
mkdir -p "$ex/payload"
for i in $(seq 0 99); do head -c 1048576 /dev/urandom > "$ex/payload/blob$i"; done
sed -i 's|GREETING = "hello from the agentenv example";|GREETING = "hello from the agentenv example";\n        payload = builtins.path { path = ./payload; name = "bench-payload"; };|' "$ex/flake.nix"
git -C "$ex" add -A

net="agentenv-bench-dispatch-$$"
host="$net-host"
keys="$work/keys"
scripts/test-hosts.sh key "$keys"
docker network create "$net" >/dev/null
cleanup() { docker rm -f "$host" >/dev/null 2>&1 || true; docker network rm "$net" >/dev/null 2>&1 || true; }
trap cleanup EXIT
docker run -d --name "$host" --network "$net" --security-opt seccomp=unconfined \
  --security-opt systempaths=unconfined -e AUTHORIZED_KEY="$(cat "$keys/id_ed25519.pub")" \
  agentenv-test-sshd:1 >/dev/null
ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$host")
ssh_cmd="ssh -i $keys/id_ed25519 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
export AGENTENV_SSH="$ssh_cmd"
for _ in $(seq 50); do $ssh_cmd "dev@$ip" true 2>/dev/null && break; sleep 0.2; done

cd "$ex"
"$bin" dispatch "dev@$ip" -- true >/dev/null 2>&1 || true   # evaluate the toolbox locally
$ssh_cmd "dev@$ip" 'chmod -R u+w ~/.agentenv; rm -rf ~/.agentenv'
env_path=$(sed -n 's/.*"store_path": *"\([^"]*\)".*/\1/p' "$AGENTENV_HOME"/cache/devenv/entries/*/entry.json | head -1)
paths=$(nix path-info --recursive "$env_path")
size=$(du -scb $paths 2>/dev/null | tail -1 | cut -f1)

echo "== 1: first dispatch of $((size / 1048576)) MiB of store paths (3 rounds, each after sync: the host's disk is this machine's)"
firsts=() tars=()
for round in 1 2 3; do
  $ssh_cmd "dev@$ip" 'chmod -R u+w ~/.agentenv /tmp/tar-baseline 2>/dev/null; rm -rf ~/.agentenv /tmp/tar-baseline; mkdir -p /tmp/tar-baseline'
  sync; sleep 1
  t0=$(date +%s.%N)
  "$bin" -v dispatch "dev@$ip" -- true 2>"$work/first.log"
  t1=$(date +%s.%N)
  sync; sleep 1
  t2=$(date +%s.%N)
  tar -C / -cf - $(echo $paths | sed 's|/nix|nix|g') | $ssh_cmd "dev@$ip" 'tar -C /tmp/tar-baseline -xf -'
  t3=$(date +%s.%N)
  firsts+=("$(echo "$t1 - $t0" | bc -l)"); tars+=("$(echo "$t3 - $t2" | bc -l)")
done
$ssh_cmd "dev@$ip" 'chmod -R u+w /tmp/tar-baseline; rm -rf /tmp/tar-baseline'
mid() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
first=$(mid "${firsts[@]}"); tarx=$(mid "${tars[@]}")
grep -E "sent" "$work/first.log" | sed 's/^/  /'
printf '  dispatch %s s, tar | ssh tar %s s (each round)\n' "$(printf '%.2f ' "${firsts[@]}")" "$(printf '%.2f ' "${tars[@]}")"
printf '  medians: dispatch %.2f s, tar | ssh tar %.2f s: throughput ratio %.2f (goal >= 0.8)\n' "$first" "$tarx" "$(echo "$tarx / $first" | bc -l)"

echo "== 2: second dispatch, unchanged"
"$bin" -v dispatch "dev@$ip" -- true 2>"$work/second.log"
grep -E "sent|on the host already" "$work/second.log" | sed 's/^/  /'
sent=$(grep -o 'store paths ([^)]*)' "$work/second.log" || true)
hyperfine -N --warmup 2 --runs 15 --export-csv "$work/second.csv" \
  -n dispatch "$bin dispatch dev@$ip -- true" \
  -n "ssh true" "$ssh_cmd dev@$ip true" >/dev/null 2>&1
d=$(median "$work/second.csv" dispatch); s=$(median "$work/second.csv" "ssh true")
printf '  dispatch %.1f ms, cold ssh true %.1f ms: %.2fx (goal <= 1.5); %s of %d MiB sent\n' \
  "$(echo "$d*1000" | bc -l)" "$(echo "$s*1000" | bc -l)" "$(echo "$d / $s" | bc -l)" "$sent" "$((size / 1048576))"
echo "== 3: see 2: every dispatch here is one with everything cached on the host"

echo "== 4: a cut link noticed (docker network disconnect during \`dispatch host -- sleep 300\`)"
"$bin" dispatch "dev@$ip" -- sleep 300 >/dev/null 2>"$work/cut.log" &
pid=$!
# Cut once the session's command runs on the host.
for _ in $(seq 100); do
  $ssh_cmd "dev@$ip" 'pgrep -x sleep' >/dev/null 2>&1 && break
  sleep 0.1
done
t0=$(date +%s.%N)
docker network disconnect "$net" "$host"
wait "$pid" || true
t1=$(date +%s.%N)
printf '  agentenv ended %.1f s after the cut, saying: %s\n' "$(echo "$t1 - $t0" | bc -l)" \
  "$(grep -m1 'error:' "$work/cut.log")"
