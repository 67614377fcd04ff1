# The NixOS module of Macha: `services.macha` runs the daemon on this host; `services.macha.managed`
# (./managed.nix) prepares a host that a Macha elsewhere manages over SSH.
#
# Every option ends up in the daemon's configuration (/etc/macha/macha.toml) through one map,
# ./config-keys.nix; the rendered file is checked with `macha check-config` while the system is
# built, so a bad value fails `nixos-rebuild`, not the service. docs/nixos.md has examples and the
# security model of the unit.
{
  config,
  lib,
  options,
  pkgs,
  ...
}:
let
  inherit (lib)
    literalExpression
    mkDefault
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    types
    ;

  cfg = config.services.macha;
  keys = import ./config-keys.nix;
  settingsFormat = pkgs.formats.toml { };

  user = "macha";
  stateDir = keys.fixed."paths.state_dir";

  canRunBuildTimeChecks = pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform;

  # Runs `macha check-config` on a rendered file at build time; the result is the file itself.
  checkedConfig =
    name: file:
    pkgs.runCommand name { preferLocalBuild = true; } ''
      ${lib.optionalString canRunBuildTimeChecks ''
        if ! MACHA_LOG=error ${lib.getExe cfg.package} check-config ${file} >/dev/null; then
          echo "services.macha: \`macha check-config\` rejected the generated ${name} (reason above)." >&2
          echo "Change the services.macha option or services.macha.settings key it names." >&2
          exit 1
        fi
      ''}
      cp ${file} $out
    '';

  # The URL of the model server: the option, else the local Ollama when this module runs it.
  ollamaUrl =
    if cfg.ollama.url != null then
      cfg.ollama.url
    else if cfg.ollama.enable then
      "http://127.0.0.1:${toString config.services.ollama.port}"
    else
      null;

  # What the typed options (and the fixed keys) stand for in the daemon's configuration.
  moduleSettings = keys.moduleSettings (cfg // { ollama = cfg.ollama // { url = ollamaUrl; }; });

  configFile = checkedConfig "macha.toml" (settingsFormat.generate "macha-unchecked.toml" cfg.settings);

  # The protected units the polkit rule enforces: the built-in list (always) plus these additions.
  policyProtected = lib.unique (
    lib.optionals cfg.enable cfg.protectedServices
    ++ lib.optionals cfg.managed.enable cfg.managed.protectedServices
  );
  policyConfig = checkedConfig "macha-polkit.toml" (
    settingsFormat.generate "macha-polkit-unchecked.toml" { protected_units = policyProtected; }
  );

  toolPaths = {
    systemctl = "${config.systemd.package}/bin/systemctl";
    journalctl = "${config.systemd.package}/bin/journalctl";
    nix-collect-garbage = "${config.nix.package}/bin/nix-collect-garbage";
    nix-store = "${config.nix.package}/bin/nix-store";
    nix-env = "${config.nix.package}/bin/nix-env";
    df = "${pkgs.coreutils}/bin/df";
    ip = "${pkgs.iproute2}/bin/ip";
    ss = "${pkgs.iproute2}/bin/ss";
    # Deployments (`macha deploy`: closures, transient units) and what changed (`git log`).
    nix = "${config.nix.package}/bin/nix";
    systemd-run = "${config.systemd.package}/bin/systemd-run";
    readlink = "${pkgs.coreutils}/bin/readlink";
    git = "${pkgs.git}/bin/git";
  };

  usesFleet = cfg.hosts != { } || cfg.discovery.enable;
  sshKey = cfg.settings.ssh.key or "${stateDir}/.ssh/id_ed25519";

  # Creates Macha's SSH key on first start (as the macha user, inside the unit's sandbox) and
  # prints the public half for services.macha.managed.authorizedKeys on the managed hosts.
  sshKeygen = pkgs.writeShellScript "macha-ssh-keygen" ''
    set -eu
    key=${lib.escapeShellArg sshKey}
    if [ ! -e "$key" ]; then
      ${pkgs.coreutils}/bin/mkdir -p -m 0700 "$(${pkgs.coreutils}/bin/dirname "$key")"
      ${pkgs.openssh}/bin/ssh-keygen -q -t ed25519 -N "" -C "macha@${config.networking.hostName}" -f "$key"
    fi
    if [ -r "$key.pub" ]; then
      echo "Macha's SSH public key (for services.macha.managed.authorizedKeys): $(${pkgs.coreutils}/bin/cat "$key.pub")"
    fi
  '';

  # The clean-up actions that need root, as fixed root units: the daemon runs as `macha` and starts
  # them over D-Bus, which the polkit rule allows for exactly these names (an instance of 1 to 4
  # digits, no leading zero; Macha itself names only 1-3650). `%i` is the number of days. Nothing
  # starts them at boot or on a switch. docs/actions.md, decision 0012.
  cleanupUnit =
    {
      description,
      exec,
      hardening,
      timeout,
    }:
    {
      inherit description;
      documentation = [ "man:macha(1)" ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = exec;
        TimeoutStartSec = timeout;
        # Common hardening: root, but no network, devices, kernel knobs or new privileges.
        NoNewPrivileges = true;
        PrivateNetwork = true;
        PrivateTmp = true;
        PrivateDevices = true;
        DevicePolicy = "closed";
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        # The journal and the nix-daemon socket only.
        RestrictAddressFamilies = [ "AF_UNIX" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
      }
      // hardening;
    };
  # Store work goes through the nix-daemon (as root, a trusted user), so the client needs no write
  # access to the store or its database.
  nixDaemonClient = {
    Environment = [ "NIX_REMOTE=daemon" ];
    ProtectSystem = "strict";
    ProtectHome = true;
  };
  cleanupUnits = {
    "macha-journal-vacuum@" = cleanupUnit {
      description = "Macha: delete journal files older than %i days";
      exec = "${config.systemd.package}/bin/journalctl --vacuum-time=%id";
      timeout = "15min";
      hardening = {
        ProtectSystem = "strict";
        ProtectHome = true;
        # Only the journal's own directories are written (either may be missing).
        ReadWritePaths = [
          "-/var/log/journal"
          "-/run/log/journal"
        ];
        # Root without the rest of its powers: enough to read and delete journal files.
        CapabilityBoundingSet = [
          "CAP_DAC_OVERRIDE"
          "CAP_DAC_READ_SEARCH"
          "CAP_FOWNER"
        ];
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
      };
    };
    "macha-collect-garbage@" = cleanupUnit {
      description = "Macha: delete generations older than %i days and unreachable store paths";
      exec = "${config.nix.package}/bin/nix-collect-garbage --delete-older-than %id";
      timeout = "2h";
      hardening = nixDaemonClient // {
        # Exception: the generations are symlinks in the profile directories (also root's own,
        # under /root), which the client deletes itself before the daemon collects.
        ProtectHome = false;
        ReadWritePaths = [
          "/nix/var/nix/profiles"
          "-/root/.local/state/nix/profiles"
        ];
      };
    };
    macha-store-verify = cleanupUnit {
      description = "Macha: verify the Nix store's contents";
      exec = "${config.nix.package}/bin/nix-store --verify --check-contents";
      timeout = "6h";
      hardening = nixDaemonClient;
    };
    macha-store-repair = cleanupUnit {
      description = "Macha: verify the Nix store's contents and repair what is damaged";
      exec = "${config.nix.package}/bin/nix-store --verify --check-contents --repair";
      timeout = "6h";
      # The daemon fetches replacements; the client only asks.
      hardening = nixDaemonClient;
    };
  };

  # --- checks of the module against itself -------------------------------------------------

  # Every declared option below services.macha, as a dotted path (`hosts.<name>.port`).
  declaredOptions =
    let
      walk =
        opts:
        lib.concatLists (
          lib.mapAttrsToList (
            name: o:
            if lib.hasPrefix "_" name then
              [ ]
            else if lib.isOption o then
              let
                sub = lib.filterAttrs (n: _: !lib.hasPrefix "_" n) (o.type.getSubOptions o.loc);
              in
              if name != "settings" && sub != { } then walk sub else [ o.loc ]
            else
              walk o
          ) opts
        );
    in
    map (loc: lib.concatStringsSep "." (lib.drop 2 loc)) (walk options.services.macha);
  mappedOptions = builtins.attrNames keys.typed ++ keys.moduleOnly;
  unmapped = lib.subtractLists mappedOptions declaredOptions;
  undeclared = lib.subtractLists declaredOptions mappedOptions;

  # Settings keys that typed options own (or the module fixes) but that hold something else.
  ownerOf =
    path:
    let
      owners = lib.filter (o: keys.ownedPath keys.typed.${o} == path) (builtins.attrNames keys.typed);
    in
    if owners == [ ] then null else "services.macha.${lib.concatStringsSep "." (keys.ownedPath (builtins.head owners))}";
  ownedConflicts = lib.filter (
    p: lib.attrByPath p null cfg.settings != lib.attrByPath p null moduleSettings
  ) keys.ownedPaths;
  conflictMessage =
    p:
    let
      key = lib.concatStringsSep "." p;
      owner = ownerOf p;
      want = builtins.toJSON (lib.attrByPath p null moduleSettings);
    in
    if owner != null && lib.attrByPath p null cfg.settings == null then
      "services.macha.settings.${key} is missing, but ${owner} gives ${want}: define single keys in services.macha.settings instead of overriding it as a whole (lib.mkForce)."
    else if owner != null then
      "services.macha.settings.${key} is set to ${builtins.toJSON (lib.attrByPath p null cfg.settings)}, but ${owner} owns this key (it gives ${want}). Set ${owner} instead and remove `${key}` from services.macha.settings."
    else
      "services.macha.settings.${key} must stay ${want}: the unit provides it (StateDirectory/RuntimeDirectory). Remove `${key}` from services.macha.settings.";

  # Nix path values in settings would be copied into the world-readable store.
  nixPathsIn =
    prefix: v:
    if builtins.isPath v then
      [ prefix ]
    else if builtins.isAttrs v then
      lib.concatLists (lib.mapAttrsToList (n: x: nixPathsIn (prefix ++ [ n ]) x) v)
    else if builtins.isList v then
      lib.concatLists (lib.imap0 (i: x: nixPathsIn (prefix ++ [ (toString i) ]) x) v)
    else
      [ ];

  hostModule =
    { name, ... }:
    {
      options = {
        address = mkOption {
          type = types.str;
          default = name;
          defaultText = literalExpression "<name>";
          example = "web1.example.org";
          description = "Address or DNS name Macha connects to over SSH.";
        };
        user = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = ''
            Login user on this host; `null` uses `settings.ssh.user` (default `macha`, the user
            that `services.macha.managed` creates).
          '';
        };
        port = mkOption {
          type = types.port;
          default = 22;
          description = "SSH port.";
        };
        hostKey = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA...";
          description = ''
            The host's SSH public host key, pinned. `null`: pin it later with `macha-systems trust`
            (Macha never accepts an unknown host key on its own).
          '';
        };
        tags = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "web" ];
          description = "Free-form tags, for selecting hosts in the CLI.";
        };
        dependsOn = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "db1" ];
          description = ''
            Managed hosts this host depends on (its database, its upstreams): declared relations of
            the fleet map (`macha systems graph`), next to the connections Macha observes.
          '';
        };
      };
    };
