# Stand-in NixOS systems for the deployment lab: Nix 2.8 without nixpkgs cannot build NixOS, so
# each "system" is a small derivation built with the host's /bin/sh. It has what Macha relies on:
# `bin/switch-to-configuration` (tests/lab/deploy/switch-to-configuration.sh, with the variant
# written in), and references to "package" paths, so that its closure, `nix copy` and the closure
# diff are real. Build one with:
#
#   nix-build tests/lab/deploy/systems.nix --argstr host c1 --arg generation 2 --argstr variant good
#
# `packages` maps names to versions (what differs between generations shows in the diff).
{
  host ? "c1",
  generation ? 1,
  variant ? "good",
  packages ? {
    hello = "2.12";
    linux = "6.1.${toString generation}";
    openssh = "9.2";
  },
}:
let
  sh = "/bin/sh";
  system = builtins.currentSystem or "x86_64-linux";
  package =
    name: version:
    derivation {
      name = "${name}-${version}";
      inherit system;
      builder = sh;
      args = [
        "-c"
        "echo ${name} ${version} > $out"
      ];
    };
  paths = builtins.attrValues (builtins.mapAttrs package packages);
  switch = builtins.replaceStrings [ "@variant@" ] [ variant ] (builtins.readFile ./switch-to-configuration.sh);
in
derivation {
  name = "nixos-system-${host}-26.05.${toString generation}";
  inherit system switch;
  builder = sh;
  PATH = "/usr/bin:/bin";
  passAsFile = [ "switch" ];
  args = [
    "-c"
    ''
      mkdir -p $out/bin
      cp "$switchPath" $out/bin/switch-to-configuration
      chmod 555 $out/bin/switch-to-configuration
      printf '%s\n' ${builtins.concatStringsSep " " (map toString paths)} > $out/packages
      echo ${variant} > $out/variant
    ''
  ];
}
