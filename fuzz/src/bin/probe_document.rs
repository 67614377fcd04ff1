//! Fuzz target: the document `macha probe --json` prints on another host (`ProbeDocument`), read
//! as the probe reads it, then checked by the core's rules and their remediations, which is what
//! the daemon does with a remote snapshot.

use macha_core::checks::{CheckHistory, HostTools, Thresholds, evaluate, remediations};
use macha_ssh::probe::{PROBE_DOCUMENT_VERSION, ProbeDocument};

fn main() {
    let thresholds = Thresholds::default();
    afl::fuzz!(|data: &[u8]| {
        let Ok(doc) = serde_json::from_slice::<ProbeDocument>(data) else { return };
        if doc.version != PROBE_DOCUMENT_VERSION {
            return;
        }
        let evaluation = evaluate(&doc.snapshot, &thresholds, &CheckHistory::default());
        for f in evaluation.findings() {
            let _ = remediations(f, HostTools::of(&doc.snapshot));
        }
    });
}
