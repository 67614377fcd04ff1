//! What the policy knows, built from the configuration and the store by one function for the
//! daemon's engine and for `macha policy check`, so that both give the same verdict: the autonomy
//! level, the protected units, the limits that depend on the proposer and the arguments, the
//! trusted hosts of the registry and the flap history of the actions table.

use crate::config::Config;
use anyhow::Context;
use macha_core::action::{Action, Origin};
use macha_core::flap::FlapGuard;
use macha_core::policy::{self, Autonomy, Decision, PolicyInputs};
use macha_core::{HostName, Now};
use macha_store::{FleetHost, Store};
use std::collections::BTreeSet;

/// The hosts actions may target: registered, trusted (a standing that may act), a valid target, and
/// not currently presenting a changed host key. The fleet applies the same rule whenever the
/// registry changes.
pub fn trusted_hosts(hosts: &[FleetHost], default_user: &str) -> BTreeSet<HostName> {
    hosts
        .iter()
        .filter(|h| crate::fleet::standing(h.record.state).may_act())
        .filter(|h| h.status.get("kind").and_then(|k| k.as_str()) != Some("host_key_changed"))
        .filter_map(|h| crate::fleet::target_of(h, default_user).ok())
        .map(|t| t.name)
        .collect()
}

/// The policy's inputs from `config` and, when there is one, `store`: trusted hosts from its
/// registry and the flap guard reloaded from its actions within the flap window. Without a store
/// (no database yet) there are no trusted hosts and no flap history.
pub fn load(config: &Config, store: Option<&Store>, now: Now) -> anyhow::Result<PolicyInputs> {
    let mut inputs = PolicyInputs::new(config.autonomy, config.protected());
    inputs.limits = config.policy_limits();
    inputs.flap = FlapGuard::new(config.flap_limit, config.flap_window);
    if let Some(store) = store {
        inputs.known_hosts =
            trusted_hosts(&store.list_fleet_hosts().context("reading the host registry")?, &config.ssh.user);
        let history = store.actions_since(now.wall.minus(config.flap_window)).context("loading flap history")?;
        let reloaded = inputs.flap.reload(history.iter().map(|a| (a.target.as_str(), a.ts_started)), now);
        if reloaded.clamped > 0 {
            tracing::warn!(
                clamped = reloaded.clamped,
                "flap history stamped after now (wall clock set back?): counted as now"
            );
        }
    }
    Ok(inputs)
}

/// What `macha policy check` decides for `action` proposed by `origin`: the same inputs as the
/// daemon, optionally at another autonomy level. Nothing is executed: a permit is dropped here.
pub fn check(
    config: &Config,
    store: Option<&Store>,
    action: &Action,
    origin: &Origin,
    autonomy: Option<Autonomy>,
    now: Now,
) -> anyhow::Result<Decision> {
    let mut inputs = load(config, store, now)?;
    if let Some(a) = autonomy {
        inputs.autonomy = a;
    }
    let ruling = policy::decide(action, origin, &inputs.context(), now);
    Ok(ruling.decision().clone())
}
