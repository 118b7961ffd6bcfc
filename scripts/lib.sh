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

# install_docs BIN: installs agentenv's manual page and bash completion (which completes
# running environments and containers too) from the built binary BIN, as root or through sudo.
install_docs() {
  local bin=$1 sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  local man=/usr/local/share/man/man1 completions=/usr/local/share/bash-completion/completions
  $sudo mkdir -p "$man" "$completions"
  "$bin" __man | $sudo tee "$man/agentenv.1" >/dev/null
  "$bin" completions bash | $sudo tee "$completions/agentenv" >/dev/null
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

# What the benchmark scripts share.

# The podman command line this machine's kind needs (crun refuses its hybrid cgroups).
PODMAN=(podman --cgroup-manager=cgroupfs --events-backend=file --runtime=runc)

# bench_example DIR: builds agentenv (release) and a fresh copy of the example at DIR/hello;
# sets bin, work (=DIR), ex, and exports NIX_CONFIG and AGENTENV_HOME (DIR/state).
bench_example() {
  work=$1
  cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
  bin="$repo/target/release/agentenv"
  rm -rf "$work"
  prepare_example "$repo/examples/hello" "$work/hello"
  NIX_CONFIG=$(offline_nix_config "$work")
  export NIX_CONFIG AGENTENV_HOME="$work/state"
  ex="$work/hello"
}

# median CSV NAME: the median, in seconds, of the command NAME in hyperfine's --export-csv.
median() { awk -F, -v n="$2" 'NR>1 && $1==n {print $4}' "$1"; }

# busybox_image DIR IMAGE [APPLET...]: imports a podman image IMAGE whose root is busybox with
# the given applets (all of them if none), built in DIR (no registry is reachable).
busybox_image() {
  local dir=$1 image=$2
  shift 2
  mkdir -p "$dir/rootfs/bin"
  cp /bin/busybox "$dir/rootfs/bin/"
  local applets=("$@")
  [ ${#applets[@]} -gt 0 ] || mapfile -t applets < <(/bin/busybox --list | grep -vx busybox)
  for a in "${applets[@]}"; do ln -s busybox "$dir/rootfs/bin/$a"; done
  tar -C "$dir/rootfs" -cf "$dir/rootfs.tar" .
  "${PODMAN[@]}" import -q "$dir/rootfs.tar" "$image" >/dev/null
}
