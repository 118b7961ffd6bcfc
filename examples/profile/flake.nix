{
  description = "A personal agentenv profile";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "aarch64-darwin" "x86_64-darwin" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: {
        # `tools = "tools"` in agentenv.toml: on PATH after the project's dev shell.
        tools = pkgs.buildEnv {
          name = "profile-tools";
          paths = [ pkgs.ripgrep pkgs.fd pkgs.jq pkgs.neovim ];
        };
        # `agentenv profile install github:you/config` builds this (a copy of the profile)
        # and activates it: the offline fallback when the profile cannot be mounted.
        agentenvProfile = pkgs.runCommand "agentenv-profile" { } ''
          cp -r ${self} $out
        '';
      });
    };
}
