# The one map between the options of `services.macha` and the daemon's configuration keys
# (`CONFIG_KEYS` in crates/macha/src/config.rs).
#
# Plain Nix, no nixpkgs: the module (modules/macha.nix) takes its typed defaults and the way it
# writes typed options into `settings` from here, and crates/macha/tests/integration/nix_module.rs evaluates
# this file with `nix-instantiate --eval --json` to check that
#   * every daemon key is reachable: typed ∪ fixed ∪ settingsOnly = CONFIG_KEYS, with no overlap;
#   * what `toSettings` renders is accepted by `macha check-config` and resolves to the values given.
# The module checks the other half at every evaluation: its declared options are exactly
# `attrNames typed ++ moduleOnly` (the assertion in modules/macha.nix).
let
  splitDot = s: builtins.filter builtins.isString (builtins.split "\\." s);

  # Drops attributes whose value is null (TOML has no null; an absent key means "daemon default").
  dropNulls = attrs: builtins.removeAttrs attrs (builtins.filter (n: attrs.${n} == null) (builtins.attrNames attrs));

  # A dotted key up to (not including) its first `<name>` component: `hosts.<name>.port` → [ "hosts" ].
  ownedPath =
    key:
    let
      go = parts: if parts == [ ] || builtins.head parts == "<name>" then [ ] else [ (builtins.head parts) ] ++ go (builtins.tail parts);
    in
    go (splitDot key);

  hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;

  unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];

  setPath = path: value: if path == [ ] then value else { ${builtins.head path} = setPath (builtins.tail path) value; };

  # Recursive merge of attribute sets (`b` wins on leaves).
  merge =
    a: b:
    a
    // builtins.mapAttrs (
      n: v: if a ? ${n} && builtins.isAttrs a.${n} && builtins.isAttrs v then merge a.${n} v else v
    ) b;
