//! Fuzz target: `macha anomaly replay`'s input (`macha_metrics::replay::parse_csv`), a person's or
//! a public benchmark's `timestamp,value` CSV, then the detector over what it read. A row that does
//! not parse is an error naming its line; every judged point's score is within 0-1, and a skipped
//! point is never flagged.

use macha_metrics::{DetectConfig, Unit};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let text = macha_fuzz::text(data);
        match macha_metrics::replay::parse_csv(&text) {
            Ok(samples) => {
                let points = macha_metrics::detect::replay(&samples, Unit::Percent, &DetectConfig::default());
                assert_eq!(points.len(), samples.len(), "a point per sample");
                for p in &points {
                    assert!((0.0..=1.0).contains(&p.score), "score {} outside 0-1", p.score);
                    assert!(!(p.skipped && p.flagged), "a skipped sample was flagged");
                }
            }
            Err(e) => assert!(e.line >= 1, "an error names its line"),
        }
    });
}
