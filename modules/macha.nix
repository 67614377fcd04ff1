# The NixOS module: services.macha. (Options beyond the core ones arrive with the Nix issue.)
{ config, lib, pkgs, ... }:
let
  cfg = config.services.macha;
  settingsFormat = pkgs.formats.toml { };
  configFile = settingsFormat.generate "macha.toml" cfg.settings;
in
{
  options.services.macha = {
    enable = lib.mkEnableOption "Macha, the AI system administrator";
    package = lib.mkOption {
      type = lib.types.package;
      description = "The Macha package.";
    };
    settings = lib.mkOption {
      type = settingsFormat.type;
      default = { };
      description = "Contents of macha.toml; see docs/configuration.md.";
    };
  };

  config = lib.mkIf cfg.enable {
    environment.etc."macha/macha.toml".source = configFile;
    environment.systemPackages = [ cfg.package ];
    systemd.services.macha = {
      description = "Macha, the AI system administrator";
      wantedBy = [ "multi-user.target" ];
      after = [ "dbus.service" ];
      restartIfChanged = false;
      serviceConfig = {
        Type = "notify";
        ExecStart = "${cfg.package}/bin/macha daemon --config /etc/macha/macha.toml";
        WatchdogSec = "2min";
        Restart = "on-failure";
        StateDirectory = "macha";
        RuntimeDirectory = "macha";
      };
    };
  };
}
