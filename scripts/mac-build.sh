#!/usr/bin/env bash
# Builds agentenv on a Mac (Apple silicon, macOS 13 or later) and signs it ad hoc with the
# Virtualization.framework entitlement. Re-signing without --entitlements drops it: sign with
# this script (or scripts/mac-sign-run.sh) after any other tool touched the binary.
# Usage: scripts/mac-build.sh [--debug]    (prints the signed binary's path)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
profile=release
[ "${1:-}" = "--debug" ] && profile=debug
if [ "$(uname -s)" != Darwin ]; then
  echo "error: scripts/mac-build.sh builds on macOS only (this is $(uname -s))" >&2
  echo "  hint: on Linux, scripts/test.sh type-checks the macOS code instead" >&2
  exit 2
fi
if [ "$profile" = release ]; then cargo build --release --locked >&2; else cargo build --locked >&2; fi
bin=$repo/target/$profile/agentenv
codesign --force --sign - --entitlements assets/agentenv.entitlements "$bin" >&2
codesign -d --entitlements - --xml "$bin" 2>/dev/null | grep -q com.apple.security.virtualization ||
  { echo "error: $bin was signed but lacks com.apple.security.virtualization" >&2; exit 1; }
echo "$bin"
