#!/usr/bin/env bash
# Builds the VM backend's assets from Debian's packages, offline but for apt's own mirror:
#   kernel      the guest's kernel (arm64: an uncompressed Image, as Virtualization.framework wants)
#   initrd      cpio.gz: /init (agentenv, static, for the guest's architecture), dev/console,
#               dev/null, and the kernel modules the VM needs, with their load order
#   root.img    erofs, read-only: the guest's root (nix-bin, git and their libraries, static
#               bash and busybox), shared by every VM
#   store.img   ext4: the golden store, the guest's /nix with nix's database; each environment
#               boots a copy-on-write clone of it
#   VERSION     what agentenv checks before it boots them
# Usage: scripts/vm-assets.sh [--arch aarch64|x86_64] OUTDIR
# The same inputs give the same files (fixed timestamps, UUIDs and ordering); downloaded
# packages are kept in OUTDIR/debs and not fetched again.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/lib.sh"

# Bump with src/compute/vm/assets.rs's ASSETS_FORMAT when the layout of the set changes.
FORMAT=1

arch=$(uname -m)
while [ $# -gt 0 ]; do
  case $1 in
    --arch) arch=$2; shift 2 ;;
    --arch=*) arch=${1#--arch=}; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "error: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || { echo "usage: scripts/vm-assets.sh [--arch aarch64|x86_64] OUTDIR" >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd)

case $arch in
  aarch64) deb=arm64 triple=aarch64-unknown-linux-gnu cc=aarch64-linux-gnu-gcc
    cross_pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
  x86_64) deb=amd64 triple=x86_64-unknown-linux-gnu cc=x86_64-linux-gnu-gcc
    cross_pkgs=(gcc-x86-64-linux-gnu libc6-dev-amd64-cross) ;;
  *) echo "error: unsupported guest architecture $arch (aarch64 or x86_64)" >&2; exit 2 ;;
esac
[ "$arch" = "$(uname -m)" ] && cc=gcc cross_pkgs=()

export SOURCE_DATE_EPOCH=0 LC_ALL=C
install_packages "${cross_pkgs[@]}" rustc-web cargo-web rust-web-src erofs-utils e2fsprogs cpio kmod file
[ "$arch" = "$(uname -m)" ] || install_packages qemu-user-static
if ! dpkg --print-foreign-architectures | grep -qx "$deb" && [ "$(dpkg --print-architecture)" != "$deb" ]; then
  dpkg --add-architecture "$deb"
  apt-get update -q >&2
fi

# The modules a guest needs, in an order that loads (crc32c_generic is only a softdep of
# libcrc32c's users, so nothing would pull it in).
MODULES=(virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk virtio_console
  fuse virtiofs vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport overlay
  crc32c_generic libcrc32c erofs crc16 mbcache jbd2 ext4)

debs=$out/debs
mkdir -p "$debs"
# fetch PKG...: downloads PKG:$deb into $debs unless there already.
fetch() {
  local p
  for p in "$@"; do
    compgen -G "$debs/${p}_*.deb" >/dev/null && continue
    # Architecture-independent packages have no :$deb variant.
    (cd "$debs" && { apt-get download -q "$p:$deb" 2>/dev/null || apt-get download -q "$p"; } 2>&1 |
      grep -v '^W: Download is performed unsandboxed' >&2 || true)
    compgen -G "$debs/${p}_*.deb" >/dev/null || { echo "error: cannot download $p:$deb" >&2; exit 1; }
  done
}
# extract DIR PKG...: unpacks the downloaded packages into DIR.
extract() {
  local dir=$1 p f
  shift
  for p in "$@"; do
    for f in "$debs/${p}_"*.deb; do dpkg-deb -x "$f" "$dir"; done
  done
}

work=$(mktemp -d /tmp/agentenv-vm-assets.XXXXXX)
trap 'rm -rf "$work"' EXIT

