# What `macha check-config --json /etc/macha/macha.toml` reports for ./every-option.nix: the
# daemon's resolved view of every option (nix/tests/module.nix compares them).
{ snakeOilPublicKey }:
{
  autonomy = "auto-safe";
  check_interval = "30s";
  protected_extra = [
    "precious"
    "backup-*"
  ];
  admin_group = "macha-admins";
  state_dir = "/var/lib/macha";
  socket = "/run/macha/macha.sock";
  flap_limit = 2;
  approval_expiry = "12h";
  hosts = [
    {
      name = "db1";
      address = "db1";
      user = null;
      port = 22;
      host_key = null;
      tags = [ ];
      health = [ ];
    }
    {
      name = "web1";
      address = "192.0.2.11";
      user = "ops";
      port = 2222;
      host_key = snakeOilPublicKey;
      tags = [
        "web"
        "eu"
      ];
      health = [ ];
    }
  ];
  discovery = {
    enable = true;
    allowed_domains = [ "*.lab.example.org" ];
  };
  web = {
    listen = "127.0.0.1:8470";
    trusted_proxies = [ "127.0.0.1" ];
    proxy_user_header = "X-Remote-User";
    proxy_admins = [ "alice" ];
    proxy_viewers = [ "bob" ];
    session_idle = "10m";
    session_max = "8h";
    secure_cookies = true;
    two_person = true;
  };
  llm = {
    enable = true;
    url = "http://127.0.0.1:11434";
    triage_model = "qwen2.5:1.5b";
    analysis_model = "qwen2.5:7b";
    api_key_file = "/run/credentials/macha.service/llm-api-key";
  };
}
