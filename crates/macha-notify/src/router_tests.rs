//! The router against a simulated clock: every time below is a parameter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn at(secs: u64) -> Timestamp {
    T0.plus(Duration::from_secs(secs))
}

fn ev(kind: EventKind, severity: Severity, host: &str, key: &str, t: Timestamp) -> Event {
    Event {
        kind,
        severity,
        host: host.to_owned(),
        group_key: key.to_owned(),
        title: format!("{key} {}", kind.as_str()),
        body: format!("body of {key}"),
        link: Some(format!("https://macha.example/issues/{key}")),
        at: t,
        source: Some("audit:1".to_owned()),
    }
}

fn router() -> Router {
    Router::new(RouterConfig {
        routes: vec![Route { channel: "phone".to_owned(), filter: ChannelFilter::default() }],
        ..RouterConfig::default()
    })
}

fn send(r: &mut Router, kind: EventKind, severity: Severity, host: &str, key: &str, t: Timestamp) -> Vec<Outgoing> {
    r.on_event(t, ev(kind, severity, host, key, t))
}

use EventKind::{ApprovalPending, IssueOpened, IssueResolved, RemediationDone};
use Severity::{Critical, Info, Warning};

#[test]
fn a_critical_issue_goes_out_at_once_and_says_why() {
    let mut r = router();
    let out = send(&mut r, IssueOpened, Critical, "web1", "web1/unit/nginx", at(0));
    assert_eq!(out.len(), 1);
    let m = &out[0];
    assert_eq!(m.why, "critical issue opened; sent at once (critical group_wait 0)");
    assert_eq!((m.priority, m.channel.as_str(), m.host.as_str()), (Priority::High, "phone", "web1"));
    assert_eq!(m.kind, IssueOpened);
    assert!(m.message_id.starts_with("m-") && m.message_id.len() == 26, "{}", m.message_id);
}

#[test]
fn a_warning_waits_for_group_wait() {
    let mut r = router();
    assert!(send(&mut r, IssueOpened, Warning, "web1", "web1/disk/", at(0)).is_empty());
    assert_eq!(r.next_due(), Some(at(30)));
    assert!(r.tick(at(29)).is_empty());
    let out = r.tick(at(30));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].why, "warning issue opened; sent after group_wait 30 s");
    assert_eq!(out[0].priority, Priority::Medium);
    // Nothing more until the repeat.
    assert!(r.tick(at(31)).is_empty());
    assert_eq!(r.next_due(), Some(at(30 + 4 * 3600)));
}

#[test]
fn an_incident_that_resolves_within_group_wait_is_never_told() {
    let mut r = router();
    assert!(send(&mut r, IssueOpened, Warning, "web1", "k", at(0)).is_empty());
    assert!(send(&mut r, IssueResolved, Info, "web1", "k", at(10)).is_empty());
    assert!(r.tick(at(30)).is_empty());
    assert!(r.tick(at(10_000)).is_empty());
    assert_eq!(r.stats().resolved_untold, 1);
    assert_eq!(r.next_due(), None);
}

#[test]
fn resolved_goes_out_once_and_only_after_an_opening() {
    let mut r = router();
    let open = send(&mut r, IssueOpened, Critical, "web1", "k", at(0));
    let resolved = send(&mut r, IssueResolved, Info, "web1", "k", at(600));
    assert_eq!(resolved.len(), 1);
    let m = &resolved[0];
    assert_eq!(m.kind, IssueResolved);
    assert_eq!(m.priority, Priority::Low);
    assert!(m.title.starts_with("Resolved: "), "{}", m.title);
    assert_eq!(m.why, "issue resolved; its opening was sent (last told 10 min ago)");
    assert_ne!(m.message_id, open[0].message_id);
    assert!(send(&mut r, IssueResolved, Info, "web1", "k", at(601)).is_empty(), "one resolved message");
    assert!(r.tick(at(5 * 3600)).is_empty(), "no repeat after the resolution");
}

#[test]
fn an_open_incident_is_repeated_after_repeat_interval() {
    let mut r = router();
    let first = send(&mut r, IssueOpened, Critical, "web1", "k", at(0));
    assert!(r.tick(at(4 * 3600 - 1)).is_empty());
    let repeat = r.tick(at(4 * 3600));
    assert_eq!(repeat.len(), 1);
    assert_eq!(repeat[0].why, "repeat after 4 h: still open");
    assert_ne!(repeat[0].message_id, first[0].message_id);
    assert_eq!(r.next_due(), Some(at(8 * 3600)));
}

#[test]
fn news_of_a_told_incident_waits_for_group_interval() {
    let mut r = router();
    send(&mut r, IssueOpened, Critical, "web1", "k", at(0));
    assert!(send(&mut r, RemediationDone, Info, "web1", "k", at(60)).is_empty());
    assert!(send(&mut r, RemediationDone, Info, "web1", "k", at(90)).is_empty());
    assert_eq!(r.next_due(), Some(at(300)));
    assert!(r.tick(at(299)).is_empty());
    let out = r.tick(at(300));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].why, "info remediation done; grouped 2 events of this incident (group_interval 5 min)");
    assert!(out[0].title.ends_with("(+1 more)"), "{}", out[0].title);
}

