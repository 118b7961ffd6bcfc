#!/usr/bin/env bash
# The first checks to run on a Mac (Apple silicon, macOS 13 or later): builds and signs
# agentenv, checks the entitlement and doctor, boots the VM, runs the example's dev shell in it
# and a persistent environment, and prints each phase with its time. Stops at the first failure
# and says which phase failed; send the whole output with a report.
# Usage: scripts/mac-smoke.sh [ASSETS_DIR]
#   ASSETS_DIR: a VM asset set (kernel, initrd, root.img, store.img, VERSION), built on Linux by
#   `scripts/vm-assets.sh --arch aarch64 DIR` or by `nix build .#vm-assets`; installed with
#   `agentenv vm setup DIR`. Without it, the installed set is used.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
assets=${1:-}

now() { perl -MTime::HiRes=time -e 'printf "%.3f\n", time'; }
t_start=$(now)
log=$(mktemp -t agentenv-smoke)
failed=0

# phase NAME COMMAND...: runs it, prints "ok|FAIL  NAME  SECONDS", and its output on failure.
phase() {
  local name=$1 t0 t1 rc
  shift
  t0=$(now)
  "$@" >"$log" 2>&1
  rc=$?
  t1=$(now)
  printf '%-4s  %-40s %7.3f s\n' "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "$name" \
    "$(perl -e "print $t1 - $t0")"
  if [ $rc -ne 0 ]; then
    sed 's/^/      /' "$log" | tail -40
    failed=1
    echo "stopped at: $name (exit $rc)"
    exit 1
  fi
}

# A VM's own boot phases, as `-v` prints them.
show_boot_phases() { grep -E 'boot phase|VM created|kernel started|agent ready|dev env ready' "$log" | sed 's/^/      /'; }

echo "agentenv smoke test on $(sw_vers -productName 2>/dev/null) $(sw_vers -productVersion 2>/dev/null), $(uname -m)"
phase "Apple silicon" test "$(uname -m)" = arm64
phase "macOS 13 or later" sh -c '[ "$(sw_vers -productVersion | cut -d. -f1)" -ge 13 ]'
phase "build and sign (scripts/mac-build.sh)" scripts/mac-build.sh
bin=$repo/target/release/agentenv
phase "binary has com.apple.security.virtualization" \
  sh -c "codesign -d --entitlements - --xml '$bin' 2>/dev/null | grep -q com.apple.security.virtualization"
if [ -n "$assets" ]; then
  phase "install VM assets from $assets" "$bin" vm setup "$assets"
fi
phase "agentenv doctor" "$bin" doctor
sed 's/^/      /' "$log"

example=$repo/examples/hello
phase "agentenv EXAMPLE -- uname -m (cold, boots a VM)" \
  sh -c "'$bin' -v '$example' -- uname -m | tee /dev/stderr | grep -qx aarch64"
show_boot_phases
phase "agentenv EXAMPLE -- true (warm)" "$bin" -v "$example" -- true
show_boot_phases
phase "guest clock within 2 s of the host's" sh -c "
  inside=\$('$bin' '$example' -- date +%s) && outside=\$(date +%s) &&
  d=\$((outside - inside)); [ \${d#-} -le 2 ]"

env_name=mac-smoke-$$
# Machine processes show as their VM's name (agentenv-vm-...), as QEMU's do on Linux.
machines_before=$(pgrep -f '^agentenv-vm-' | wc -l)
phase "agentenv up" "$bin" up --name "$env_name" "$example"
phase "agentenv exec ENV -- true" "$bin" exec "$env_name" -- true
phase "10 x agentenv exec ENV -- true" sh -c "for i in 1 2 3 4 5 6 7 8 9 10; do '$bin' exec '$env_name' -- true || exit 1; done"
phase "a file written in the project shows on the host" sh -c "
  '$bin' exec '$env_name' --cwd '$example' -- sh -c 'echo smoke > .mac-smoke-probe' &&
  grep -qx smoke '$example/.mac-smoke-probe' && rm -f '$example/.mac-smoke-probe'"
phase "agentenv ps lists it" sh -c "'$bin' ps | grep -q '$env_name'"
phase "agentenv down" "$bin" down "$env_name" --rm
phase "no VM process left" sh -c "[ \$(pgrep -f '^agentenv-vm-' | wc -l) -le $machines_before ]"

printf 'all phases passed in %.1f s\n' "$(perl -e "print $(now) - $t_start")"
rm -f "$log"
exit $failed
