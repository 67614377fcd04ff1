//! Fuzz target: the remote probe's command set output (`macha_ssh::probe`): the input holds the
//! outputs of `grep -H` over /proc, `systemctl show`, `systemctl is-system-running`, `df`, `ps`,
//! `journalctl` and `ls -l` of the Nix profiles, separated by form feeds. They are assembled into
//! a snapshot twice (the second probe computes rates from the first), checked by the core's rules
//! as the daemon does, and the snapshot must go through JSON and back.

use macha_core::checks::{CheckHistory, Thresholds, evaluate, remediations};
use macha_core::fleet::OsFamily;
use macha_core::snapshot::Snapshot;
use macha_core::{HostName, Timestamp};
use macha_ssh::probe::{HostMemory, Parts, ProbeSpec, assemble, parse_running_services};
use std::time::Duration;

fn main() {
    let Ok(host) = HostName::parse("web1.example.org") else { return };
    let spec =
        ProbeSpec { timeout: Duration::from_secs(10), journal_window: Duration::from_secs(600), prefer_macha: false };
    let thresholds = Thresholds::default();
    afl::fuzz!(|data: &[u8]| {
        let p = macha_fuzz::parts(data, 7);
        let part = |i: usize| p[i].map(|b| Ok(macha_fuzz::text(b).into_owned()));
        let parts = Parts {
            files: part(0),
            units: part(1),
            state: part(2),
            df: part(3),
            ps: part(4),
            journal: part(5),
            nix: part(6),
        };
        let mut memory = HostMemory { os: Some(OsFamily::Nixos), ..HostMemory::default() };
        let first = Timestamp::from_millis(1_700_000_000_000);
        let _ = assemble(&host, first, &parts, &spec, &mut memory);
        let snap = assemble(&host, Timestamp::from_millis(1_700_000_030_000), &parts, &spec, &mut memory);
        let evaluation = evaluate(&snap, &thresholds, &CheckHistory::default());
        for f in evaluation.findings() {
            let _ = remediations(f);
        }
        let json = match serde_json::to_string(&snap) {
            Ok(j) => j,
            Err(e) => panic!("an assembled snapshot does not serialise: {e}"),
        };
        if let Err(e) = serde_json::from_str::<Snapshot>(&json) {
            panic!("an assembled snapshot does not read back: {e}: {json}");
        }
        if let Some(Ok(units)) = &parts.units {
            let _ = parse_running_services(units);
        }
    });
}
