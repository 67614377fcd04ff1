//! `macha metrics` (a host's metric history: its metrics, or one metric as a sparkline, through
//! the daemon or `--db`) and `macha anomaly replay` (the daemon's detector over a CSV file of
//! one's own).

use super::commands::{Source, read_source};
use super::{ClientOpts, CmdResult, EXIT_DATAERR, EXIT_USAGE, fail};
use anyhow::Context;
use clap::{Args, Subcommand};
use macha_api::metrics::{MetricsRead, MetricsView};
use macha_metrics::{DetectConfig, MetricKey, Unit};
use std::path::PathBuf;

/// The largest CSV file `macha anomaly replay` reads.
const CSV_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Sparkline width.
const WIDTH: usize = 72;

#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    #[command(flatten)]
    pub client: ClientOpts,
    /// The host (`local` is this one).
    pub host: String,
    /// One metric (`mem.available_bytes`, `fs.avail_bytes:/var`); without it, the host's metrics
    /// are listed.
    pub metric: Option<String>,
    /// How far back (`6h`, `7d`, `1y`).
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    pub since: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum AnomalyCmd {
    /// Run the daemon's anomaly detector over a `timestamp,value` CSV file (header optional;
    /// unix seconds or ISO 8601) and print every row's score (0-1) and whether it is flagged.
    Replay {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// `macha metrics HOST [METRIC]`.
pub fn metrics(args: &MetricsArgs) -> CmdResult {
    let q = MetricsRead {
        host: args.host.clone(),
        metric: args.metric.clone(),
        since_secs: args.since.as_secs(),
        latest: false,
    };
    let view = match read_source(&args.client)? {
        Source::Daemon(mut c) => c.call(q)?,
        Source::Local(store) => match crate::metrics::answer(&store, &q, crate::now()) {
            Ok(v) => v,
            Err(crate::metrics::MetricsError::BadRequest(m)) => return Err(fail(EXIT_USAGE, anyhow::format_err!(m))),
            Err(crate::metrics::MetricsError::Store(e)) => return Err(e.into()),
        },
    };
    if args.client.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(0);
    }
    print!("{}", render(&view));
    Ok(0)
}

/// The text of `macha metrics`.
pub fn render(v: &MetricsView) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let host = super::term::clean(&v.host);
    let Some(metric) = &v.metric else {
        if v.names.is_empty() {
            let _ = writeln!(out, "no metric history for {host}");
        }
        for n in &v.names {
            let desc = MetricKey::parse(n).map(|k| k.describe()).unwrap_or_default();
            let n = super::term::clean(n);
            if desc == n {
                let _ = writeln!(out, "{n}");
            } else {
                let _ = writeln!(out, "{n:<40} {}", super::term::clean(&desc));
            }
        }
        return out;
    };
    let key = MetricKey::parse(metric).ok();
    let unit = key.as_ref().map_or(Unit::Plain, MetricKey::unit);
    let desc = key.as_ref().map(MetricKey::describe).unwrap_or_default();
    let _ = writeln!(
        out,
        "{host} {} ({}), {} to {}",
        super::term::clean(metric),
        super::term::clean(&desc),
        v.since,
        v.until
    );
    if v.points.is_empty() {
        let _ = writeln!(out, "no samples in this range");
        return out;
    }
    // One value per time slot across the range, so gaps show as gaps.
    let (t0, t1) = (v.since.0, v.until.0.max(v.since.0 + 1));
    let mut cells: Vec<(f64, u32)> = vec![(0.0, 0); WIDTH];
    for p in &v.points {
        let i = usize::try_from((p.ts.0 - t0).max(0) * WIDTH as i64 / (t1 - t0)).unwrap_or(0).min(WIDTH - 1);
        cells[i].0 += p.mean;
        cells[i].1 += 1;
    }
    let values: Vec<Option<f64>> = cells.iter().map(|(s, n)| (*n > 0).then(|| s / f64::from(*n))).collect();
    let _ = writeln!(out, "{}", macha_metrics::spark::sparkline(&values, WIDTH));
    let min = v.points.iter().map(|p| p.min).fold(f64::INFINITY, f64::min);
    let max = v.points.iter().map(|p| p.max).fold(f64::NEG_INFINITY, f64::max);
    let n: u64 = v.points.iter().map(|p| u64::from(p.count.max(1))).sum();
    let mean = v.points.iter().map(|p| p.mean * f64::from(p.count.max(1))).sum::<f64>() / n as f64;
    let last = v.points.last().map_or(0.0, |p| p.mean);
    let _ = writeln!(
        out,
        "min {}  mean {}  max {}  latest {}  ({} points, {n} samples)",
        unit.format(min),
        unit.format(mean),
        unit.format(max),
        unit.format(last),
        v.points.len()
    );
    out
}

/// `macha anomaly replay FILE`.
pub fn anomaly(cmd: AnomalyCmd) -> CmdResult {
    let AnomalyCmd::Replay { file, json } = cmd;
    let meta = std::fs::metadata(&file).with_context(|| format!("reading {}", file.display()))?;
    if meta.len() > CSV_MAX_BYTES {
        return Err(fail(EXIT_DATAERR, anyhow::format_err!("{} is larger than {CSV_MAX_BYTES} bytes", file.display())));
    }
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| fail(EXIT_DATAERR, anyhow::format_err!("{}: not UTF-8 text: {e}", file.display())))?;
    let rows = macha_metrics::replay::parse_csv(&text)
        .map_err(|e| fail(EXIT_DATAERR, anyhow::format_err!("{}: {e}", file.display())))?;
    let points = macha_metrics::detect::replay(&rows, Unit::Plain, &DetectConfig::default());
    if json {
        let out: Vec<serde_json::Value> = rows
            .iter()
            .zip(&points)
            .map(|((t, v), p)| {
                serde_json::json!({
                    "timestamp": t.to_string(),
                    "value": v,
                    "score": (p.score * 1e4).round() / 1e4,
                    "flagged": p.flagged,
                    "z": (p.z * 100.0).round() / 100.0,
                    "expected": p.expected,
                    "baseline": p.baseline.describe(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    println!("{:<24} {:>14} {:>6}  flagged", "timestamp", "value", "score");
    for ((t, v), p) in rows.iter().zip(&points) {
        let mark =
            if p.flagged { format!("yes ({:+.1} σ from the {})", p.z, p.baseline.describe()) } else { "no".into() };
        println!("{:<24} {:>14} {:>6.3}  {mark}", t.to_string(), format!("{v}"), p.score);
    }
    let flagged = points.iter().filter(|p| p.flagged).count();
    println!("{} rows, {flagged} flagged", rows.len());
    Ok(0)
}
