//! Tests with known answers: synthetic series (daily cycles with noise, spikes, level shifts,
//! drifts, missing samples, counter resets, linear fills, a garbage collection's jump) through the
//! detector and the tracker, and the precision and recall of the detector against a windowed
//! Gaussian (the figures are in docs/metrics.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use macha_core::checks::{CheckName, CheckResult};
use macha_core::snapshot::{Filesystem, NetInterface, Section, Snapshot};
use macha_core::{HostName, Timestamp};
use macha_metrics::detect::{DetectConfig, Series, replay};
use macha_metrics::fillup::{FillConfig, Prediction, Volume};
use macha_metrics::key::Unit;
use macha_metrics::synth::{self, Rng};
use macha_metrics::track::{TrackConfig, Tracker};

const DAY: usize = 1440;

/// Runs a series; returns the flagged indices and whether any episode persisted (a finding).
fn run(samples: &[(Timestamp, f64)]) -> (Vec<usize>, bool) {
    let cfg = DetectConfig::default();
    let mut s = Series::new(Unit::Plain);
    let mut flagged = Vec::new();
    let mut finding = false;
    for (i, (t, x)) in samples.iter().enumerate() {
        let p = s.observe(*t, *x, &cfg);
        assert!(p.score.is_finite() && (0.0..=1.0).contains(&p.score));
        assert_eq!(p.flagged, p.score >= 0.5 - 1e-12, "{p:?}");
        if p.flagged {
            flagged.push(i);
        }
        finding |= s.persisting(*t, cfg.persist).is_some();
    }
    (flagged, finding)
}

fn cycle(days: usize, seed: u64) -> (Vec<Timestamp>, Vec<f64>) {
    let ts = synth::times(days * DAY, 60);
    let v = synth::daily_cycle(&ts, 50.0, 20.0, 2.0, &mut Rng::new(seed));
    (ts, v)
}

fn zip(ts: &[Timestamp], v: &[f64]) -> Vec<(Timestamp, f64)> {
    ts.iter().copied().zip(v.iter().copied()).collect()
}

#[test]
fn a_daily_cycle_with_noise_raises_nothing() {
    for seed in 1..=3 {
        let (ts, v) = cycle(14, seed);
        let (flagged, finding) = run(&zip(&ts, &v));
        assert!(!finding, "seed {seed}: a finding on a plain daily cycle");
        let rate = flagged.len() as f64 / ts.len() as f64;
        assert!(rate < 0.001, "seed {seed}: {} of {} points flagged", flagged.len(), ts.len());
    }
}

#[test]
fn spikes_are_found_at_once_and_are_no_finding() {
    let (ts, mut v) = cycle(5, 7);
    let mut rng = Rng::new(99);
    let at: Vec<usize> = (0..30).map(|k| 2 * DAY + k * 90 + rng.below(60)).collect();
    synth::spikes(&mut v, &at, 20.0);
    let (flagged, finding) = run(&zip(&ts, &v));
    let found = at.iter().filter(|i| flagged.iter().any(|f| *f >= **i && *f < **i + 3)).count();
    assert!(found >= 29, "{found} of {} spikes found", at.len());
    assert!(!finding, "single spikes must not persist into a finding");
}

#[test]
fn a_level_shift_is_found_within_a_few_samples_and_persists_into_a_finding() {
    // Day 11 is the second Friday: its hour-of-week slots have seen a Friday before.
    let (ts, mut v) = cycle(12, 11);
    let start = 11 * DAY + 600;
    synth::shift(&mut v, start..start + 120, 16.0);
    let cfg = DetectConfig::default();
    let mut s = Series::new(Unit::Plain);
    let mut first = None;
    let mut finding_at = None;
    let mut summary = None;
    for (i, (t, x)) in zip(&ts, &v).into_iter().enumerate() {
        let p = s.observe(t, x, &cfg);
        if i >= start && p.flagged && first.is_none() {
            first = Some(i - start);
        }
        if let Some(e) = s.persisting(t, cfg.persist)
            && finding_at.is_none()
        {
            finding_at = Some(i);
            summary = Some(*e);
        }
    }
    assert!(first.is_some_and(|d| d <= 2), "first flagged {first:?} samples after the shift");
    let at = finding_at.expect("a persisting level shift is a finding");
    assert!((start + 14..start + 30).contains(&at), "finding at {} (shift at {start})", at);
    let e = summary.unwrap();
    assert!(e.z > 3.5 && e.value > e.expected, "{e:?}");
    assert!(e.baseline.describe().starts_with("usual Friday 10:00"), "{}", e.baseline.describe());
}