# --- kernel and modules
kpkg=$(apt-cache depends "linux-image-$deb:$deb" | awk '/Depends: linux-image-/ {print $2; exit}')
kpkg=${kpkg%:"$deb"}
[ -n "$kpkg" ] || { echo "error: no kernel package linux-image-$deb:$deb in apt's lists" >&2; exit 1; }
kver=${kpkg#linux-image-}
fetch "$kpkg"
extract "$work/kernel" "$kpkg"
cp "$work/kernel/boot/vmlinuz-$kver" "$out/kernel"
if [ "$arch" = aarch64 ] && [ "$(dd if="$out/kernel" bs=1 skip=56 count=4 2>/dev/null)" != ARMd ]; then
  echo "error: $kpkg's kernel is not an uncompressed arm64 Image" >&2
  exit 1
fi

init=$work/initrd
mkdir -p "$init/dev" "$init/lib/modules/$kver" "$init/proc" "$init/sys" "$init/run" "$init/tmp" "$init/mnt"
for m in "${MODULES[@]}"; do
  f=$(find "$work/kernel/lib/modules/$kver/kernel" -name "$m.ko" -print -quit)
  [ -n "$f" ] || { echo "error: $kpkg has no module $m" >&2; exit 1; }
  rel=${f#"$work/kernel/lib/modules/$kver/"}
  mkdir -p "$(dirname "$init/lib/modules/$kver/$rel")"
  cp "$f" "$init/lib/modules/$kver/$rel"
  echo "$rel" >> "$init/lib/modules/$kver/modules.load"
done
cp "$work/kernel/lib/modules/$kver/modules.order" "$work/kernel/lib/modules/$kver/modules.builtin"* \
  "$init/lib/modules/$kver/" 2>/dev/null || true
depmod -b "$init" "$kver"
# A static /init opens these before devtmpfs is mounted.
mknod -m 600 "$init/dev/console" c 5 1
mknod -m 666 "$init/dev/null" c 1 3

# --- the guest program: agentenv itself, static, built with Debian's toolchain (std from source)
guest_target=$repo/target/guest
linker_var=CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_LINKER
# A fast release build: the guest does not need LTO's last percent.
env PATH=/usr/bin:/bin RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
  CARGO_TARGET_DIR="$guest_target" "$linker_var=$cc" \
  CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_STRIP=true \
  RUSTFLAGS="-C target-feature=+crt-static" \
  /usr/bin/cargo build --quiet --release --locked --manifest-path "$repo/Cargo.toml" \
  -Zbuild-std=std,panic_abort --target "$triple" --bin agentenv
cp "$guest_target/$triple/release/agentenv" "$init/init"
file "$init/init" | grep -q 'statically linked' || { echo "error: the guest's agentenv is not static" >&2; exit 1; }

find "$init" -exec touch -h -d @0 {} +
(cd "$init" && find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9n > "$out/initrd"

# --- the guest's root: nix and git with their libraries, static bash and busybox
top=(nix-bin git bash-static busybox-static)
# Their libraries: every lib* package in their dependency closure (perl and its modules are
# left out: nix's and git's Perl parts are not used).
mapfile -t libs < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances "${top[@]/%/:$deb}" |
  awk '/^[a-z]/ {sub(":'"$deb"'$", ""); print}' | grep -E '^(lib|zlib1g)' |
  grep -vE 'perl|^libc6-dev|^libgcc-[0-9]+-dev|-dev$' | sort -u)
fetch "${top[@]}" "${libs[@]}"
root=$work/root
mkdir -p "$root"
extract "$root" "${top[@]}" "${libs[@]}"
# Debian's merged /usr: the packages ship /lib, /bin as real directories.
for d in bin sbin lib; do
  if [ -d "$root/$d" ] && [ ! -L "$root/$d" ]; then
    mkdir -p "$root/usr/$d"
    cp -a "$root/$d/." "$root/usr/$d/"
    rm -rf "${root:?}/$d"
  fi
  ln -sfn "usr/$d" "$root/$d"
done
rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/locale" "$root/usr/share/info"
mkdir -p "$root/etc/nix" "$root/nix" "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/run" \
  "$root/root" "$root/home" "$root/var/empty" "$root/agentenv"
ln -sf bash-static "$root/usr/bin/sh"
# busybox's applets where Debian's packages left no program of that name.
for a in $(qemu-"$arch"-static "$root/usr/bin/busybox" --list 2>/dev/null || "$root/usr/bin/busybox" --list); do
  [ -e "$root/usr/bin/$a" ] || [ -e "$root/usr/sbin/$a" ] || ln -s busybox "$root/usr/bin/$a"
done
[ -e "$root/usr/bin/bash" ] || ln -s bash-static "$root/usr/bin/bash"
echo '{"flakes":[],"version":2}' > "$root/etc/nix/registry.json"
cat > "$root/etc/nix/nix.conf" <<'EOF'
# The guest is offline and the VM is its sandbox.
experimental-features = nix-command flakes
sandbox = false
substituters =
flake-registry = /etc/nix/registry.json
build-users-group =
EOF
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/var/empty:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
echo "$arch" > "$root/etc/agentenv-vm-arch"
find "$root" -exec touch -h -d @0 {} +
rm -f "$out/root.img"
mkfs.erofs --quiet -T0 -U 6167656e-7465-6e76-2d76-6d2d726f6f74 --all-root "$out/root.img" "$root" >/dev/null

# --- the golden store: an empty store with nix's database, room to grow (sparse)
store=$work/store
mkdir -p "$store/store" "$store/var/nix/db" "$store/var/nix/gcroots" "$store/var/nix/profiles" "$store/var/nix/temproots"
if command -v nix-store >/dev/null; then
  # A database made by the host's nix: the schema the guest's nix (same Debian version) reads.
  nix-store --store "local?root=$work/storeroot" --init 2>/dev/null &&
    cp -a "$work/storeroot/nix/var/nix/db/." "$store/var/nix/db/" || true
fi
chmod 1775 "$store/store"
find "$store" -exec touch -h -d @0 {} +
rm -f "$out/store.img"
E2FSPROGS_FAKE_TIME=0 mkfs.ext4 -q -F -d "$store" -L agentenv-store -U 6167656e-7465-6e76-2d76-6d2d73746f72 \
  -E root_owner=0:0,hash_seed=6167656e-7465-6e76-2d76-6d2d73656564 -O ^metadata_csum_seed \
  -b 4096 "$out/store.img" 2G >/dev/null

version=$(awk -F'"' '/^version/ {print $2; exit}' "$repo/Cargo.toml")
cat > "$out/VERSION" <<EOF
format=$FORMAT
arch=$arch
kernel=$kver
agentenv=$version
EOF
# (store.img is mostly holes: summing it would read 2 GiB of zeros)
(cd "$out" && sha256sum kernel initrd root.img > SHA256SUMS)
echo "$out: VM assets for $arch (kernel $kver)" >&2
