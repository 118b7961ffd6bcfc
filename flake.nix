{
  description = "agentenv: portable, isolated Nix dev environments for humans and agents";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      # The namespace sandbox is Linux-only; the macOS backend is not built yet.
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: {
        default = pkgs.rustPlatform.buildRustPackage {
          pname = "agentenv";
          version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).package.version;
          src = pkgs.lib.cleanSourceWith {
            src = ./.;
            filter = path: type: !(pkgs.lib.hasInfix "/target" path);
          };
          cargoLock.lockFile = ./Cargo.lock;
          # The integration tests need namespaces, a nix store and nix itself; the Nix build
          # sandbox has none of them. scripts/test.sh runs them.
          cargoTestFlags = [ "--lib" ];
          meta = {
            description = "Portable, isolated Nix dev environments for humans and agents";
            mainProgram = "agentenv";
            platforms = pkgs.lib.platforms.linux;
          };
        };

        # The VM backend's assets, the same set scripts/vm-assets.sh makes from Debian's
        # packages: `nix build .#vm-assets && agentenv vm setup result`. The kernel has the
        # virtio, vsock, virtio-fs, overlay, erofs and ext4 drivers built in (so the initrd
        # loads no modules); nix, git, bash and busybox live in the golden store image, with
        # their registration in its database; the guest root only links to them.
        # Not built on the project's own machines (they have no binary cache).
        vm-assets =
          let
            lib = pkgs.lib;
            kernel = pkgs.linuxPackages_latest.kernel.override {
              structuredExtraConfig = with lib.kernel; {
                VIRTIO_PCI = yes; VIRTIO_BLK = yes; VIRTIO_CONSOLE = yes; FUSE_FS = yes;
                VIRTIO_FS = yes; VSOCKETS = yes; VIRTIO_VSOCKETS = yes; OVERLAY_FS = yes;
                EROFS_FS = yes; EXT4_FS = yes; DEVTMPFS = yes;
              };
            };
            guest = pkgs.pkgsStatic.callPackage ({ rustPlatform }: rustPlatform.buildRustPackage {
              pname = "agentenv-guest";
              version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).package.version;
              src = self.packages.${pkgs.stdenv.hostPlatform.system}.default.src;
              cargoLock.lockFile = ./Cargo.lock;
              doCheck = false;
            }) { };
            tools = [ pkgs.nix pkgs.git pkgs.bashInteractive pkgs.busybox ];
            closure = pkgs.closureInfo { rootPaths = tools; };
            image = if pkgs.stdenv.hostPlatform.isAarch64 then "Image" else "bzImage";
            arch = if pkgs.stdenv.hostPlatform.isAarch64 then "aarch64" else "x86_64";
          in
          pkgs.runCommand "agentenv-vm-assets" {
            nativeBuildInputs = [ pkgs.erofs-utils pkgs.e2fsprogs pkgs.cpio pkgs.nix ];
          } ''
            mkdir -p $out initrd/dev initrd/proc initrd/sys initrd/mnt initrd/lib/modules
            cp ${kernel}/${image} $out/kernel
            cp ${guest}/bin/agentenv initrd/init
            (cd initrd && find . | sort | cpio -o -H newc -R 0:0 --reproducible) | gzip -9n > $out/initrd

            mkdir -p root/usr/bin root/etc/nix root/nix root/proc root/sys root/dev root/tmp root/run root/root
            for t in ${lib.concatStringsSep " " (map toString tools)}; do
              for f in $t/bin/*; do ln -sf $f root/usr/bin/; done
            done
            ln -s usr/bin root/bin
            printf 'experimental-features = nix-command flakes\nsandbox = false\nsubstituters =\nbuild-users-group =\n' > root/etc/nix/nix.conf
            printf 'root:x:0:0:root:/root:/bin/sh\n' > root/etc/passwd
            mkfs.erofs -T0 --all-root $out/root.img root

            mkdir -p store
            nix-store --store "local?root=$PWD/storeroot" --load-db < ${closure}/registration
            mkdir -p storeroot/nix/store
            for p in $(cat ${closure}/store-paths); do cp -a $p storeroot/nix/store/; done
            truncate -s 2G $out/store.img
            mkfs.ext4 -q -d storeroot/nix -L agentenv-store $out/store.img
            printf 'format=1\narch=${arch}\nkernel=${kernel.version}\n' > $out/VERSION
          '';
      });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [ cargo rustc clippy rustfmt rust-analyzer hyperfine ];
        };
      });
    };
}