#[test]
fn a_drift_is_found() {
    let (ts, mut v) = cycle(5, 13);
    let start = 3 * DAY;
    synth::drift(&mut v, start, 0.05);
    let (flagged, _) = run(&zip(&ts, &v));
    let first = flagged.iter().find(|i| **i >= start).map(|i| i - start);
    // 0.05 per sample: 15 (7.5 noise spreads) after 300 samples.
    assert!(first.is_some_and(|d| d <= 360), "drift first flagged after {first:?} samples");
}

#[test]
fn missing_samples_raise_nothing() {
    let (ts, v) = cycle(7, 17);
    let samples = synth::missing(&ts, &v, 0.1, 360, 30, &mut Rng::new(5));
    assert!(samples.len() < ts.len() * 85 / 100);
    let (flagged, finding) = run(&samples);
    assert!(!finding);
    assert!((flagged.len() as f64) < 0.002 * samples.len() as f64, "{} flagged", flagged.len());
}

fn snapshot(at: Timestamp) -> Snapshot {
    Snapshot::all_unavailable(HostName::parse("web1").unwrap(), at, "not in this test")
}

#[test]
fn a_counter_reset_is_no_anomaly() {
    let ts = synth::times(2 * DAY, 60);
    let resets = [DAY + 100, DAY + 700];
    let c = synth::counter(&ts, 1e6, 5e4, &resets, &mut Rng::new(3));
    let mut tracker = Tracker::new(TrackConfig::default());
    for (t, bytes) in ts.iter().zip(&c) {
        let mut snap = snapshot(*t);
        snap.network = Section::ok(vec![NetInterface {
            name: "eth0".into(),
            rx_bytes: *bytes as u64,
            tx_bytes: 0,
            rx_errors: 0,
            tx_errors: 0,
            rx_dropped: 0,
            tx_dropped: 0,
        }]);
        let o = tracker.observe(&snap);
        // The rate, never a negative one.
        for (k, v) in &o.samples {
            assert!(*v >= 0.0, "{k} = {v}");
        }
        assert!(o.flagged.iter().all(|k| k.as_str() != "net.rx_bytes:eth0"), "flagged at {t}: {:?}", o.flagged);
        if let CheckResult::Ran { findings, .. } = &o.anomaly.result {
            assert!(findings.is_empty(), "{findings:?}");
        }
    }
}

