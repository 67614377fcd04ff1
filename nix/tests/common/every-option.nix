# Every option of services.macha set to a non-default value. Used by nix/checks.nix (evaluated
# and rendered, which runs `macha check-config`) and by nix/tests/module.nix (inside a VM).
# The expected daemon view of these values is in ./every-option-expected.nix.
{ pkgs, ... }:
let
  snakeoil = import "${pkgs.path}/nixos/tests/ssh-keys.nix" pkgs;
in
{
  users.groups.macha-admins = { };
  services.openssh.enable = true;

  services.macha = {
    enable = true;
    uid = 2600;
    autonomyLevel = "auto-safe";
    checkInterval = "30s";
    models = {
      triage = "qwen2.5:1.5b";
      analysis = "qwen2.5:7b";
    };
    ollama = {
      enable = true;
      url = "http://127.0.0.1:11434";
    };
    protectedServices = [
      "precious"
      "backup-*"
    ];
    adminGroup = "macha-admins";
    hosts = {
      web1 = {
        address = "192.0.2.11";
        user = "ops";
        port = 2222;
        hostKey = snakeoil.snakeOilPublicKey;
        tags = [
          "web"
          "eu"
        ];
      };
      db1 = { };
    };
    discovery = {
      enable = true;
      allowedDomains = [ "*.lab.example.org" ];
    };
    web = {
      enable = true;
      listen = "127.0.0.1:8470";
      trustedProxies = [ "127.0.0.1" ];
      proxyUserHeader = "X-Remote-User";
      proxyAdmins = [ "alice" ];
      proxyViewers = [ "bob" ];
      sessionIdle = "10m";
      sessionMax = "8h";
      secureCookies = true;
      twoPerson = true;
    };
    modelApiKeyFile = "/run/macha-secrets/llm-api-key";
    environmentFile = "/run/macha-secrets/macha.env";
    settings = {
      flap.limit = 2;
      approvals.expiry = "12h";
      thresholds.disk_warn_percent = 80.0;
    };
    managed = {
      enable = true;
      authorizedKeys = [ snakeoil.snakeOilPublicKey ];
      protectedServices = [ "precious-too" ];
    };
  };
}
