//! Metrics over time (docs/metrics.md, decision 0023): what Macha remembers of each host between
//! snapshots, and what it concludes from it.
//!
//! - [`key`]: metric names ([`MetricKey`], validated and bounded) and [`extract`], the values a
//!   snapshot yields;
//! - [`detect`]: the streaming anomaly detector of one series ([`Series`]): seasonal, overall and
//!   short baselines that must agree, a 0-1 score, episodes that must persist;
//! - [`fillup`]: time-to-full of a volume from its level and trend ([`Volume`]);
//! - [`track`]: the [`Tracker`] of every host, which turns a snapshot into the samples to store and
//!   the outcomes of the `anomaly` and `fill_up` checks;
//! - [`replay`]: CSV into samples for `macha anomaly replay`; [`spark`]: sparklines;
//!   [`synth`]: synthetic series with known answers.
//!
//! Sans-IO: no clock, no files, no database. Storage is `macha-store`'s (`metrics.rs`).

pub mod detect;
pub mod fillup;
pub mod key;
pub mod replay;
pub mod spark;
pub mod synth;
pub mod track;

pub use detect::{Baseline, DetectConfig, Episode, Point, Series};
pub use fillup::{FillConfig, Prediction, Volume};
pub use key::{Direction, Kind, MetricKey, Unit, extract};
pub use track::{Observed, TrackConfig, Tracker};
