//! The two text formats: OpenMetrics, as `prometheus-client` writes it, and the Prometheus text
//! format 0.0.4, which node_exporter's textfile collector and `promtool check metrics` read.
//!
//! They differ, for what this crate exposes, in three places: a counter family's `HELP` and
//! `TYPE` lines name it with `_total` in the older format; `# UNIT` lines and the final `# EOF`
//! are OpenMetrics only; and the type `unknown` is `untyped`.

use std::collections::HashSet;

/// The media type of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The media type of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `openmetrics` (a whole exposition) in the Prometheus text format 0.0.4.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let head = &line[..7];
            let tail = if head == "# TYPE " && tail == "unknown" { "untyped" } else { tail };
            if counters.contains(name) {
                out.push_str(&format!("{head}{name}_total {tail}\n"));
            } else {
                out.push_str(&format!("{head}{name} {tail}\n"));
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gain_total_and_openmetrics_lines_go() {
        let om = "# HELP macha_x_seconds A gauge.\n# TYPE macha_x_seconds gauge\n# UNIT macha_x_seconds seconds\n\
                  macha_x_seconds 1.5\n# HELP macha_actions Actions.\n# TYPE macha_actions counter\n\
                  macha_actions_total{outcome=\"failed\"} 2\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP macha_x_seconds A gauge.\n# TYPE macha_x_seconds gauge\nmacha_x_seconds 1.5\n\
             # HELP macha_actions_total Actions.\n# TYPE macha_actions_total counter\n\
             macha_actions_total{outcome=\"failed\"} 2\n"
        );
    }
}
