#!/usr/bin/env bash
# Sets up this machine (Debian) and opens the bundled example's dev shell in agentenv.
#   scripts/example.sh                 an interactive shell in examples/hello
#   scripts/example.sh -- hello        one command there
# Installs nix-bin (with nix-setup-systemd, which makes the build users and /etc/nix/nix.conf),
# bash-static, busybox-static and git if missing, builds agentenv (and installs its manual page
# and bash completion), and copies the example to
# target/example/hello with the static binaries it is built from.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/lib.sh"

install_packages nix-bin nix-setup-systemd bash-static busybox-static git ca-certificates
command -v cargo >/dev/null || { echo "error: cargo is not installed; install Rust from https://rustup.rs" >&2; exit 1; }
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
install_docs "$repo/target/release/agentenv"   # `man agentenv`, and completion in bash

work="$repo/target/example"
prepare_example "$repo/examples/hello" "$work/hello"
NIX_CONFIG=$(offline_nix_config "$work")
export NIX_CONFIG
exec "$repo/target/release/agentenv" "$work/hello" "$@"
