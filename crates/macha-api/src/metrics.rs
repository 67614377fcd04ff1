//! Metric history over the socket (`macha metrics`, viewers): one host's metric names, or one
//! metric's points over a time range.

use crate::ops::Call;
use crate::request::Request;
use macha_core::Timestamp;
use serde::{Deserialize, Serialize};

/// Points one answer carries at most; longer ranges are merged into wider points.
pub const POINTS_MAX: usize = 20_000;

/// The metrics of `host`, or the points of `metric` over the last `since_secs` seconds. With
/// `latest`, only the newest raw sample of `metric` in that time, and no names: one bounded read
/// (the fleet page asks it of every host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsRead {
    pub host: String,
    #[serde(default)]
    pub metric: Option<String>,
    pub since_secs: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub latest: bool,
}

impl Call for MetricsRead {
    type Reply = MetricsView;
    fn into_request(self) -> Request {
        Request::MetricsRead(self)
    }
}

/// One point: a raw sample (`span_secs = 0`) or a bucket's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricPointView {
    pub ts: Timestamp,
    pub span_secs: u32,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub count: u32,
}

/// The answer: the host's metric names (newest rows of each tier), and the points of the metric
/// asked for (none without one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsView {
    pub host: String,
    pub since: Timestamp,
    pub until: Timestamp,
    pub metric: Option<String>,
    pub names: Vec<String>,
    pub points: Vec<MetricPointView>,
}
