//! The router's memory across a restart, on a simulated clock: a router exported, written as JSON,
//! read back and restored says exactly what a router that never stopped says, message ids
//! included; a state that is corrupt, of another version, too large or too old starts empty.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn at(secs: u64) -> Timestamp {
    T0.plus(Duration::from_secs(secs))
}

fn config() -> RouterConfig {
    RouterConfig {
        routes: vec![Route { channel: "phone".to_owned(), filter: ChannelFilter::default() }],
        ..RouterConfig::default()
    }
}

fn ev(kind: EventKind, severity: Severity, host: &str, key: &str, t: Timestamp) -> Event {
    Event {
        kind,
        severity,
        host: host.to_owned(),
        group_key: key.to_owned(),
        title: format!("{key} {}", kind.as_str()),
        body: format!("body of {key}"),
        link: None,
        at: t,
        source: None,
    }
}

/// One thing that happens to a router.
#[derive(Clone)]
enum Step {
    Event(EventKind, Severity, &'static str, u64),
    Tick(u64),
    Inhibit(&'static str),
    Lift(&'static str),
    /// The daemon stops here and starts again (restored from the stored JSON) at this second.
    Restart(u64),
}

use EventKind::{IssueOpened, IssueResolved, RemediationDone};
use Severity::{Critical, Info, Warning};
use Step::{Event as E, Inhibit, Lift, Restart, Tick};

/// The router after a stop and a start at `now`: through the stored text, as the daemon does it.
fn restarted(r: &Router, now: Timestamp) -> Router {
    let text = r.export_state().to_json().unwrap();
    let state = RouterState::from_json(&text).unwrap();
    Router::restore(r.config().clone(), state, now)
}

/// What the router says at each step; with `restarts`, the restarts happen, otherwise they are
/// skipped (the router that never stopped).
fn run(steps: &[Step], restarts: bool) -> Vec<Vec<Outgoing>> {
    let mut r = Router::new(config());
    let mut said = Vec::new();
    for step in steps {
        match step.clone() {
            E(kind, sev, key, t) => said.push(r.on_event(at(t), ev(kind, sev, "web1", key, at(t)))),
            Tick(t) => said.push(r.tick(at(t))),
            Inhibit(host) => r.inhibit(host, None, "unreachable"),
            Lift(host) => r.lift(host),
            Restart(t) if restarts => r = restarted(&r, at(t)),
            Restart(_) => {}
        }
    }
    said
}

/// Runs `steps` with and without the restarts and checks that they say the same; returns what
/// was said.
fn same_across_restarts(steps: &[Step]) -> Vec<Outgoing> {
    let never_stopped = run(steps, false);
    let restarted = run(steps, true);
    assert_eq!(restarted, never_stopped, "a restart changed what the router says");
    never_stopped.into_iter().flatten().collect()
}

#[test]
fn an_incident_told_before_a_restart_is_resolved_after_it_with_its_group_and_sequence() {
    let steps = [E(IssueOpened, Critical, "issue:7", 0), Restart(60), E(IssueResolved, Info, "issue:7", 120)];
    let said = same_across_restarts(&steps);
    assert_eq!(said.len(), 2, "{said:?}");
    assert_eq!((said[0].kind, said[1].kind), (IssueOpened, IssueResolved));
    assert_eq!(said[1].group_key, "issue:7");
    assert_ne!(said[0].message_id, said[1].message_id);
    assert!(said[1].why.starts_with("issue resolved; its opening was sent"), "{}", said[1].why);
    // Without the stored state the resolution would not be told.
    let mut empty = Router::new(config());
    assert!(empty.on_event(at(120), ev(IssueResolved, Info, "web1", "issue:7", at(120))).is_empty());
}

#[test]
fn flapping_survives_a_restart() {
    let mut steps = Vec::new();
    for i in 0..2u64 {
        steps.push(E(IssueOpened, Critical, "k", i * 600));
        steps.push(E(IssueResolved, Info, "k", i * 600 + 300));
    }
    steps.push(E(IssueOpened, Critical, "k", 1200));
    steps.push(Restart(1300));
    // Still flapping after the restart: quiet, then stable again 30 min after the last change.
    steps.push(E(IssueResolved, Info, "k", 1500));
    steps.push(E(IssueOpened, Critical, "k", 1560));
    steps.push(Restart(1600));
    steps.push(Tick(1560 + 1799));
    steps.push(Tick(1560 + 1800));
    let said = same_across_restarts(&steps);
    let titles: Vec<&str> = said.iter().map(|o| o.title.as_str()).collect();
    assert_eq!(said.len(), 6, "{titles:?}");
    assert!(said[4].title.starts_with("Flapping: "), "{titles:?}");
    assert_eq!(said[5].why, "stable again: no change for 30 min after flapping; now open");
}

#[test]
fn the_repeat_timer_survives_a_restart_and_fires_if_it_fell_due_while_stopped() {
    let said =
        same_across_restarts(&[E(IssueOpened, Critical, "k", 0), Restart(3600), Tick(4 * 3600 - 1), Tick(4 * 3600)]);
    assert_eq!(said.len(), 2, "{said:?}");
    assert_eq!(said[1].why, "repeat after 4 h: still open");
    // Stopped across the repeat's instant: it goes at the first tick after the start.
    let mut r = Router::new(config());
    r.on_event(at(0), ev(IssueOpened, Critical, "web1", "k", at(0)));
    let mut r = restarted(&r, at(5 * 3600));
    assert_eq!(r.next_due(), Some(at(4 * 3600)));
    let repeat = r.tick(at(5 * 3600));
    assert_eq!(repeat.len(), 1);
    assert_eq!(repeat[0].message_id, said[1].message_id, "the repeat keeps its id whenever it is made");
}

#[test]
fn waiting_news_and_inhibitions_survive_a_restart() {
    let said = same_across_restarts(&[
        // A warning waits for its group wait across the restart.
        E(IssueOpened, Warning, "a", 0),
        E(RemediationDone, Info, "b", 0),
        Restart(10),
        Tick(30),
        // An unreachable host stays inhibited: its incident is held until the inhibition ends.
        Inhibit("web1"),
        E(IssueOpened, Critical, "c", 100),
        Restart(200),
        Tick(300),
        Lift("web1"),
        Tick(400),
    ]);
    let titles: Vec<&str> = said.iter().map(|o| o.title.as_str()).collect();
    assert_eq!(titles, ["2 events on web1", "c issue_opened"]);
    assert!(said[1].why.ends_with("held while web1 was inhibited (unreachable)"), "{}", said[1].why);
}

#[test]
fn a_new_group_after_a_restart_never_reuses_an_id() {
    // Groups made, forgotten, and made again at the same instant get new serials: a restored
    // router continues the counter.
    let mut r = Router::new(config());
    let first = r.on_event(at(0), ev(IssueOpened, Critical, "web1", "k", at(0)));
    r.on_event(at(0), ev(IssueResolved, Info, "web1", "k", at(0)));
    r.tick(at(7200));
    assert_eq!(r.tracked(), 0);
    let mut r = restarted(&r, at(7200));
    let again = r.on_event(at(0), ev(IssueOpened, Critical, "web1", "k", at(0)));
    assert_ne!(first[0].message_id, again[0].message_id);
}

#[test]
fn a_corrupt_or_foreign_state_is_refused_and_the_router_starts_empty() {
    let mut r = Router::new(config());
    r.on_event(at(0), ev(IssueOpened, Critical, "web1", "k", at(0)));
    let good = r.export_state().to_json().unwrap();
    assert!(matches!(RouterState::from_json("not json"), Err(StateError::Json(_))));
    assert!(matches!(RouterState::from_json(&good[..good.len() / 2]), Err(StateError::Json(_))));
    assert!(matches!(RouterState::from_json(r#"{"version":1,"serial":"x"}"#), Err(StateError::Json(_))));
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["version"] = 2.into();
    let err = RouterState::from_json(&v.to_string()).unwrap_err();
    assert_eq!(err, StateError::Version { found: 2 });
    assert!(err.to_string().contains("version 2"), "{err}");
    let huge = format!("{{\"version\":1,\"serial\":0,\"pad\":\"{}\"}}", "x".repeat(STATE_MAX_BYTES));
    assert!(matches!(RouterState::from_json(&huge), Err(StateError::TooLarge(n)) if n > STATE_MAX_BYTES));
    // The daemon's rule: a state that is refused gives an empty router.
    let router = |text: &str| {
        RouterState::from_json(text).map_or_else(|_| Router::new(config()), |s| Router::restore(config(), s, at(60)))
    };
    assert_eq!(router(&good).tracked(), 1);
    for bad in ["not json", &huge, &v.to_string()] {
        assert_eq!(router(bad).tracked(), 0);
    }
}

#[test]
fn old_groups_and_ended_inhibitions_are_not_restored() {
    let mut r = Router::new(config());
    r.on_event(at(0), ev(IssueOpened, Critical, "web1", "old", at(0)));
    r.inhibit("web1", None, "unreachable");
    r.on_event(at(0), ev(IssueOpened, Critical, "web2", "recent", at(0)));
    r.inhibit("web2", Some(at(600)), "deployment");
    // The recent one was told again (a repeat) a day ago; the old one has been held for 8 days.
    r.groups.get_mut("recent").unwrap().last_sent = Some(at(7 * 86_400));
    let state = RouterState::from_json(&r.export_state().to_json().unwrap()).unwrap();
    assert_eq!((state.groups(), state.inhibitions()), (2, 2));
    let restored = Router::restore(config(), state, at(8 * 86_400));
    assert_eq!(restored.groups.keys().collect::<Vec<_>>(), ["recent"]);
    assert!(restored.is_inhibited("web1", at(8 * 86_400)), "an inhibition without an end is kept");
    assert_eq!(restored.inhibited.len(), 1, "the deployment's ended");
}

#[test]
fn the_stored_form_is_bounded() {
    // More groups than kept: the most recently active ones are.
    let mut r = Router::new(config());
    for i in 0..(STATE_MAX_GROUPS as u64 + 10) {
        r.on_event(at(i), ev(IssueOpened, Critical, "web1", &format!("k{i}"), at(i)));
    }
    let state = r.export_state();
    assert_eq!(state.groups(), STATE_MAX_GROUPS);
    let restored = Router::restore(config(), state, at(10_000));
    assert!(!restored.groups.contains_key("k0") && restored.groups.contains_key("k2009"));
    assert!(restored.serial >= STATE_MAX_GROUPS as u64 + 10);

    // Waiting events: at most STATE_MAX_PENDING per group, their texts cut; the JSON within
    // STATE_MAX_BYTES, the least recently active groups left out.
    let mut r = Router::new(config());
    for g in 0..100u64 {
        for _ in 0..(STATE_MAX_PENDING as u64 + 5) {
            let mut e = ev(RemediationDone, Warning, "web1", &format!("g{g}"), at(g));
            e.body = "é".repeat(5_000);
            r.on_event(at(g), e);
        }
    }
    assert_eq!(r.groups["g0"].pending.len(), STATE_MAX_PENDING + 5);
    let state = r.export_state();
    let text = state.to_json().unwrap();
    assert!(text.len() <= STATE_MAX_BYTES, "{} bytes", text.len());
    let back = RouterState::from_json(&text).unwrap();
    assert!(back.groups() < 100 && back.groups() > 0, "{} groups", back.groups());
    let restored = Router::restore(config(), back, at(200));
    assert!(restored.groups.contains_key("g99"), "the most recent group is kept");
    let g = &restored.groups["g99"];
    assert_eq!(g.pending.len(), STATE_MAX_PENDING);
    assert!(g.pending.iter().all(|e| e.body.len() <= 4 * 1024 && e.body.contains("truncated")));
}
