#!/usr/bin/env bash
# Builds a fully static agentenv for x86_64 Linux hosts (no C library needed there), the binary
# `agentenv dispatch` sends, and installs it where dispatch looks:
#   scripts/build-static.sh [x86_64] [--print] [--test]
# --print prints the built binary's path instead of installing it; --test builds the quicker
# profile the test suite uses instead of the release one.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
arch=x86_64 print= profile=release
for a in "$@"; do
  case "$a" in
    x86_64) arch=x86_64 ;;
    --print) print=1 ;;
    --test) profile=static-test ;;
    *) echo "usage: $0 [x86_64] [--print] [--test]" >&2; exit 2 ;;
  esac
done
[ "$(uname -m)" = "$arch" ] || { echo "error: this script builds for the machine's own architecture ($(uname -m))" >&2; exit 1; }
target=$arch-unknown-linux-gnu
RUSTFLAGS='-C target-feature=+crt-static' cargo build --profile "$profile" --quiet \
  --manifest-path "$repo/Cargo.toml" --target "$target" --target-dir "$repo/target/static"
bin=$repo/target/static/$target/$profile/agentenv
if [ -n "$print" ]; then echo "$bin"; exit 0; fi
if [ -n "${AGENTENV_HOME:-}" ]; then data=$AGENTENV_HOME/data; else data=${XDG_DATA_HOME:-$HOME/.local/share}/agentenv; fi
mkdir -p "$data/remote"
install -m 755 "$bin" "$data/remote/agentenv-$arch-linux-static"
echo "installed $data/remote/agentenv-$arch-linux-static" >&2