in
{
  imports = [ ./managed.nix ];

  options.services.macha = {
    enable = mkEnableOption "Macha, the AI system administrator (the daemon `macha.service`)";

    # `pkgs.macha` when an overlay provides it (the flake's `overlays.default`, default.nix's
    # `overlay`); the flake's `nixosModules.default` and default.nix's `module` set their own build
    # (at mkDefault priority, above this default). Without either, evaluating it fails with a message
    # that says so, not with "attribute missing".
    package =
      lib.mkPackageOption pkgs "macha" {
        extraDescription = ''
          Its multicall commands (`macha`, `macha-approve`, …) are installed system-wide. The
          flake's `nixosModules.default` (and `module` of the repository's default.nix) set it to
          their own build; importing modules/macha.nix alone needs `pkgs.macha`, from the overlay
          (`overlays.default` of the flake, `overlay` of default.nix).
        '';
      }
      // {
        default =
          pkgs.macha or (throw ''
            services.macha.package: pkgs.macha does not exist. Import Macha's module through its flake
            (nixosModules.default) or its default.nix (`(import ./macha { inherit pkgs; }).module`), add its
            overlay to nixpkgs.overlays, or set services.macha.package yourself.'');
      };

    uid = mkOption {
      type = types.int;
      default = 2501;
      description = ''
        UID and GID of the `macha` user and group. Keep it the same on every host of a fleet
        (controller and managed hosts), so that files and audit records mean the same user
        everywhere.
      '';
    };

    autonomyLevel = mkOption {
      type = types.enum [
        "observe"
        "suggest"
        "auto-safe"
        "auto-full"
      ];
      default = keys.defaults.autonomyLevel;
      description = ''
        How much Macha may do on its own: `observe` (nothing executes), `suggest` (read-only
        diagnostics execute, everything else waits for an approval), `auto-safe` (plus restarts,
        reset-failed and clean-ups of unprotected units), `auto-full` (plus everything outside the
        always-approval classes: stopping units, store repair, config changes, reboots and
        deployments always need a person).
      '';
    };

    checkInterval = mkOption {
      type = types.str;
      default = keys.defaults.checkInterval;
      example = "30s";
      description = "How often the periodic check runs (minimum 5s). Unit failures are also seen at once by signal.";
    };

    models = {
      triage = mkOption {
        type = types.str;
        default = keys.defaults.models.triage;
        description = "Small, fast model for triage.";
      };
      analysis = mkOption {
        type = types.str;
        default = keys.defaults.models.analysis;
        description = "Larger model for analysis and chat.";
      };
    };

    ollama = {
      enable = mkEnableOption ''
        Ollama on this host (`services.ollama`), with the configured models preloaded, and point
        Macha at it'';
      url = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "http://gpu-box:11434";
        description = ''
          URL of the Ollama server. `null`: the local Ollama when `ollama.enable` is set, else no
          model server. Setting a URL (or `ollama.enable`) turns the model on
          (`settings.llm.enable`), which Macha only uses for diagnosis and proposals: every action
          still passes the policy.
        '';
      };
    };

    protectedServices = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "postgresql"
        "backup-*"
      ];
      description = ''
        Units Macha must never touch, added to the built-in list (ssh, dbus, polkit, network
        managers, systemd-*, nix-daemon, getty, Macha itself, …), which cannot be shortened.
        Names or prefixes with a trailing `*`.
      '';
    };

    modelMayExecute = mkOption {
      type = types.listOf (
        types.enum [
          "diagnostic"
          "reset_failed"
          "restart_unit"
          "journal_vacuum"
          "collect_garbage"
          "start_unit"
          "store_verify"
          "stop_unit"
          "store_repair"
          "config_change"
          "reboot"
          "nixos_switch"
        ]
      );
      default = keys.defaults.modelMayExecute;
      example = [
        "diagnostic"
        "reset_failed"
      ];
      description = ''
        Action kinds the language model's proposals may execute without a person, within the
        autonomy level (`llm.may_execute`). Everything else the model proposes waits for an
        approval. The default lets it run read-only diagnostics only.
      '';
    };

    cleanupMinAgeDays = mkOption {
      type = types.ints.between 1 3650;
      default = keys.defaults.cleanupMinAgeDays;
      description = ''
        Journal vacuums and garbage collections of anything younger than this many days always
        need a person, whoever proposes them (`policy.cleanup_min_age_days`).
      '';
    };

    adminGroup = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "wheel";
      description = ''
        Members of this group (and root) may approve, reject, resolve and close through the local
        socket; the daemon checks the caller's kernel credentials. `null`: root only.
      '';
    };

    viewerGroup = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "macha-viewers";
      description = ''
        Members of this group may read issues, approvals, the audit trail, the hosts and the last
        check report through the local socket, and ask the model (whose proposals are then queued
        for an admin, never executed). Everyone may read the status summary. `null`: the admin
        group.
      '';
    };

    hosts = mkOption {
      type = types.attrsOf (types.submodule hostModule);
      default = { };
      example = literalExpression ''
        {
          web1 = { address = "10.0.0.11"; hostKey = "ssh-ed25519 AAAA..."; tags = [ "web" ]; };
        }
      '';
      description = ''
        Hosts Macha manages over SSH. Each needs `services.macha.managed` (the `macha` user, this
        host's public key, the narrow polkit and sudo rules).
      '';
    };

    discovery = {
      enable = mkEnableOption ''
        discovery of hosts from forwarded journals (journal-remote); discovered hosts are recorded
        as untrusted and never contacted unless they match `allowedDomains`'';
      allowedDomains = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "*.lab.example.org" ];
        description = "Domain patterns whose discovered hosts are admitted automatically.";
      };
    };

    prometheus = {
      enable = mkEnableOption ''
        Prometheus metrics: the managed hosts' state and Macha's own health on `/metrics`
        (docs/metrics.md)'';
      listen = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "0.0.0.0:9469";
        description = ''
          Address and port of `/metrics`, or `"off"` for the textfile only. Default (null): the
          daemon's, `127.0.0.1:9469`. Open the firewall yourself if Prometheus scrapes from elsewhere.
        '';
      };
      textfile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/prometheus-node-exporter-text-files";
        description = ''
          node_exporter's textfile-collector directory: Macha writes `macha.prom` there after each
          cycle (atomically). The unit may write to this directory.
        '';
      };
    };

    web = {
      enable = mkEnableOption ''
        the web console (docs/web.md): the fleet, issues, approvals, deployments, the quest log and
        the knowledge base in a browser, and approval decisions with the socket's guarantees'';
      listen = mkOption {
        type = types.str;
        default = keys.defaults.web.listen;
        example = "127.0.0.1:8470";
        description = ''
          Where the console listens: `unix:<path>` (the default, a socket in /run/macha beside the
          API socket, reached with `ssh -L 8470:/run/macha/web.sock host`; the kernel names every
          peer and the socket's tiers apply) or an address with a port (TCP; log in with
          `macha web login`, or through a reverse proxy with `proxyUserHeader`). Nothing listens
          on TCP unless this says so, and the module opens no firewall port.
        '';
      };
      trustedProxies = mkOption {
        type = types.listOf types.str;
        default = keys.defaults.web.trustedProxies;
        example = [ "127.0.0.1" ];
        description = ''
          IP addresses of reverse proxies whose `proxyUserHeader` is believed (TCP only). The
          header from any other peer is refused and audited.
        '';
      };
      proxyUserHeader = mkOption {
        type = types.nullOr types.str;
        default = keys.defaults.web.proxyUserHeader;
        example = "X-Remote-User";
        description = ''
          The header in which a trusted proxy names the person it authenticated (TCP only).
          `null`: no proxy logins, only `macha web login` links.
        '';
      };
      proxyAdmins = mkOption {
        type = types.listOf types.str;
        default = keys.defaults.web.proxyAdmins;
        example = [ "alice" ];
        description = "Proxy users who may decide approvals (admins).";
      };
      proxyViewers = mkOption {
        type = types.listOf types.str;
        default = keys.defaults.web.proxyViewers;
        example = [ "bob" ];
        description = "Proxy users who may read (viewers); any other proxy user gets nothing.";
      };
      sessionIdle = mkOption {
        type = types.str;
        default = keys.defaults.web.sessionIdle;
        example = "10m";
        description = "A login session ends after this long unused (at least 1m, at most `sessionMax`).";
      };
      sessionMax = mkOption {
        type = types.str;
        default = keys.defaults.web.sessionMax;
        example = "8h";
        description = "A login session ends after this long, used or not.";
      };
      secureCookies = mkOption {
        type = types.bool;
        default = keys.defaults.web.secureCookies;
        description = "Mark the session cookie `Secure` (set it when TLS is in front of the console).";
      };
      twoPerson = mkOption {
        type = types.bool;
        default = keys.defaults.web.twoPerson;
        description = ''
          A critical action approved in the console needs two distinct admins (the console's rule;
          `macha approve` on the command line is not bound by it).
        '';
      };
    };

    modelApiKeyFile = mkOption {
      type = types.nullOr types.externalPath;
      default = null;
      example = "/run/secrets/macha-llm-api-key";
      description = ''
        File holding the API key of an OpenAI-compatible model server (sent as a bearer token).
        It is read by systemd (as root) and handed to the daemon as a credential, so it may be
        readable by root only; it never enters the Nix store or the configuration file.
      '';
    };

    notifications =
      let
        severity = mkOption {
          type = types.nullOr (
            types.enum [
              "info"
              "warning"
              "critical"
            ]
          );
          default = null;
          description = "The least severity this channel is sent (daemon default: warning).";
        };
        kinds = mkOption {
          type = types.nullOr (types.listOf types.str);
          default = null;
          example = [
            "issue_opened"
            "approval_pending"
            "security"
          ];
          description = "The event kinds this channel is sent (docs/notifications.md; default: all).";
        };
        secret =
          what:
          mkOption {
            type = types.nullOr types.externalPath;
            default = null;
            example = "/run/secrets/macha-notify";
            description = ''
              File holding ${what}. systemd reads it (as root) and hands it to the daemon as a
              credential (`LoadCredential`); it never enters the Nix store or the configuration.
            '';
          };
        url =
          example:
          mkOption {
            type = types.nullOr types.str;
            default = null;
            inherit example;
            description = "The server's address; the channel is off while this is null.";
          };
      in
      {
        linkBase = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "https://macha.example.org";
          description = ''
            The web console's address: messages then link to `<linkBase>/approvals/<id>` and
            `<linkBase>/issues/<id>`.
          '';
        };
        modelMaySend = mkOption {
          type = types.bool;
          default = keys.defaults.notifications.modelMaySend;
          description = ''
            Whether the model is offered the `send_notification` tool (rate-limited, redacted and
            marked as written by the model).
          '';
        };
        gotify = {
          url = url "https://gotify.example.org";
          tokenFile = secret "the Gotify application token";
          minSeverity = severity;
          inherit kinds;
        };
        ntfy = {
          url = url "https://ntfy.sh";
          topic = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "macha-alerts";
            description = "The ntfy topic messages are published to.";
          };
          tokenFile = secret "an ntfy access token (optional: a public topic needs none)";
          minSeverity = severity;
          inherit kinds;
        };
        webhook = {
          url = url "https://hooks.example.org/macha";
          secretFile = secret "the HMAC-SHA256 key that signs every webhook message";
          minSeverity = severity;
          inherit kinds;
        };
      };

    environmentFile = mkOption {
      type = types.nullOr types.externalPath;
      default = null;
      example = "/run/secrets/macha.env";
      description = ''
        Environment file for the unit (systemd `EnvironmentFile=`, read by systemd as root). The
        daemon reads `MACHA_LOG` (log filter, e.g. `macha=debug`; `RUST_LOG` as a fallback); the
        commands it runs get a cleared environment. Secrets belong in files
        (`modelApiKeyFile`), not here.
      '';
    };

    settings = mkOption {
      type = types.submodule { freeformType = settingsFormat.type; };
      default = { };
      example = literalExpression ''
        {
          flap = { limit = 3; window = "30m"; };
          thresholds.disk_warn_percent = 80.0;
          approvals.expiry = "12h";
        }
      '';
      description = ''
        The daemon's configuration (/etc/macha/macha.toml; every key in docs/configuration.md).
        The typed options above are written into it, and own their keys: setting one of those
        keys here as well is an error that names the option to use. Unknown keys fail the build
        (`macha check-config`). Never put secrets here: the file is in the world-readable store;
        reference files by absolute path as strings.
      '';
    };
  };

  config = mkMerge [
    (mkIf (cfg.enable || cfg.managed.enable) {
      assertions = [
        {
          assertion = unmapped == [ ] && undeclared == [ ];
          message = ''
            services.macha: the module's options and modules/config-keys.nix disagree.
            Declared but not mapped: ${builtins.toJSON unmapped}; mapped but not declared: ${builtins.toJSON undeclared}.
            Map each option to a daemon key (`typed`) or list it in `moduleOnly`.'';
        }
      ];

      users.users.${user} = {
        isSystemUser = true;
        inherit (cfg) uid;
        group = user;
        home = stateDir;
        description = "Macha, the AI system administrator";
        # The whole system journal (journalctl), locally and over SSH.
        extraGroups = [ "systemd-journal" ];
      };
      users.groups.${user}.gid = cfg.uid;

      # Unit control without root: see ./polkit-rule.nix.
      security.polkit.enable = true;
      security.polkit.extraConfig = import ./polkit-rule.nix {
        inherit user policyConfig;
        macha = cfg.package;
        # The fixed clean-up units exist where the daemon runs.
        cleanupUnits = cfg.enable;
      };
    })

    (mkIf cfg.enable {
      assertions = [
        {
          assertion = ownedConflicts == [ ];
          message = lib.concatMapStringsSep "\n" conflictMessage ownedConflicts;
        }
        {
          assertion = nixPathsIn [ ] cfg.settings == [ ];
          message = lib.concatMapStringsSep "\n" (
            p:
            "services.macha.settings.${lib.concatStringsSep "." p} is a Nix path: it would be copied into the world-readable Nix store. Write it as a string (\"/run/secrets/…\") so the file stays where it is."
          ) (nixPathsIn [ ] cfg.settings);
        }
        {
          assertion = keys.notificationProblems cfg == [ ];
          message = lib.concatStringsSep "\n" (keys.notificationProblems cfg);
        }
        {
          assertion = !(cfg.hosts ? local);
          message = "services.macha.hosts.local: \"local\" is this host, which Macha always manages; give the managed host another name.";
        }
      ]
      ++ keys.webAssertions cfg.web
      ++ [
        {
          assertion = cfg.adminGroup == null || config.users.groups ? ${cfg.adminGroup};
          message = "services.macha.adminGroup = \"${toString cfg.adminGroup}\" is not a group on this host: create it (users.groups.${toString cfg.adminGroup} = { };) or use an existing one such as \"wheel\".";
        }
      ];
      warnings = keys.webWarnings cfg.web;

      services.macha.settings = mkMerge [
        # Typed options and fixed keys, at default priority so that a conflicting definition in
        # `settings` reaches the assertion above (with its explanation) instead of a merge error.
        (lib.mapAttrsRecursive (_: mkDefault) moduleSettings)
        {
          llm.enable = mkDefault (ollamaUrl != null);
          tools = lib.mapAttrs (_: mkDefault) toolPaths;
        }
      ];

      environment.etc."macha/macha.toml".source = configFile;
      environment.systemPackages = [ cfg.package ];

      services.ollama = mkIf cfg.ollama.enable {
        enable = true;
        loadModels = lib.unique [
          cfg.models.triage
          cfg.models.analysis
        ];
      };

      systemd.services = cleanupUnits;
    })

    (mkIf cfg.enable {
      systemd.services.macha = {
        description = "Macha, the AI system administrator";
        documentation = [ "man:macha(1)" ];
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [
          "network-online.target"
          "dbus.service"
        ]
        ++ lib.optional cfg.ollama.enable "ollama.service";
        # A switch restarts a changed Macha (one restart after the new units are in place, not a
        # stop before the activation and a start after it), so a new version or configuration never
        # sits unused behind an old daemon. Deployments run their activation in a transient unit
        # (`macha-deploy-<id>`), outside this unit, so no switch is cut off by this restart
        # (docs/decisions/0012-module-restart-and-cleanup-units.md).
        restartIfChanged = true;
        stopIfChanged = false;
        path = [
          config.systemd.package
          config.nix.package
          pkgs.coreutils
          pkgs.iproute2
          pkgs.openssh
        ];
        serviceConfig = {
          Type = "notify";
          NotifyAccess = "main";
          # The daemon sends WATCHDOG=1 at half this interval.
          WatchdogSec = "60s";
          ExecStartPre = lib.optional usesFleet sshKeygen;
          ExecStart = "${lib.getExe cfg.package} daemon --config ${configFile}";
          Restart = "on-failure";
          RestartSec = "5s";
          TimeoutStopSec = "30s";
          EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
          LoadCredential =
            lib.optional (cfg.modelApiKeyFile != null) "${keys.apiKeyCredential}:${cfg.modelApiKeyFile}"
            ++ keys.notifyLoadCredentials cfg;
          # The textfile collector's directory is the one place outside the state directory it writes.
          ReadWritePaths = lib.optional (cfg.prometheus.textfile != null) cfg.prometheus.textfile;

          # A fixed system user, not DynamicUser: the same UID on every host of the fleet, a
          # stable owner for the database and SSH key, and a name for the polkit rule.
          User = user;
          Group = user;
          # Reading the whole system journal.
          SupplementaryGroups = [ "systemd-journal" ];
          StateDirectory = "macha";
          StateDirectoryMode = "0700";
          # The socket directory: the socket itself is 0666 (authorisation is by SO_PEERCRED),
          # so the directory must be traversable by every local user.
          RuntimeDirectory = "macha";
          RuntimeDirectoryMode = "0755";
          UMask = "0077";

          # Hardening: the strict baseline of nixpkgs' best modules; every exception says why.
          NoNewPrivileges = true;
          CapabilityBoundingSet = [ "" ];
          AmbientCapabilities = [ "" ];
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          PrivateMounts = true;
          # Hardware is read from /sys; GPUs that need device nodes (nvidia-smi) show as unavailable.
          PrivateDevices = true;
          DevicePolicy = "closed";
          # Exception: no user namespace. The socket authorises callers by SO_PEERCRED, which must
          # see their real UIDs and GIDs (in a private user namespace they would all be "nobody").
          PrivateUsers = false;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          ProtectControlGroups = true;
          ProtectClock = true;
          ProtectHostname = true;
          # Exception: the snapshot lists the top processes of all users (/proc/<pid>), so other
          # users' processes stay visible ("invisible" would hide them).
          ProtectProc = "default";
          # Exception: /proc/meminfo, /proc/stat, /proc/loadavg, /proc/pressure are observed.
          ProcSubset = "all";
          RestrictAddressFamilies = [
            # D-Bus (systemd), the local socket, the journal, the nix-daemon socket.
            "AF_UNIX"
            # Exception: the model server and managed hosts over SSH can be anywhere.
            "AF_INET"
            "AF_INET6"
            # Exception: `ip` and `ss` diagnostics, and address lookups (getaddrinfo).
            "AF_NETLINK"
          ];
          # Exception: no IPAddressDeny/PrivateNetwork, for the same reason as AF_INET.
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          RemoveIPC = true;
          KeyringMode = "private";
          SystemCallArchitectures = "native";
          # Exception: @resources stays allowed; the Nix tools Macha runs raise their stack limit
          # (setrlimit).
          SystemCallFilter = [
            "@system-service"
            "~@privileged"
          ];
          SystemCallErrorNumber = "EPERM";
        };
      };
    })
  ];

  # No entry in lib.maintainers names Macha's maintainers yet; the list stays empty until one does.
  meta.maintainers = [ ];
}
