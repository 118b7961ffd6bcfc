#!/usr/bin/env bash
# Runs the whole test suite on a Debian machine, installing what it needs first:
# formatting and lints, unit tests, and integration tests against the real nix, namespaces
# and overlayfs. Run as root (CI does): the rootless tests then run as the unprivileged user
# `agentenv-test`, with nix reached through nix-daemon, both set up here.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh

install_packages nix-bin bash-static busybox-static git ca-certificates util-linux procps python3
# attach: real containers, rootful and rootless
install_packages podman runc uidmap slirp4netns tar

if [ "$(id -u)" -eq 0 ]; then
  id agentenv-test >/dev/null 2>&1 ||
    useradd --no-create-home --shell /usr/sbin/nologin --groups nix-users agentenv-test
  if [ ! -S /nix/var/nix/daemon-socket/socket ]; then
    setsid nix-daemon >/dev/null 2>&1 < /dev/null &
    for _ in $(seq 100); do [ -S /nix/var/nix/daemon-socket/socket ] && break; sleep 0.1; done
  fi
else
  echo "note: not root; the tests run rootless as $(id -un), and the root-only ones are skipped" >&2
fi

mkdir -p target
rm -f target/test-skips.log
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets --quiet

if [ -s target/test-skips.log ]; then
  echo
  echo "SKIPPED tests (this machine lacks what they need):"
  sed 's/^/  /' target/test-skips.log
fi
