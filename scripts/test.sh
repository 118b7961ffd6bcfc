#!/usr/bin/env bash
# Runs the whole test suite on a Debian machine, installing what it needs first:
# formatting and lints, unit tests, and integration tests against the real nix, namespaces
# and overlayfs. Run as root (CI does): the rootless tests then run as the unprivileged user
# `agentenv-test`, with nix reached through nix-daemon, both set up here.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh

install_packages nix-bin nix-setup-systemd bash-static busybox-static git ca-certificates util-linux procps python3
# attach: real containers, rootful and rootless
install_packages podman runc uidmap slirp4netns tar
# macOS, type-checked: Debian's toolchain builds std for a target it has no binaries for
install_packages rustc-web cargo-web rust-web-src rust-web-clippy

if [ "$(id -u)" -eq 0 ]; then
  id agentenv-test >/dev/null 2>&1 ||
    useradd --no-create-home --shell /usr/sbin/nologin --groups nix-users agentenv-test
  socket=/nix/var/nix/daemon-socket/socket
  answers() { python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$socket" 2>/dev/null; }
  if ! answers; then
    # A socket left by a daemon that is gone refuses connections: start afresh.
    rm -f "$socket"
    setsid nix-daemon >/tmp/agentenv-test-nix-daemon.log 2>&1 < /dev/null &
    for _ in $(seq 100); do answers && break; sleep 0.1; done
    answers || { echo "nix-daemon did not start:" >&2; cat /tmp/agentenv-test-nix-daemon.log >&2; exit 1; }
  fi
else
  echo "note: not root; the tests run rootless as $(id -un), and the root-only ones are skipped" >&2
fi

# the VM backend: QEMU, its vhost-user helpers, and the assets (aarch64 guest, cached; the
# guest's agentenv is rebuilt when the source changed)
install_packages qemu-system-arm qemu-user-static erofs-utils e2fsprogs cpio kmod file dpkg \
  libseccomp-dev libcap-ng-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross rustc-web cargo-web rust-web-src
command -v virtiofsd >/dev/null || [ -x "$HOME/.cargo/bin/virtiofsd" ] || cargo install --locked --quiet virtiofsd
command -v vhost-device-vsock >/dev/null || [ -x "$HOME/.cargo/bin/vhost-device-vsock" ] ||
  cargo install --quiet vhost-device-vsock
scripts/vm-assets.sh --arch aarch64 target/vm-assets

mkdir -p target
rm -f target/test-skips.log
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
# The whole crate for aarch64-apple-darwin, with clippy: Debian's cargo and rustc (rustup's
# have no rust-src here), cargo-clippy called directly (cargo would pick rustup's proxy from
# ~/.cargo/bin first), its own target directory.
PATH=/usr/bin:/bin CARGO=/usr/bin/cargo RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
  CARGO_TARGET_DIR=target/macos /usr/bin/cargo-clippy clippy --quiet \
  -Zbuild-std=std,panic_abort --target aarch64-apple-darwin --all-targets -- -D warnings
cargo test --all-targets --quiet

if [ -s target/test-skips.log ]; then
  echo
  echo "SKIPPED tests (this machine lacks what they need):"
  sed 's/^/  /' target/test-skips.log
fi
