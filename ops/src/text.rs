//! The classic Prometheus text format (0.0.4), from `prometheus-client`'s
//! OpenMetrics text.
//!
//! Prometheus itself asks for OpenMetrics (its `Accept` header says so) and
//! gets exactly what `prometheus-client` writes. Other readers — `curl`,
//! `promtool check metrics`, older agents — speak the classic format, which
//! differs in three ways that matter here: a counter's `# HELP`/`# TYPE`
//! name carries its `_total` suffix, there is no `# UNIT` line, and there is
//! no `# EOF`. Everything else (samples, label escaping, histograms) is the
//! same, so this rewrites those comment lines and copies the rest.

/// The classic text form of OpenMetrics `text`.
pub fn from_openmetrics(text: &str) -> String {
    // Counter families, from their TYPE lines (HELP comes before TYPE).
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_carry_total_and_openmetrics_only_lines_go() {
        let om = "# HELP ringside_gifts Gifts.\n# TYPE ringside_gifts counter\n\
                  ringside_gifts_total{window=\"pk\"} 3\n\
                  # HELP ringside_ack_seconds Ack.\n# TYPE ringside_ack_seconds histogram\n\
                  # UNIT ringside_ack_seconds seconds\nringside_ack_seconds_count 2\n# EOF\n";
        let text = from_openmetrics(om);
        assert_eq!(
            text,
            "# HELP ringside_gifts_total Gifts.\n# TYPE ringside_gifts_total counter\n\
             ringside_gifts_total{window=\"pk\"} 3\n\
             # HELP ringside_ack_seconds Ack.\n# TYPE ringside_ack_seconds histogram\n\
             ringside_ack_seconds_count 2\n"
        );
    }
}
