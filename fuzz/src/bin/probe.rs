//! Fuzz target: the remote probe's command set output (`macha_ssh::probe`): the input holds the
//! outputs of `grep -H` over /proc, `systemctl show`, `systemctl is-system-running`, `df`, `ps`,
//! `journalctl` and `ls -l` of the Nix profiles, separated by form feeds. They are assembled into
//! a snapshot twice (the second probe computes rates from the first), checked by the core's rules
//! as the daemon does, and the snapshot must go through JSON and back.

use macha_core::checks::{CheckHistory, HostTools, Thresholds, evaluate, remediations};
use macha_core::fleet::OsFamily;
use macha_core::snapshot::Snapshot;
use macha_core::{HostName, Timestamp};
use macha_ssh::probe::{GrepFiles, HostMemory, JournalParser, Parts, UnitsParser, assemble, parse_running_services};
use std::time::Duration;

fn main() {
    let Ok(host) = HostName::parse("web1.example.org") else { return };
    let window = Duration::from_secs(600);
    let thresholds = Thresholds::default();
    afl::fuzz!(|data: &[u8]| {
        let p = macha_fuzz::parts(data, 7);
        let part = |i: usize| p[i].map(|b| Ok::<String, String>(macha_fuzz::text(b).into_owned()));
        // The streamed parts are fed line by line, as the pool hands them over.
        let units = |text: &str| {
            let mut u = UnitsParser::default();
            text.lines().for_each(|l| u.line(l));
            u
        };
        let parts = Parts {
            files: part(0).map(|r| r.map(|t| GrepFiles::from_text(&t))),
            units: part(1).map(|r| r.map(|t| units(&t))),
            state: part(2),
            df: part(3),
            ps: part(4),
            journal: part(5).map(|r| r.map(|t| JournalParser::from_text(&t, window))),
            nix: part(6),
        };
        let mut memory = HostMemory { os: Some(OsFamily::Nixos), ..HostMemory::default() };
        let first = Timestamp::from_millis(1_700_000_000_000);
        let _ = assemble(&host, first, &parts, &mut memory);
        let snap = assemble(&host, Timestamp::from_millis(1_700_000_030_000), &parts, &mut memory);
        let evaluation = evaluate(&snap, &thresholds, &CheckHistory::default());
        for f in evaluation.findings() {
            let _ = remediations(f, HostTools::of(&snap));
        }
        let json = match serde_json::to_string(&snap) {
            Ok(j) => j,
            Err(e) => panic!("an assembled snapshot does not serialise: {e}"),
        };
        if let Err(e) = serde_json::from_str::<Snapshot>(&json) {
            panic!("an assembled snapshot does not read back: {e}: {json}");
        }
        if let Some(Ok(text)) = part(1) {
            let _ = parse_running_services(&text);
        }
    });
}
