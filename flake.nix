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
      });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [ cargo rustc clippy rustfmt rust-analyzer hyperfine ];
        };
      });
    };
}
