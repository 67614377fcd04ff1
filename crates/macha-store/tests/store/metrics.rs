//! Metric history: samples stored packed per host and moment, read back per metric, folded into
//! 5-minute and 1-hour buckets by `maintain` on a simulated clock, deleted after a year, capped.

use macha_core::Timestamp;
use macha_store::Store;
use macha_store::metrics::{FIVE_MINUTE_KEEP, HOUR_KEEP, RAW_KEEP};

const T0: i64 = 1_796_083_200_000;

fn at(secs: i64) -> Timestamp {
    Timestamp(T0 + secs * 1000)
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("m.db")).unwrap();
    (dir, store)
}

#[test]
fn samples_round_trip_per_metric_and_names_are_listed() {
    let (_d, mut s) = store();
    for i in 0..10 {
        let n = s
            .record_metrics(
                "web1",
                at(i * 60),
                &[("load.1", i as f64), ("mem.available_bytes", 1e9), ("bad", f64::NAN)],
            )
            .unwrap();
        assert_eq!(n, 2);
    }
    s.record_metrics("web2", at(0), &[("load.1", 7.0)]).unwrap();
    let pts = s.metric_series("web1", "load.1", at(0), at(600)).unwrap();
    assert_eq!(pts.len(), 10);
    assert_eq!(pts[3].mean, 3.0);
    assert_eq!((pts[3].span_secs, pts[3].count), (0, 1));
    assert!(pts.windows(2).all(|w| w[0].ts < w[1].ts));
    assert_eq!(s.metric_names("web1").unwrap(), ["load.1", "mem.available_bytes"]);
    assert_eq!(s.metric_hosts().unwrap(), ["web1", "web2"]);
    assert!(s.metric_series("web1", "nope", at(0), at(600)).unwrap().is_empty());
    assert!(s.metric_series("nohost", "load.1", at(0), at(600)).unwrap().is_empty());
    let rows = s.metric_rows("web1", at(300)).unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0].1, vec![("load.1".to_owned(), 5.0), ("mem.available_bytes".to_owned(), 1e9)]);
}

#[test]
fn maintain_folds_into_buckets_keeps_the_statistics_and_deletes_after_a_year() {
    let (_d, mut s) = store();
    // Two hours of samples every 60 s: values 0..120.
    for i in 0..120 {
        s.record_metrics("web1", at(i * 60), &[("load.1", i as f64)]).unwrap();
    }
    // Nothing is due within the day.
    let m = s.maintain(at(7200)).unwrap();
    assert_eq!((m.metrics_folded, m.metrics_deleted), (0, 0));
    // After a day: 24 five-minute buckets of 5 samples each.
    let later = at(7200 + RAW_KEEP.as_secs() as i64 + 600);
    let mut folded = 0;
    loop {
        let m = s.maintain(later).unwrap();
        folded += m.metrics_folded;
        if !m.more {
            break;
        }
    }
    assert_eq!(folded, 120);
    let size = s.metrics_size().unwrap();
    assert_eq!((size.raw_rows, size.five_minute_rows, size.hour_rows), (0, 24, 0));
    let pts = s.metric_series("web1", "load.1", at(0), later).unwrap();
    assert_eq!(pts.len(), 24);
    assert_eq!((pts[0].span_secs, pts[0].count, pts[0].min, pts[0].max, pts[0].mean), (300, 5, 0.0, 4.0, 2.0));
    // After 30 days: two hourly buckets, statistics over 60 samples each.
    let month = at(7200 + FIVE_MINUTE_KEEP.as_secs() as i64 + 3600);
    s.maintain(month).unwrap();
    let pts = s.metric_series("web1", "load.1", at(0), month).unwrap();
    assert_eq!(pts.len(), 2, "{pts:?}");
    assert_eq!((pts[1].span_secs, pts[1].count, pts[1].min, pts[1].max), (3600, 60, 60.0, 119.0));
    assert!((pts[1].mean - 89.5).abs() < 1e-3, "{}", pts[1].mean);
    // After a year: gone.
    let year = at(7200 + HOUR_KEEP.as_secs() as i64 + 3600);
    let m = s.maintain(year).unwrap();
    assert_eq!(m.metrics_deleted, 2);
    assert_eq!(s.metrics_size().unwrap(), Default::default());
    // Idle again: nothing written.
    assert!(s.maintain(year).unwrap().is_idle());
}

#[test]
fn a_fold_split_over_batches_comes_out_whole() {
    let (_d, mut s) = store();
    // One host samples every second of a 5-minute bucket; 1,900 others once in its middle, so
    // the first fold batch (2,000 rows, oldest first) ends inside that host's bucket.
    for i in 0..300 {
        s.record_metrics("busy", at(i), &[("load.1", i as f64)]).unwrap();
    }
    for h in 0..1900 {
        s.record_metrics(&format!("h{h}"), at(150), &[("load.1", 1.0)]).unwrap();
    }
    let later = at(300 + RAW_KEEP.as_secs() as i64 + 300);
    let m = s.maintain(later).unwrap();
    assert_eq!(m.metrics_folded, 2200);
    let pts = s.metric_series("busy", "load.1", at(0), later).unwrap();
    assert_eq!(pts.len(), 1, "{pts:?}");
    assert_eq!((pts[0].count, pts[0].min, pts[0].max), (300, 0.0, 299.0));
    assert!((pts[0].mean - 149.5).abs() < 1e-3);
}
