//! Metric history at the daemon's edge: the `metrics_read` answer (the socket's viewers, and
//! `macha metrics --db` on a database file), from the store's rows into `macha-api` types.

use macha_api::metrics::{MetricPointView, MetricsRead, MetricsView, POINTS_MAX};
use macha_core::{HostName, Timestamp};
use macha_store::{MetricPoint, Store};
use std::time::Duration;

/// The longest range one answer covers.
pub const SINCE_MAX: Duration = Duration::from_secs(400 * 86_400);

/// Why a query was refused (a bad request, not a failure).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] macha_store::StoreError),
}

/// The answer to `q` at `now`.
pub fn answer(store: &Store, q: &MetricsRead, now: Timestamp) -> Result<MetricsView, MetricsError> {
    let host = HostName::parse(&q.host).map_err(|e| MetricsError::BadRequest(format!("host {:?}: {e}", q.host)))?;
    if let Some(m) = &q.metric {
        macha_metrics::MetricKey::parse(m).map_err(|e| MetricsError::BadRequest(e.to_string()))?;
    }
    let since = now.minus(Duration::from_secs(q.since_secs).min(SINCE_MAX));
    let until = now.plus(Duration::from_secs(1));
    if q.latest {
        let Some(m) = &q.metric else {
            return Err(MetricsError::BadRequest("the latest sample of which metric?".into()));
        };
        let points = store.metric_latest(host.as_str(), m, since)?.map(view).into_iter().collect();
        return Ok(MetricsView {
            host: host.to_string(),
            since,
            until: now,
            metric: q.metric.clone(),
            names: Vec::new(),
            points,
        });
    }
    let names = store.metric_names(host.as_str())?;
    let points = match &q.metric {
        Some(m) => thin(&store.metric_series(host.as_str(), m, since, until)?),
        None => Vec::new(),
    };
    Ok(MetricsView { host: host.to_string(), since, until: now, metric: q.metric.clone(), names, points })
}

fn view(p: MetricPoint) -> MetricPointView {
    MetricPointView { ts: p.ts, span_secs: p.span_secs, min: p.min, max: p.max, mean: p.mean, count: p.count }
}

/// At most [`POINTS_MAX`] points: neighbours merged (min of mins, max of maxes, weighted mean).
fn thin(points: &[MetricPoint]) -> Vec<MetricPointView> {
    let per = points.len().div_ceil(POINTS_MAX).max(1);
    points
        .chunks(per)
        .filter_map(|c| {
            let first = c.first()?;
            let last = c.last()?;
            let count: u64 = c.iter().map(|p| u64::from(p.count.max(1))).sum();
            let sum: f64 = c.iter().map(|p| p.mean * f64::from(p.count.max(1))).sum();
            let end = last.ts.0 / 1000 + i64::from(last.span_secs);
            let span =
                if c.len() == 1 { first.span_secs } else { u32::try_from(end - first.ts.0 / 1000).unwrap_or(u32::MAX) };
            Some(MetricPointView {
                ts: first.ts,
                span_secs: span,
                min: c.iter().map(|p| p.min).fold(f64::INFINITY, f64::min),
                max: c.iter().map(|p| p.max).fold(f64::NEG_INFINITY, f64::max),
                mean: sum / count as f64,
                count: u32::try_from(count).unwrap_or(u32::MAX),
            })
        })
        .collect()
}
