# Shared by the scripts in this directory: installing Debian packages, and the nix settings
# that let the offline examples and tests evaluate without a binary cache or flake registry.

# install_packages PKG...: installs the missing ones (as root, or through sudo).
install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "installing: ${missing[*]}" >&2
  $sudo apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# offline_nix_config DIR: prints a NIX_CONFIG that needs no network; writes DIR/registry.json.
offline_nix_config() {
  mkdir -p "$1"
  echo '{"flakes":[],"version":2}' > "$1/registry.json"
  printf 'experimental-features = nix-command flakes\nsubstituters =\nflake-registry = %s\n' "$1/registry.json"
}

# prepare_example SRC DST: copies the example flake SRC to DST with its static binaries, as a
# git repository (flakes see only tracked files).
prepare_example() {
  local src=$1 dst=$2
  mkdir -p "$dst/pkgs/bash/bin" "$dst/pkgs/busybox/bin"
  cp -r "$src/." "$dst/"
  cp /bin/bash-static "$dst/pkgs/bash/bin/bash"
  cp /bin/busybox "$dst/pkgs/busybox/bin/busybox"
  rm -f "$dst/.gitignore"
  if [ ! -d "$dst/.git" ]; then
    git -C "$dst" init -q
  fi
  git -C "$dst" add -A
}