in
rec {
  inherit ownedPath;

  # Typed option (its path under services.macha) → the daemon key it is written to.
  typed = {
    "autonomyLevel" = "autonomy";
    "checkInterval" = "check_interval";
    "protectedServices" = "protected_units";
    "adminGroup" = "admin_group";
    "viewerGroup" = "viewer_group";
    "modelMayExecute" = "llm.may_execute";
    "cleanupMinAgeDays" = "policy.cleanup_min_age_days";
    "models.triage" = "llm.models.triage";
    "models.analysis" = "llm.models.analysis";
    "ollama.url" = "llm.url";
    "hosts.<name>.address" = "hosts.<name>.address";
    "hosts.<name>.user" = "hosts.<name>.user";
    "hosts.<name>.port" = "hosts.<name>.port";
    "hosts.<name>.hostKey" = "hosts.<name>.host_key";
    "hosts.<name>.tags" = "hosts.<name>.tags";
    "hosts.<name>.dependsOn" = "hosts.<name>.depends_on";
    "discovery.enable" = "discovery.enable";
    "discovery.allowedDomains" = "discovery.allowed_domains";
    "modelApiKeyFile" = "llm.api_key_file";
    "prometheus.enable" = "prometheus.enable";
    "prometheus.listen" = "prometheus.listen";
    "prometheus.textfile" = "prometheus.textfile";
    "notifications.linkBase" = "notifications.link_base";
    "notifications.modelMaySend" = "notifications.model_may_send";
    "notifications.gotify.url" = "notifications.gotify.url";
    "notifications.gotify.tokenFile" = "notifications.gotify.token_file";
    "notifications.gotify.minSeverity" = "notifications.gotify.min_severity";
    "notifications.gotify.kinds" = "notifications.gotify.kinds";
    "notifications.ntfy.url" = "notifications.ntfy.url";
    "notifications.ntfy.topic" = "notifications.ntfy.topic";
    "notifications.ntfy.tokenFile" = "notifications.ntfy.token_file";
    "notifications.ntfy.minSeverity" = "notifications.ntfy.min_severity";
    "notifications.ntfy.kinds" = "notifications.ntfy.kinds";
    "notifications.webhook.url" = "notifications.webhook.url";
    "notifications.webhook.secretFile" = "notifications.webhook.secret_file";
    "notifications.webhook.minSeverity" = "notifications.webhook.min_severity";
    "notifications.webhook.kinds" = "notifications.webhook.kinds";
    "web.enable" = "web.enable";
    "web.listen" = "web.listen";
    "web.trustedProxies" = "web.trusted_proxies";
    "web.proxyUserHeader" = "web.proxy_user_header";
    "web.proxyAdmins" = "web.proxy_admins";
    "web.proxyViewers" = "web.proxy_viewers";
    "web.sessionIdle" = "web.session_idle";
    "web.sessionMax" = "web.session_max";
    "web.secureCookies" = "web.secure_cookies";
    "web.twoPerson" = "web.two_person";
  };

  # Keys the module sets to what the unit provides (StateDirectory, RuntimeDirectory); they cannot
  # be changed through `settings` (an assertion says so).
  fixed = {
    "paths.state_dir" = "/var/lib/macha";
    "paths.socket" = "/run/macha/macha.sock";
  };

  # Keys with no typed option: set them in `services.macha.settings`. (`llm.enable` and `tools`
  # get defaults from the module.)
  settingsOnly = [
    "paths.database"
    "systemd.enable"
    "systemd.bus"
    "journal.enable"
    "journal.journalctl"
    "journal.directory"
    "journal.window"
    "flap.limit"
    "flap.window"
    "approvals.expiry"
    "executor.timeout"
    "executor.verify_delay"
    "deploy.activate_timeout"
    "deploy.reconnect_timeout"
    "deploy.verify_timeout"
    "deploy.retry"
    "deploy.dead_man"
    "deploy.min_free_mib"
    "deploy.engine"
    "deploy.checks"
    "knowledge.runbooks"
    "knowledge.embedder"
    "knowledge.model_dir"
    "knowledge.embed_model"
    "hosts.<name>.health"
    "issues.close_after"
    "issues.archive_after"
    "history.raw_retention"
    "history.downsample"
    "history.retention"
    "history.prompts_retention"
    "thresholds"
    "tools"
    "ssh.user"
    "ssh.key"
    "ssh.known_hosts"
    "ssh.connect_timeout"
    "ssh.command_timeout"
    "ssh.max_sessions"
    "ssh.parallelism"
    "discovery.domain"
    "discovery.window"
    "knowledge.flake"
    "knowledge.idle.max_cpu_pressure"
    "knowledge.idle.max_memory_pressure"
    "knowledge.idle.max_load_per_cpu"
    "knowledge.idle.memory_max_mib"
    "llm.enable"
    "llm.backend"
    "llm.timeout"
    "llm.context_tokens"
    "llm.tool_mode"
    "llm.concurrency"
    "llm.redact_patterns"
    "llm.readable_paths"
    "llm.answer_max_bytes"
    "llm.check_ports"
    "llm.cache_ttl"
    "knowledge.change_window"
    "prometheus.max_hosts"
    "prometheus.max_mounts"
    "anomaly.enable"
    "anomaly.z_threshold"
    "anomaly.persist"
    "anomaly.host_rate"
    "fillup.free_below_percent"
    "fillup.horizon"
    "fillup.window"
    "fillup.old_generation_days"
    "notifications.group_wait"
    "notifications.group_interval"
    "notifications.repeat_interval"
    "notifications.critical_group_wait"
    "notifications.flap_opens"
    "notifications.flap_window"
    "notifications.stable_after"
    "notifications.retry_max"
    "notifications.model_per_hour"
  ];

  # Options that configure the NixOS side (the unit, the user, companions), not a daemon key.
  moduleOnly = [
    "enable"
    "package"
    "settings"
    "environmentFile"
    "uid"
    "ollama.enable"
    "managed.enable"
    "managed.authorizedKeys"
    "managed.protectedServices"
    "managed.deploy.enable"
  ];

  # Defaults of the typed options. They equal the daemon's own defaults (tested), and are written
  # into the configuration explicitly so that what runs is what `nixos-option` shows.
  defaults = {
    autonomyLevel = "suggest";
    checkInterval = "60s";
    modelMayExecute = [ "diagnostic" ];
    cleanupMinAgeDays = 7;
    notifications.modelMaySend = false;
    models = {
      triage = "qwen2.5:3b";
      analysis = "qwen2.5:14b";
    };
    web = {
      enable = false;
      # Beside the API socket, in the unit's RuntimeDirectory: nothing listens on TCP unless asked.
      listen = "unix:/run/macha/web.sock";
      trustedProxies = [ ];
      proxyUserHeader = null;
      proxyAdmins = [ ];
      proxyViewers = [ ];
      sessionIdle = "30m";
      sessionMax = "12h";
      secureCookies = false;
      twoPerson = false;
    };
  };

  # The directory the console's Unix socket must be in: the unit's RuntimeDirectory, the only
  # place under /run the sandbox (ProtectSystem=strict) lets the daemon write.
  webSocketDir = "/run/macha/";

  # The module's checks of `services.macha.web` (`web` is `cfg.web`), as plain data so that the
  # test can evaluate them without nixpkgs: assertions (a wrong setup fails the build) and
  # warnings (a setup that works but probably is not what was meant).
  webAssertions =
    web:
    let
      unix = hasPrefix "unix:" web.listen;
      path = builtins.substring 5 (builtins.stringLength web.listen) web.listen;
    in
    [
      {
        assertion = !web.enable || !unix || (hasPrefix webSocketDir path && builtins.match ".*/\\.\\.?(/.*)?" path == null);
        message = "services.macha.web.listen = \"${web.listen}\": the console's Unix socket must be under ${webSocketDir} (the unit's RuntimeDirectory; the sandbox makes the rest of the system read-only). Use \"unix:${webSocketDir}web.sock\" or a TCP address.";
      }
      {
        assertion = !web.enable || unix || web.trustedProxies == [ ] || web.proxyUserHeader != null;
        message = "services.macha.web.trustedProxies is set but services.macha.web.proxyUserHeader is not: the proxies would be trusted for nothing (their users could not log in through them). Set proxyUserHeader to the header the proxy names its authenticated user in (say \"X-Remote-User\"), or remove trustedProxies.";
      }
    ];

  webWarnings =
    web:
    let
      unix = hasPrefix "unix:" web.listen;
      loopback = hasPrefix "127." web.listen || hasPrefix "[::1]:" web.listen;
      proxied = web.trustedProxies != [ ] || web.proxyUserHeader != null || web.proxyAdmins != [ ] || web.proxyViewers != [ ];
    in
    if !web.enable then
      [ ]
    else
      (if unix && proxied then
        [ "services.macha.web: trustedProxies, proxyUserHeader, proxyAdmins and proxyViewers apply to a TCP listen address only; on the Unix socket ${web.listen} the kernel names every peer and they are ignored." ]
      else
        [ ])
      ++ (if !unix && !loopback && !web.secureCookies then
        [ "services.macha.web.listen = \"${web.listen}\" is reachable beyond this host over plain HTTP: put a TLS reverse proxy in front (listen on 127.0.0.1) or, with TLS in front, set services.macha.web.secureCookies = true." ]
      else
        [ ]);

  # Where the unit's credential (LoadCredential) for the model server's API key appears to the
  # daemon.
  apiKeyCredential = "llm-api-key";
  apiKeyPath = "/run/credentials/macha.service/${apiKeyCredential}";

  # The notification channels' secrets (LoadCredential names) and where the daemon reads them:
  # the unit's credentials directory ($CREDENTIALS_DIRECTORY), never the Nix store.
  notifyCredentials = {
    gotify = "notify-gotify-token";
    ntfy = "notify-ntfy-token";
    webhook = "notify-webhook-secret";
  };
  credentialPath = name: "/run/credentials/macha.service/${name}";

  # The channels' options with their defaults filled in (`cfg.notifications` may be partial).
  notifyChannels =
    cfg:
    let
      n = cfg.notifications or { };
      ch =
        name: extra:
        {
          url = null;
          minSeverity = null;
          kinds = null;
        }
        // extra
        // (n.${name} or { });
    in
    {
      gotify = ch "gotify" { tokenFile = null; };
      ntfy = ch "ntfy" {
        topic = null;
        tokenFile = null;
      };
      webhook = ch "webhook" { secretFile = null; };
    };

  # What is wrong with the notification options, one sentence each (the module's assertions):
  # a channel that needs a secret has a URL but no secret file.
  notificationProblems =
    cfg:
    let
      c = notifyChannels cfg;
    in
    (if c.gotify.url != null && c.gotify.tokenFile == null then
      [ "services.macha.notifications.gotify.url is set but gotify.tokenFile is not: Gotify needs an application token (a file outside the Nix store, such as /run/secrets/gotify-token)." ]
    else
      [ ])
    ++ (
      if c.webhook.url != null && c.webhook.secretFile == null then
        [ "services.macha.notifications.webhook.url is set but webhook.secretFile is not: every webhook message is signed with the key in that file." ]
      else
        [ ]
    )
    ++ (
      if c.ntfy.url != null && c.ntfy.topic == null then
        [ "services.macha.notifications.ntfy.url is set but ntfy.topic is not." ]
      else
        [ ]
    );

  # The LoadCredential entries of the configured secrets.
  notifyLoadCredentials =
    cfg:
    let
      c = notifyChannels cfg;
      one = name: file: if file == null then [ ] else [ "${notifyCredentials.${name}}:${toString file}" ];
    in
    one "gotify" c.gotify.tokenFile ++ one "ntfy" c.ntfy.tokenFile ++ one "webhook" c.webhook.secretFile;

  # The paths of `settings` owned by typed options or fixed by the module.
  ownedPaths = unique (map ownedPath (builtins.attrValues typed ++ builtins.attrNames fixed));

  # The settings the typed options stand for. `cfg` is `config.services.macha` (or any attribute
  # set of the same shape, as the test gives); `ollama.url` is the effective URL (the module fills
  # in the local Ollama's when `ollama.enable` is set and no URL is given).
  toSettings =
    cfg:
    let
      llm = dropNulls {
        url = cfg.ollama.url;
        may_execute = cfg.modelMayExecute;
        api_key_file = if cfg.modelApiKeyFile == null then null else apiKeyPath;
        models = dropNulls {
          inherit (cfg.models) triage analysis;
        };
      };
    in
    dropNulls {
      autonomy = cfg.autonomyLevel;
      check_interval = cfg.checkInterval;
      protected_units = cfg.protectedServices;
      admin_group = cfg.adminGroup;
      viewer_group = cfg.viewerGroup;
      policy.cleanup_min_age_days = cfg.cleanupMinAgeDays;
      inherit llm;
      hosts =
        if cfg.hosts == { } then
          null
        else
          builtins.mapAttrs (
            _: h:
            dropNulls {
              inherit (h) address user port tags;
              host_key = h.hostKey;
              depends_on = h.dependsOn or [ ];
            }
          ) cfg.hosts;
      discovery = {
        inherit (cfg.discovery) enable;
        allowed_domains = cfg.discovery.allowedDomains;
      };
      prometheus = dropNulls {
        inherit (cfg.prometheus) enable listen textfile;
      };
      notifications =
        let
          c = notifyChannels cfg;
          n = cfg.notifications or { };
          secret = name: file: if file == null then null else credentialPath notifyCredentials.${name};
          channel =
            name: extra:
            let
              v = c.${name};
            in
            if v.url == null then
              null
            else
              dropNulls (
                {
                  inherit (v) url kinds;
                  min_severity = v.minSeverity;
                }
                // extra
              );
          all = dropNulls {
            link_base = n.linkBase or null;
            model_may_send = n.modelMaySend or null;
            gotify = channel "gotify" { token_file = secret "gotify" c.gotify.tokenFile; };
            ntfy = channel "ntfy" {
              inherit (c.ntfy) topic;
              token_file = secret "ntfy" c.ntfy.tokenFile;
            };
            webhook = channel "webhook" { secret_file = secret "webhook" c.webhook.secretFile; };
          };
        in
        if all == { } then null else all;
      # Only `enable = false` while the console is off: its other keys mean nothing then.
      web =
        if cfg.web.enable then
          dropNulls {
            enable = true;
            inherit (cfg.web) listen;
            trusted_proxies = cfg.web.trustedProxies;
            proxy_user_header = cfg.web.proxyUserHeader;
            proxy_admins = cfg.web.proxyAdmins;
            proxy_viewers = cfg.web.proxyViewers;
            session_idle = cfg.web.sessionIdle;
            session_max = cfg.web.sessionMax;
            secure_cookies = cfg.web.secureCookies;
            two_person = cfg.web.twoPerson;
          }
        else
          { enable = false; };
    };

  # `fixed` as nested settings.
  fixedSettings = builtins.foldl' (acc: k: merge acc (setPath (splitDot k) fixed.${k})) { } (builtins.attrNames fixed);

  # Everything the module writes from its options: typed values plus the fixed keys.
  moduleSettings = cfg: merge (toSettings cfg) fixedSettings;
}
