//! Fuzz target: `journalctl --output=json` lines (`macha_parse::journal::parse_entry`), each line
//! at the error priority and at every priority; what parses goes into the error window, and a
//! `_HOSTNAME` through the discovery rule (`fleet::admission`), as the daemon does with them.

use macha_core::fleet::{DomainPattern, admission};
use macha_core::journal::ErrorWindow;
use macha_core::{HostName, Timestamp};
use macha_parse::journal::parse_entry;
use std::time::Duration;

fn main() {
    let domain = HostName::parse("example.org").ok();
    let allowed: Vec<DomainPattern> =
        ["*.example.org", "db1.lab"].iter().filter_map(|p| DomainPattern::parse(p).ok()).collect();
    afl::fuzz!(|data: &[u8]| {
        let mut window = ErrorWindow::new(Duration::from_secs(600));
        let mut last = Timestamp::from_millis(0);
        for line in data.split(|b| *b == b'\n') {
            let _ = parse_entry(line, 3);
            let Ok(entry) = parse_entry(line, 7) else { continue };
            assert!(entry.priority <= 7, "priority {} accepted", entry.priority);
            let at = Timestamp::from_millis(entry.realtime_millis());
            last = last.max(at);
            window.record(entry.unit.as_deref(), at, &entry.message);
            if let Some(h) = &entry.hostname {
                let _ = admission(h, domain.as_ref(), &allowed, &["self", "self.example.org"], &["web1.example.org"]);
            }
        }
        window.prune(last);
        let _ = window.summary(last);
    });
}