#[test]
fn incidents_of_one_host_due_together_become_one_message() {
    let mut r = router();
    for (i, key) in ["web1/a", "web1/b", "web1/c"].iter().enumerate() {
        assert!(send(&mut r, IssueOpened, Warning, "web1", key, at(i as u64)).is_empty());
    }
    send(&mut r, IssueOpened, Warning, "db1", "db1/a", at(1));
    let out = r.tick(at(32));
    assert_eq!(out.len(), 2, "{out:?}");
    let web = out.iter().find(|m| m.host == "web1").unwrap();
    assert!(web.why.starts_with("grouped 3 events for host web1 ("), "{}", web.why);
    assert_eq!(web.title, "3 events on web1");
    assert_eq!(web.group_key, "host:web1");
    for key in ["web1/a", "web1/b", "web1/c"] {
        assert!(web.body.contains(&format!("body of {key}")), "{}", web.body);
    }
    let db = out.iter().find(|m| m.host == "db1").unwrap();
    assert_eq!(db.why, "warning issue opened; sent after group_wait 30 s");
    // Each incident resolves on its own, since each opening was told.
    let resolved = send(&mut r, IssueResolved, Info, "web1", "web1/b", at(100));
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].group_key, "web1/b");
}

#[test]
fn flapping_is_told_once_then_quiet_until_stable() {
    let mut r = router();
    let mut told = Vec::new();
    // Opens at 0, 10 min and 20 min, each resolved 5 minutes later.
    for i in 0..2u64 {
        told.extend(send(&mut r, IssueOpened, Critical, "web1", "k", at(i * 600)));
        told.extend(send(&mut r, IssueResolved, Info, "web1", "k", at(i * 600 + 300)));
    }
    assert_eq!(told.len(), 4, "two openings and two resolutions: {told:?}");
    let flap = send(&mut r, IssueOpened, Critical, "web1", "k", at(1200));
    assert_eq!(flap.len(), 1);
    assert_eq!(flap[0].why, "flapping: opened 3 times within 1 h; quiet until stable for 30 min");
    assert!(flap[0].title.starts_with("Flapping: "));
    // More changes: quiet.
    let mut quiet = Vec::new();
    for i in 0..5u64 {
        quiet.extend(send(&mut r, IssueResolved, Info, "web1", "k", at(1500 + i * 120)));
        quiet.extend(send(&mut r, IssueOpened, Critical, "web1", "k", at(1560 + i * 120)));
        quiet.extend(r.tick(at(1561 + i * 120)));
    }
    assert!(quiet.is_empty(), "{quiet:?}");
    assert_eq!(r.stats().flap_quieted, 10);
    // The last change was at 1560 + 4 * 120 = 2040 s; stable 30 min later.
    assert_eq!(r.next_due(), Some(at(2040 + 1800)));
    assert!(r.tick(at(2040 + 1799)).is_empty());
    let stable = r.tick(at(2040 + 1800));
    assert_eq!(stable.len(), 1);
    assert_eq!(stable[0].why, "stable again: no change for 30 min after flapping; now open");
    // It is open and told: its resolution is told.
    assert_eq!(send(&mut r, IssueResolved, Info, "web1", "k", at(5000)).len(), 1);
}

#[test]
fn an_inhibited_host_holds_incidents_drops_news_and_lets_approvals_through() {
    let mut r = router();
    r.inhibit("web1", Some(at(600)), "deployment in progress");
    assert!(r.is_inhibited("web1", at(599)) && !r.is_inhibited("web1", at(600)));
    assert!(send(&mut r, IssueOpened, Critical, "web1", "web1/unit/nginx", at(0)).is_empty());
    assert!(send(&mut r, RemediationDone, Info, "web1", "web1/other", at(1)).is_empty());
    assert!(r.tick(at(100)).is_empty());
    assert_eq!(r.stats().suppressed, 1);
    let approval = send(&mut r, ApprovalPending, Warning, "web1", "approval:7", at(200));
    assert!(approval.is_empty(), "waits for its group_wait");
    let out = r.tick(at(230));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, ApprovalPending);
    // Another host is not held.
    assert_eq!(send(&mut r, IssueOpened, Critical, "db1", "db1/x", at(300)).len(), 1);
    assert_eq!(r.next_due(), Some(at(600)));
    let released = r.tick(at(600));
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(
        released[0].why,
        "critical issue opened; sent at once (critical group_wait 0); held while web1 was inhibited (deployment in \
         progress)"
    );
}

#[test]
fn lifting_an_inhibition_releases_at_the_next_tick_and_untold_resolutions_stay_untold() {
    let mut r = router();
    r.inhibit("web1", None, "unreachable");
    send(&mut r, IssueOpened, Critical, "web1", "a", at(0));
    send(&mut r, IssueOpened, Critical, "web1", "b", at(0));
    assert!(send(&mut r, IssueResolved, Info, "web1", "b", at(10)).is_empty());
    assert!(r.tick(at(3600)).is_empty(), "no end: held until lifted");
    r.lift("web1");
    let out = r.tick(at(3601));
    assert_eq!(out.len(), 1, "only the incident still open: {out:?}");
    assert_eq!(out[0].group_key, "a");
}

