#!/usr/bin/env bash
# Cargo's runner on macOS (.cargo/config.toml): signs the binary ad hoc with agentenv's
# entitlements (Virtualization.framework needs com.apple.security.virtualization), then runs it.
# Usage: scripts/mac-sign-run.sh BINARY [ARGS...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$1
shift
codesign --force --sign - --entitlements "$repo/assets/agentenv.entitlements" "$bin" 2>/dev/null ||
  { echo "error: cannot sign $bin" >&2; echo "  hint: codesign comes with the Xcode command line tools: xcode-select --install" >&2; exit 1; }
exec "$bin" "$@"
