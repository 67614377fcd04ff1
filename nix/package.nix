# The Macha package, built with crane: dependencies once (buildDepsOnly), then the workspace.
{ lib, craneLib, installShellFiles }:
let
  src = craneLib.cleanCargoSource ../.;
  commonArgs = {
    inherit src;
    strictDeps = true;
    pname = "macha";
    version = (lib.importTOML ../Cargo.toml).workspace.package.version;
  };
  cargoArtifacts = craneLib.buildDepsOnly commonArgs;
in
craneLib.buildPackage (commonArgs // {
  inherit cargoArtifacts;
  cargoExtraArgs = "-p macha";
  # Tests run once in the flake's checks (nextest), not in every package build.
  doCheck = false;
  nativeBuildInputs = [ installShellFiles ];
  postInstall = ''
    for name in macha-check macha-approve macha-logs macha-issues; do
      ln -s macha $out/bin/$name
    done
    $out/bin/macha man man
    installManPage man/*.1
    for shell in bash fish zsh; do
      $out/bin/macha completions $shell --dir completions-$shell
    done
    installShellCompletion --bash completions-bash/*
    installShellCompletion --fish completions-fish/*
    installShellCompletion --zsh completions-zsh/*
  '';
  meta = {
    description = "An AI system administrator for NixOS fleets";
    mainProgram = "macha";
    license = with lib.licenses; [ mit asl20 ];
    platforms = lib.platforms.linux;
  };
})
