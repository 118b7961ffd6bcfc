#!/usr/bin/env bash
# Remote hosts for the dispatch tests: Docker containers on a private network, each a minimal
# Debian with only sshd (no nix, no git), key auth for an unprivileged user `dev`.
#   scripts/test-hosts.sh image           builds the image agentenv-test-sshd:1 once (debootstrap)
#   scripts/test-hosts.sh key DIR         makes DIR/id_ed25519{,.pub} if missing
# The tests start and remove the containers themselves (labelled agentenv-test-host).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/lib.sh"

IMAGE=agentenv-test-sshd:1

build_image() {
  docker image inspect "$IMAGE" >/dev/null 2>&1 && return 0
  install_packages debootstrap
  local mirror
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
  local dir
  dir=$(mktemp -d /var/tmp/agentenv-sshd-root.XXXXXX)
  trap 'rm -rf "$dir"' RETURN
  echo "building $IMAGE (debootstrap from $mirror)..." >&2
  debootstrap --variant=minbase --include=openssh-server bookworm "$dir/root" "$mirror" >"$dir/log" 2>&1 ||
    { tail -20 "$dir/log" >&2; return 1; }
  local r=$dir/root
  # Only what the tests use: slim the image, keep sshd's host keys out (made at start).
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r"/usr/share/doc/* \
    "$r"/usr/share/man/* "$r"/usr/share/locale/* "$r"/etc/ssh/ssh_host_*
  chroot "$r" useradd --create-home --shell /bin/bash dev
  # `*`, not `!`: sshd refuses a locked account when PAM is off.
  chroot "$r" usermod -p '*' dev
  mkdir -p "$r/run/sshd"
  cat > "$r/etc/ssh/sshd_config.d/agentenv-test.conf" <<'CONF'
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AuthorizedKeysFile /etc/ssh/authorized/%u
CONF
  mkdir -p "$r/etc/ssh/authorized"
  cat > "$r/usr/local/sbin/start-sshd" <<'START'
#!/bin/sh
# The key to accept comes in AUTHORIZED_KEY; host keys are made at each start.
set -e
ssh-keygen -A >/dev/null
printf '%s\n' "$AUTHORIZED_KEY" > /etc/ssh/authorized/dev
chmod 644 /etc/ssh/authorized/dev
exec /usr/sbin/sshd -D -e
START
  chmod 755 "$r/usr/local/sbin/start-sshd"
  tar --numeric-owner -C "$r" -cf - . | docker import -c 'CMD ["/usr/local/sbin/start-sshd"]' - "$IMAGE" >/dev/null
  echo "built $IMAGE" >&2
}

make_key() {
  mkdir -p "$1"
  [ -f "$1/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C agentenv-test -f "$1/id_ed25519"
}

case "${1:-}" in
  image) build_image ;;
  key) make_key "$2" ;;
  *) echo "usage: $0 image | key DIR" >&2; exit 2 ;;
esac
