{
  description = "agentenv example: a dev shell with no inputs, so it works offline";

  # No nixpkgs: the shell is built from static binaries that scripts/example.sh copies into
  # pkgs/ (bash from Debian's bash-static, busybox from busybox-static). A flake sees only
  # git-tracked files, so that script also makes the copy a git repository.
  outputs = { self }:
    let
      forAll = f: {
        x86_64-linux = f "x86_64-linux";
        aarch64-linux = f "aarch64-linux";
      };
      bash = builtins.path { path = ./pkgs/bash; name = "bash-static"; };
      busybox = builtins.path { path = ./pkgs/busybox; name = "busybox-static"; };
      stdenv = builtins.path { path = ./stdenv; name = "hello-stdenv"; };
      tools = system: derivation {
        name = "hello-tools";
        inherit system busybox;
        builder = "${bash}/bin/bash";
        args = [ ./build-tools.sh ];
        outputs = [ "out" ];
      };
      shell = system: derivation {
        name = "hello-shell";
        inherit system stdenv;
        builder = "${bash}/bin/bash";
        args = [ "-c" "echo 'this derivation is only for nix develop' > $out" ];
        outputs = [ "out" ];
        buildInputs = [ (tools system) bash ];
        GREETING = "hello from the agentenv example";
        shellHook = ''
          export HELLO_HOOK_RAN=1
        '';
      };
    in {
      devShells = forAll (system: { default = shell system; });
      packages = forAll (system: { tools = tools system; });
    };
}