fn fs_snapshot(at: Timestamp, free: f64, total: f64) -> Snapshot {
    let mut snap = snapshot(at);
    let free = free.max(0.0) as u64;
    snap.filesystems = Section::ok(vec![Filesystem {
        mount_point: "/var".into(),
        device: "/dev/vda2".into(),
        fs_type: "ext4".into(),
        total_bytes: total as u64,
        available_bytes: free,
        used_bytes: Some(total as u64 - free),
        total_inodes: 1_000_000,
        free_inodes: 900_000,
        read_only: false,
    }]);
    snap
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

#[test]
fn a_linear_fill_gives_an_eta_within_tolerance_and_a_finding() {
    let ts = synth::times(8 * 60, 60);
    // 100 GiB, 20 GiB free, losing 1.5 GiB per hour with noise of 50 MiB.
    let free = synth::fill(&ts, 20.0 * GIB, 1.5 * GIB, 0.05 * GIB, None, &mut Rng::new(1));
    let cfg = FillConfig::default();
    let mut vol = Volume::new();
    for (t, f) in ts.iter().zip(&free) {
        vol.push(*t, *f, 100.0 * GIB, cfg.window);
    }
    let Prediction::Fills { eta, .. } = vol.predict(&cfg) else { panic!("{:?}", vol.predict(&cfg)) };
    // After 8 h: 8 GiB left, 5 h 20 min at 1.5 GiB/h.
    let want = (20.0 - 1.5 * 8.0) / 1.5 * 3600.0;
    assert!((eta.as_secs_f64() - want).abs() < 0.05 * want, "eta {eta:?}, want {want} s");

    let mut tracker = Tracker::new(TrackConfig::default());
    let mut last = None;
    for (t, f) in ts.iter().zip(&free) {
        last = Some(tracker.observe(&fs_snapshot(*t, *f, 100.0 * GIB)));
    }
    let o = last.unwrap();
    // The host's anomaly rate is stored with the samples.
    assert!(o.samples.iter().any(|(k, v)| k.as_str() == "anomaly.rate_percent" && *v == 0.0), "{:?}", o.samples);
    assert_eq!(o.fillup.check, CheckName::FillUp);
    let CheckResult::Ran { findings, .. } = &o.fillup.result else { panic!("{:?}", o.fillup) };
    let f = findings.iter().find(|f| f.subject == "/var").expect("a fill-up finding for /var");
    assert!(f.summary.starts_with("/var fills up in about 5 h"), "{}", f.summary);
    assert!(f.summary.contains("losing 1.5 GiB per hour"), "{}", f.summary);
}

#[test]
fn a_garbage_collections_jump_raises_nothing() {
    let ts = synth::times(8 * 60, 60);
    // 35 GiB free of 100, losing 3 GiB per hour (alarming soon), then a collection frees 40 GiB
    // at hour 2 and the disk is above the level again, filling slowly.
    let free = synth::fill(&ts, 35.0 * GIB, 3.0 * GIB, 0.02 * GIB, Some((120, 40.0 * GIB)), &mut Rng::new(2));
    let mut tracker = Tracker::new(TrackConfig::default());
    let mut fill_findings = 0;
    for (i, (t, f)) in ts.iter().zip(&free).enumerate() {
        let o = tracker.observe(&fs_snapshot(*t, *f, 100.0 * GIB));
        if let CheckResult::Ran { findings, .. } = &o.fillup.result
            && i > 125
        {
            fill_findings += findings.len();
        }
        if let CheckResult::Ran { findings, .. } = &o.anomaly.result {
            assert!(findings.is_empty(), "at {i}: {findings:?}");
        }
    }
    assert_eq!(fill_findings, 0, "the fit restarted at the jump");
}

/// Event-level recall (an injected anomaly flagged within 3 samples of its start) and point
/// precision (flagged points inside an injected anomaly, or up to 2 samples after it).
fn score(flagged: &[usize], events: &[std::ops::Range<usize>]) -> (usize, usize, usize) {
    let found = events.iter().filter(|r| flagged.iter().any(|f| *f >= r.start && *f < r.start + 3)).count();
    let inside = flagged.iter().filter(|f| events.iter().any(|r| **f >= r.start && **f < r.end + 2)).count();
    (found, inside, flagged.len())
}

/// The windowed Gaussian: mean and standard deviation of the previous 60 samples, |z| ≥ 3.5.
fn windowed_gaussian(v: &[f64]) -> Vec<usize> {
    let w = 60;
    (w..v.len())
        .filter(|&i| {
            let win = &v[i - w..i];
            let mean = win.iter().sum::<f64>() / w as f64;
            let sd = (win.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / w as f64).sqrt().max(1e-9);
            ((v[i] - mean) / sd).abs() >= 3.5
        })
        .collect()
}

#[test]
fn precision_and_recall_have_floors() {
    let mut ours = (0, 0, 0);
    let mut gauss = (0, 0, 0);
    let mut events_total = 0;
    for seed in 0..12u64 {
        let (ts, mut v) = cycle(6, 1000 + seed);
        let mut rng = Rng::new(seed);
        let mut events = Vec::new();
        // Eight spikes of 7 to 12 noise spreads, up or down, from day 2 on.
        for k in 0..8 {
            let at = 2 * DAY + k * 200 + rng.below(100);
            let size = (7.0 + 5.0 * rng.uniform()) * 2.0 * if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
            synth::spikes(&mut v, &[at], size);
            events.push(at..at + 1);
        }
        // One level shift of 8 spreads for an hour, one down by 8 for half an hour.
        let s = 4 * DAY + rng.below(DAY / 2);
        synth::shift(&mut v, s..s + 60, 16.0);
        events.push(s..s + 60);
        let s = 5 * DAY + rng.below(DAY / 2);
        synth::shift(&mut v, s..s + 30, -16.0);
        events.push(s..s + 30);
        events_total += events.len();

        let (flagged, _) = run(&zip(&ts, &v));
        if std::env::var("DEBUG_FP").is_ok() {
            let fp: Vec<(usize, usize)> = flagged
                .iter()
                .filter(|f| !events.iter().any(|r| **f >= r.start && **f < r.end + 2))
                .map(|f| (*f, events.iter().map(|r| f.abs_diff(r.start)).min().unwrap_or(0)))
                .collect();
            println!("seed {seed}: fp (index, distance to nearest event start) {fp:?}");
        }
        let r = score(&flagged, &events);
        ours = (ours.0 + r.0, ours.1 + r.1, ours.2 + r.2);
        let g = score(&windowed_gaussian(&v), &events);
        gauss = (gauss.0 + g.0, gauss.1 + g.1, gauss.2 + g.2);
    }
    let pr = |(found, inside, flagged): (usize, usize, usize)| {
        (inside as f64 / flagged.max(1) as f64, found as f64 / events_total as f64)
    };
    let (p, r) = pr(ours);
    let (gp, gr) = pr(gauss);
    println!("detector            precision  recall  (events {events_total}, 12 series of 6 days at 60 s)");
    println!("macha-metrics       {p:>9.3}  {r:>6.3}");
    println!("windowed Gaussian   {gp:>9.3}  {gr:>6.3}");
    assert!(p >= 0.95, "precision {p}");
    assert!(r >= 0.95, "recall {r}");
}

#[test]
fn a_replayed_series_is_reproducible() {
    let (ts, mut v) = cycle(3, 21);
    synth::spikes(&mut v, &[2 * DAY + 30], 30.0);
    let cfg = DetectConfig::default();
    let a = replay(&zip(&ts, &v), Unit::Plain, &cfg);
    let b = replay(&zip(&ts, &v), Unit::Plain, &cfg);
    assert_eq!(a, b);
    assert!(a[2 * DAY + 30].flagged);
}

#[test]
fn hostile_snapshots_never_panic_and_yield_only_finite_bounded_samples() {
    use macha_core::snapshot::{Load, Memory, ProcessInfo, Processes};
    let mut tracker = Tracker::new(TrackConfig::default());
    let mut rng = Rng::new(77);
    let weird = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, -f64::MAX, 1e300, -0.0, 0.0, 5e-324];
    for i in 0..400i64 {
        let at = Timestamp(synth::START.0 + i * 60_000 - if i % 7 == 0 { 120_000 } else { 0 });
        let mut snap = snapshot(at);
        let w = weird[rng.below(weird.len())];
        let big = if rng.uniform() < 0.5 { u64::MAX } else { rng.next_u64() };
        snap.load = Section::ok(Load { one: w, five: -w, fifteen: w * 2.0, runnable: u32::MAX, processes: 0 });
        snap.memory =
            Section::ok(Memory { total_bytes: 0, available_bytes: big, swap_total_bytes: 1, swap_free_bytes: big });
        snap.filesystems = Section::ok(
            (0..40)
                .map(|k| Filesystem {
                    mount_point: format!("/m{k}\u{202e}\n {}", "x".repeat(k * 10)),
                    device: String::new(),
                    fs_type: String::new(),
                    total_bytes: if k % 3 == 0 { 0 } else { big },
                    available_bytes: rng.next_u64(),
                    used_bytes: Some(big),
                    total_inodes: big,
                    free_inodes: rng.next_u64(),
                    read_only: false,
                })
                .collect(),
        );
        snap.network = Section::ok(vec![NetInterface {
            name: "eth0".into(),
            rx_bytes: rng.next_u64(),
            tx_bytes: big,
            rx_errors: 0,
            tx_errors: 0,
            rx_dropped: 0,
            tx_dropped: 0,
        }]);
        snap.processes = Section::ok(Processes {
            total: u32::MAX,
            top_cpu: Vec::new(),
            top_rss: (0..50)
                .map(|k| ProcessInfo {
                    pid: k,
                    name: format!("p{}", rng.below(1000)),
                    rss_bytes: big,
                    cpu_percent: Some(w),
                    cpu_time_ms: 0,
                })
                .collect(),
        });
        let o = tracker.observe(&snap);
        assert!(o.samples.len() <= 300, "{} samples", o.samples.len());
        for (k, v) in &o.samples {
            assert!(v.is_finite(), "{k} = {v}");
            assert!(macha_metrics::MetricKey::parse(k.as_str()).is_ok(), "{k}");
        }
        assert!((0.0..=1.0).contains(&o.anomaly_rate));
    }
    assert!(tracker.series_count() <= macha_metrics::track::SERIES_PER_HOST_MAX);
}