#[test]
fn a_silence_holds_until_it_ends_and_resolutions_during_it_wait_too() {
    let mut r = router();
    r.set_silences(vec![Silence {
        id: 4,
        matcher: Matcher::parse("host=web*,kind=issue_*").unwrap(),
        until: at(3600),
        reason: "maintenance".to_owned(),
        created_by: "alice".to_owned(),
    }]);
    assert!(send(&mut r, IssueOpened, Critical, "web1", "a", at(0)).is_empty());
    assert_eq!(send(&mut r, IssueOpened, Critical, "db1", "b", at(0)).len(), 1);
    assert_eq!(send(&mut r, ApprovalPending, Critical, "web1", "approval:1", at(0)).len(), 1, "kind does not match");
    let out = r.tick(at(3600));
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].why,
        "critical issue opened; sent at once (critical group_wait 0); held while silence 4 (maintenance, by alice) \
         was in force"
    );
    // A told incident resolving during a new silence: the resolved message waits for its end.
    r.set_silences(vec![Silence {
        id: 5,
        matcher: Matcher::parse("group=a").unwrap(),
        until: at(7200),
        reason: "noisy".to_owned(),
        created_by: "bob".to_owned(),
    }]);
    assert!(send(&mut r, IssueResolved, Info, "web1", "a", at(4000)).is_empty());
    let out = r.tick(at(7200));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].kind, IssueResolved);
    assert!(out[0].why.ends_with("held while silence 5 (noisy, by bob) was in force"), "{}", out[0].why);
}

#[test]
fn routes_filter_by_severity_and_kind_and_share_the_message_id() {
    let mut r = Router::new(RouterConfig {
        routes: vec![
            Route { channel: "journal".into(), filter: ChannelFilter::default() },
            Route { channel: "phone".into(), filter: ChannelFilter { min_severity: Critical, kinds: None } },
            Route {
                channel: "hook".into(),
                filter: ChannelFilter { min_severity: Info, kinds: Some(vec![ApprovalPending]) },
            },
        ],
        ..RouterConfig::default()
    });
    let out = send(&mut r, IssueOpened, Critical, "web1", "k", at(0));
    let channels: Vec<&str> = out.iter().map(|m| m.channel.as_str()).collect();
    assert_eq!(channels, ["journal", "phone"]);
    assert_eq!(out[0].message_id, out[1].message_id);
    send(&mut r, IssueOpened, Warning, "web1", "k2", at(0));
    let out = r.tick(at(30));
    assert_eq!(out.iter().map(|m| m.channel.as_str()).collect::<Vec<_>>(), ["journal"]);
}

#[test]
fn message_ids_are_deterministic_and_distinct() {
    let run = || {
        let mut r = router();
        let mut ids = Vec::new();
        ids.extend(send(&mut r, IssueOpened, Critical, "web1", "k", at(0)));
        ids.extend(send(&mut r, IssueResolved, Info, "web1", "k", at(60)));
        ids.extend(send(&mut r, IssueOpened, Critical, "web1", "j", at(60)));
        ids.into_iter().map(|m| m.message_id).collect::<Vec<_>>()
    };
    let a = run();
    assert_eq!(a, run());
    assert_eq!(a.len(), 3);
    assert!(a[0] != a[1] && a[1] != a[2] && a[0] != a[2]);
}

#[test]
fn matchers_parse_and_glob() {
    let m = Matcher::parse("host=web*, group=*/unit/*").unwrap();
    assert!(m.matches("web1", "web1/unit/nginx.service", IssueOpened));
    assert!(!m.matches("db1", "db1/unit/nginx.service", IssueOpened));
    assert!(!m.matches("web1", "web1/disk/", IssueOpened));
    assert_eq!(m.to_string(), "host=web*,group=*/unit/*");
    assert!(Matcher::parse("").is_err());
    assert!(Matcher::parse("colour=red").is_err());
    assert!(Matcher::parse("host=").is_err());
    assert!(glob("a*b*c", "aXbYc") && !glob("a*b*c", "aXcYb") && glob("*", "") && !glob("ab", "abc"));
    assert!(!glob("a*a", "a"));
}

#[test]
fn a_group_made_again_in_the_same_millisecond_gets_new_ids_and_old_groups_are_forgotten() {
    let mut r = router();
    let a = send(&mut r, EventKind::Deployment, Critical, "web1", "deploy:web1", at(0));
    let b = send(&mut r, EventKind::Deployment, Critical, "web1", "deploy:web1", at(0));
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_ne!(a[0].message_id, b[0].message_id);
    assert_eq!(r.tracked(), 0, "a one-shot group is forgotten once told");
    send(&mut r, IssueOpened, Critical, "web1", "k", at(0));
    send(&mut r, IssueResolved, Info, "web1", "k", at(10));
    assert_eq!(r.tracked(), 1, "kept while its open is inside the flap window");
    r.tick(at(3600));
    assert_eq!(r.tracked(), 0);
}
